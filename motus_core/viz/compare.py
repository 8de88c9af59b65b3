"""Match predicted frames with the live frames of the same time (predicted vs actual).

A prediction made from the observation at ``t_obs`` says what each camera will see at
``t_obs + 0.2 s, + 0.4 s, ...``. The live frames for those times arrive later (or, when inference
was slow, have already arrived). :class:`FrameMatcher` keeps a short history of live frames per
camera and a list of pending predicted frames; a predicted frame is *settled* once the live stream
has moved past its time by more than the tolerance (or the camera went quiet for ``max_wait``), and
then paired with the live frame nearest in time, if one lies within the tolerance.

All times are seconds on the robot's clock (the stamps of the messages).
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .frames import PredictedViews


@dataclass
class Comparison:
    """One predicted frame and the live frames (per camera) of the same time."""

    chunk_id: int
    index: int  # frame index within its prediction
    time: float  # time the frame predicts
    offset: float  # time - observation stamp
    predicted: dict[str, np.ndarray]
    live: dict[str, np.ndarray | None]
    live_stamps: dict[str, float | None]

    @property
    def matched(self) -> bool:
        return any(v is not None for v in self.live.values())


@dataclass
class ChunkComparison:
    """All frames of one prediction, each with its live counterparts (settled)."""

    prediction: PredictedViews
    comparisons: list[Comparison]

    @property
    def live_views(self) -> list[dict[str, np.ndarray | None]]:
        return [c.live for c in self.comparisons]


@dataclass
class MatchStats:
    predictions: int = 0
    frames_matched: int = 0
    frames_unmatched: int = 0
    dropped_pending: int = 0
    time_resets: int = 0


class LiveFrameBuffer:
    """Recent live frames per camera role, ordered by stamp, at most ``horizon`` seconds old."""

    def __init__(self, horizon: float = 2.0):
        self.horizon = float(horizon)
        self._stamps: dict[str, deque[float]] = {}
        self._images: dict[str, deque[np.ndarray]] = {}

    def clear(self) -> None:
        self._stamps.clear()
        self._images.clear()

    def newest(self, role: str) -> float | None:
        s = self._stamps.get(role)
        return s[-1] if s else None

    def add(self, role: str, stamp: float, image: np.ndarray) -> None:
        stamps = self._stamps.setdefault(role, deque())
        images = self._images.setdefault(role, deque())
        if stamps and stamp <= stamps[-1]:
            # out of order or duplicate: insert in place (rare; keeps the list sorted)
            i = bisect.bisect_left(list(stamps), stamp)
            if i < len(stamps) and stamps[i] == stamp:
                images[i] = image
                return
            stamps.insert(i, stamp)
            images.insert(i, image)
        else:
            stamps.append(stamp)
            images.append(image)
        while stamps and stamps[0] < stamps[-1] - self.horizon:
            stamps.popleft()
            images.popleft()

    def nearest(self, role: str, t: float, tolerance: float) -> tuple[float, np.ndarray] | None:
        stamps = self._stamps.get(role)
        if not stamps:
            return None
        lst = list(stamps)
        i = bisect.bisect_left(lst, t)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(lst) and abs(lst[j] - t) <= tolerance and (best is None or abs(lst[j] - t) < abs(lst[best] - t)):
                best = j
        if best is None:
            return None
        return lst[best], self._images[role][best]


@dataclass
class _Pending:
    views: PredictedViews
    settled: list[Comparison | None] = field(default_factory=list)


class FrameMatcher:
    """Pairs predicted frames with live frames of the same time.

    ``tolerance``: largest |live stamp - predicted time| accepted as "the same time" (s).
    ``max_wait``: a predicted frame whose time passed this long ago on the robot's clock is settled
    even if a camera stopped publishing (its missing views are ``None``).
    ``reset_jump``: a live stamp this far behind the newest one means the clock jumped back
    (simulator reset): history and pending predictions are dropped.
    """

    def __init__(self, roles, tolerance: float = 0.04, horizon: float = 2.0, max_wait: float = 1.0,
                 max_pending: int = 16, reset_jump: float = 1.0):
        if tolerance <= 0 or horizon <= 0 or max_wait <= 0:
            raise ValueError("tolerance, horizon and max_wait must be positive")
        self.roles = list(roles)
        self.tolerance = float(tolerance)
        self.max_wait = float(max_wait)
        self.max_pending = int(max_pending)
        self.reset_jump = float(reset_jump)
        self.buffer = LiveFrameBuffer(horizon)
        self._pending: deque[_Pending] = deque()
        self._newest = -np.inf  # newest live stamp over all roles
        self.stats = MatchStats()

    @property
    def pending_frames(self) -> int:
        return sum(sum(1 for s in p.settled if s is None) for p in self._pending)

    def add_live(self, role: str, stamp: float, image: np.ndarray) -> None:
        if role not in self.roles or not np.isfinite(stamp):
            return
        if stamp < self._newest - self.reset_jump:
            self.buffer.clear()
            self._pending.clear()
            self._newest = -np.inf
            self.stats.time_resets += 1
        self.buffer.add(role, stamp, image)
        self._newest = max(self._newest, stamp)

    def add_prediction(self, views: PredictedViews) -> None:
        self._pending.append(_Pending(views, [None] * len(views.views)))
        self.stats.predictions += 1
        while len(self._pending) > self.max_pending:
            dropped = self._pending.popleft()
            self.stats.dropped_pending += sum(1 for s in dropped.settled if s is None)

    def _settle(self, p: _Pending, i: int) -> Comparison:
        v = p.views
        t = float(v.times[i])
        roles = [r for r in v.views[i] if r in self.roles]
        live: dict[str, np.ndarray | None] = {}
        stamps: dict[str, float | None] = {}
        for r in roles:
            hit = self.buffer.nearest(r, t, self.tolerance)
            live[r] = hit[1] if hit else None
            stamps[r] = hit[0] if hit else None
        c = Comparison(chunk_id=v.chunk_id, index=i, time=t, offset=t - v.stamp, predicted=v.views[i], live=live, live_stamps=stamps)
        if c.matched:
            self.stats.frames_matched += 1
        else:
            self.stats.frames_unmatched += 1
        return c

    def _ready(self, t: float, roles, now: float | None) -> bool:
        newest = [self.buffer.newest(r) for r in roles]
        if newest and all(n is not None and n > t + self.tolerance for n in newest):
            return True
        clock = now if now is not None else self._newest
        return clock is not None and np.isfinite(clock) and clock > t + self.tolerance + self.max_wait

    def poll(self, now: float | None = None) -> tuple[list[Comparison], list[ChunkComparison]]:
        """Settle every predicted frame whose time has passed.

        ``now``: the robot's clock, if known (settles frames of cameras that went quiet).
        Returns the newly settled frames and the predictions whose frames are now all settled.
        """
        settled: list[Comparison] = []
        done: list[ChunkComparison] = []
        for p in list(self._pending):
            for i, s in enumerate(p.settled):
                if s is not None:
                    continue
                roles = [r for r in p.views.views[i] if r in self.roles]
                if self._ready(float(p.views.times[i]), roles, now):
                    p.settled[i] = self._settle(p, i)
                    settled.append(p.settled[i])
            if all(s is not None for s in p.settled):
                self._pending.remove(p)
                done.append(ChunkComparison(p.views, list(p.settled)))  # type: ignore[arg-type]
        return settled, done
