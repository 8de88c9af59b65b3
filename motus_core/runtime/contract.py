"""The chunk contract between a policy and the chunk executor, checked in one place (ROS-free).

A policy declares, when it is loaded, how many actions a chunk holds (``H``, ``Policy.chunk_length``)
and their period (``Policy.step_period``); the policy node publishes both in ``PolicyStatus``. The
executor combines them with its own numbers:

* the execution horizon ``s``: actions executed per chunk before the next one is requested (the
  strategy says which: RTC's ``execution_horizon``, temporal ensembling's ``replan_interval``, the
  whole chunk for ``sync``);
* the delay budget ``d_max``: actions that may execute between the observation and the chunk's
  arrival (the inference delay). The chunk must still hold actions after that: ``s + d_max <= H``.
  One unit everywhere: chunk actions (``step_period`` seconds each);
* the robot's action period ``1 / action_rate_hz`` of the robot profile, which must equal the
  policy's step period (the model was trained at that rate).

``negotiate`` returns the contract or raises :class:`ContractError` naming the numbers that disagree
and the setting that fixes them. The executor refuses chunks until a contract holds.
"""
from __future__ import annotations

from dataclasses import dataclass

STEP_PERIOD_TOLERANCE = 0.01  # relative: 30 Hz vs 29.7 Hz is the same rate, 30 vs 25 is not


class ContractError(ValueError):
    """The policy's chunks and the executor's settings do not fit together."""


@dataclass(frozen=True)
class ChunkContract:
    chunk_length: int  # H, actions per chunk (the policy's)
    step_period: float  # s between actions (the policy's = the robot profile's)
    execution_horizon: int  # s, actions executed per chunk
    max_delay: int  # d_max, actions; s + d_max <= H

    def describe(self) -> str:
        return (f"chunk_length H={self.chunk_length} at {1.0 / self.step_period:.1f} Hz, execution_horizon s={self.execution_horizon}, "
                f"max_delay d_max={self.max_delay} actions ({self.max_delay * self.step_period:.2f} s)")


def negotiate(chunk_length: int, step_period: float, *, strategy, max_delay: int, robot_step_period: float,
              min_delay: int = 1) -> ChunkContract:
    """Check the policy's declared chunks against the executor's settings.

    ``strategy`` is the executor's strategy object (``execution_horizon(H)``, ``uses_delay_budget``);
    ``max_delay`` 0 = all that the execution horizon leaves (``H - s``); ``min_delay`` is the delay
    the executor plans with before it measured one (``initial_delay + delay_margin``): a budget below it
    would be exceeded by the first request already.
    """
    H = int(chunk_length)
    if H < 1:
        raise ContractError(f"the policy declares chunk_length {chunk_length}: it must be >= 1 (PolicyStatus.chunk_length)")
    if not (step_period > 0):
        raise ContractError(f"the policy declares step_period {step_period}: it must be > 0 s (PolicyStatus.step_period)")
    if abs(step_period - robot_step_period) > STEP_PERIOD_TOLERANCE * robot_step_period:
        raise ContractError(
            f"policy step_period {step_period:.4f} s ({1 / step_period:.1f} Hz) != robot action period {robot_step_period:.4f} s "
            f"(action_rate_hz {1 / robot_step_period:.1f} of the robot profile): set the profile's action_rate_hz to "
            f"{1 / step_period:.1f} or load a policy trained at {1 / robot_step_period:.1f} Hz")
    s = int(strategy.execution_horizon(H))
    name = strategy.horizon_name
    if s < 1:
        raise ContractError(f"{name} {s} must be >= 1")
    if not strategy.uses_delay_budget:
        # the strategy waits at rest for each chunk: no action executes during inference
        if s > H:
            raise ContractError(f"{name} {s} > chunk_length {H}: set {name} <= {H}")
        return ChunkContract(H, float(step_period), s, 0)
    floor = max(int(min_delay), 1)
    if max_delay > 0:
        d_max = int(max_delay)
        if s + d_max > H:
            fix = f"set {name} <= {H - d_max}" if H - d_max >= 1 else f"set max_delay <= {H - 1}"
            if H - s >= floor:
                fix += f" or max_delay <= {H - s}"
            raise ContractError(f"{name} {s} > chunk_length {H} - max_delay {d_max}: {fix}")
    else:
        d_max = H - s  # all that the execution horizon leaves
        if d_max < floor:
            raise ContractError(f"{name} {s} leaves chunk_length {H} - {s} = {d_max} actions for the inference delay, less than the "
                                f"{floor} the executor plans with (initial_delay + delay_margin): set {name} <= {H - floor}")
    if d_max < floor:
        raise ContractError(f"max_delay {d_max} < the delay planned before any measurement ({floor} = initial_delay + delay_margin): "
                            f"set max_delay >= {floor}{f' and {name} <= {H - floor}' if s > H - floor else ''}, or lower initial_delay")
    return ChunkContract(H, float(step_period), s, d_max)
