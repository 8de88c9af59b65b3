"""The chunk executor: turns a slow chunked policy into a smooth, safe command stream (ROS-free).

The executor runs at the command rate (200 Hz) on the robot's clock. Each ``tick(now)`` returns the
command (position, velocity, acceleration) for that instant; ``on_chunk`` feeds it a policy chunk;
``make_request`` says when it wants the next one and with which plan (the RTC prefix).

Life of a command::

    chunk --validate/clamp (safety)--> strategy.merge --> plan (C2 spline through waypoints)
          --> TransitionTrajectory(command -> plan)     (C2 switch, window sized from the limits)
          --> watchdog: plan ends before a new chunk?   (StopTrajectory within the acceleration limits)
          --> CommandGuard                              (per-tick position/velocity/acceleration/step clamps)

States (``motus_msgs/ExecutorStatus`` constants): IDLE (holding the measured pose, no chunk yet),
FADE_IN (blending from the measured pose into the policy), RUNNING, HOLDING (stopped by the watchdog,
a rejected chunk or the loss of the policy; resumes with a fade-in on the next valid chunk), ESTOP
(latched; only ``reset_estop`` leaves it).

Delay: ``d`` is *measured*: the number of actions the executor actually executed between the
observation a chunk was computed from and the chunk's arrival (time spent holding does not count),
rounded up because an action already being interpolated towards cannot be changed any more.
"""
from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from motus_core.policy.base import ActionChunk
from motus_core.runtime.contract import ChunkContract, ContractError, negotiate
from motus_core.runtime.motion import PoseMove
from motus_core.runtime.safety import ChunkValidator, CommandGuard, EStopLatch, JointLimits, SafetyMonitorConfig
from motus_core.runtime.strategies import STRATEGIES, ChunkPlan, DelayTracker, make_strategy, strategy_names
from motus_core.runtime.trajectory import (
    HoldTrajectory,
    StopTrajectory,
    TransitionTrajectory,
    WaypointSpline,
    blend_duration,
    offset_windows,
    smooth_to_limits,
    stop_profile_duration,
)
from motus_core.runtime.tracking import TrackingMonitor, tracking_tolerances

log = logging.getLogger(__name__)


def carry_command(p: np.ndarray, v: np.ndarray, a: np.ndarray, dt: float, hold: float, fade: float):
    """(p, v, a) ``dt`` after a command (p, v, a) whose acceleration is kept for ``hold`` s (the usual
    tick, when the robot really runs with it) and then fades linearly to zero over ``fade`` s."""
    def integrals(s):  # of the acceleration profile's shape f (1, then the ramp down, then 0): (f, int f, int int f)
        if s <= hold:
            return 1.0, s, s * s / 2.0
        r = min(s - hold, fade)
        f = 1.0 - r / fade
        v1 = hold + r - r * r / (2.0 * fade)
        p1 = hold * hold / 2.0 + hold * r + r * r / 2.0 - r**3 / (6.0 * fade)
        if s > hold + fade:
            p1 += v1 * (s - hold - fade)
        return f, v1, p1

    f, iv, ip = integrals(dt)
    return p + dt * v + a * ip, v + a * iv, a * f


class ExecState(IntEnum):
    IDLE = 0
    FADE_IN = 1
    RUNNING = 2
    HOLDING = 3
    ESTOP = 4


def _with_strategy_configs(cls):
    """Give the config one nested field per registered strategy (``rtc.execution_horizon``, ...)."""
    for name, strategy in STRATEGIES.items():
        cls.__annotations__[name] = strategy.Config
        setattr(cls, name, field(default_factory=strategy.Config, metadata={"help": f"parameters of the {name} strategy"}))
    return cls


# Why a joint state was not taken (on_measured_state): the start of its message, the cause the node counts.
STATE_AHEAD = "stamped ahead of the clock"
STATE_OLD = "stamped before the newest joint state"

# Executor parameters that moved into their strategy's nested config (stop 17): old name -> new name.
# An old name in a params file would otherwise be dropped by ROS without a word.
RENAMED_PARAMETERS = {
    "execution_horizon": "rtc.execution_horizon",
    "rtc_schedule": "rtc.schedule",
    "replan_interval": "temporal_ensemble.replan_interval",
    "te_decay": "temporal_ensemble.decay",
    "te_max_chunks": "temporal_ensemble.max_chunks",
    "te_taper": "temporal_ensemble.taper",
    "max_chunk_age": "rtc.max_chunk_age or temporal_ensemble.max_chunk_age (one per strategy)",
}


@dataclass
@_with_strategy_configs
class ExecutorConfig(SafetyMonitorConfig):
    """Chunk executor parameters (the executor node declares them as ROS parameters).

    Each strategy's own parameters are a nested field named after it (``rtc``, ``temporal_ensemble``,
    ``sync``; see ``motus_core.runtime.strategies``). Metadata: ``help``, and ``choices`` / ``min`` /
    ``max`` checked by ``validate`` (and by ``motus_ros.params`` for the ROS parameters).
    """

    strategy: str = field(default="rtc", metadata={"help": "chunk stitching strategy", "choices": strategy_names()})
    max_delay: int = field(default=0, metadata={"help": "actions that may execute between an observation and its chunk's arrival "
                                                        "(d_max; execution_horizon + max_delay <= the policy's chunk_length); 0 = all the "
                                                        "execution horizon leaves", "min": 0})
    blend_time: float = field(default=0.2, metadata={"help": "s, shortest window of the C2 blend at a chunk switch (longer when the limits need it)", "min": 1e-3})
    fade_in_time: float = field(default=1.0, metadata={"help": "s, shortest fade-in from the measured pose when the policy takes over", "min": 1e-3})
    max_blend_time: float = field(default=3.0, metadata={"help": "s, longest blend window", "min": 1e-3})
    limit_budget: float = field(default=0.8, metadata={"help": "fraction of the velocity/acceleration limits that blends and stops plan with", "min": 1e-3, "max": 1.0})
    delay_window: int = field(default=20, metadata={"help": "measured delays kept for the expected delay", "min": 1})
    delay_quantile: float = field(default=0.95, metadata={"help": "quantile of the window used as expected delay", "min": 0.0, "max": 1.0})
    delay_margin: int = field(default=1, metadata={"help": "actions added to the delay quantile", "min": 0})
    initial_delay: int = field(default=3, metadata={"help": "expected delay (actions) before any chunk was measured", "min": 0})
    request_timeout: float = field(default=2.0, metadata={"help": "s after which an unanswered chunk request is repeated", "min": 0.0})
    stop_margin: float = field(default=0.02, metadata={"help": "s, the watchdog starts decelerating this much before it must", "min": 0.0})
    range_tolerance: float = field(default=0.05, metadata={"help": "actions this far outside the position limits are clamped; further out the chunk is rejected", "min": 0.0})
    gripper_range_tolerance: float = field(default=1.0, metadata={"help": "fraction of a gripper's range: gripper actions this far beyond its stops are clamped (a learned command at a stop scatters beyond it, more where the model is unsure; the gripper stops at its limit anyway); further out, where wrong units or statistics put it, the chunk is rejected", "min": 0.0, "max": 2.0})
    step_tolerance: float = field(default=1.5, metadata={"help": "chunks with a step above max_step * this are rejected as discontinuous", "min": 1.0})
    gripper_step_check: bool = field(default=False, metadata={"help": "apply the discontinuity check (step_tolerance) to the grippers too; off by default: a learned gripper command is an open/close decision that may switch within one action (the per-tick guard still limits how fast the gripper is driven), while a jump of an arm joint means an inconsistent chunk"})
    stop_on_rejected_chunk: bool = field(default=True, metadata={"help": "a rejected chunk (NaN, out of range) stops the robot (resumes on the next valid chunk)"})
    plan_lookback: int = field(default=6, metadata={"help": "actions of executed history included in the published plan (prefix for an older observation)", "min": 0})
    guard_slack: float = field(default=1.02, metadata={"help": "per-tick guard tolerance over the limits (numerical noise)", "min": 1.0})
    clock_tolerance: float = field(default=0.1, metadata={"help": "s a chunk may be stamped ahead of the executor's clock (clocks of two processes, /clock delivery) before it is rejected", "min": 0.0})
    clock_jump: float = field(default=0.5, metadata={"help": "s, the robot clock moving back this much between ticks resets the executor (hold at the next measured pose); a forward gap this long is a stalled loop (hold where the last command sent ends)", "min": 0.0})
    use_urdf: bool = field(default=True, metadata={"help": "tighten the profile's limits with the URDF's"})

    def validate(self) -> None:
        from motus_core.config_fields import check_dataclass

        check_dataclass(self)
        if self.max_blend_time < max(self.blend_time, self.fade_in_time):
            raise ValueError(f"blend_time {self.blend_time} and fade_in_time {self.fade_in_time} must be <= max_blend_time {self.max_blend_time}")

    def strategy_config(self):
        return getattr(self, self.strategy)


@dataclass
class Command:
    stamp: float
    position: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    state: ExecState
    limited: bool = False


@dataclass
class PlanRequest:
    """What the executor asks the policy for: a chunk continuing ``positions`` (the RTC prefix).

    ``positions[k]`` is the commanded position at ``stamp + (k + 1) * step_period`` (past and
    future: the first ``plan_lookback`` entries are already executed, so a chunk computed from an
    observation slightly older than the request can still be given its prefix).
    """

    request_id: int
    stamp: float
    step_period: float
    positions: np.ndarray
    expected_delay: int
    strategy: str


@dataclass
class ChunkResult:
    accepted: bool
    reason: str = ""
    measured_delay: int | None = None


class ChunkExecutor:
    """See the module docstring. Chunks are refused until the policy's chunk contract is known and holds
    (``set_contract``: the node calls it from ``PolicyStatus``; ``chunk_length``/``step_period`` here do
    the same at construction, for offline runs and tests)."""

    def __init__(self, config: ExecutorConfig, limits: JointLimits, *, chunk_length: int | None = None, step_period: float | None = None):
        config.validate()
        config.validate_safety()
        self.cfg = config
        self.limits = limits
        self.dof = limits.dof
        self.dt = limits.step_period
        self.validator = ChunkValidator(limits, config.range_tolerance, config.step_tolerance)
        self.guard = CommandGuard(limits, config.guard_slack)
        self.estop_latch = EStopLatch()
        self.strategy = make_strategy(config.strategy, config.strategy_config())
        self.contract: ChunkContract | None = None
        self._declared: tuple[int, float] | None = None
        self.contract_error = ""
        self.late_chunks = 0  # chunks whose measured delay exceeded the contract's max_delay
        self.delays = DelayTracker(config.delay_window, config.delay_quantile, config.delay_margin, config.initial_delay)
        self._a_plan = limits.acceleration * config.limit_budget
        self.state = ExecState.IDLE
        self.message = "waiting for the measured joint state"
        self.enabled = True
        self.traj = None
        self.plan: WaypointSpline | None = None
        self.stop: StopTrajectory | None = None  # active watchdog / e-stop deceleration
        self._recovery: TransitionTrajectory | None = None  # the last re-plan after a guard clamp (see _reanchor)
        self._recovery_until = -np.inf
        self._suspended: WaypointSpline | None = None  # plan put aside by policy_lost
        self.measured: np.ndarray | None = None
        self.measured_stamp: float | None = None
        self._newest_state = -math.inf  # stamp of the newest joint state taken (older ones are ignored)
        self.states_ignored = 0
        self._measured_hist: deque[tuple[float, np.ndarray]] = deque(maxlen=200)  # recent joint states (settling check)
        self.last: Command | None = None
        self._fade_until = -math.inf
        # executed-time bookkeeping for the measured delay
        self._exec_time = 0.0
        self._exec_since = -math.inf  # execution (re)started at this time
        self._exec_hist_t: deque[float] = deque(maxlen=4000)
        self._exec_hist_v: deque[float] = deque(maxlen=4000)
        self._cmd_hist: deque[tuple[float, np.ndarray]] = deque(maxlen=400)
        # requests
        self._request_id = 0
        self._outstanding: float | None = None
        self._asked_delay = 0  # expected delay of the last request: the committed actions a prefix policy returns verbatim
        self._exec_at_request = 0.0
        self._last_chunk_stamp = -math.inf
        self._answer_time = 0.0  # s from the last answered request to its chunk
        self.active_chunk: tuple[int, float] = (0, 0.0)  # (chunk_id, time offset) of the chunk being executed
        # counters
        self.chunks_received = 0
        self.chunks_rejected = 0
        self.chunks_smoothed = 0  # chunks whose plan was low-passed to the acceleration limits (smooth_to_limits)
        self.chunks_ignored = 0
        self.watchdog_stops = 0
        self.clock_jumps = 0
        self.clock_jump_times: deque[tuple[float, float]] = deque(maxlen=100)  # (last tick before, first after)
        self.stalls = 0  # forward gaps longer than clock_jump between ticks (_stalled)
        self.stall_times: deque[tuple[float, float]] = deque(maxlen=100)  # (last tick before, first after)
        self._sent: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # the last preview: (times, P, V)
        self._fresh_after = -math.inf
        self.clamped_values = 0
        self.boundaries: list[float] = []
        # (time, trajectory before the switch, blend window): what the robot would have done
        # without the new chunk, for the boundary metrics (bounded: the node keeps the recent ones)
        self.switches: deque[tuple[float, object, float]] = deque(maxlen=300)
        self.rejections: deque[str] = deque(maxlen=20)
        # ---- safety monitors (docs/runtime.md "Safety"): state freshness, tracking, resync, moves, liveliness
        self.enabled_once = True  # the node clears it on real hardware: nothing is published before the first enable
        self.starved = False  # the watchdog holds the robot: no fresh chunk before the committed actions ran out
        self.policy_lost_stops = 0
        self.resyncs = 0  # a fade-in / resume restarted the command at the measured pose
        self.move: PoseMove | None = None  # ~/move_to_pose in progress
        self._tick_gaps: deque[float] = deque(maxlen=200)  # recent tick lengths: the watchdog's margin for late ticks
        self._usual_tick = 0.005  # their median, refreshed every 20 ticks (not a median on every tick of the loop)
        self._gaps_since_median = 0
        self.configure_monitors(())

        if chunk_length is not None:
            error = self.set_contract(chunk_length, limits.step_period if step_period is None else step_period)
            if error:
                raise ContractError(error)

    # ------------------------------------------------------------------ the chunk contract
    def set_contract(self, chunk_length: int, step_period: float, now: float | None = None) -> str | None:
        """The policy declared its chunks (H, step period): check them against this executor.

        Returns None when the contract holds, else the reason (also in ``message``/``contract_error``);
        chunks are refused and no chunk is requested until a contract holds. A policy that changes its
        declaration while the robot moves (a restarted policy node) stops the robot first.
        """
        declared = (int(chunk_length), float(step_period))
        if declared == self._declared:  # the same declaration again (PolicyStatus comes at 10 Hz)
            if self.contract is None and self.state in (ExecState.IDLE, ExecState.HOLDING):
                self.message = self.contract_error
            return self.contract_error or None
        self._declared = declared
        current = self.contract
        try:
            contract = negotiate(chunk_length, step_period, strategy=self.strategy, max_delay=self.cfg.max_delay,
                                 robot_step_period=self.limits.step_period, min_delay=self.cfg.initial_delay + self.cfg.delay_margin)
        except ContractError as exc:
            contract, error = None, f"refusing to run: {exc}"
        else:
            error = ""
        if current is not None and now is not None and self.state in (ExecState.FADE_IN, ExecState.RUNNING):
            self._begin_stop(now, ExecState.HOLDING, "holding: the policy changed its chunk contract")
        self.contract = contract
        self.contract_error = error
        if contract is None:
            log.error("%s", error)
            self.message = error
            self._outstanding = None
            return error
        self.dt = contract.step_period  # the unit of the delay and of the execution horizon: chunk actions
        self.delays.reset()
        log.info("chunk contract: %s", contract.describe())
        if self.state in (ExecState.IDLE, ExecState.HOLDING) and self.message.startswith("refusing to run"):
            self.message = "chunk contract holds: waiting for a chunk"
        return None

    # ------------------------------------------------------------------ safety monitors
    def configure_for_profile(self, profile) -> None:
        """``configure_monitors`` with a robot profile's grippers, tracking tolerances and gripper direction."""
        grip = profile.gripper
        self.configure_monitors(profile.gripper_indices, profile.extra.get("tracking_tolerance"),
                                gripper_open_sign=1.0 if grip.open_value >= grip.closed_value else -1.0)

    def configure_monitors(self, gripper_indices, tracking_overrides=None, gripper_open_sign: float = 1.0) -> None:
        """Per-joint tolerances of the tracking monitor and the resync (grippers: fractions of their range)."""
        lim, cfg = self.limits, self.cfg
        tol = tracking_tolerances(lim.names, lim.lower, lim.upper, gripper_indices, cfg.tracking_tolerance,
                                  cfg.tracking_gripper_fraction, tracking_overrides)
        grasp = np.zeros(self.dof)
        grasp[list(gripper_indices)] = 1.0 if gripper_open_sign >= 0 else -1.0
        self.tracking = TrackingMonitor(lim.names, tol, cfg.tracking_grace, cfg.tracking_lag, grasp_sign=grasp)
        # grippers keep their command: one closed on an object is away from it by design, and restarting
        # it at the measured opening would loosen the grasp
        self._resync_tol = np.full(self.dof, cfg.resync_tolerance)
        self._resync_tol[list(gripper_indices)] = np.inf
        # a gripper's stops are where it opens and closes fully: a learned command beyond one is clamped,
        # not a reason to stop the robot. Trained on commands that sit at the stops, the proof's models
        # scatter beyond them, more where they are unsure (the sixth run up to 20 %: 105 of its 131 rejected
        # RTC chunks at a 10 % tolerance; the tenth 25-27 % when opening after a missed grasp: 184 of 484
        # at 25 %, the robot held in 31 of 50 episodes). Wrong units or statistics are off by several
        # ranges (metres as 0..1: 10x, degrees as radians: 57x, the X5's -3.4..0 as 0..1: 3.4 ranges): one
        # range beyond the stop separates the two. Arm joints keep range_tolerance.
        range_tol = np.full(self.dof, cfg.range_tolerance)
        g = list(gripper_indices)
        range_tol[g] = np.maximum(cfg.range_tolerance, cfg.gripper_range_tolerance * (lim.upper - lim.lower)[g])
        self.validator.range_tolerance = range_tol
        # a gripper trained on commands switches open/closed within an action or two, and successive chunks
        # disagree on when (the proof's sixth run: 0.6-0.7 of the range between the RTC prefix and the rest of
        # a chunk, most of its rejections, each stopping the robot); the guard still rate-limits the gripper
        self.validator.step_checked = np.ones(self.dof, dtype=bool)
        if not cfg.gripper_step_check:
            self.validator.step_checked[g] = False

    def state_age(self, now: float) -> float:
        return math.inf if self.measured_stamp is None else now - self.measured_stamp

    def _state_fresh(self, now: float) -> bool:
        return self.state_age(now) <= self.cfg.state_timeout

    def _moving(self) -> bool:
        return self.state in (ExecState.FADE_IN, ExecState.RUNNING) or self.move is not None

    def _resync_at_rest(self, now: float) -> bool:
        """Before a fade-in or resume from rest: restart the command at the measured pose when the robot is not
        where the hold command is (moved by hand, sagged after a hardware stop, teach mode), so that the
        policy takes over from where the robot really is instead of yanking it back. True when it did."""
        if self.state not in (ExecState.IDLE, ExecState.HOLDING) or self.measured is None or self.traj is None:
            return False
        if (self.stop is not None and now < self.stop.end_time) or self.move is not None:
            return False  # still decelerating / moving: the robot follows the command
        p_cmd = self.traj.evaluate(now)[0]
        if self._still_settling(p_cmd):
            return False  # the robot is still catching up with the stop (servo lag): it is on its way to the command
        q = self._measured_if_far(p_cmd)
        if q is None:
            return False
        dev = np.abs(self.measured - p_cmd)
        j = int(np.argmax(dev / np.maximum(self._resync_tol, 1e-12)))
        log.warning("the measured pose is %.3f from the hold command at joint %s: restarting from the measured pose", dev[j], self.limits.names[j])
        self.resyncs += 1
        self.traj = HoldTrajectory(q)
        self.plan = None
        self.stop = None
        self.guard.reset(now, q)
        return True

    def _measured_if_far(self, p_cmd: np.ndarray) -> np.ndarray | None:
        """``p_cmd`` with the arm joints at the measured pose (within the limits) when some arm joint is
        further than ``resync_tolerance`` from it, else None. Grippers (tolerance inf) keep ``p_cmd``:
        one squeezing an object is never where it is commanded."""
        if not np.any(np.abs(self.measured - p_cmd) > self._resync_tol):
            return None
        arm = np.isfinite(self._resync_tol)
        return np.where(arm, np.clip(self.measured, self.limits.lower, self.limits.upper), p_cmd)

    def _still_settling(self, p_cmd: np.ndarray, window: float = 0.2) -> bool:
        """The measured arm joints are still closing in on the command ``p_cmd``: over the last ``window``
        s some joint's distance to it shrank by more than a fifth of ``resync_tolerance``.

        A servo trails its command (the simulated ones by up to 0.25 s): right after a stop the robot is
        still on its way to the hold command, and restarting the command at the measured pose then would
        make the command jump back to where the robot happens to be. A robot moved or sagging away from
        the command is not closing in, and is resynced."""
        if self.measured_stamp is None:
            return False
        old = next((q for t, q in self._measured_hist if t >= self.measured_stamp - window), None)
        if old is None:
            return False
        arm = np.isfinite(self._resync_tol)
        closing = np.abs(old - p_cmd) - np.abs(self.measured - p_cmd)
        return bool(np.any(closing[arm] > 0.2 * self.cfg.resync_tolerance))

    def move_to(self, now: float, target: np.ndarray, label: str, velocity_scale: float = 0.0) -> tuple[bool, str, float]:
        """~/move_to_pose: leave the policy and move to ``target`` (jerk-limited, ruckig); chunks wait until it ends."""
        if self.estop_latch.active:
            return False, "e-stop latched: call reset_estop first", 0.0
        if not self.enabled:
            return False, "the executor is disabled: enable it first (~/enable)", 0.0
        if self.traj is None or not self._state_fresh(now):
            return False, f"no joint state fresher than state_timeout ({self.cfg.state_timeout} s): not moving", 0.0
        scale = float(velocity_scale) if velocity_scale > 0 else self.cfg.move_velocity_scale
        if not (0 < scale <= 1):
            return False, f"velocity_scale must be in (0, 1], got {velocity_scale}", 0.0
        if not self._moving():
            self._resync_at_rest(now)
        p, v, a = self.traj.evaluate(now)
        a_max = self.limits.acceleration * self.cfg.limit_budget * scale
        try:
            move = PoseMove(now, p, v, a, np.clip(target, self.limits.lower, self.limits.upper), self.limits.velocity * scale,
                            a_max, a_max * self.cfg.move_jerk_factor, label)
        except ValueError as exc:
            return False, str(exc), 0.0
        self.plan = None
        self.stop = None
        self._suspended = None
        self._outstanding = None
        self.strategy.reset()
        self.move = move
        self.traj = move
        self.state = ExecState.HOLDING
        self.message = f"moving to {label} ({move.duration:.2f} s)"
        return True, self.message, move.duration

    # ------------------------------------------------------------------ inputs
    def on_measured_state(self, stamp: float, position: np.ndarray, now: float | None = None) -> str | None:
        """Take a joint state; returns why it was ignored (starting with ``STATE_AHEAD`` or ``STATE_OLD``),
        None when it was taken.

        A state stamped before the newest one taken (beyond ``clock_tolerance``: a driver clock that
        jumped back, a replayed message) or more than ``clock_jump`` ahead of ``now`` is ignored: the
        tracking monitor would compare it with the commands of another time and latch a stop, and a
        future stamp would make every later, correct state look out of order.
        """
        q = np.asarray(position, dtype=np.float64)
        if q.shape != (self.dof,) or not np.all(np.isfinite(q)):
            return None  # malformed: the transport rejects and counts these itself
        stamp = float(stamp)
        clock = now is not None and now > 0.0
        # ahead by a clock jump: a bad driver clock. Less is normal in simulation under load (this
        # process takes /clock later than the joint states stamped with it).
        if clock and stamp > now + self.cfg.clock_jump:
            self.states_ignored += 1
            return f"{STATE_AHEAD} by {stamp - now:.3f} s"
        if stamp < self._newest_state - self.cfg.clock_tolerance:
            self.states_ignored += 1
            return f"{STATE_OLD} by {self._newest_state - stamp:.3f} s"
        # a stamp somewhat ahead must not make the next correct states look old
        self._newest_state = max(self._newest_state, min(stamp, now) if clock else stamp)
        self.measured = q.copy()
        self.measured_stamp = float(stamp)
        self._measured_hist.append((self.measured_stamp, self.measured))
        why = self.tracking.update(float(stamp), q, self._cmd_hist, active=self._moving() and self.enabled)
        if why is not None:
            log.error("%s: latching a stop", why)
            self.estop(self.last.stamp if self.last is not None else float(stamp), why)
        return None

    def set_enabled(self, now: float, enabled: bool, reason: str = "") -> None:
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if not enabled:
            self.move = None
            self._begin_stop(now, ExecState.HOLDING, reason or "disabled")
        else:
            self.enabled_once = True
            self._resync_at_rest(now)
            if self.state == ExecState.HOLDING:
                self.message = "enabled: waiting for a chunk"

    def on_chunk(self, chunk: ActionChunk, now: float) -> ChunkResult:
        if self.state == ExecState.ESTOP:
            self.chunks_ignored += 1
            return ChunkResult(False, "e-stop latched: chunk ignored")
        if not self.enabled:
            self.chunks_ignored += 1
            return ChunkResult(False, "executor disabled: chunk ignored")
        if self.traj is None:
            self.chunks_ignored += 1
            return ChunkResult(False, "no measured joint state yet: chunk ignored")
        contract = self.contract
        if contract is None:
            self.chunks_ignored += 1
            return ChunkResult(False, self.contract_error or "the policy's chunk contract (PolicyStatus chunk_length, step_period) is not known yet: chunk ignored")
        if self.move is not None:
            self.chunks_ignored += 1
            return ChunkResult(False, f"{self.message}: chunk ignored")
        if not self._state_fresh(now):
            self.chunks_ignored += 1
            return ChunkResult(False, f"joint states are {self.state_age(now):.2f} s old (state_timeout {self.cfg.state_timeout} s): chunk ignored")
        # A policy that honours the prefix returns the first min(expected delay, prefix) actions verbatim
        # (Motus): the step from them to the model's first action is where two plans meet, not a jump of
        # the model (the seventh proof run: 17 of its 23 rejected RTC chunks stepped there, each stopping
        # the robot). A chunk computed from an older request may shift this by an action; the model's
        # own steps from there on are checked.
        frozen = min(self._asked_delay, int(chunk.prefix_length)) if chunk.prefix_length > 0 else 0
        why = self.validator.check(chunk, frozen=frozen)
        if why is None:
            if chunk.num_steps != contract.chunk_length:
                why = f"chunk has {chunk.num_steps} actions, the policy declared chunk_length {contract.chunk_length}"
            elif abs(chunk.step_period - contract.step_period) > 0.01 * contract.step_period:
                why = f"chunk step_period {chunk.step_period:.4f} s differs from the declared {contract.step_period:.4f} s"
            elif chunk.stamp > now + self.cfg.clock_tolerance:
                why = f"chunk stamped {chunk.stamp - now:.3f} s in the future (clock mismatch between policy and executor?)"
            elif chunk.stamp < self._last_chunk_stamp - 1e-9:
                why = "chunk is older than the one being executed (out of order)"
        cp = None
        if why is None:
            actions, clamped = self.validator.clip(chunk.actions)
            cp = ChunkPlan(times=chunk.times(), actions=actions, stamp=chunk.stamp, step_period=chunk.step_period,
                           prefix_length=int(chunk.prefix_length), chunk_id=int(chunk.info.get("chunk_id", 0)) if chunk.info else 0)
            why = self.strategy.reject_reason(cp, now, self.dt)
        if why is not None:
            return self.reject(now, why)
        self.clamped_values += clamped
        delay = self.measured_delay(chunk.stamp, now)
        self.delays.add(delay)
        if self.strategy.uses_delay_budget and delay > contract.max_delay:
            self.late_chunks += 1
            log.warning("chunk arrived %d actions after its observation, beyond max_delay %d: its first actions were already "
                        "due (raise max_delay / lower the execution horizon, or speed up inference)", delay, contract.max_delay)
        self._resync_at_rest(now)  # a fade-in starts where the robot is
        p_now, v_now, a_now = self._commanded(now)
        try:
            times, positions = self.strategy.merge(cp, now, self.plan, delay, p_now)
            if times.shape[0] < 2:
                raise ValueError("fewer than two actions left after merging")
            positions, passes = smooth_to_limits(times, np.clip(positions, self.limits.lower, self.limits.upper), self._a_plan)
            plan = WaypointSpline(times, positions, max_extrapolation=self.dt)
        except ValueError as exc:
            return self.reject(now, f"chunk could not be merged: {exc}")
        self.chunks_smoothed += passes > 0
        self._suspended = None
        self.starved = False
        self._switch_to(plan, now, p_now, v_now, a_now)
        self._last_chunk_stamp = chunk.stamp
        # every strategy keeps the chunk's spacing and its last action, so the last planned time minus the
        # chunk's own last time is the shift its actions run with (the visualizer greys executed actions by it)
        self.active_chunk = (cp.chunk_id, float(times[-1] - cp.times[-1]))
        if self._outstanding is not None:  # request -> arrival on the robot's clock (moving or not)
            self._answer_time = now - self._outstanding
        self._outstanding = None
        self.chunks_received += 1
        self.boundaries.append(now)
        return ChunkResult(True, measured_delay=delay)

    def reject(self, now: float, why: str) -> ChunkResult:
        """Count and log a rejected chunk; stop the robot if configured so."""
        self.chunks_rejected += 1
        self.rejections.append(why)
        log.warning("rejected chunk: %s", why)
        if self.cfg.stop_on_rejected_chunk and self.state in (ExecState.FADE_IN, ExecState.RUNNING):
            self._begin_stop(now, ExecState.HOLDING, f"stopped: rejected chunk ({why})")
        return ChunkResult(False, why)

    def _switch_to(self, plan: WaypointSpline, now: float, p: np.ndarray, v: np.ndarray, a: np.ndarray) -> None:
        old = self.traj
        lim = self.limits
        at_rest = self.state in (ExecState.IDLE, ExecState.HOLDING) or (self.stop is not None and now >= self.stop.end_time)
        # A hand-over still running goes on decaying on its own schedule; the new window takes what is
        # left between the command and (new plan + those offsets): see TransitionTrajectory.
        target = old.carrying(plan, now) if isinstance(old, TransitionTrajectory) and not at_rest else plan
        pn, vn, _ = target.evaluate(now)
        t_min = self.cfg.fade_in_time if self.state in (ExecState.IDLE, ExecState.HOLDING) else self.cfg.blend_time
        T = blend_duration(pn - p, vn - v, v, a, lim.velocity, lim.acceleration, t_min, self.cfg.max_blend_time, self.cfg.limit_budget)
        # While moving, a hand-over may not outlast a few blend windows (nor the old plan): the robot
        # must follow the new chunk, and whatever the window cannot absorb the guard does (counted).
        t_cap = self.cfg.max_blend_time if at_rest else min(self.cfg.max_blend_time, 2.5 * self.cfg.blend_time)
        if self.plan is not None and not at_rest:
            t_cap = max(self.cfg.blend_time, min(t_cap, self.plan.end_time - now))
        blend = self._fit_blend((p, v, a), target, now, min(T, t_cap), t_cap, fade=at_rest)
        T = blend.duration
        if not (self.plan is not None and self.stop is None and self.state in (ExecState.FADE_IN, ExecState.RUNNING)):
            self._exec_since = now  # executing from now on (was holding / at rest)
        self.switches.append((now, old, T))
        self.traj = blend
        self.plan = plan
        self.stop = None
        if self.state in (ExecState.IDLE, ExecState.HOLDING) or at_rest and not self.strategy.rests_at_plan_end:
            self.state = ExecState.FADE_IN
            self._fade_until = now + T
            self.message = f"fading in over {T:.2f} s"
        elif self.state != ExecState.FADE_IN:
            self.state = ExecState.RUNNING
            self.message = "running"

    def _fit_blend(self, state, new, t0: float, T: float, t_max: float, samples: int = 24, fade: bool = False) -> TransitionTrajectory:
        """The shortest transition from ``T`` on whose sampled velocity/acceleration stay within the budget.

        ``blend_duration`` sizes the window from the offsets alone; the motion of the new trajectory
        during the window adds to it, so the candidate is checked and lengthened when needed.
        """
        lim = self.limits
        v_lim = lim.velocity * self.cfg.limit_budget
        a_lim = lim.acceleration * self.cfg.limit_budget
        p0, v0, a0 = state  # the commanded state at t0
        # a motion that already exceeds the budget (e.g. an infeasible plan) may keep its own level
        v_lim = np.maximum(v_lim, np.abs(v0))
        a_lim = np.maximum(a_lim, np.abs(a0))
        blend = self._transition(new, t0, T, p0, v0, a0, fade)
        while T < t_max:
            ok = True
            for u in np.linspace(0.0, 1.0, samples)[1:]:
                _, v, a = blend.evaluate(t0 + u * T)
                _, vn, an = new.evaluate(t0 + u * T)
                if np.any(np.abs(v) > np.maximum(v_lim, np.abs(vn)) * 1.001) or np.any(np.abs(a) > np.maximum(a_lim, np.abs(an)) * 1.001):
                    ok = False
                    break
            if ok:
                break
            T = min(T * 1.3, t_max)
            blend = self._transition(new, t0, T, p0, v0, a0, fade)
        return blend

    def _transition(self, target, t0: float, T: float, p: np.ndarray, v: np.ndarray, a: np.ndarray,
                    fade: bool = False) -> TransitionTrajectory:
        """From the commanded state (p, v, a) onto ``target`` within ``T``; the velocity and acceleration
        offsets decay over their own windows, at least ``blend_time`` (see ``TransitionTrajectory``): a
        hand-over of ``blend_time`` is one window as before, a longer one does not swing out. ``fade``:
        from rest, a convex blend of the pose and the plan (``TransitionTrajectory.fade_in``)."""
        if fade:
            v_win, a_win = offset_windows(v, self.limits.acceleration, T, self.cfg.blend_time, self.cfg.limit_budget)
            return TransitionTrajectory.fade_in(target, t0, T, p, v, a, v_window=v_win, a_window=a_win)
        _, vb, _ = target.evaluate(t0)
        v_win, a_win = offset_windows(np.asarray(v) - vb, self.limits.acceleration, T, self.cfg.blend_time, self.cfg.limit_budget)
        return TransitionTrajectory.from_state(target, t0, T, p, v, a, v_window=v_win, a_window=a_win)

    def policy_lost(self, now: float, reason: str = "policy lost") -> None:
        """The policy stopped (process gone, liveliness lost): stop now instead of finishing the plan.

        The plan is kept aside: if the policy turns out to be alive after all (a liveliness lapse
        on an overloaded machine, see ``policy_alive``) the robot blends back into it.
        """
        if self.state in (ExecState.FADE_IN, ExecState.RUNNING):
            self.policy_lost_stops += 1
            self._suspended = self.plan
            self._begin_stop(now, ExecState.HOLDING, f"holding: {reason}")
        self._outstanding = None

    def policy_alive(self, now: float) -> bool:
        """The policy is back: resume the plan suspended by ``policy_lost`` if enough of it is left.

        Returns True when it resumed. The hand-over is the usual C2 blend from the decelerating stop.
        """
        plan, self._suspended = self._suspended, None
        if plan is None or self.state != ExecState.HOLDING or self.estop_latch.active or not self.enabled or self.traj is None:
            return False
        if not self._state_fresh(now):
            return False
        self._resync_at_rest(now)
        p, v, a = self._commanded(now)
        if now + stop_profile_duration(v, a, self._a_plan) + self.cfg.blend_time + self.cfg.stop_margin >= plan.end_time:
            return False  # too little of it left: wait for a fresh chunk instead
        self.state = ExecState.RUNNING
        self._switch_to(plan, now, p, v, a)
        self.message = "policy alive again: resumed its plan"
        return True

    def estop(self, now: float, reason: str = "e-stop requested") -> bool:
        first = self.estop_latch.trigger(reason)
        self._suspended = None
        self.move = None
        if self.traj is not None:
            self._begin_stop(now, ExecState.ESTOP, f"E-STOP latched: {reason}")
        self.state = ExecState.ESTOP
        self.message = f"E-STOP latched: {reason} (call reset_estop to resume)"
        self.strategy.reset()
        self._outstanding = None
        return first

    def reset_estop(self, now: float) -> bool:
        if not self.estop_latch.active:
            return False
        self.estop_latch.reset()
        # Keep commanding where the stop ended (or finish the stop first): the command stream stays
        # continuous; the next chunk fades in from there.
        self.state = ExecState.HOLDING
        self.message = "e-stop reset: waiting for a chunk (will fade in) or ~/move_to_pose"
        self.delays.reset()
        self._resync_at_rest(now)
        return True

    def _clock_jumped(self, now: float) -> None:
        """The robot clock went back (sim restart, bag loop): forget every plan and
        time-based record, publish nothing until a joint state from after the jump, then hold there."""
        before = self.last.stamp if self.last is not None else now
        log.warning("robot clock jumped from %.3f s to %.3f s: holding at the next measured pose", before, now)
        self.clock_jumps += 1
        self.clock_jump_times.append((before, now))
        self.traj = None
        self.plan = None
        self.stop = None
        self.last = None
        self._sent = None  # in the old time base
        self.strategy.reset()
        self.delays.reset()
        self._exec_hist_t.clear()
        self._exec_hist_v.clear()
        self._cmd_hist.clear()
        self._outstanding = None
        self._last_chunk_stamp = -math.inf
        self.active_chunk = (0, 0.0)
        self._fresh_after = now
        self._newest_state = -math.inf  # the new era's states are older than the old era's
        self.guard.forget()
        if self.state != ExecState.ESTOP:
            self.state = ExecState.HOLDING
        self.message = f"clock jumped from {before:.3f} s to {now:.3f} s: holding, waiting for a fresh joint state"

    def _stalled(self, now: float) -> None:
        """More than ``clock_jump`` of robot time passed since the last tick: the command loop was
        starved, or the simulator's clock ran ahead of it (sim time delivered in a burst). The robot
        went on meanwhile with what it was last sent: the streamed trajectory (which ends at rest) or,
        for position streaming, the last position. The executor holds there; the policy takes over
        again with a fade-in; a latched e-stop keeps its frozen command.

        Handling every stall as a clock jump (hold at the measured pose) moved a latched e-stop's
        command by the tracking error under load (test_a_stalled_loop_keeps_a_latched_estop_frozen).
        But a robot measured after the stall further than ``resync_tolerance`` from that end (its
        servo still trailing, or it never got the trajectory) is held where it is measured: holding
        the told pose, the fade-in's resync restarted at the measured pose one tick later, a jump in
        the command stream (test_a_stall_holds_where_the_robot_is_when_it_is_far_from_the_command).
        """
        gap = now - self.last.stamp
        p, v = self._told_at(now)
        where = "where the last command sent ends"
        if (self.state != ExecState.ESTOP and self.measured is not None and self.measured_stamp is not None
                and self.last.stamp < self.measured_stamp and now - self.measured_stamp <= 0.1):
            q = self._measured_if_far(p)
            if q is not None:
                p, v = q, np.where(np.isfinite(self._resync_tol), 0.0, v)
                where = "at the measured pose (the robot is not where the last command sent ends)"
        self.stalls += 1
        self.stall_times.append((self.last.stamp, now))
        log.warning("command loop stalled for %.3f s of robot time: holding %s", gap, where)
        moving = self.state not in (ExecState.ESTOP, ExecState.IDLE, ExecState.HOLDING) or self.move is not None
        self.plan = None
        self.move = None
        self._recovery = None
        self._outstanding = None
        self.strategy.reset()
        self.delays.reset()
        if np.any(v != 0.0):
            self.stop = StopTrajectory(now, p, v, np.zeros_like(p), self._a_plan)
            self.traj = self.stop
        else:
            self.stop = None
            self.traj = HoldTrajectory(p)
        self.guard.reset(now, p, v)
        if self.state != ExecState.ESTOP and (moving or self.state == ExecState.HOLDING):
            self.state = ExecState.HOLDING
            self.message = f"holding: the command loop stalled for {gap:.2f} s (the policy fades in with its next chunk)"

    def _told_at(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(position, velocity) the robot was last told to have at ``now``: the last streamed trajectory
        (which ends at rest) if one was sent since the last command, else the last position, at rest."""
        last = self.last
        sent = self._sent
        if sent is None or not (last.stamp - 0.05 <= sent[0][0] <= now) or len(sent[0]) < 2:
            return last.position.copy(), np.zeros(self.dof)
        t, P, V = sent
        if now >= t[-1]:
            return P[-1].copy(), np.zeros(self.dof)
        i = min(max(int(np.searchsorted(t, now, side="right")) - 1, 0), len(t) - 2)
        w = (now - t[i]) / max(t[i + 1] - t[i], 1e-9)
        return (1 - w) * P[i] + w * P[i + 1], (1 - w) * V[i] + w * V[i + 1]

    # ------------------------------------------------------------------ stopping
    def _begin_stop(self, now: float, state: ExecState, message: str) -> None:
        if self.traj is None:
            self.state = state
            self.message = message
            return
        # C2 from what is commanded (the guard's output, within the limits)
        p, v, a = self._commanded(now)
        if self.stop is None or now >= self.stop.end_time or self.plan is not None:
            self.stop = StopTrajectory(now, p, v, a, self._a_plan)
            self.traj = self.stop
        self.plan = None
        self.state = state
        self.message = message
        self.strategy.reset()

    def _hold_here(self, now: float) -> None:
        if self.measured is not None:
            p = self.measured
        elif self.last is not None:
            p = self.last.position
        else:
            return
        p = np.clip(p, self.limits.lower, self.limits.upper)
        self.traj = HoldTrajectory(p)
        self.plan = None
        self.stop = None
        self.guard.reset(now, p)

    def _commanded(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(p, v, a) of what the robot is being commanded, carried from the last command to ``now``.

        Stops and hand-overs start here, not from the trajectory: while the guard holds the command back
        from a plan beyond the limits, the plan's own state is not where the robot goes (a stop from a
        plan's 5 rad/s, above the limit, ran ~2.5x further than the command needed:
        test_a_stop_brakes_from_what_was_commanded_not_from_the_plan).

        The last command's acceleration is carried for about one tick only and then fades out: after a
        stalled loop (84 ms on a loaded machine) a constant acceleration carried the jitter of a noisy
        plan into 0.4 rad/s of velocity that no command had asked for, and the stop that followed
        travelled 0.07-0.45 rad (test_a_stalled_loop_does_not_invent_velocity).
        """
        last = self.last
        if last is None or not (0.0 <= now - last.stamp <= 0.1):
            return self.traj.evaluate(now)
        tick = self._usual_tick
        return carry_command(last.position, last.velocity, last.acceleration, now - last.stamp, 1.5 * tick, tick)

    # ------------------------------------------------------------------ the command tick
    def tick(self, now: float) -> Command | None:
        if self.last is not None and now - self.last.stamp > self.cfg.clock_jump:
            self._stalled(now)
        elif self.last is not None and now < self.last.stamp - self.cfg.clock_jump:
            self._clock_jumped(now)
        if self.traj is None:
            if self.measured is None or self.measured_stamp is None:
                return None
            if not (self._fresh_after - 1e-6 <= self.measured_stamp <= now + self.cfg.clock_jump):
                return None  # wait for a joint state from after the clock jump
            self._hold_here(now)
            if self.state not in (ExecState.HOLDING, ExecState.ESTOP):
                self.state = ExecState.IDLE
                self.message = "holding the measured pose: waiting for the first chunk"
        executing = self.plan is not None and self.stop is None and self.state in (ExecState.FADE_IN, ExecState.RUNNING)
        if self.last is not None and now > self.last.stamp:
            self._tick_gaps.append(now - self.last.stamp)
            self._gaps_since_median += 1
            if self._gaps_since_median >= 20 or len(self._tick_gaps) < 20:
                self._usual_tick = min(max(float(np.median(self._tick_gaps)), 0.001), 0.02)
                self._gaps_since_median = 0
        if self.last is not None and executing:
            self._exec_time += max(0.0, now - max(self.last.stamp, self._exec_since))
        self._exec_hist_t.append(now)
        self._exec_hist_v.append(self._exec_time)
        if self.state == ExecState.FADE_IN and now >= self._fade_until:
            self.state = ExecState.RUNNING
            self.message = "running"
        if self.move is not None and now >= self.move.end_time:
            self.traj, self.move = HoldTrajectory(self.move.target), None
            self.message = "at the requested pose: holding (the policy fades in with its next chunk)"
        if (executing or self.move is not None) and not self._state_fresh(now):
            self.move = None
            self._begin_stop(now, ExecState.HOLDING, f"holding: joint states are {self.state_age(now):.2f} s old (state_timeout {self.cfg.state_timeout} s)")
            executing = False
        if executing:
            self._watchdog(now)
        if isinstance(self.traj, TransitionTrajectory):
            self.traj = self.traj.settled(now)
        p, v, a = self.traj.evaluate(now)
        pc, vc, ac, hit = self.guard.apply(now, p, v, a)
        if hit:
            self._reanchor(now, pc, vc, ac)
        self.last = Command(now, pc, vc, ac, self.state, hit)
        self._cmd_hist.append((now, pc))
        return self.last

    def _watchdog(self, now: float) -> None:
        plan = self.plan
        assert plan is not None
        remaining = plan.end_time - now
        if remaining > self.cfg.max_blend_time + 1.0:
            return
        p, v, a = self._commanded(now)
        T = stop_profile_duration(v, a, self._a_plan)
        # the next tick may come late (a loaded machine, sim time in bursts): keep the largest recent gap in hand
        late = min(max(self._tick_gaps), self.cfg.watchdog_late_tick) if self._tick_gaps else 0.0
        if now + T + self.cfg.stop_margin + late < plan.end_time:
            return
        if self.strategy.rests_at_plan_end:
            # the planned end of a chunk (sync): come to rest and ask for the next one
            self.stop = StopTrajectory(now, p, v, a, self._a_plan)
            self.traj = self.stop
            self.plan = None
            self.message = "chunk executed: waiting for the next one"
            return
        self.watchdog_stops += 1
        self.starved = True
        self._begin_stop(now, ExecState.HOLDING, "holding: no fresh chunk before the committed actions ran out")

    def _reanchor(self, now: float, p: np.ndarray, v: np.ndarray, a: np.ndarray) -> None:
        """The guard changed the command: plan again from what was really sent.

        At most once per recovery window: while the last recovery transition runs, the guard tracks it
        (along its braking curve, which cannot overshoot). Re-planning on every clamped tick restarts
        the quintic each time, and a quintic's first tick just carries the present velocity on: a
        plan faster than the limits then made the command coast away from it to the joint limit.
        A chunk arriving within the window carries the recovery on (it is still running): with chunks
        every ~35 ms (temporal ensembling) a window that ended at every chunk re-planned as often.
        """
        if self.plan is not None and self.stop is None:
            running = self.traj is self._recovery or (isinstance(self.traj, TransitionTrajectory) and self._recovery is not None
                                                     and self.traj.carries(self._recovery))
            if now < self._recovery_until and running:
                return
            # the offsets still decaying go on; the recovery takes what the guard left between them and the command
            target = self.traj.carrying(self.plan, now) if isinstance(self.traj, TransitionTrajectory) and self.traj.base is self.plan else self.plan
            pn, vn, _ = target.evaluate(now)
            T = blend_duration(pn - p, vn - v, v, a, self.limits.velocity, self.limits.acceleration,
                               self.cfg.blend_time, min(self.cfg.max_blend_time, 2.5 * self.cfg.blend_time), self.cfg.limit_budget)
            self.traj = self._recovery = self._transition(target, now, T, p, v, a)
            self._recovery_until = now + T
        elif not (self.stop is not None and self.traj is self.stop and now < self._recovery_until):
            self.stop = StopTrajectory(now, p, v, a, self._a_plan)
            self.traj = self.stop
            self._recovery_until = self.stop.end_time

    # ------------------------------------------------------------------ delay and requests
    def executed_time_at(self, t: float) -> float | None:
        if not self._exec_hist_t or t < self._exec_hist_t[0]:
            return None
        i = bisect.bisect_right(self._exec_hist_t, t) - 1
        return self._exec_hist_v[max(i, 0)]

    def measured_delay(self, obs_stamp: float, now: float) -> int:
        """Actions executed between the observation and now (rounded up)."""
        e0 = self.executed_time_at(obs_stamp)
        executed = (now - obs_stamp) if e0 is None else (self._exec_time - e0)
        return max(0, int(math.ceil(executed / self.dt - 1e-6)))

    def expected_delay(self) -> int:
        return self.delays.expected()

    def wants_request(self, now: float) -> bool:
        if self.state == ExecState.ESTOP or not self.enabled or self.traj is None or self.contract is None or self.move is not None:
            return False
        if self._outstanding is not None and now - self._outstanding < self.cfg.request_timeout:
            return False
        stopping = self.stop is not None and now < self.stop.end_time
        executed = (self._exec_time - self._exec_at_request) / self.dt
        return self.strategy.wants_request(has_plan=self.plan is not None, stopping=stopping, executed=executed,
                                           horizon=self.contract.execution_horizon, running_out=self._running_out(now))

    def _running_out(self, now: float) -> bool:
        """The plan ends before a chunk requested now could take over (expected delay + the time to stop).

        Happens after a start from rest (the first chunk's actions up to its arrival passed while the
        robot waited) and with short chunks; requesting then, not only every s actions, avoids a stop.
        """
        plan = self.plan
        if plan is None or self.traj is None:
            return False
        remaining = plan.end_time - now
        if remaining > self.cfg.max_blend_time + 1.0:
            return False
        _, v, a = self.traj.evaluate(now)
        # the delay in actions counts only executed time; right after a start from rest the time a request
        # takes is the better guess
        delay = max(self.expected_delay() * self.dt, self._answer_time)
        reserve = delay + self.dt + stop_profile_duration(v, a, self._a_plan) + self.cfg.stop_margin
        return remaining <= reserve

    def make_request(self, now: float) -> PlanRequest:
        """Register a request and return the plan to send with it."""
        self._request_id += 1
        self._outstanding = now
        self._exec_at_request = self._exec_time
        expected = self.expected_delay()
        if self.contract is not None and self.strategy.uses_delay_budget:
            expected = min(expected, self.contract.max_delay)  # the policy cannot freeze more than the budget
        self._asked_delay = int(expected)
        return PlanRequest(self._request_id, *self.plan_snapshot(now), expected_delay=expected, strategy=self.cfg.strategy)

    def plan_snapshot(self, now: float) -> tuple[float, float, np.ndarray]:
        """(stamp, step, positions): executed history then the committed future on a step grid."""
        if self.plan is None or self.traj is None:
            return now, self.dt, np.zeros((0, self.dof))
        start = now - (self.cfg.plan_lookback + 1) * self.dt
        end = self.plan.end_time
        n = int(math.floor((end - start) / self.dt + 1e-9))
        times = start + self.dt * np.arange(1, n + 1)
        out = np.empty((n, self.dof))
        hist_t = np.fromiter((h[0] for h in self._cmd_hist), dtype=np.float64, count=len(self._cmd_hist))
        for i, t in enumerate(times):
            if t <= now and hist_t.size and t >= hist_t[0]:
                j = int(np.searchsorted(hist_t, t))
                j = min(max(j, 1), hist_t.size - 1)
                t0, p0 = self._cmd_hist[j - 1]
                t1, p1 = self._cmd_hist[j]
                w = 0.0 if t1 <= t0 else min(max((t - t0) / (t1 - t0), 0.0), 1.0)
                out[i] = (1 - w) * p0 + w * p1
            else:
                out[i] = self.traj.evaluate(float(t))[0]
        return start, self.dt, out

    # ------------------------------------------------------------------ output helpers
    def preview(self, now: float, horizon: float, spacing: float, lead: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Points for a streamed ``JointTrajectory``: the trajectory over ``horizon`` then a stop.

        The tail decelerates to rest within the limits, so if the executor dies the controller
        finishes the last message at rest instead of stopping dead or extrapolating. With ``lead`` > 0
        the first point is ``lead`` s after ``now``: a message that takes less than that to arrive
        holds no point in the past (a joint_trajectory_controller skips those, or rejects the whole
        trajectory when every point is past); the controller interpolates from its state to it.
        """
        if self.traj is None or self.last is None:
            raise RuntimeError("no command yet")
        n = max(1, int(round(horizon / spacing)))
        if lead > 0:
            now = now + lead
            times, pts = [now], [self.traj.evaluate(now)]
        else:
            times = [now]
            pts = [(self.last.position, self.last.velocity, self.last.acceleration)]
        for i in range(1, n + 1):
            t = now + spacing * i
            p, v, a = self.traj.evaluate(t)
            if self.plan is not None and self.stop is None and t + stop_profile_duration(v, a, self._a_plan) + self.cfg.stop_margin >= self.plan.end_time:
                break  # the plan ends soon: the watchdog will stop here, so must the preview
            times.append(t)
            pts.append((p, v, a))
        # The controller executes these points between two messages: they pass the same per-tick guard as
        # the command (a copy, from the last command on), so a plan beyond the limits, or the gap between the
        # trajectory and the command while the guard tracks a recovery, never reaches the robot unguarded.
        guard = self.guard.copy()
        first = 0 if lead > 0 else 1
        for i in range(first, len(pts)):
            p, v, _, _ = guard.apply(times[i], *pts[i])
            pts[i] = (p, v, guard.a_sent.copy())
        t_end = times[-1]
        p, v, a = pts[-1]
        if np.any(np.abs(v) > 1e-9) or np.any(np.abs(a) > 1e-9):
            stop = StopTrajectory(t_end, p, v, a, self._a_plan)
            k = max(1, int(math.ceil(stop.duration / spacing)))
            for i in range(1, k + 1):
                t = t_end + min(i * spacing, stop.duration)
                times.append(t)
                pts.append(stop.evaluate(t))
        P, V, A = (np.stack(x) for x in zip(*pts))
        P = np.clip(P, self.limits.lower, self.limits.upper)
        times = np.asarray(times)
        self._sent = (times, P, V)
        return times, P, V, A

    def status(self) -> dict:
        c = self.contract
        committed = 0
        if self.plan is not None and self.last is not None:
            committed = max(0, int(math.floor((self.plan.end_time - self.last.stamp) / self.dt)))
        return {
            "state": int(self.state),
            "state_name": self.state.name,
            "strategy": self.cfg.strategy,
            "chunks_received": self.chunks_received,
            "chunks_rejected": self.chunks_rejected,
            "chunks_smoothed": self.chunks_smoothed,
            "chunks_ignored": self.chunks_ignored,
            "limit_hits": self.guard.hits,
            "limit_hits_by_kind": dict(self.guard.hits_by_kind),
            "clamped_values": self.clamped_values,
            "watchdog_stops": self.watchdog_stops,
            "clock_jumps": self.clock_jumps,
            "stalls": self.stalls,
            "states_ignored": self.states_ignored,
            "committed_actions": committed,
            "active_chunk_id": self.active_chunk[0],
            "active_chunk_time_offset": self.active_chunk[1],
            "measured_delay": self.delays.last or 0,
            "expected_delay": self.expected_delay(),
            "delay_stats": self.delays.stats(),
            "estop": self.estop_latch.active,
            "chunk_length": c.chunk_length if c else 0,
            "execution_horizon": c.execution_horizon if c else 0,
            "max_delay": c.max_delay if c else 0,
            "step_period": c.step_period if c else 0.0,
            "contract_error": self.contract_error,
            "late_chunks": self.late_chunks,
            "enabled": self.enabled,
            "starved": self.starved,
            "policy_lost_stops": self.policy_lost_stops,
            "state_age": self.state_age(self.last.stamp) if self.last is not None else math.inf,
            "tracking_error_max": self.tracking.error_max,
            "tracking_error_joint": self.tracking.error_joint,
            "tracking_trips": self.tracking.trips,
            "resyncs": self.resyncs,
            "moving_to": self.move.label if self.move is not None else "",
            "message": self.message,
        }
