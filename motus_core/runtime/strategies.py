"""Chunk stitching strategies: how a newly arrived chunk becomes the plan the robot follows.

Every strategy turns (the chunk, the plan being executed, the measured delay) into the new plan's
waypoints (absolute times on the robot's clock, joint positions). The executor then switches the
command to the new plan with a C2 transition (``trajectory.TransitionTrajectory``), so no strategy can make
the command jump; what differs is how consistent consecutive plans are, i.e. how much the blend has
to absorb, and whether the robot stops between chunks.

* ``sync`` - synchronous execution (openpi ``ActionChunkBroker``, Motus' RoboTwin loop): execute the
  whole chunk, come to rest, ask for the next one and wait. The chunk is re-anchored at its arrival
  (the robot did not move while the model ran, so its first action follows the current pose).
* ``temporal_ensemble`` - ACT: every future step is the weighted average of all chunks that
  predicted it, weights ``exp(-k i)`` with ``i = 0`` for the oldest prediction (k = 0.01 in ACT).
  One addition: a chunk's weight fades to 0 over its last ``taper`` actions, so the average does
  not step where an older chunk ends (ACT has that step; it is a jerk spike in the middle of a plan).
* ``rtc`` - real-time chunking (Black, Galliker, Levine 2025): while the next chunk is computed the
  robot keeps executing the committed plan; the request carries that plan (the prefix) and the
  expected delay so a flow policy inpaints a continuation (``motus_core.flow.guidance``). On arrival
  the ``d`` actions consumed during inference are dropped (d is measured, see ``DelayTracker``).
  If the policy could not honour the prefix (``prefix_length == 0``), the executor applies the same
  soft mask itself: ``W * old_plan + (1 - W) * chunk`` with RTC's exponentially decaying weights.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from motus_core.flow.guidance import prefix_weights
from motus_core.runtime.trajectory import WaypointSpline

STRATEGIES = ("sync", "temporal_ensemble", "rtc")


@dataclass
class ChunkPlan:
    """A chunk's actions on absolute times (after validation and clamping)."""

    times: np.ndarray  # (K,) absolute target times
    actions: np.ndarray  # (K, dof)
    stamp: float  # observation stamp
    step_period: float
    prefix_length: int = 0
    chunk_id: int = 0

    @property
    def end_time(self) -> float:
        return float(self.times[-1])

    def spline(self) -> WaypointSpline:
        return WaypointSpline(self.times, self.actions, max_extrapolation=self.step_period)


class DelayTracker:
    """Windowed statistics of the measured inference delay d (in actions).

    The first measurement after a (re)start is kept out of the window: a cold start (CUDA context,
    compilation, cache misses) is much slower than steady state and would inflate d for the whole
    window (the LeRobot PR #4223/#4454 failure: a 21-action warm-up spike made the robot skip ahead).
    """

    def __init__(self, window: int = 20, quantile: float = 0.95, margin: int = 1, initial: int = 3, skip_first: int = 1):
        self.samples: deque[int] = deque(maxlen=max(1, int(window)))
        self.quantile = float(quantile)
        self.margin = int(margin)
        self.initial = int(initial)
        self.skip_first = int(skip_first)
        self._seen = 0
        self.last: int | None = None

    def add(self, d: int) -> None:
        self._seen += 1
        self.last = int(d)
        if self._seen > self.skip_first:
            self.samples.append(int(d))

    def reset(self) -> None:
        self.samples.clear()
        self._seen = 0
        self.last = None

    def expected(self) -> int:
        """Delay to plan for: the window's quantile plus a margin (the initial guess before data)."""
        if not self.samples:
            base = self.initial if self.last is None else self.last
            return int(base) + self.margin
        q = float(np.quantile(np.asarray(self.samples, dtype=np.float64), self.quantile, method="higher"))
        return int(math.ceil(q)) + self.margin

    def stats(self) -> dict:
        if not self.samples:
            return {"count": 0, "last": self.last}
        a = np.asarray(self.samples)
        return {"count": int(a.size), "last": self.last, "mean": float(a.mean()), "p95": float(np.quantile(a, 0.95)), "max": int(a.max())}


class Strategy:
    name = "base"

    def reset(self) -> None:
        """Forget chunks (after a stop / e-stop)."""

    def merge(self, chunk: ChunkPlan, now: float, old_plan: WaypointSpline | None, delay: int, current_position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def _future(times: np.ndarray, actions: np.ndarray, now: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Waypoints from one step before ``now`` on (the past one keeps the spline's shape at ``now``)."""
    keep = times > now - step
    return times[keep], actions[keep]


class SyncStrategy(Strategy):
    name = "sync"

    def merge(self, chunk, now, old_plan, delay, current_position):
        # Re-anchor: the robot waited at rest, so the chunk's first action is one step from now. The
        # executor's blend takes the robot from rest onto the chunk (an offset between the current pose
        # and the chunk's start is absorbed there, within the limits, not forced into one step).
        k = chunk.actions.shape[0]
        return now + chunk.step_period * np.arange(1, k + 1), chunk.actions.copy()


class TemporalEnsembleStrategy(Strategy):
    name = "temporal_ensemble"

    def __init__(self, decay: float = 0.01, max_chunks: int = 8, taper: int = 10):
        self.decay = float(decay)
        self.taper = int(taper)
        self.chunks: deque[tuple[ChunkPlan, WaypointSpline]] = deque(maxlen=max(1, int(max_chunks)))

    def reset(self) -> None:
        self.chunks.clear()

    def merge(self, chunk, now, old_plan, delay, current_position):
        # drop chunks that ended
        while self.chunks and self.chunks[0][0].end_time <= now:
            self.chunks.popleft()
        self.chunks.append((chunk, WaypointSpline(chunk.times, chunk.actions)))
        times, _ = _future(chunk.times, chunk.actions, now, chunk.step_period)
        out = np.zeros((times.shape[0], chunk.actions.shape[1]))
        n_chunks = len(self.chunks)
        weights = np.zeros((n_chunks, times.shape[0]))
        values = np.zeros((n_chunks, times.shape[0], chunk.actions.shape[1]))
        age = np.zeros(times.shape[0])
        for n, (c, spl) in enumerate(self.chunks):  # oldest first, as in ACT
            cover = (times >= c.times[0] - 1e-9) & (times <= c.times[-1] + 1e-9)
            if not cover.any():
                continue
            w = np.where(cover, np.exp(-self.decay * age), 0.0)
            if n != n_chunks - 1 and self.taper > 0:
                # Fade a chunk out over its last actions: otherwise the average steps by the chunks'
                # disagreement where one of them ends (a jerk spike in the middle of the plan).
                u = np.clip((c.times[-1] - times) / (self.taper * c.step_period), 0.0, 1.0)
                w = w * u * u * u * (10.0 + u * (-15.0 + 6.0 * u))
            age = age + cover
            weights[n] = w
            values[n, cover] = spl.positions_at(times[cover])
        wsum = weights.sum(axis=0)
        out = np.einsum("nt,ntj->tj", weights, values) / np.where(wsum > 0, wsum, 1.0)[:, None]
        # (the newest chunk covers every step of the plan with a positive weight, so wsum > 0)
        return times, out


class RTCStrategy(Strategy):
    name = "rtc"

    def __init__(self, schedule: str = "exp"):
        self.schedule = schedule

    def merge(self, chunk, now, old_plan, delay, current_position):
        actions = chunk.actions
        if old_plan is not None and chunk.prefix_length == 0:
            # The policy did not inpaint the prefix: apply RTC's soft mask here (the executor-side
            # fallback for policies without flow guidance, e.g. replay or a regression head).
            overlap = int(np.count_nonzero(chunk.times <= old_plan.end_time + 1e-9))
            if overlap > 0:
                w = prefix_weights(actions.shape[0], min(delay, overlap), overlap, self.schedule).numpy()[:, None]
                old = actions.copy()
                old[:overlap] = old_plan.positions_at(chunk.times[:overlap])
                actions = w * old + (1.0 - w) * actions
        return _future(chunk.times, actions, now, chunk.step_period)


def make_strategy(name: str, *, te_decay: float = 0.01, te_max_chunks: int = 8, te_taper: int = 10, rtc_schedule: str = "exp") -> Strategy:
    if name == "sync":
        return SyncStrategy()
    if name == "temporal_ensemble":
        return TemporalEnsembleStrategy(te_decay, te_max_chunks, te_taper)
    if name == "rtc":
        return RTCStrategy(rtc_schedule)
    raise ValueError(f"unknown chunk strategy {name!r}; choose one of {STRATEGIES}")
