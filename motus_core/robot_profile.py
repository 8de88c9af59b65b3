"""Robot profiles: which topics, joints, cameras and limits a robot has.

A profile is a YAML file in ``config/robots/`` (one per robot). It is the single place where the
model's canonical 14-dim joint order is tied to the robot's topics and message joint names, so the
synchronizer, the executor, the recorder and the simulator all read the same definition.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

CAMERA_ROLES = ("high", "left_wrist", "right_wrist")
CAMERA_DRIVERS = ("", "realsense")
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
SUPPORTED_STATE_TYPES = (JOINT_STATE_TYPE,)
COMMAND_INTERFACES = ("joint_trajectory", "joint_state")


class ProfileError(ValueError):
    """A robot profile is missing a field or is inconsistent."""


def config_dir() -> Path:
    """The project's ``config/`` directory (share dir when installed by colcon, else the source tree)."""
    try:  # installed with colcon / ament: <prefix>/share/motus_ros/config
        from ament_index_python.packages import get_package_share_directory

        candidate = Path(get_package_share_directory("motus_ros")) / "config"
        if candidate.is_dir():
            return candidate
    except Exception:  # noqa: BLE001 - ament index absent or AMENT_PREFIX_PATH unset: pip-only install
        pass
    return Path(__file__).resolve().parent.parent / "config"


@dataclass(frozen=True)
class JointSource:
    """One joint-state topic that provides part of the canonical joint vector."""

    topic: str
    msg_type: str
    names: Mapping[str, str]  # joint name in the message -> canonical joint name
    # other names the message may carry and that are ignored; any name not listed here or in ``names``
    # makes the message an error (a driver renamed or mis-remapped must not feed wrong joints)
    ignore: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CommandTarget:
    """One command topic of the robot's driver or controller.

    ``rate_hz`` and ``max_step`` shape what the executor's output adapter (motus_ros/command_output.py)
    sends to this driver: at most ``rate_hz`` messages per second (0 = every command tick), and no joint
    moving more than its ``max_step`` between two consecutive messages (driver units; larger changes are
    clamped and counted). Some drivers need this: every JointState to a Piper re-plans a MOVE J on the
    firmware, and dense streams make the arm shake (piper_ros #52)."""

    topic: str
    interface: str  # "joint_trajectory" | "joint_state"
    names: Mapping[str, str]  # canonical joint name -> joint name the driver expects
    rate_hz: float = 0.0
    max_step: Mapping[str, float] = field(default_factory=dict)  # canonical joint name -> bound per message (empty = none)


DRIVER_KINDS = ("sim", "piper_ctrl_single_node", "piper_ms_node", "arx_x5", "ros2_control")


@dataclass(frozen=True)
class DriverSpec:
    """How the robot's vendor driver is run and switched on (see docs/robots.md)."""

    kind: str = "sim"
    # std_msgs/Bool topics that enable (true) / disable (false) the arms, one per arm ("" = none)
    enable_topics: tuple[str, ...] = ()
    # disabling cuts motor power (a Piper arm falls): only allowed when every joint is within this of home (rad)
    disable_tolerance: float = 0.15
    # publishers on a command topic other than the executor mean the driver is not listening to us
    # (Piper master/slave node in read mode, a teleop or another controller running): refuse to start.
    # Default: on for real drivers, off for the simulator (tests drive its command topics directly).
    exclusive_command_topics: bool = False

    @property
    def real(self) -> bool:
        return self.kind != "sim"


@dataclass(frozen=True)
class CameraSpec:
    role: str
    topic: str
    info_topic: str
    width: int
    height: int
    encoding: str = "rgb8"
    compressed: bool = False
    frame_id: str = ""
    fps: float = 30.0
    # who publishes it on a real robot: "realsense" (the robot graphs start realsense2_camera, or the
    # pyrealsense2 node where that is not installed, for the device ``serial``) or "" (your own driver)
    driver: str = ""
    serial: str = ""


@dataclass(frozen=True)
class GripperSpec:
    unit: str  # "normalized", "m", "arx"
    open_value: float
    closed_value: float


@dataclass(frozen=True)
class RobotProfile:
    name: str
    description: str
    joint_names: tuple[str, ...]
    gripper_indices: tuple[int, ...]
    gripper: GripperSpec
    position_lower: tuple[float, ...]
    position_upper: tuple[float, ...]
    velocity_limit: tuple[float, ...]
    acceleration_limit: tuple[float, ...]
    max_step: tuple[float, ...]  # largest allowed change of a command per action step
    home: tuple[float, ...]
    state_sources: tuple[JointSource, ...]
    leader_sources: tuple[JointSource, ...]
    commands: tuple[CommandTarget, ...]
    cameras: Mapping[str, CameraSpec]
    action_rate_hz: float
    command_rate_hz: float
    stats_key: str
    stats_file: str
    urdf: str
    base_frame: str
    ee_links: Mapping[str, str]  # "left"/"right" -> URDF link of the end effector
    source_path: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    urdf_joints: Mapping[str, str] = field(default_factory=dict)  # canonical name -> URDF joint name (see urdf_joint_names)
    driver: DriverSpec = field(default_factory=DriverSpec)

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def index_of(self, canonical_name: str) -> int:
        try:
            return self.joint_names.index(canonical_name)
        except ValueError:
            raise ProfileError(f"profile {self.name!r} has no joint {canonical_name!r}") from None

    @property
    def urdf_joint_names(self) -> dict[str, str]:
        """Canonical joint name -> the robot URDF's joint name (robot_state_publisher, forward kinematics).

        ``urdf_joints`` in the profile when given; else the state topics' message names when they are
        unique (one JointState for the whole robot, as the simulator publishes), else the canonical names:
        per-arm drivers name both arms ``joint1..`` and those names cannot identify a URDF joint."""
        if self.urdf_joints:
            return {c: self.urdf_joints.get(c, c) for c in self.joint_names}
        out: dict[str, str] = {}
        for src in self.state_sources:
            for msg_name, canon in src.names.items():
                out[canon] = msg_name
        if len(set(out.values())) != len(out):
            return {c: c for c in self.joint_names}
        return {c: out.get(c, c) for c in self.joint_names}

    def disable_blockers(self, position: Sequence[float]) -> list[str]:
        """Why disabling the motors now would be unsafe ([] = safe): disabling cuts motor power and an arm
        whose joints are away from home falls. Grippers do not count."""
        q = np.asarray(position, dtype=float)
        if q.shape != (self.dof,) or not np.all(np.isfinite(q)):
            return [f"no complete measured pose ({q.size} of {self.dof} joints)"]
        out = []
        for i, name in enumerate(self.joint_names):
            if i in self.gripper_indices:
                continue
            if abs(q[i] - self.home[i]) > self.driver.disable_tolerance:
                out.append(f"{name} at {q[i]:+.2f} rad, home {self.home[i]:+.2f}")
        return out

    def camera(self, role: str) -> CameraSpec:
        if role not in self.cameras:
            raise ProfileError(f"profile {self.name!r} has no camera with role {role!r}; roles: {sorted(self.cameras)}")
        return self.cameras[role]

    def resolve(self, relative: str) -> Path:
        """Resolve a path of the profile (stats file, urdf) relative to the project's share layout."""
        p = Path(relative)
        if p.is_absolute():
            return p
        root = config_dir().parent
        return root / p


def _floats(value: Any, n: int, what: str, profile: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        value = [float(value)] * n
    if not isinstance(value, Sequence) or len(value) != n:
        raise ProfileError(f"profile {profile!r}: {what} must be a number or a list of {n} numbers, got {value!r}")
    out = tuple(float(v) for v in value)
    if not all(math.isfinite(v) for v in out):
        raise ProfileError(f"profile {profile!r}: {what} contains non-finite values")
    return out


def _joint_sources(items: Any, canonical: Sequence[str], what: str, profile: str) -> tuple[JointSource, ...]:
    sources = []
    seen: dict[str, str] = {}
    for item in items or []:
        msg_type = item.get("type", JOINT_STATE_TYPE)
        names = dict(item.get("joints") or {n: n for n in canonical})
        for msg_name, canon in names.items():
            if canon not in canonical:
                raise ProfileError(f"profile {profile!r}: {what} topic {item['topic']} maps {msg_name!r} to unknown joint {canon!r}")
            if canon in seen:
                raise ProfileError(f"profile {profile!r}: joint {canon!r} comes from both {seen[canon]} and {item['topic']}")
            seen[canon] = item["topic"]
        ignore = frozenset(item.get("ignore_names") or ())
        if ignore & set(names):
            raise ProfileError(f"profile {profile!r}: {what} topic {item['topic']} both maps and ignores {sorted(ignore & set(names))}")
        sources.append(JointSource(topic=item["topic"], msg_type=msg_type, names=names, ignore=ignore))
    if sources and set(seen) != set(canonical):
        missing = [n for n in canonical if n not in seen]
        raise ProfileError(f"profile {profile!r}: {what} topics do not provide joints {missing}")
    return tuple(sources)


def _max_step(value: Any, joints: list[str], canonical: Sequence[str], gripper_indices: Sequence[int], topic: str,
              profile: str) -> dict[str, float]:
    """``max_step`` of a command target: a number (every joint), ``{joints: x, gripper: y}``, or per canonical joint."""
    if value is None:
        return {}
    grippers = {canonical[i] for i in gripper_indices}
    if isinstance(value, (int, float)):
        out = {j: float(value) for j in joints}
    elif isinstance(value, Mapping) and set(value) <= {"joints", "gripper"}:
        out = {j: float(value["gripper" if j in grippers else "joints"]) for j in joints
               if ("gripper" if j in grippers else "joints") in value}
    elif isinstance(value, Mapping):
        unknown = [j for j in value if j not in joints]
        if unknown:
            raise ProfileError(f"profile {profile!r}: command {topic} max_step names joints it does not command: {unknown}")
        out = {j: float(v) for j, v in value.items()}
    else:
        raise ProfileError(f"profile {profile!r}: command {topic} max_step must be a number or a mapping, got {value!r}")
    if not all(math.isfinite(v) and v > 0 for v in out.values()):
        raise ProfileError(f"profile {profile!r}: command {topic} max_step values must be > 0")
    return out


def _driver(raw: Any, profile: str) -> DriverSpec:
    if raw is None:
        return DriverSpec()
    kind = raw.get("kind", "sim")
    if kind not in DRIVER_KINDS:
        raise ProfileError(f"profile {profile!r}: driver.kind must be one of {DRIVER_KINDS}, got {kind!r}")
    tol = float(raw.get("disable_tolerance", DriverSpec.disable_tolerance))
    if not (math.isfinite(tol) and tol > 0):
        raise ProfileError(f"profile {profile!r}: driver.disable_tolerance must be > 0")
    return DriverSpec(kind=kind, enable_topics=tuple(raw.get("enable_topics") or ()), disable_tolerance=tol,
                      exclusive_command_topics=bool(raw.get("exclusive_command_topics", kind != "sim")))


def load_profile(name_or_path: str | Path) -> RobotProfile:
    """Load a profile by name (``config/robots/<name>.yaml``) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = config_dir() / "robots" / f"{name_or_path}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (config_dir() / "robots").glob("*.yaml"))
        raise ProfileError(f"robot profile {str(name_or_path)!r} not found (looked at {path}); available: {available}")
    raw = yaml.safe_load(path.read_text())
    name = raw.get("name", path.stem)
    try:
        joints = raw["joints"]
        canonical = tuple(joints["names"])
        n = len(canonical)
        if len(set(canonical)) != n:
            raise ProfileError(f"profile {name!r}: duplicated joint names")
        grip = raw["gripper"]
        gripper_indices = tuple(int(i) for i in grip["indices"])
        cameras = {}
        for role, cam in (raw.get("cameras") or {}).items():
            if role not in CAMERA_ROLES:
                raise ProfileError(f"profile {name!r}: unknown camera role {role!r} (expected one of {CAMERA_ROLES})")
            cameras[role] = CameraSpec(
                role=role,
                topic=cam["topic"],
                info_topic=cam.get("info_topic", cam["topic"].rsplit("/", 1)[0] + "/camera_info"),
                width=int(cam["width"]),
                height=int(cam["height"]),
                encoding=cam.get("encoding", "rgb8"),
                compressed=bool(cam.get("compressed", False)),
                frame_id=cam.get("frame_id", f"cam_{role}"),
                fps=float(cam.get("fps", 30.0)),
                driver=str(cam.get("driver", "")),
                serial=str(cam.get("serial", "") or ""),
            )
            if cameras[role].driver not in CAMERA_DRIVERS:
                raise ProfileError(f"profile {name!r}: camera {role} driver must be one of {CAMERA_DRIVERS}")
        commands = []
        for item in raw.get("commands") or []:
            if item["interface"] not in COMMAND_INTERFACES:
                raise ProfileError(f"profile {name!r}: command interface must be one of {COMMAND_INTERFACES}")
            names = dict(item.get("joints") or {c: c for c in canonical})
            unknown = [c for c in names if c not in canonical]
            if unknown:
                raise ProfileError(f"profile {name!r}: command {item['topic']} names unknown joints {unknown}")
            rate_hz = float(item.get("rate_hz", 0.0))
            if not (math.isfinite(rate_hz) and rate_hz >= 0):
                raise ProfileError(f"profile {name!r}: command {item['topic']} rate_hz must be >= 0, got {rate_hz}")
            max_step = _max_step(item.get("max_step"), list(names), canonical, gripper_indices, item["topic"], name)
            commands.append(CommandTarget(topic=item["topic"], interface=item["interface"], names=names, rate_hz=rate_hz,
                                          max_step=max_step))
        profile = RobotProfile(
            name=name,
            description=raw.get("description", ""),
            joint_names=canonical,
            gripper_indices=gripper_indices,
            gripper=GripperSpec(unit=grip["unit"], open_value=float(grip["open"]), closed_value=float(grip["closed"])),
            position_lower=_floats(joints["lower"], n, "joints.lower", name),
            position_upper=_floats(joints["upper"], n, "joints.upper", name),
            velocity_limit=_floats(joints["velocity"], n, "joints.velocity", name),
            acceleration_limit=_floats(joints["acceleration"], n, "joints.acceleration", name),
            max_step=_floats(joints["max_step"], n, "joints.max_step", name),
            home=_floats(joints["home"], n, "joints.home", name),
            state_sources=_joint_sources(raw.get("state"), canonical, "state", name),
            leader_sources=_joint_sources(raw.get("leader"), canonical, "leader", name),
            commands=tuple(commands),
            cameras=cameras,
            action_rate_hz=float(raw.get("action_rate_hz", 30.0)),
            command_rate_hz=float(raw.get("command_rate_hz", 200.0)),
            stats_key=raw.get("stats", {}).get("key", name),
            stats_file=raw.get("stats", {}).get("file", ""),
            urdf=raw.get("urdf", ""),
            base_frame=raw.get("frames", {}).get("base", "world"),
            ee_links=dict(raw.get("frames", {}).get("end_effectors", {})),
            source_path=str(path),
            extra=dict(raw.get("extra") or {}),
            urdf_joints=dict(raw.get("urdf_joints") or {}),
            driver=_driver(raw.get("driver"), name),
        )
    except KeyError as exc:
        raise ProfileError(f"profile {name!r} ({path}) is missing field {exc.args[0]!r}") from None
    for lo, hi, jn in zip(profile.position_lower, profile.position_upper, canonical):
        if not lo < hi:
            raise ProfileError(f"profile {name!r}: joint {jn!r} has lower limit {lo} >= upper limit {hi}")
    for i in gripper_indices:
        if not 0 <= i < n:
            raise ProfileError(f"profile {name!r}: gripper index {i} out of range")
    if not profile.state_sources:
        raise ProfileError(f"profile {name!r}: no state topics")
    unknown = [c for c in profile.urdf_joints if c not in canonical]
    urdf_names = list(profile.urdf_joint_names.values())
    if unknown or len(set(urdf_names)) != len(urdf_names):
        raise ProfileError(f"profile {name!r}: urdf_joints must map canonical joints to distinct URDF names "
                           f"(unknown: {unknown}, duplicated: {sorted({n for n in urdf_names if urdf_names.count(n) > 1})})")
    return profile


def available_profiles() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "robots").glob("*.yaml"))


def as_profile(profile: "RobotProfile | str | Path | None", default: str = "sim_aloha") -> RobotProfile:
    """A loaded profile from a profile, a profile name/path, or None (the default robot)."""
    if isinstance(profile, RobotProfile):
        return profile
    return load_profile(profile or default)
