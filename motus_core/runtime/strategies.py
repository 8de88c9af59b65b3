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
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from motus_core.flow.mask import SCHEDULES, prefix_weights
from motus_core.runtime.trajectory import WaypointSpline


# the rejections of a valid chunk that came too late (the causes a loaded machine produces)
CHUNK_STALE = "chunk is stale"
CHUNK_OVER = "chunk ends before it can be executed"
LATE_CHUNK_CAUSES = (CHUNK_STALE, CHUNK_OVER)


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


# ------------------------------------------------------------------------------------------ strategies
#: name -> strategy class; the one list of strategies (executor config choices, graph, demo, docs read it)
STRATEGIES: dict[str, type["Strategy"]] = {}


def register(cls: type["Strategy"]) -> type["Strategy"]:
    """Class decorator: a new strategy is one class with ``name``, a nested ``Config`` and this decorator."""
    if cls.name in STRATEGIES:
        raise ValueError(f"strategy {cls.name!r} registered twice")
    STRATEGIES[cls.name] = cls
    return cls


def strategy_names() -> tuple[str, ...]:
    return tuple(STRATEGIES)


def make_strategy(name: str, config=None) -> "Strategy":
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown chunk strategy {name!r}; choose one of {strategy_names()}") from None
    return cls(config)


def _future(times: np.ndarray, actions: np.ndarray, now: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Waypoints from one step before ``now`` on (the past one keeps the spline's shape at ``now``)."""
    keep = times > now - step
    return times[keep], actions[keep]


class Strategy:
    """How chunks are requested, accepted and stitched, and what the end of a plan means.

    The executor owns time, safety and the trajectories; it asks its strategy:
    ``execution_horizon(H)`` (actions executed per chunk: the contract's s), ``wants_request``,
    ``reject_reason`` (staleness), ``merge`` (the new plan's waypoints) and ``rests_at_plan_end``
    (True: the end of a plan is planned, come to rest and ask; False: it is a starved robot, the
    watchdog stops it).
    """

    name: ClassVar[str] = "base"
    #: the strategy's parameters (a dataclass; ROS parameters ``<name>.<field>`` of the executor node)
    Config: ClassVar[type]
    #: the setting that sets the execution horizon (named in contract errors)
    horizon_name: ClassVar[str] = "execution_horizon"
    #: the robot keeps executing the plan while the next chunk is computed (so a delay budget applies)
    uses_delay_budget: ClassVar[bool] = True
    #: the end of a plan is planned: come to rest and request (no watchdog stop)
    rests_at_plan_end: ClassVar[bool] = False

    def __init__(self, config=None):
        self.cfg = config if config is not None else self.Config()

    def reset(self) -> None:
        """Forget chunks (after a stop / e-stop)."""

    def execution_horizon(self, chunk_length: int) -> int:
        raise NotImplementedError

    def wants_request(self, *, has_plan: bool, stopping: bool, executed: float, horizon: int, running_out: bool = False) -> bool:
        """``executed``: actions executed since the last request; ``stopping``: a stop is decelerating;
        ``running_out``: the plan ends before a chunk requested now could take over."""
        if not has_plan:
            return True  # idle or holding: ask right away
        return executed >= horizon - 1e-6 or running_out

    def reject_reason(self, chunk: "ChunkPlan", now: float, step: float) -> str | None:
        """Why a valid chunk cannot be used now (stale, already over), or None."""
        age = now - chunk.stamp
        max_age = getattr(self.cfg, "max_chunk_age", math.inf)
        if age > max_age:
            return f"{CHUNK_STALE}: its observation is {age:.3f} s old (max {max_age} s, {self.name}.max_chunk_age)"
        if chunk.end_time <= now + 2 * step:
            return CHUNK_OVER
        return None

    def merge(self, chunk: "ChunkPlan", now: float, old_plan: WaypointSpline | None, delay: int, current_position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


@dataclass
class SyncConfig:
    """``sync`` has no parameters: it executes whole chunks."""


@register
class SyncStrategy(Strategy):
    name = "sync"
    Config = SyncConfig
    horizon_name = "chunk_length (sync executes whole chunks)"
    uses_delay_budget = False
    rests_at_plan_end = True

    def execution_horizon(self, chunk_length: int) -> int:
        return int(chunk_length)

    def wants_request(self, *, has_plan, stopping, executed, horizon, running_out=False):
        # one request at rest, after the chunk was executed (never while moving)
        return not has_plan and not stopping

    def reject_reason(self, chunk, now, step):
        return None  # the robot waits for the chunk however long it takes: never stale

    def merge(self, chunk, now, old_plan, delay, current_position):
        # Re-anchor: the robot waited at rest, so the chunk's first action is one step from now. The
        # executor's blend takes the robot from rest onto the chunk (an offset between the current pose
        # and the chunk's start is absorbed there, within the limits, not forced into one step).
        k = chunk.actions.shape[0]
        return now + chunk.step_period * np.arange(1, k + 1), chunk.actions.copy()


@dataclass
class TemporalEnsembleConfig:
    replan_interval: int = field(default=1, metadata={"help": "request a chunk every n executed actions (one request in flight at a time)", "min": 1})
    decay: float = field(default=0.01, metadata={"help": "k of ACT's weights exp(-k i), i=0 the oldest prediction", "min": 0.0})
    max_chunks: int = field(default=8, metadata={"help": "chunks kept for averaging", "min": 1})
    taper: int = field(default=10, metadata={"help": "actions over which an older chunk's weight fades out before its end (0 = ACT exactly)", "min": 0})
    max_chunk_age: float = field(default=1.5, metadata={"help": "s, chunks whose observation is older than this at arrival are rejected as stale", "min": 0.0})


@register
class TemporalEnsembleStrategy(Strategy):
    name = "temporal_ensemble"
    Config = TemporalEnsembleConfig
    horizon_name = "temporal_ensemble.replan_interval"

    def __init__(self, config=None):
        super().__init__(config)
        self.chunks: deque[tuple[ChunkPlan, WaypointSpline]] = deque(maxlen=max(1, int(self.cfg.max_chunks)))

    def reset(self) -> None:
        self.chunks.clear()

    def execution_horizon(self, chunk_length: int) -> int:
        return int(self.cfg.replan_interval)

    def merge(self, chunk, now, old_plan, delay, current_position):
        # drop chunks that ended
        while self.chunks and self.chunks[0][0].end_time <= now:
            self.chunks.popleft()
        self.chunks.append((chunk, WaypointSpline(chunk.times, chunk.actions)))
        times, _ = _future(chunk.times, chunk.actions, now, chunk.step_period)
        n_chunks = len(self.chunks)
        weights = np.zeros((n_chunks, times.shape[0]))
        values = np.zeros((n_chunks, times.shape[0], chunk.actions.shape[1]))
        age = np.zeros(times.shape[0])
        for n, (c, spl) in enumerate(self.chunks):  # oldest first, as in ACT
            cover = (times >= c.times[0] - 1e-9) & (times <= c.times[-1] + 1e-9)
            if not cover.any():
                continue
            w = np.where(cover, np.exp(-self.cfg.decay * age), 0.0)
            if n != n_chunks - 1 and self.cfg.taper > 0:
                # Fade a chunk out over its last actions: otherwise the average steps by the chunks'
                # disagreement where one of them ends (a jerk spike in the middle of the plan).
                u = np.clip((c.times[-1] - times) / (self.cfg.taper * c.step_period), 0.0, 1.0)
                w = w * u * u * u * (10.0 + u * (-15.0 + 6.0 * u))
            age = age + cover
            weights[n] = w
            values[n, cover] = spl.positions_at(times[cover])
        wsum = weights.sum(axis=0)
        out = np.einsum("nt,ntj->tj", weights, values) / np.where(wsum > 0, wsum, 1.0)[:, None]
        # (the newest chunk covers every step of the plan with a positive weight, so wsum > 0)
        return times, out


@dataclass
class RTCConfig:
    execution_horizon: int = field(default=0, metadata={
        "help": "actions executed per chunk (s): a new chunk is requested every s executed actions; 0 = a third of the "
                "policy's chunk length H (16 for Motus' 48, 5 for MoLA's 15)", "min": 0})
    schedule: str = field(default="exp", metadata={"help": "soft mask of the executor-side blend for policies that cannot inpaint", "choices": SCHEDULES})
    max_chunk_age: float = field(default=1.5, metadata={"help": "s, chunks whose observation is older than this at arrival are rejected as stale", "min": 0.0})


@register
class RTCStrategy(Strategy):
    name = "rtc"
    Config = RTCConfig
    horizon_name = "rtc.execution_horizon"

    def execution_horizon(self, chunk_length: int) -> int:
        s = int(self.cfg.execution_horizon)
        return s if s > 0 else max(1, int(chunk_length) // 3)

    def merge(self, chunk, now, old_plan, delay, current_position):
        actions = chunk.actions
        if old_plan is not None and chunk.prefix_length == 0:
            # The policy did not inpaint the prefix: apply RTC's soft mask here (the executor-side
            # fallback for policies without flow guidance, e.g. replay or a regression head).
            overlap = int(np.count_nonzero(chunk.times <= old_plan.end_time + 1e-9))
            if overlap > 0:
                w = prefix_weights(actions.shape[0], min(delay, overlap), overlap, self.cfg.schedule)[:, None]
                old = actions.copy()
                old[:overlap] = old_plan.positions_at(chunk.times[:overlap])
                actions = w * old + (1.0 - w) * actions
        return _future(chunk.times, actions, now, chunk.step_period)
