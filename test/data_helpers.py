"""Synthetic recorded episodes for the data tests (no ROS: raw CDR from rosbags' serializer).

Every image says which frame it is: camera ``c`` at frame ``k`` is filled with grey level
``code(c, k)`` and every joint value says when it was measured, so a test can check that the
converter picked the right message for every output frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from motus_core.data.bag_writer import EpisodeRecorder, make_typestore, profile_snapshot, profile_topics
from motus_core.robot_profile import load_profile

NS = 1_000_000_000
CAM_OFFSETS = {"high": 0, "left_wrist": 60, "right_wrist": 120}
TS = make_typestore()


def grey(role: str, k: int) -> int:
    return (CAM_OFFSETS[role] + 2 * k) % 250


def joint_value(j: int, t_ns: int) -> float:
    return 0.1 * j + 0.5 * np.sin(t_ns / NS + j)


def _header(stamp_ns: int, frame_id: str = ""):
    Header, Time = TS.types["std_msgs/msg/Header"], TS.types["builtin_interfaces/msg/Time"]
    return Header(stamp=Time(sec=stamp_ns // NS, nanosec=stamp_ns % NS), frame_id=frame_id)


def image_cdr(role: str, k: int, stamp_ns: int, hw=(240, 320)) -> bytes:
    Image = TS.types["sensor_msgs/msg/Image"]
    h, w = hw
    data = np.full(h * w * 3, grey(role, k), np.uint8)
    msg = Image(header=_header(stamp_ns, role), height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3, data=data)
    return bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def joints_cdr(names, values, stamp_ns: int) -> bytes:
    JS = TS.types["sensor_msgs/msg/JointState"]
    msg = JS(header=_header(stamp_ns), name=list(names), position=np.asarray(values, np.float64),
             velocity=np.zeros(0), effort=np.zeros(0))
    return bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def string_cdr(text: str) -> bytes:
    return bytes(TS.serialize_cdr(TS.types["std_msgs/msg/String"](data=text), "std_msgs/msg/String"))


@dataclass
class SyntheticEpisode:
    episode_id: str
    frames: int
    start_ns: int
    cam_period_ns: int


def record_synthetic(root: Path, episode_id: str, *, frames: int = 60, profile: str = "sim_aloha", hw=(240, 320),
                     cam_period_ns: int = NS // 30, joint_period_ns: int = NS // 200, start_ns: int = 1000 * NS,
                     wrist_lag_ns: int = 5_000_000, drop_high: tuple[int, ...] = (), drop_left: tuple[int, ...] = (),
                     outcome: str = "success", stop: bool = True, storage: str = "mcap", task: str = "pick_cube",
                     instruction: str = "pick up the cube", recorder: EpisodeRecorder | None = None,
                     leader_offset: float = 0.01, joints_stop_early_ns: int = 0) -> EpisodeRecorder:
    """Record one synthetic episode into ``root/<episode_id>`` through ``EpisodeRecorder``."""
    prof = load_profile(profile)
    rec = recorder or EpisodeRecorder(root, prof.name, storage=storage, profile_snapshot=profile_snapshot(prof),
                                      min_free_bytes=0, flush_period_s=0.1)
    topics = profile_topics(prof, instruction_topic="/instruction")
    rec.start(topics, task=task, instruction=instruction, episode_id=episode_id, stamp_ns=start_ns)
    events = []
    for k in range(frames):
        t = start_ns + k * cam_period_ns
        for role, cam in prof.cameras.items():
            if (role == "high" and k in drop_high) or (role == "left_wrist" and k in drop_left):
                continue
            lag = 0 if role == "high" else wrist_lag_ns
            events.append((t + lag + 2_000_000, cam.topic, image_cdr(role, k, t + lag, hw)))
    n_joint = int((frames * cam_period_ns - joints_stop_early_ns) / joint_period_ns) + (0 if joints_stop_early_ns else 10)
    for i in range(-5, n_joint):
        t = start_ns + i * joint_period_ns
        for src in prof.state_sources:
            names = list(src.names)
            vals = [joint_value(prof.index_of(src.names[n]), t) for n in names]
            events.append((t + 300_000, src.topic, joints_cdr(names, vals, t)))
        for src in prof.leader_sources:
            names = list(src.names)
            vals = [joint_value(prof.index_of(src.names[n]), t) + leader_offset for n in names]
            events.append((t + 300_000, src.topic, joints_cdr(names, vals, t)))
    events.append((start_ns, "/instruction", string_cdr(instruction)))
    events.sort(key=lambda e: e[0])
    for recv, topic, raw in events:
        rec.offer(topic, raw, recv)
    if stop:
        rec.stop(outcome, stamp_ns=start_ns + frames * cam_period_ns)
    return rec


def expected_qpos(profile: str, times_ns: np.ndarray, joint_period_ns: int = NS // 200, start_ns: int = 1000 * NS) -> np.ndarray:
    """What as-of alignment must produce: the latest joint sample at or before each frame time."""
    prof = load_profile(profile)
    k = np.floor((times_ns - start_ns) / joint_period_ns).astype(np.int64)
    t = start_ns + k * joint_period_ns
    return np.stack([[joint_value(j, int(x)) for j in range(prof.dof)] for x in t]).astype(np.float32)
