"""Observation synchronizer: coherent camera + joint-state snapshots for the policy (ROS-free).

This module replaces ``message_filters`` (ApproximateTime / Cache), which is not installable from
PyPI; the policy node feeds it decoded messages (``motus_ros.conversions`` replaces ``cv_bridge``).
Everything about streams comes from the robot profile: the camera roles (high / left_wrist /
right_wrist), the joint-state topics and how their joint names map to the canonical joint order.

How a snapshot is formed (``snapshot(now)``):

1. Reference frames are the frames of the reference camera (``high``), newest first.
2. For a reference stamp ``t_ref`` every other stream contributes its sample nearest to ``t_ref``
   (``policy="nearest"``) or its last sample at or before ``t_ref`` (``"last_before"``), within
   the stream's tolerance. A choice is final once the stream has a sample at or after ``t_ref``
   (nothing closer can come: a stream arrives in stamp order) or once ``now - t_ref`` exceeds the
   tolerance.
3. The reference frame must be fresh: ``now - t_ref <= max_age``. The newest reference frame with a
   complete, fresh set wins; each reference frame is used at most once.
4. Otherwise nothing is returned and ``reason`` says why, naming the stream and the ages
   ("left_wrist: no frame within 20 ms of the reference (its last frame is 0.81 s old)"). A camera
   that stops therefore blocks snapshots until it comes back; the policy never sees a stale image.

Time jumps: a sample stamped more than ``time_jump`` seconds before the stream's previous one, or a
clock that goes backwards (sim time reset, bag loop), clears every buffer (``resets`` counts them).

Driver clocks: a sample stamped more than ``future_tolerance`` ahead of the receiver's clock (``now``
given to ``add_image`` / ``add_joint_state``) is *suspect*: it is never used while it is ahead of the
clock, and when the next sample of its stream is stamped before it, the suspect one is dropped
(counted, logged with the offset) and the new one kept, so a camera driver with a bad clock cannot
make the real frames that follow look out of order. A receiver clock that merely lags (sim time on a
loaded machine: /clock arrives late) makes correct samples look ahead too; they are followed by later
stamps and kept. Rejections are
counted per stream and cause and logged through a :class:`motus_core.rejections.RejectionLog` (the
first at once, then at most one line per period with the count), naming the stream and the offset.
A frame whose size differs from the profile's camera is logged once per stream and size and kept
(``size_mismatch="warn"``: the policy resizes with padding) or rejected (``"reject"``).

Joint states: missing joints reject the message and are reported once (per topic and joint set);
extra joints are reported once and ignored (``extra_joints="ignore"``, default) or reject the message
(``"reject"``). Images are decoded lazily (``LazyImage``) so frames that never make it into a
snapshot cost nothing but the copy out of the message.

Diagnostics per stream: receive rate, age of the newest sample, samples received, drops (gaps in the
stamps larger than 1.5 nominal periods, counted in missing samples), rejected samples.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from motus_core.policy.base import Observation
from motus_core.rejections import RejectionLog

POLICIES = ("nearest", "last_before")


@dataclass
class SyncConfig:
    reference: str = field(default="high", metadata={"help": "camera role whose frames define the snapshot time"})
    policy: str = field(default="nearest", metadata={"help": "per-stream sample choice: nearest | last_before"})
    image_tolerance: float = field(default=0.02, metadata={"help": "s, max |camera stamp - reference stamp|"})
    joint_tolerance: float = field(default=0.02, metadata={"help": "s, max |joint state stamp - reference stamp|"})
    max_age: float = field(default=0.25, metadata={"help": "s, the reference frame must be at most this old (robot clock)"})
    buffer_time: float = field(default=1.0, metadata={"help": "s of samples kept per stream"})
    time_jump: float = field(default=0.5, metadata={"help": "s, a stamp this far behind the previous one (or a clock going back) resets all buffers"})
    extra_joints: str = field(default="ignore", metadata={"help": "joints a JointState has beyond the profile: ignore (reported once) | reject"})
    future_tolerance: float = field(default=0.1, metadata={"help": "s, a sample stamped further ahead of the receiver's clock is rejected (driver clock guard)"})
    size_mismatch: str = field(default="warn", metadata={"help": "a frame whose size differs from the profile's camera: warn (once; the policy resizes) | reject"})
    reject_log_period: float = field(default=5.0, metadata={"help": "s between two log lines about the same kind of rejected sample"})

    def validate(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"sync policy must be one of {POLICIES}, got {self.policy!r}")
        if self.extra_joints not in ("ignore", "reject"):
            raise ValueError("extra_joints must be 'ignore' or 'reject'")
        if self.size_mismatch not in ("warn", "reject"):
            raise ValueError("size_mismatch must be 'warn' or 'reject'")
        if self.future_tolerance <= 0 or self.reject_log_period < 0:
            raise ValueError("future_tolerance must be positive and reject_log_period >= 0")
        if min(self.image_tolerance, self.joint_tolerance, self.max_age, self.buffer_time) <= 0:
            raise ValueError("tolerances, max_age and buffer_time must be positive")


class LazyImage:
    """An image decoded on first use (raw or compressed message payload -> HxWx3 uint8 RGB)."""

    __slots__ = ("_decode", "_value")

    def __init__(self, decode: Callable[[], np.ndarray]):
        self._decode = decode
        self._value = None

    def get(self) -> np.ndarray:
        if self._value is None:
            self._value = self._decode()
            self._decode = None
        return self._value


@dataclass
class _Sample:
    stamp: float
    value: object
    received: float  # wall clock (time.monotonic) of arrival
    ahead: float = 0.0  # s the stamp was ahead of the receiver's clock at arrival (> future_tolerance: suspect)


class _Stream:
    def __init__(self, name: str, kind: str, tolerance: float):
        self.name = name
        self.kind = kind  # "image" | "joints"
        self.tolerance = tolerance
        self.samples: deque[_Sample] = deque()
        self.received = 0
        self.rejected = 0
        self.dropped = 0
        self.arrivals: deque[float] = deque(maxlen=64)
        self.period: float | None = None
        self._diffs: deque[float] = deque(maxlen=32)

    def add(self, s: _Sample, buffer_time: float) -> None:
        if self.samples and not s.ahead:  # a suspect stamp says nothing about the stream's period
            gap = s.stamp - self.samples[-1].stamp
            if gap > 0:
                self._diffs.append(gap)
                if len(self._diffs) >= 5:
                    self.period = float(np.median(self._diffs))
                if self.period and gap > 1.5 * self.period:
                    self.dropped += int(round(gap / self.period)) - 1
        self.samples.append(s)
        self.received += 1
        self.arrivals.append(s.received)
        while self.samples and self.samples[0].stamp < s.stamp - buffer_time:
            self.samples.popleft()

    def rate(self, wall_now: float) -> float:
        if len(self.arrivals) < 2 or wall_now - self.arrivals[-1] > 2.0:
            return 0.0
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else 0.0

    def newest(self) -> float | None:
        return self.samples[-1].stamp if self.samples else None

    def usable(self, now: float, future: float) -> list[_Sample]:
        """The samples, without those stamped ahead of ``now + future`` (a driver clock running ahead)."""
        samples = self.samples
        if samples and samples[-1].stamp > now + future:
            return [x for x in samples if x.stamp <= now + future]
        return samples

    def match(self, t_ref: float, now: float, policy: str, future: float = math.inf) -> tuple[_Sample | None, bool, str]:
        """(sample, final, why-not) for the reference time."""
        samples = self.usable(now, future)
        if not samples:
            return None, False, f"{self.name}: nothing received yet"
        tol = self.tolerance
        newest = samples[-1].stamp
        has_later = newest >= t_ref - 1e-9
        timed_out = now - t_ref > tol
        best = None
        if policy == "nearest":
            best_d = math.inf
            for s in reversed(samples):
                d = abs(s.stamp - t_ref)
                if d < best_d:
                    best, best_d = s, d
                elif s.stamp < t_ref:
                    break
            ok = best is not None and best_d <= tol + 1e-9
        else:
            for s in reversed(samples):
                if s.stamp <= t_ref + 1e-9:
                    best = s
                    break
            ok = best is not None and t_ref - best.stamp <= tol + 1e-9
        if best is not None and abs(best.stamp - t_ref) < 1e-9:
            return best, True, ""
        final = has_later or timed_out
        if ok:
            return best, final, "" if final else f"{self.name}: waiting for a sample after the reference"
        if not final:
            return None, False, f"{self.name}: waiting for a sample near the reference"
        age = now - newest
        return None, True, (f"{self.name}: no sample within {tol * 1000:.0f} ms of the reference "
                            f"(its newest is {age:.2f} s old, the reference {now - t_ref:.2f} s)")


@dataclass
class SyncResult:
    observation: Observation | None
    reason: str = ""
    complete_wall: float = 0.0  # monotonic time the last sample of the snapshot arrived
    waiting_on: str = ""


@dataclass
class StreamDiagnostics:
    name: str
    kind: str
    received: int
    dropped: int
    rejected: int
    rate_hz: float
    age: float  # s since the newest sample's stamp (robot clock), -1 if none
    level: str  # "ok" | "warn" | "error"
    message: str


class ObservationSynchronizer:
    """Coherent snapshots of the profile's cameras and joint states (see the module docstring)."""

    def __init__(self, profile, config: SyncConfig | None = None, *, on_problem: Callable[[str], None] | None = None,
                 roles: Sequence[str] | None = None, rejections: RejectionLog | None = None):
        self.cfg = config or SyncConfig()
        self.cfg.validate()
        self.profile = profile
        self.roles = tuple(roles) if roles is not None else tuple(profile.cameras)
        if self.cfg.reference not in self.roles:
            raise ValueError(f"reference camera {self.cfg.reference!r} is not among the cameras {self.roles}")
        self.dof = profile.dof
        self._lock = threading.Condition()
        self.streams: dict[str, _Stream] = {}
        for role in self.roles:
            self.streams[role] = _Stream(role, "image", self.cfg.image_tolerance)
        self._joint_maps: dict[str, Mapping[str, int]] = {}
        for src in profile.state_sources:
            self.streams[src.topic] = _Stream(src.topic, "joints", self.cfg.joint_tolerance)
            self._joint_maps[src.topic] = {msg_name: profile.index_of(canon) for msg_name, canon in src.names.items()}
        self._index_cache: dict[tuple[str, tuple[str, ...]], tuple[np.ndarray, np.ndarray] | None] = {}
        self._reported: set[str] = set()
        self.problems: list[str] = []
        self._on_problem = on_problem
        self._last_used_ref = -math.inf
        self._last_now: float | None = None
        self.resets = 0
        self.snapshots = 0
        self.last_reason = "no data yet"
        # Rejected samples: counted per "stream: cause", logged rate-limited (to on_problem, or dropped if none).
        self.rejections = rejections or RejectionLog(on_problem or (lambda _m: None), self.cfg.reject_log_period,
                                                     prefix="Synchronizer rejected")
        self._sizes = {role: (int(c.height), int(c.width)) for role, c in getattr(profile, "cameras", {}).items()
                       if getattr(c, "width", 0) and getattr(c, "height", 0)}

    # ------------------------------------------------------------------ problems
    def _report(self, key: str, message: str) -> None:
        if key in self._reported:
            return
        self._reported.add(key)
        self.problems.append(message)
        if self._on_problem is not None:
            self._on_problem(message)

    # ------------------------------------------------------------------ input
    def _reject(self, stream: _Stream, cause: str, detail: str = "") -> bool:
        stream.rejected += 1
        self.rejections.reject(f"{stream.name}: {cause}", detail)
        return False

    def _ahead(self, stamp: float, now: float | None) -> float:
        """How far the stamp is ahead of the receiver's clock beyond the tolerance (0: not suspect)."""
        if now is None:
            return 0.0
        ahead = stamp - now
        return ahead if ahead > self.cfg.future_tolerance else 0.0

    def _in_order(self, stream: _Stream, stamp: float) -> bool:
        """Whether a new sample may follow the stream's newest (after the time-jump check).

        First, a newest sample that was stamped ahead of the receiver's clock and is now followed by an
        earlier stamp was the wrong one (a driver clock running ahead): it is dropped, counted and
        logged, and the new sample is judged against what remains. A sample merely ahead of a lagging
        receiver clock (sim time under load) is followed by later stamps and kept."""
        while stream.samples and stream.samples[-1].ahead and stream.samples[-1].stamp >= stamp:
            b = stream.samples.pop()
            self._reject(stream, "stamped in the future",
                         f"a sample stamped {b.ahead:.3f} s ahead of the receiver's clock (tolerance "
                         f"{self.cfg.future_tolerance} s) was followed by earlier stamps: dropped it; check the driver's clock")
        self._check_time(stream, stamp)
        newest = stream.newest()
        if newest is None or stamp > newest:
            return True
        self._reject(stream, "out of order", f"stamp {stamp:.3f} s is not after the previous {newest:.3f} s")
        return False

    def _check_time(self, stream: _Stream, stamp: float) -> None:
        newest = stream.newest()
        if newest is not None and stamp < newest - self.cfg.time_jump:
            self._reset_locked(f"time jumped back on {stream.name} ({newest:.3f} -> {stamp:.3f} s)")

    def _reset_locked(self, why: str) -> None:
        for s in self.streams.values():
            s.samples.clear()
            s._diffs.clear()
            s.period = None
        self._last_used_ref = -math.inf
        self._last_now = None
        self.resets += 1
        self.last_reason = f"buffers cleared: {why}"
        if self._on_problem is not None:
            self._on_problem(f"synchronizer reset: {why}")

    def reset(self, why: str = "reset requested") -> None:
        with self._lock:
            self._reset_locked(why)

    def add_image(self, role: str, stamp: float, image: np.ndarray | LazyImage, received: float | None = None, *,
                  now: float | None = None, size: tuple[int, int] | None = None) -> bool:
        """Add a camera frame. ``now``: the receiver's clock (enables the driver-clock guard);
        ``size``: (height, width) of the frame, checked against the profile's camera."""
        stream = self.streams.get(role)
        if stream is None or stream.kind != "image":
            self._report(f"role:{role}", f"image for unknown camera role {role!r} ignored (roles: {self.roles})")
            return False
        if not math.isfinite(stamp):
            return self._reject(stream, "non-finite stamp")
        if size is None and isinstance(image, np.ndarray) and image.ndim >= 2:
            size = (int(image.shape[0]), int(image.shape[1]))
        expected = self._sizes.get(role)
        if size is not None and expected is not None and tuple(size) != expected:
            what = (f"{size[1]}x{size[0]} frame where the profile says {expected[1]}x{expected[0]}")
            if self.cfg.size_mismatch == "reject":
                return self._reject(stream, "wrong size", what)
            self._report(f"size:{role}:{tuple(size)}", f"{role}: {what}; the policy resizes it with padding "
                         f"(check the camera driver's resolution; sync.size_mismatch: reject refuses such frames)")
        ahead = self._ahead(stamp, now)
        with self._lock:
            if not self._in_order(stream, stamp):  # duplicate or out of order (within the jump threshold)
                return False
            stream.add(_Sample(float(stamp), image, time.monotonic() if received is None else received, ahead), self.cfg.buffer_time)
            self._lock.notify_all()
        return True

    def _joint_indices(self, topic: str, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
        key = (topic, tuple(names))
        if key in self._index_cache:
            return self._index_cache[key]
        mapping = self._joint_maps[topic]
        missing = [n for n in mapping if n not in names]
        extra = [n for n in names if n not in mapping]
        result = None
        duplicated = sorted({n for n in names if list(names).count(n) > 1})
        if duplicated:
            self._report(f"dup:{topic}:{','.join(duplicated)}",
                         f"joint states on {topic} name joints {duplicated} more than once: messages rejected")
        elif missing:
            self._report(f"missing:{topic}:{','.join(missing)}",
                         f"joint states on {topic} lack joints {missing} (expected {list(mapping)}): messages rejected")
        elif extra and self.cfg.extra_joints == "reject":
            self._report(f"extra:{topic}:{','.join(extra)}",
                         f"joint states on {topic} have joints {extra} that the profile does not list: messages rejected")
        else:
            if extra:
                self._report(f"extra:{topic}:{','.join(extra)}",
                             f"joint states on {topic} have joints {extra} that the profile does not list: ignored")
            pos = {n: i for i, n in enumerate(names)}
            src = np.array([pos[n] for n in mapping], dtype=np.int64)
            dst = np.array(list(mapping.values()), dtype=np.int64)
            result = (src, dst)
        self._index_cache[key] = result
        return result

    def add_joint_state(self, topic: str, stamp: float, names: Sequence[str], positions: Sequence[float], received: float | None = None, *,
                        now: float | None = None) -> bool:
        stream = self.streams.get(topic)
        if stream is None or stream.kind != "joints":
            self._report(f"topic:{topic}", f"joint states from unknown topic {topic} ignored")
            return False
        idx = self._joint_indices(topic, names)
        pos = np.asarray(positions, dtype=np.float64)
        if idx is None:
            return self._reject(stream, "joint names do not match the profile")
        if pos.ndim != 1 or pos.shape[0] != len(names):
            return self._reject(stream, "wrong number of positions", f"{len(names)} names but {pos.size} positions")
        src, dst = idx
        values = pos[src]
        if not np.all(np.isfinite(values)):
            return self._reject(stream, "NaN/inf positions")
        if not math.isfinite(stamp):
            return self._reject(stream, "non-finite stamp")
        ahead = self._ahead(stamp, now)
        with self._lock:
            if not self._in_order(stream, stamp):
                return False
            stream.add(_Sample(float(stamp), (dst, values), time.monotonic() if received is None else received, ahead), self.cfg.buffer_time)
            self._lock.notify_all()
        return True

    # ------------------------------------------------------------------ output
    def _clock(self, now: float) -> None:
        if self._last_now is not None and now < self._last_now - self.cfg.time_jump:
            self._reset_locked(f"clock jumped back ({self._last_now:.3f} -> {now:.3f} s)")
        self._last_now = now

    def snapshot(self, now: float) -> SyncResult:
        """The newest coherent, fresh, not yet used snapshot, or why there is none."""
        with self._lock:
            self._clock(now)
            result = self._snapshot_locked(now)
            self.last_reason = result.reason
            return result

    def wait_snapshot(self, now_fn: Callable[[], float], timeout: float, stop: threading.Event | None = None) -> SyncResult:
        """Block until a snapshot is available (or ``timeout`` s of wall time pass)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                self._clock(now_fn())
                result = self._snapshot_locked(now_fn())
                self.last_reason = result.reason
                remaining = deadline - time.monotonic()
                if result.observation is not None or remaining <= 0 or (stop is not None and stop.is_set()):
                    return result
                self._lock.wait(min(remaining, 0.02))

    def _snapshot_locked(self, now: float) -> SyncResult:
        ref = self.streams[self.cfg.reference]
        future = self.cfg.future_tolerance
        ref_samples = ref.usable(now, future)  # a frame stamped ahead of the clock is never a reference
        if not ref_samples:
            return SyncResult(None, f"{ref.name}: no frame received yet", waiting_on=ref.name)
        newest_ref = ref_samples[-1].stamp
        if now - newest_ref > self.cfg.max_age:
            return SyncResult(None, f"{ref.name}: newest frame is {now - newest_ref:.2f} s old (max {self.cfg.max_age} s)", waiting_on=ref.name)
        first_reason = ""
        first_stream = ""
        for r in reversed(ref_samples):
            t_ref = r.stamp
            if t_ref <= self._last_used_ref:
                break
            if now - t_ref > self.cfg.max_age:
                break
            chosen: dict[str, _Sample] = {ref.name: r}
            why = ""
            for name, stream in self.streams.items():
                if stream is ref:
                    continue
                s, final, reason = stream.match(t_ref, now, self.cfg.policy, future)
                if s is None or not final:
                    why = reason
                    first_stream = first_stream or name
                    break
                chosen[name] = s
            if why:
                first_reason = first_reason or why
                continue
            return self._build(t_ref, chosen)
        if not first_reason:
            first_reason = "waiting for a new reference frame" if newest_ref <= self._last_used_ref else "no fresh reference frame"
        return SyncResult(None, first_reason, waiting_on=first_stream or ref.name)

    def _build(self, t_ref: float, chosen: dict[str, _Sample]) -> SyncResult:
        images = {}
        state = np.full(self.dof, np.nan)
        stamps = {}
        for name, s in chosen.items():
            stream = self.streams[name]
            stamps[name] = s.stamp
            if stream.kind == "image":
                v = s.value
                images[name] = v.get() if isinstance(v, LazyImage) else v
            else:
                dst, values = s.value
                state[dst] = values
        self._last_used_ref = t_ref
        self.snapshots += 1
        complete = max(s.received for s in chosen.values())
        return SyncResult(Observation(images=images, state=state, stamp=t_ref, stream_stamps=stamps), "", complete_wall=complete)

    def diagnostics(self, now: float) -> list[StreamDiagnostics]:
        wall = time.monotonic()
        out = []
        with self._lock:
            for name, s in self.streams.items():
                newest = s.newest()
                age = -1.0 if newest is None else max(0.0, now - newest)
                if newest is None:
                    level, msg = "error", "nothing received"
                elif age > self.cfg.max_age:
                    level, msg = "error", f"stale: newest sample {age:.2f} s old"
                elif s.dropped:
                    level, msg = "warn", f"{s.dropped} samples missing from the stamp sequence"
                else:
                    level, msg = "ok", "ok"
                out.append(StreamDiagnostics(name, s.kind, s.received, s.dropped, s.rejected, s.rate(wall), age, level, msg))
        return out
