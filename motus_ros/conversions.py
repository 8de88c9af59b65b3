"""ROS messages <-> numpy / plain Python for the suite's nodes (replaces cv_bridge).

cv_bridge is not installable from PyPI, and the nodes only need a few conversions, so they are
written here once:

* images: HxWx3 uint8 numpy -> ``sensor_msgs/Image`` (:func:`image_msg`); the other direction is
  ``motus_core.images.image_msg_to_rgb`` (re-exported here), the suite's one decoder, which checks
  encoding, step and buffer size (``ImageError`` on a malformed message);
* camera intrinsics -> ``sensor_msgs/CameraInfo``;
* joint states: ``sensor_msgs/JointState`` <-> the robot profile's canonical joint vector through a
  profile :class:`~motus_core.robot_profile.JointSource` (a topic and its message-name ->
  canonical-name map), by name: a missing name or one the profile does not know is an error (never a
  silent 0 rad), names listed in the source's ``ignore_names`` are skipped;
* time: ``builtin_interfaces/Time`` / ``Duration`` <-> float seconds (integer nanoseconds inside,
  so a round trip is exact to the nanosecond); the header stamp of a serialized message without
  deserializing it (:func:`header_stamp_from_cdr`).
"""
from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import CameraInfo, Image, JointState

from motus_core.data.sync import header_stamp_ns
from motus_core.images import ImageError, image_msg_to_rgb  # noqa: F401  (re-exported for the nodes)
from motus_core.robot_profile import JointSource, RobotProfile


class ConversionError(ValueError):
    """A message that cannot be converted (wrong encoding, sizes, unknown joints)."""


# -- time -------------------------------------------------------------------------------------------

def to_nanoseconds(seconds: float) -> int:
    return int(round(float(seconds) * 1e9))


def time_msg(seconds: float) -> Time:
    """Float seconds -> ``builtin_interfaces/Time``."""
    ns = to_nanoseconds(seconds)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def time_to_sec(t: Time) -> float:
    return t.sec + t.nanosec * 1e-9


def time_to_ns(t: Time) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


def header_stamp_from_cdr(data: bytes) -> float:
    """Stamp (s) of a *serialized* message that starts with a ``std_msgs/Header`` (Image, JointState,
    PoseStamped, ...), read without deserializing it: for cheap rate meters on ``raw=True`` subscriptions."""
    if len(data) < 12:
        raise ConversionError(f"serialized message of {len(data)} bytes is too short to hold a header")
    return header_stamp_ns(data) * 1e-9


def duration_msg(seconds: float) -> Duration:
    ns = to_nanoseconds(seconds)
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def duration_to_sec(d: Duration) -> float:
    return d.sec + d.nanosec * 1e-9


# -- images -----------------------------------------------------------------------------------------

_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


def image_msg(img: np.ndarray, stamp: Time | float, frame_id: str = "", encoding: str = "rgb8", msg: Image | None = None) -> Image:
    """HxWx3 (or HxW for mono8) uint8 array -> ``sensor_msgs/Image`` (one copy of the pixels).

    ``encoding`` says what the array holds (``rgb8``, ``bgr8`` or ``mono8``); it is not converted."""
    if encoding not in _CHANNELS:
        raise ConversionError(f"unsupported encoding {encoding!r}; supported: {sorted(_CHANNELS)}")
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ConversionError(f"image must be uint8, got {img.dtype}")
    channels = _CHANNELS[encoding]
    if (channels == 1 and img.ndim != 2) or (channels == 3 and (img.ndim != 3 or img.shape[2] != 3)):
        raise ConversionError(f"{encoding} needs an array of shape {'HxW' if channels == 1 else 'HxWx3'}, got {img.shape}")
    img = np.ascontiguousarray(img)
    out = msg if msg is not None else Image()
    out.header.stamp = stamp if isinstance(stamp, Time) else time_msg(stamp)
    out.header.frame_id = frame_id
    out.height, out.width = int(img.shape[0]), int(img.shape[1])
    out.encoding = encoding
    out.is_bigendian = 0
    out.step = int(img.shape[1] * channels)
    data = array.array("B")
    data.frombytes(img.data)
    out.data = data
    return out


def camera_info_msg(width: int, height: int, fx: float, fy: float, cx: float, cy: float, stamp: Time | float,
                    frame_id: str = "") -> CameraInfo:
    """Pinhole ``sensor_msgs/CameraInfo`` without distortion (``plumb_bob`` with zero coefficients)."""
    info = CameraInfo()
    info.header.stamp = stamp if isinstance(stamp, Time) else time_msg(stamp)
    info.header.frame_id = frame_id
    info.width, info.height = int(width), int(height)
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


# -- joint states -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class JointValues:
    """Values of some canonical joints from one message: ``indices`` into the canonical vector."""

    indices: np.ndarray
    position: np.ndarray
    velocity: np.ndarray | None  # None when the message carries no (or too few) velocities
    effort: np.ndarray | None


def joint_state_to_canonical(msg: JointState, source: JointSource, joint_names: Sequence[str]) -> JointValues:
    """The canonical joints ``source`` provides, read from ``msg`` by name.

    A joint of ``source`` missing from the message, a name that is neither the source's nor in its
    ``ignore`` set, duplicated names, or array lengths that do not match the names raise
    :class:`ConversionError`."""
    names = list(msg.name)
    n = len(names)
    if len(msg.position) != n:
        raise ConversionError(f"{source.topic}: {n} names but {len(msg.position)} positions")
    where = {}
    for i, name in enumerate(names):
        if name in where:
            raise ConversionError(f"{source.topic}: duplicated joint name {name!r}")
        where[name] = i
    missing = [m for m in source.names if m not in where]
    if missing:
        raise ConversionError(f"{source.topic}: joints {missing} missing from the message (has {names})")
    unknown = [m for m in names if m not in source.names and m not in source.ignore]
    if unknown:
        raise ConversionError(f"{source.topic}: unknown joint names {unknown} (expected {list(source.names)}; list names to "
                              f"skip in the profile's ignore_names)")
    index = {c: i for i, c in enumerate(joint_names)}
    rows = np.array([where[m] for m in source.names], dtype=int)
    idx = np.array([index[c] for c in source.names.values()], dtype=int)
    pos = np.asarray(msg.position, dtype=float)[rows]
    vel = np.asarray(msg.velocity, dtype=float)[rows] if len(msg.velocity) == n else None
    eff = np.asarray(msg.effort, dtype=float)[rows] if len(msg.effort) == n else None
    return JointValues(idx, pos, vel, eff)


def canonical_to_joint_state(source: JointSource, joint_names: Sequence[str], position: np.ndarray, stamp: Time | float,
                             velocity: np.ndarray | None = None, effort: np.ndarray | None = None,
                             extra: Mapping[str, float] | None = None) -> JointState:
    """The part of a canonical vector that ``source``'s topic carries, with the topic's joint names.

    ``extra`` appends more (name, position) entries (velocity/effort 0)."""
    index = {c: i for i, c in enumerate(joint_names)}
    idx = [index[c] for c in source.names.values()]
    n_extra = len(extra) if extra else 0
    msg = JointState()
    msg.header.stamp = stamp if isinstance(stamp, Time) else time_msg(stamp)
    msg.name = list(source.names) + (list(extra) if extra else [])
    msg.position = [float(position[i]) for i in idx] + ([float(v) for v in extra.values()] if extra else [])
    if velocity is not None:
        msg.velocity = [float(velocity[i]) for i in idx] + [0.0] * n_extra
    if effort is not None:
        msg.effort = [float(effort[i]) for i in idx] + [0.0] * n_extra
    return msg


class JointVectorAssembler:
    """Builds the canonical vector of a profile from its (possibly several) joint-state topics.

    ``update(topic, msg)`` stores that topic's joints; ``complete`` tells whether every joint has
    been received; ``stamp`` is the oldest stamp among the parts (s)."""

    def __init__(self, profile: RobotProfile, sources: Sequence[JointSource] | None = None):
        self.profile = profile
        self.sources = {s.topic: s for s in (profile.state_sources if sources is None else sources)}
        n = profile.dof
        self.position = np.full(n, np.nan)
        self.velocity = np.full(n, np.nan)
        self.effort = np.full(n, np.nan)
        self._stamps: dict[str, float] = {}

    def update(self, topic: str, msg: JointState) -> JointValues:
        if topic not in self.sources:
            raise ConversionError(f"topic {topic!r} is not a joint source of profile {self.profile.name!r}")
        vals = joint_state_to_canonical(msg, self.sources[topic], self.profile.joint_names)
        self.position[vals.indices] = vals.position
        if vals.velocity is not None:
            self.velocity[vals.indices] = vals.velocity
        if vals.effort is not None:
            self.effort[vals.indices] = vals.effort
        self._stamps[topic] = time_to_sec(msg.header.stamp)
        return vals

    @property
    def complete(self) -> bool:
        return len(self._stamps) == len(self.sources)

    @property
    def stamp(self) -> float:
        return min(self._stamps.values()) if self._stamps else float("nan")
