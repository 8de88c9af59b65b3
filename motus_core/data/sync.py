"""Time alignment of recorded streams on one reference stream (the high camera).

Rule (the one LeRobot-style ROS converters use, to avoid future leakage): every message of the
reference stream is one output frame at its header stamp ``t``; every other stream contributes its
latest message with stamp ``<= t`` ("as-of"), and that message's age ``t - stamp`` must stay within
``max_age``. A frame where a stream is older than ``max_age`` is part of a *gap* of that stream;
leading frames before every stream has produced a message, and trailing frames after a stream's
last message, are trimmed (not a gap).

Stamps are the messages' ``header.stamp`` (the robot's clock: sim time or the drivers' wall
clock). A stream whose stamps are all zero falls back to the bag's receive time, and the report
says so.

Images are large, so cameras are aligned in one streaming pass (``FrameAligner``) that holds only
the few messages that can still be chosen; joint states are small and aligned with numpy
(``asof``) at the end.
"""
from __future__ import annotations

import bisect
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

NS = 1_000_000_000


class SyncError(ValueError):
    """Streams that cannot be aligned (no reference frames, joints missing from every message...)."""


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """``header.stamp`` of a CDR message whose first field is a ``std_msgs/Header`` (no full decode)."""
    b = bytes(raw[:12])
    if len(b) < 12:
        return 0
    little = b[1] & 1  # encapsulation id: 0x0001 CDR_LE, 0x0000 CDR_BE (+ XCDR2 variants)
    sec, nsec = struct.unpack("<iI" if little else ">iI", b[4:12])
    return sec * NS + nsec


_NAMES_CACHE: dict[bytes, tuple[tuple[str, ...], int]] = {}


def parse_joint_state_cdr(raw: bytes | memoryview) -> tuple[int, tuple[str, ...], np.ndarray]:
    """(header stamp ns, names, positions) of a little-endian CDR ``sensor_msgs/JointState``.

    A 60 s episode has ~24 000 joint messages per topic pair; reading the three fields in place is
    ~10x faster than a generic deserializer. The name list of a topic rarely changes, so it is
    parsed once per distinct byte string. Raises ``ValueError`` on anything malformed.
    """
    mv = memoryview(raw)
    if len(mv) < 16 or mv[1] != 1:
        raise ValueError("not a little-endian CDR message")
    sec, nsec = struct.unpack_from("<iI", mv, 4)
    pos = 12
    (n,) = struct.unpack_from("<I", mv, pos)
    pos = _align(pos + 4 + n, 4)
    (count,) = struct.unpack_from("<I", mv, pos)
    # The names block (count + strings) is self-delimiting: if the bytes here start with a block seen
    # before, the names are the same.
    rest = bytes(mv[pos:])
    cached = None
    for key, value in _NAMES_CACHE.items():
        if rest.startswith(key):
            cached = value
            break
    if cached is None:
        start = pos
        pos += 4
        names = []
        for _ in range(count):
            pos = _align(pos, 4)
            (n,) = struct.unpack_from("<I", mv, pos)
            names.append(bytes(mv[pos + 4: pos + 3 + n]).decode("utf-8"))
            pos += 4 + n
        cached = (tuple(names), pos - start)
        if len(_NAMES_CACHE) < 64:
            _NAMES_CACHE[bytes(mv[start: pos])] = cached
    else:
        pos += cached[1]
    names_t, _ = cached
    pos = _align(pos, 4)
    (count,) = struct.unpack_from("<I", mv, pos)
    pos = _align(pos + 4, 8)
    if pos + 8 * count > len(mv):
        raise ValueError("JointState positions run past the end of the message")
    positions = np.frombuffer(mv, dtype="<f8", count=count, offset=pos).copy()
    return sec * NS + nsec, names_t, positions


def _align(pos: int, n: int) -> int:
    # CDR alignment counts from the end of the 4-byte encapsulation header
    return 4 + ((pos - 4 + n - 1) // n) * n


def asof(stamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the latest stamp ``<= t`` for each ``t`` (-1 where none). ``stamps`` sorted ascending."""
    return np.searchsorted(stamps, times, side="right") - 1


@dataclass
class Gap:
    """A run of consecutive frames where a stream was older than ``max_age`` (or a reference hole)."""

    stream: str
    start_s: float  # seconds from the first kept frame
    duration_s: float  # worst age (stream gaps) or interval (reference holes); see gap_runs for frames without a message
    frames: int
    frames_without_message: int = 0  # frames before the stream's first message (no age exists)

    def as_dict(self) -> dict:
        d = {"stream": self.stream, "start_s": round(self.start_s, 4), "duration_s": round(self.duration_s, 4), "frames": self.frames}
        if self.frames_without_message:
            d["frames_without_message"] = self.frames_without_message
        return d


def gap_runs(stream: str, ages_ns: np.ndarray, frame_times_ns: np.ndarray, max_age_ns: int) -> list[Gap]:
    """Runs of frames whose age exceeds ``max_age_ns`` (age -1 = no message at all).

    A frame without any message of the stream has no age; it counts as old as the time since the
    first frame (the stream has been silent at least that long), never as a placeholder value."""
    bad = (ages_ns > max_age_ns) | (ages_ns < 0)
    out: list[Gap] = []
    i, n = 0, len(bad)
    t0 = int(frame_times_ns[0]) if n else 0
    while i < n:
        if not bad[i]:
            i += 1
            continue
        j = i
        while j < n and bad[j]:
            j += 1
        run = ages_ns[i:j]
        silent = run < 0
        since_start = frame_times_ns[i:j].astype(np.int64) - t0
        worst = float(np.max(np.where(silent, since_start, run))) / NS
        out.append(Gap(stream, (int(frame_times_ns[i]) - t0) / NS, worst, j - i, int(np.count_nonzero(silent))))
        i = j
    return out


@dataclass
class AlignedFrame:
    """One output frame: the reference message and the chosen message of every other camera."""

    stamp_ns: int
    payloads: dict[str, Any]  # stream -> payload (None when the stream had nothing yet)
    ages_ns: dict[str, int]  # stream -> age of the chosen message (-1: nothing)
    # streams that produced nothing at or after this frame until the end of the bag: they had
    # ended (the recording stopped them at slightly different times), which is not a gap
    ended: tuple[str, ...] = ()


class FrameAligner:
    """Streaming as-of alignment of image streams on a reference stream.

    ``push`` messages in bag order; it returns the frames whose choice is final: every other
    stream has shown a message newer than the frame (per-stream stamps only grow), or the bag has
    moved ``horizon_ns`` of receive time past the frame (a stream that stopped), or ``finish`` was
    called. Only messages that can still be chosen are kept.
    """

    def __init__(self, reference: str, others: Sequence[str], horizon_ns: int = 2 * NS):
        self.reference = reference
        self.others = list(others)
        self.horizon_ns = int(horizon_ns)
        self._pending: deque = deque()  # (stamp, receive, payload) of reference frames
        self._buf: dict[str, list] = {s: [] for s in self.others}  # sorted [(stamp, payload)]
        self._newest: dict[str, int] = {s: -1 for s in self.others}
        self._last_ref_stamp = -1
        self.out_of_order: dict[str, int] = {s: 0 for s in [reference, *self.others]}
        self.received: dict[str, int] = {s: 0 for s in [reference, *self.others]}

    def push(self, stream: str, stamp_ns: int, receive_ns: int, payload: Any) -> list[AlignedFrame]:
        if stream == self.reference:
            self.received[stream] += 1
            if stamp_ns <= self._last_ref_stamp:
                self.out_of_order[stream] += 1  # a repeated or backwards frame cannot be a new video frame
            else:
                self._last_ref_stamp = stamp_ns
                self._pending.append((stamp_ns, receive_ns, payload))
        elif stream in self._buf:
            self.received[stream] += 1
            buf = self._buf[stream]
            if buf and stamp_ns < buf[-1][0]:
                self.out_of_order[stream] += 1
            bisect.insort(buf, (stamp_ns, payload), key=lambda x: x[0])
            self._newest[stream] = max(self._newest[stream], stamp_ns)
        return self._resolve(receive_ns, final=False)

    def gates(self, stream: str) -> bool:
        """True if ``stream`` is one of the streams every frame waits for."""
        return stream in self._buf

    def finish(self) -> list[AlignedFrame]:
        return self._resolve(0, final=True)

    def _resolve(self, now_receive_ns: int, final: bool) -> list[AlignedFrame]:
        out = []
        while self._pending:
            stamp, recv, payload = self._pending[0]
            if not final and now_receive_ns - recv < self.horizon_ns:
                if any(self._newest[s] <= stamp for s in self.others):
                    break
            self._pending.popleft()
            payloads: dict[str, Any] = {self.reference: payload}
            ages: dict[str, int] = {self.reference: 0}
            for s in self.others:
                buf = self._buf[s]
                k = bisect.bisect_right(buf, stamp, key=lambda x: x[0]) - 1
                if k < 0:
                    payloads[s], ages[s] = None, -1
                else:
                    payloads[s], ages[s] = buf[k][1], stamp - buf[k][0]
                    del buf[:k]  # older messages can never be chosen again (later frames are newer)
            ended = tuple(s for s in self.others if self._newest[s] < stamp) if final else ()
            out.append(AlignedFrame(stamp, payloads, ages, ended))
        return out


@dataclass
class JointSeries:
    """All messages of one joint-state topic: stamps and the canonical joints they carry."""

    topic: str
    stamps_ns: np.ndarray  # sorted
    receive_ns: np.ndarray
    values: np.ndarray  # [N, len(columns)]
    columns: tuple[int, ...]  # canonical indices the values fill
    stamp_source: str = "header"


class JointAssembler:
    """Builds canonical joint vectors from JointState messages of a profile's sources.

    ``sources``: ``[{"topic": ..., "joints": {message joint name: canonical name}}]`` (the profile
    snapshot stored in each episode's metadata); ``joint_names``: canonical order.
    """

    def __init__(self, joint_names: Sequence[str], sources: Sequence[Mapping[str, Any]]):
        self.joint_names = list(joint_names)
        self.index = {n: i for i, n in enumerate(self.joint_names)}
        self.sources = {s["topic"]: dict(s["joints"]) for s in sources}
        covered = [self.index[c] for s in self.sources.values() for c in s.values()]
        if sorted(covered) != list(range(len(self.joint_names))):
            raise SyncError(f"joint sources {sorted(self.sources)} do not cover the joints {self.joint_names} exactly once")

    def series(self, topic: str, messages: Sequence[tuple[int, int, Sequence[str], Sequence[float]]]) -> JointSeries:
        """``messages``: (header stamp ns, receive ns, names, positions) of one topic."""
        mapping = self.sources[topic]
        columns = tuple(self.index[c] for c in mapping.values())
        names_in_order = list(mapping.keys())
        stamps, recvs, rows = [], [], []
        rejected = 0
        index_of: dict[tuple, list[int] | None] = {}  # the names of a topic rarely change: map them once
        for stamp, recv, names, pos in messages:
            pos = np.asarray(pos, dtype=np.float64)
            key = tuple(names)
            if key not in index_of:
                if key:
                    lookup = {n: i for i, n in enumerate(key)}
                    index_of[key] = [lookup[n] for n in names_in_order] if all(n in lookup for n in names_in_order) else None
                else:
                    index_of[key] = list(range(len(names_in_order)))
            idx = index_of[key]
            if idx is None or len(pos) <= max(idx, default=-1):
                rejected += 1
                continue
            row = pos[idx]
            if not np.all(np.isfinite(row)):
                rejected += 1
                continue
            stamps.append(stamp)
            recvs.append(recv)
            rows.append(row)
        if not rows:
            raise SyncError(f"{topic}: none of {len(messages)} messages carries the joints {names_in_order}")
        st = np.asarray(stamps, dtype=np.int64)
        rv = np.asarray(recvs, dtype=np.int64)
        source = "header"
        if not np.any(st):
            st, source = rv.copy(), "receive"
        order = np.argsort(st, kind="stable")
        js = JointSeries(topic, st[order], rv[order], np.asarray(rows, dtype=np.float64)[order], columns, source)
        js.rejected = rejected  # type: ignore[attr-defined]
        return js

    def assemble(self, series: Sequence[JointSeries], times_ns: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``[T, dof]`` float32 as-of ``times_ns`` and, per topic, the age of the value used (-1: none)."""
        out = np.full((len(times_ns), len(self.joint_names)), np.nan, dtype=np.float64)
        ages: dict[str, np.ndarray] = {}
        for s in series:
            idx = asof(s.stamps_ns, times_ns)
            ok = idx >= 0
            rows = np.where(ok, idx, 0)
            out[:, list(s.columns)] = np.where(ok[:, None], s.values[rows], np.nan)
            ages[s.topic] = np.where(ok, times_ns - s.stamps_ns[rows], -1)
        return out.astype(np.float32), ages


@dataclass
class StreamReport:
    """Per-stream figures of one episode's sync report."""

    topic: str
    role: str
    messages: int = 0
    rate_hz: float = 0.0  # nominal rate: 1 / median interval of the stamps (drops do not lower it; see gaps)
    stamp_source: str = "header"
    latency_ms_mean: float = 0.0  # receive time - header stamp (transport + driver delay)
    latency_ms_max: float = 0.0
    age_ms_mean: float = 0.0  # as-of age at the output frames
    age_ms_p95: float = 0.0
    age_ms_max: float = 0.0
    dropped_by_recorder: int = 0
    out_of_order: int = 0
    rejected: int = 0
    gaps: list = field(default_factory=list)

    def set_ages(self, ages_ns: np.ndarray) -> None:
        a = ages_ns[ages_ns >= 0].astype(np.float64) / 1e6
        if a.size:
            self.age_ms_mean, self.age_ms_p95, self.age_ms_max = float(a.mean()), float(np.percentile(a, 95)), float(a.max())

    def set_timing(self, stamps_ns: np.ndarray, receive_ns: np.ndarray) -> None:
        self.messages = int(len(stamps_ns))
        self.rate_hz = nominal_rate(stamps_ns)
        if len(stamps_ns) and self.stamp_source == "header":
            lat = (receive_ns - stamps_ns).astype(np.float64) / 1e6
            self.latency_ms_mean, self.latency_ms_max = float(lat.mean()), float(lat.max())

    def as_dict(self) -> dict:
        d = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items() if k != "gaps"}
        d["gaps"] = [g.as_dict() for g in self.gaps]
        return d


def nominal_rate(stamps_ns: np.ndarray) -> float:
    """1 / the median positive interval of the stamps (Hz), 0 when there is none: the one rate the
    reports give per stream (the reference's missing frames are counted separately)."""
    d = np.diff(np.asarray(stamps_ns, dtype=np.int64))
    d = d[d > 0]
    return float(NS / np.median(d)) if d.size else 0.0


def reference_holes(stamps_ns: np.ndarray, max_gap_ns: int) -> tuple[list[Gap], int, float]:
    """Holes in the reference stream (intervals > ``max_gap_ns``), frames missing, nominal period (s)."""
    if len(stamps_ns) < 2:
        return [], 0, 0.0
    d = np.diff(stamps_ns)
    period = float(np.median(d))
    missing = int(np.sum(np.maximum(np.round(d / period) - 1, 0))) if period > 0 else 0
    holes = [Gap("reference", (int(stamps_ns[i]) - int(stamps_ns[0])) / NS, float(d[i]) / NS, 1)
             for i in np.nonzero(d > max_gap_ns)[0]]
    return holes, missing, period / NS
