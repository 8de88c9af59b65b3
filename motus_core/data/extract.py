"""One recorded episode -> aligned frames, follower qpos, leader commands and a sync report.

Single streaming pass over the bag (episodes are gigabytes of images): camera and joint messages go
through ``sync.FrameAligner`` with the high camera as reference; each output frame's images are
decoded and handed to ``on_frame`` right away (the converter encodes them), joint vectors are
assembled as-of the frame stamps at the end.

What goes where (teleoperation): ``qpos`` = the **follower** arms (profile ``state`` topics) at
each frame - the state; ``leader`` = the **leader** arms (profile ``leader`` topics; the scripted
demonstrator publishes its commands there), what the operator commanded - LeRobot's ``action`` and,
by default, the Motus layout's ``actions/`` (the training targets; see ``motus_layout``).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from motus_core.data.bag_reader import BagError, bag_state, read_messages, FINISHED
from motus_core.data.bag_writer import make_typestore
from motus_core.data.episode import (
    ROLE_CAMERA,
    ROLE_INSTRUCTION,
    ROLE_LEADER,
    ROLE_STATE,
    EpisodeDir,
)
from motus_core.data.images import ImageError, image_cdr_to_rgb
from motus_core.data.sync import (
    NS,
    FrameAligner,
    JointAssembler,
    StreamReport,
    SyncError,
    gap_runs,
    header_stamp_ns,
    parse_joint_state_cdr,
    reference_holes,
)
from motus_core.preprocessing import MOSAIC_ROLES

FrameSink = Callable[[dict[str, np.ndarray]], None]


@dataclass(frozen=True)
class SyncOptions:
    max_age_s: float = 0.1  # a stream older than this at a frame is a gap
    max_gap_s: float = 0.1  # a hole between reference frames longer than this is a gap
    fps: int = 30  # the dataset's frame rate; the reference camera must run at it (+-10 %)
    force: bool = False  # keep episodes with gaps (reported anyway)


@dataclass
class Extracted:
    episode_id: str
    frames: int
    times_ns: np.ndarray  # header stamp of each output frame (reference camera)
    qpos: np.ndarray  # [T, dof] follower
    leader: np.ndarray | None  # [T, dof] leader, None if the episode has no leader topics / messages
    instruction: str
    report: dict[str, Any]
    problems: list[str] = field(default_factory=list)  # why the episode should be left out

    @property
    def ok(self) -> bool:
        return not self.problems


class ExtractionError(RuntimeError):
    """An episode that cannot be converted at all (no reference frames, unreadable bag...)."""


def _cameras(meta) -> dict[str, str]:
    roles = {}
    for topic, rec in meta.topics.items():
        if rec.role == ROLE_CAMERA and rec.camera_role:
            roles[rec.camera_role] = topic
    missing = [r for r in MOSAIC_ROLES if r not in roles]
    if missing:
        raise ExtractionError(f"episode {meta.episode_id}: no camera topic for roles {missing} (Motus needs {MOSAIC_ROLES})")
    return roles


def _sources(meta, role: str) -> list[dict]:
    key = "state" if role == ROLE_STATE else "leader"
    snap = meta.profile.get(key) or []
    if snap:
        return [dict(s) for s in snap]
    names = meta.profile.get("joint_names") or []
    return [{"topic": t, "joints": {n: n for n in names}} for t, r in meta.topics.items() if r.role == role]


def extract_episode(ep: EpisodeDir, options: SyncOptions = SyncOptions(), on_frame: FrameSink | None = None,
                    progress: Callable[[int], None] | None = None) -> Extracted:
    """Align and decode one episode; ``on_frame`` receives ``{camera role: RGB image}`` per kept frame."""
    meta = ep.meta
    if bag_state(ep.bag) != FINISHED:
        raise BagError(f"episode {meta.episode_id}: bag {ep.bag} is {bag_state(ep.bag)}")
    joint_names = meta.profile.get("joint_names")
    if not joint_names:
        raise ExtractionError(f"episode {meta.episode_id}: metadata has no profile joint names")
    cams = _cameras(meta)
    cam_topic_role = {t: r for r, t in cams.items()}
    state_src, leader_src = _sources(meta, ROLE_STATE), _sources(meta, ROLE_LEADER)
    state_asm = JointAssembler(joint_names, state_src)
    leader_asm = JointAssembler(joint_names, leader_src) if leader_src else None
    joint_topics = {s["topic"]: ROLE_STATE for s in state_src} | {s["topic"]: ROLE_LEADER for s in leader_src}
    instr_topics = {t for t, r in meta.topics.items() if r.role == ROLE_INSTRUCTION}
    ref = cams["high"]
    # leader streams do not gate the frames (a robot can be recorded without its leader arms)
    gating = [cams["left_wrist"], cams["right_wrist"], *[s["topic"] for s in state_src]]
    aligner = FrameAligner(ref, gating)
    typestore = make_typestore()
    max_age = int(options.max_age_s * NS)

    joint_msgs: dict[str, list] = {t: [] for t in joint_topics}
    cam_times: dict[str, list] = {t: [] for t in cams.values()}
    stamp_fallback: dict[str, bool] = {}
    instructions: list[str] = []
    frame_times: list[int] = []
    frame_ages: list[dict[str, int]] = []
    trimmed = 0
    trimmed_end = 0
    started = False
    decode_errors = 0

    def decode(payload) -> np.ndarray:
        msgtype, data = payload
        return image_cdr_to_rgb(data, msgtype, typestore)

    last_images: dict[str, np.ndarray] = {}

    def emit(frames) -> None:
        nonlocal trimmed, trimmed_end, started, decode_errors
        for f in frames:
            if not started:
                if any(a < 0 or a > max_age for a in f.ages_ns.values()):
                    trimmed += 1
                    continue
                started = True
            if trimmed_end or any(f.ages_ns[s] > max_age for s in f.ended):
                # Trailing frames after a stream's last message: streams have different latencies, so
                # stopping the recording cuts them a few frames apart. Trimmed like leading frames.
                trimmed_end += 1
                continue
            images = {}
            for role in MOSAIC_ROLES:
                payload = f.payloads[cams[role]]
                try:
                    images[role] = decode(payload)
                except ImageError:
                    decode_errors += 1
                    if role not in last_images:
                        raise
                    images[role] = last_images[role]
                last_images[role] = images[role]
            frame_times.append(f.stamp_ns)
            frame_ages.append(f.ages_ns)
            if on_frame is not None:
                on_frame(images)
            if progress is not None:
                progress(1)

    try:
        for m in read_messages(ep.bag):
            if m.topic in cam_topic_role:
                stamp = header_stamp_ns(m.data)
                if stamp == 0:
                    stamp_fallback[m.topic] = True
                    stamp = m.timestamp
                cam_times[m.topic].append((stamp, m.timestamp))
                emit(aligner.push(m.topic, stamp, m.timestamp, (m.msgtype, m.data)))
            elif m.topic in joint_topics:
                try:
                    stamp, names, position = parse_joint_state_cdr(m.data)
                except (ValueError, struct.error, UnicodeDecodeError):
                    msg = typestore.deserialize_cdr(m.data, m.msgtype)  # big-endian or unusual: the slow, general way
                    stamp = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
                    names, position = tuple(msg.name), np.asarray(msg.position)
                joint_msgs[m.topic].append((stamp, m.timestamp, names, position))
                if aligner.gates(m.topic):  # gating joint stream: its stamps drive frame resolution
                    emit(aligner.push(m.topic, stamp or m.timestamp, m.timestamp, None))
            elif m.topic in instr_topics:
                instructions.append(str(typestore.deserialize_cdr(m.data, m.msgtype).data))
        emit(aligner.finish())
    except (BagError, ImageError, SyncError, ExtractionError):
        raise
    except (ValueError, KeyError, IndexError, AssertionError, struct.error, TypeError) as exc:
        raise BagError(f"episode {meta.episode_id}: unreadable message in bag ({type(exc).__name__}: {exc})") from None

    problems: list[str] = []
    n = len(frame_times)
    if n == 0:
        raise ExtractionError(f"episode {meta.episode_id}: no frame where all cameras and joint states were present "
                              f"(reference {ref} had {aligner.received[ref]} messages)")
    times = np.asarray(frame_times, dtype=np.int64)
    state_series = [state_asm.series(s["topic"], joint_msgs[s["topic"]]) for s in state_src if joint_msgs[s["topic"]]]
    missing_state = [s["topic"] for s in state_src if not joint_msgs[s["topic"]]]
    if missing_state:
        raise ExtractionError(f"episode {meta.episode_id}: follower joint topics never received: {missing_state}")
    qpos, state_ages = state_asm.assemble(state_series, times)
    leader = None
    leader_ages: dict[str, np.ndarray] = {}
    leader_series = []
    if leader_asm is not None and all(joint_msgs[s["topic"]] for s in leader_src):
        leader_series = [leader_asm.series(s["topic"], joint_msgs[s["topic"]]) for s in leader_src]
        leader, leader_ages = leader_asm.assemble(leader_series, times)
        if np.isnan(leader).any():
            # leader values before its first message: hold the first one (the operator had not moved yet)
            first = np.argmax(~np.isnan(leader).any(axis=1))
            leader[:first] = leader[first]
    if np.isnan(qpos).any():
        raise ExtractionError(f"episode {meta.episode_id}: follower joints missing at some frames after alignment")

    # ------------------------------------------------------------------ report
    streams: dict[str, StreamReport] = {}
    for role, topic in cams.items():
        rep = StreamReport(topic, f"camera:{role}", stamp_source="receive" if stamp_fallback.get(topic) else "header")
        ct = np.asarray(cam_times[topic], dtype=np.int64).reshape(-1, 2)
        rep.set_timing(ct[:, 0], ct[:, 1])
        rep.out_of_order = aligner.out_of_order.get(topic, 0)
        ages = np.asarray([a[topic] for a in frame_ages], dtype=np.int64)
        rep.set_ages(ages)
        if topic != ref:
            rep.gaps = gap_runs(topic, ages, times, max_age)
        streams[topic] = rep
    for series, ages, role in [(s, state_ages[s.topic], "state") for s in state_series] + \
                              [(s, leader_ages[s.topic], "leader") for s in leader_series]:
        rep = StreamReport(series.topic, role, stamp_source=series.stamp_source, rejected=getattr(series, "rejected", 0))
        rep.set_timing(series.stamps_ns, series.receive_ns)
        rep.set_ages(ages)
        rep.gaps = gap_runs(series.topic, ages, times, max_age)
        streams[series.topic] = rep
    for topic, rec in meta.topics.items():
        if topic in streams:
            streams[topic].dropped_by_recorder = rec.dropped
    holes, missing_ref, _period = reference_holes(times, int(options.max_gap_s * NS))
    streams[ref].gaps = holes
    rate = streams[ref].rate_hz  # one rate per stream: the reference's, as its stream entry reports it
    if rate and abs(rate - options.fps) > 0.1 * options.fps:
        problems.append(f"the high camera runs at {rate:.1f} Hz but the dataset is {options.fps} fps")
    for rep in streams.values():
        if rep.gaps and not rep.role.startswith("leader"):
            worst = max(g.duration_s for g in rep.gaps)
            problems.append(f"{rep.topic}: {len(rep.gaps)} gap(s), worst {worst * 1000:.0f} ms "
                            f"(tolerance {options.max_age_s * 1000 if rep.topic != ref else options.max_gap_s * 1000:.0f} ms)")
        if rep.dropped_by_recorder:
            problems.append(f"{rep.topic}: {rep.dropped_by_recorder} message(s) dropped by the recorder (back-pressure)")
    if decode_errors:
        problems.append(f"{decode_errors} camera image(s) could not be decoded (previous image reused)")

    instruction = meta.instruction.strip() or (instructions[-1].strip() if instructions else "")
    if not instruction:
        problems.append("no instruction (episode metadata and instruction topic are empty)")
    report = {
        "episode_id": meta.episode_id,
        "task": meta.task,
        "outcome": meta.outcome,
        "frames": n,
        "duration_s": round((times[-1] - times[0]) / NS, 4) if n > 1 else 0.0,
        "reference": ref,
        "reference_rate_hz": round(rate, 3),
        "trimmed_start_frames": trimmed,
        "trimmed_end_frames": trimmed_end,
        "missing_reference_frames": missing_ref,
        "max_age_s": options.max_age_s,
        "max_gap_s": options.max_gap_s,
        "leader_recorded": leader is not None,
        "streams": {t: r.as_dict() for t, r in streams.items()},
        "recorder_missing_topics": list(meta.missing_topics),
        "problems": problems,
        "frame_stamps_ns": [int(t) for t in times],  # header stamp of the high camera at each output frame
    }
    return Extracted(meta.episode_id, n, times, qpos, leader, instruction, report, problems)
