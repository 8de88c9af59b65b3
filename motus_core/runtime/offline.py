"""Closed loop without ROS: a policy, the chunk executor and an ideal robot on a simulated clock.

Used by the benchmark (same replayed chunks, injected inference delay, every strategy) and by the
unit tests of the executor. The robot tracks the command perfectly (measured = last command); the
policy is called when the executor asks, through the same request building as the policy node
(``motus_core.runtime.inference``: freshest observation, prefix resampled from the executor's plan), and its chunk is delivered ``inference_delay`` seconds
later.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from motus_core.policy.base import Observation, Policy
from motus_core.runtime.contract import ContractError
from motus_core.runtime.executor import ChunkExecutor
from motus_core.runtime.inference import build_request, run_inference


@dataclass
class OfflineRun:
    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray
    states: np.ndarray
    boundaries: list[float]
    delays: list[int]
    requests: list[dict] = field(default_factory=list)
    status: dict = field(default_factory=dict)


def run_closed_loop(policy: Policy, executor: ChunkExecutor, *, duration: float, initial_state: np.ndarray,
                    inference_delay: float | Callable[[int], float] = 0.0, command_rate: float = 200.0,
                    instruction: str = "", images: dict | Callable[[float], dict] | None = None,
                    events: dict[float, Callable[[ChunkExecutor, float], None]] | None = None,
                    clock: Callable[[int], float] | None = None,
                    measure: Callable[[np.ndarray], np.ndarray] | None = None,
                    until: Callable[[float], bool] | None = None) -> OfflineRun:
    """Run ``duration`` seconds; ``events`` maps times to callbacks (e-stop, policy loss, ...).

    ``clock(i)`` gives the robot time of tick ``i`` (default ``i / command_rate``): a coarse or
    irregular clock (sim time published at 250 Hz, a simulator slower than real time) is reproduced
    by returning repeated or uneven values. ``measure(command)`` is the joint state the robot reports
    for a command (default: exactly the command; a tracking error is e.g. ``lambda q: q + 0.002``); a
    simulated robot steps its physics there. ``images`` is a fixed dict or ``images(now)``, the camera
    frames an observation taken at ``now`` carries. ``until(now)`` true ends the run early (task done).
    """
    if executor.contract is None:  # the policy declares its chunks when loaded (the node: via PolicyStatus)
        error = executor.set_contract(policy.chunk_length, policy.step_period)
        if error:
            raise ContractError(error)
    dt = 1.0 / command_rate
    n = int(round(duration * command_rate))
    if clock is None:
        clock = lambda i: i * dt  # noqa: E731
    measured = np.asarray(initial_state, dtype=np.float64).copy()
    pending: tuple[float, object] | None = None
    pending_events = sorted((events or {}).items())
    T, P, V, A, S, delays, requests = [], [], [], [], [], [], []
    prev = -np.inf
    for i in range(n):
        now = clock(i)
        if now < prev:
            pending = None  # the clock went back: an answer in flight belongs to the old time base
        prev = now
        while pending_events and pending_events[0][0] <= now + 1e-12:
            _, fn = pending_events.pop(0)
            fn(executor, now)
        executor.on_measured_state(now, measured)
        if pending is not None and now >= pending[0] - 1e-12:
            res = executor.on_chunk(pending[1], now)
            if res.accepted:
                delays.append(res.measured_delay)
            pending = None
        cmd = executor.tick(now)
        if cmd is None:
            continue
        measured = cmd.position.copy() if measure is None else np.asarray(measure(cmd.position), np.float64)
        T.append(now); P.append(cmd.position); V.append(cmd.velocity); A.append(cmd.acceleration); S.append(int(cmd.state))
        if pending is None and executor.wants_request(now):
            req = executor.make_request(now)
            frames = images(now) if callable(images) else (images or {})
            obs = Observation(images=frames, state=measured.copy(), stamp=now)
            request = build_request(policy, obs, req, instruction=instruction)  # as the policy node builds it
            chunk = run_inference(policy, request, executor.dof).chunk
            delay = inference_delay(len(requests)) if callable(inference_delay) else float(inference_delay)
            prefix = request.prefix
            requests.append({"time": now, "expected_delay": req.expected_delay, "prefix": 0 if prefix is None else int(prefix.shape[0])})
            pending = (now + delay, chunk)
        if until is not None and until(now):
            break
    return OfflineRun(np.asarray(T), np.asarray(P), np.asarray(V), np.asarray(A), np.asarray(S), list(executor.boundaries), delays, requests, executor.status())


def synthetic_motion(profile, duration: float = 20.0, rate: float | None = None, seed: int = 0,
                     amplitude: float = 0.3, rest: float = 1.0, ramp: float = 2.0) -> np.ndarray:
    """A smooth [T, dof] joint trajectory around the profile's home pose (benchmarks, tests, demos).

    Each arm joint oscillates with its own frequency (0.2-0.5 Hz) and phase, the grippers open and
    close; it starts at rest (``rest`` s at home, then a ``ramp`` s fade-in), like a recorded
    demonstration, and stays inside the profile's position limits.
    """
    from motus_core.runtime.trajectory import smoothstep

    rate = rate or profile.action_rate_hz
    t = np.arange(0.0, duration, 1.0 / rate)
    rng = np.random.default_rng(seed)
    dof = profile.dof
    phase = rng.uniform(0, 2 * np.pi, dof)
    freq = rng.uniform(0.2, 0.5, dof)
    env = np.array([smoothstep((x - rest) / ramp)[0] for x in t])[:, None]
    home = np.asarray(profile.home, dtype=np.float64)
    lower = np.asarray(profile.position_lower)
    upper = np.asarray(profile.position_upper)
    span = upper - lower
    room = np.minimum(home - lower, upper - home) - 0.05 * span  # stay clear of the limits: no clipping kinks
    amp = np.clip(np.minimum(amplitude, room / 2.0), 0.0, None)
    motion = amp * (np.sin(2 * np.pi * freq * (t[:, None] - rest) + phase) - np.sin(phase))
    traj = home + env * motion
    for g in profile.gripper_indices:
        mid = 0.5 * (lower[g] + upper[g])
        traj[:, g] = home[g] + env[:, 0] * ((mid - home[g]) + 0.35 * span[g] * np.sin(2 * np.pi * freq[g] * (t - rest)))
    margin = 0.02 * span
    return np.clip(traj, lower + margin, upper - margin)
