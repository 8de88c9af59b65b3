"""Recorded episodes on disk: one directory per episode, a rosbag2 and a metadata file.

::

    <episodes_root>/<episode_id>/episode.json     EpisodeMetadata (below), rewritten atomically
    <episodes_root>/<episode_id>/bag/             rosbag2 directory (metadata.yaml + bag.mcap | bag.db3)

Life of an episode (``state``):

* ``recording``  - written before the bag is opened, with the recorder's pid and process start
  time. A recorder that dies (SIGKILL, power loss) leaves it so; ``effective_state`` then reports
  ``incomplete`` because that process no longer exists.
* ``complete``   - stopped normally; ``outcome`` says success / failure / unknown.
* ``incomplete`` - stopped by an error (disk full), a shutdown (SIGINT) or a crash. Never converted
  as a complete episode.
* ``discarded``  - thrown away by the operator: the bag is deleted, this file stays as the record.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

FORMAT_VERSION = 1
METADATA_FILE = "episode.json"
BAG_DIR = "bag"

RECORDING = "recording"
COMPLETE = "complete"
INCOMPLETE = "incomplete"
DISCARDED = "discarded"
STATES = (RECORDING, COMPLETE, INCOMPLETE, DISCARDED)

SUCCESS = "success"
FAILURE = "failure"
UNKNOWN = "unknown"
OUTCOMES = (SUCCESS, FAILURE, UNKNOWN)

# topic roles (what a topic is for the converter)
ROLE_STATE = "state"  # follower arms: the robot's qpos (Motus trains on its future values as actions)
ROLE_LEADER = "leader"  # leader arms: what the operator commanded (LeRobot's "action")
ROLE_CAMERA = "camera"
ROLE_CAMERA_INFO = "camera_info"
ROLE_INSTRUCTION = "instruction"
ROLE_EXTRA = "extra"


class EpisodeError(RuntimeError):
    """An episode directory that cannot be used as asked."""


@dataclass
class TopicRecord:
    """What happened to one topic during an episode."""

    msgtype: str
    role: str = ROLE_EXTRA
    camera_role: str = ""  # high / left_wrist / right_wrist for cameras
    received: int = 0  # messages that arrived while recording
    written: int = 0  # messages in the bag
    dropped: int = 0  # arrived but not written (queue full / disk error) - counted, never silent
    first_time_ns: int = 0  # bag (receive) time of the first written message
    last_time_ns: int = 0


@dataclass
class EpisodeMetadata:
    episode_id: str
    robot: str
    task: str
    instruction: str
    operator: str = ""
    state: str = RECORDING
    outcome: str = UNKNOWN
    notes: str = ""
    error: str = ""
    storage: str = "mcap"
    start_time: str = ""  # ISO 8601 wall clock (UTC)
    stop_time: str = ""
    start_stamp_ns: int = 0  # robot clock (sim time with the simulator) when recording started
    stop_stamp_ns: int = 0
    topics: dict[str, TopicRecord] = field(default_factory=dict)
    missing_topics: list[str] = field(default_factory=list)  # configured but never received
    bytes_written: int = 0
    profile: dict[str, Any] = field(default_factory=dict)  # snapshot of the robot profile's topics/joints/cameras
    recorder: dict[str, Any] = field(default_factory=dict)  # pid, process start time, host
    format_version: int = FORMAT_VERSION

    @property
    def duration_s(self) -> float:
        if self.stop_stamp_ns and self.start_stamp_ns:
            return (self.stop_stamp_ns - self.start_stamp_ns) * 1e-9
        return 0.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> "EpisodeMetadata":
        data = dict(data)
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise EpisodeError(f"episode metadata format {data['format_version']} is newer than this reader ({FORMAT_VERSION})")
        topics = {k: TopicRecord(**v) for k, v in (data.pop("topics", None) or {}).items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        for k in unknown:  # forward compatible: ignore fields added later
            data.pop(k)
        meta = cls(**data)
        meta.topics = topics
        if meta.state not in STATES:
            raise EpisodeError(f"episode {meta.episode_id}: unknown state {meta.state!r}")
        if meta.outcome not in OUTCOMES:
            raise EpisodeError(f"episode {meta.episode_id}: unknown outcome {meta.outcome!r}")
        return meta


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_episode_id(task: str = "", when: float | None = None) -> str:
    """``<task>_<UTC yyyymmdd-HHMMSS-mmm>``: sortable by start time, unique per recorder."""
    t = time.time() if when is None else when
    stamp = datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m%d-%H%M%S")
    ms = int((t % 1) * 1000)
    prefix = "".join(c if c.isalnum() or c in "-_" else "_" for c in task.strip())[:40] or "episode"
    return f"{prefix}_{stamp}-{ms:03d}"


def this_process() -> dict[str, Any]:
    p = psutil.Process()
    return {"pid": p.pid, "create_time": p.create_time(), "host": socket.gethostname()}


def _process_alive(info: dict[str, Any]) -> bool:
    if not info:
        return False
    if info.get("host") != socket.gethostname():
        return True  # recorded on another host (shared disk): cannot check, trust the file
    try:
        p = psutil.Process(int(info["pid"]))
        return abs(p.create_time() - float(info["create_time"])) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False


METADATA_RESERVE = 32 * 1024  # bytes: room to rewrite episode.json in place when the disk is full


def write_metadata(episode_dir: Path, meta: EpisodeMetadata, *, reserve: bool = False) -> None:
    """Rewrite ``episode.json`` atomically (temp file + fsync + rename): never a half-written file.

    ``reserve`` pads the file with spaces (valid JSON) to ``METADATA_RESERVE`` bytes. When the disk
    is full and the temp file cannot be written, the final state is written over the old content in
    place instead - possible because the padding already owns the disk blocks.
    """
    path = Path(episode_dir) / METADATA_FILE
    data = meta.to_json().encode()
    if reserve and len(data) < METADATA_RESERVE:
        data = data + b" " * (METADATA_RESERVE - len(data) - 1) + b"\n"
    tmp = path.with_name(f".{METADATA_FILE}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or not path.exists():
            raise
        _overwrite_in_place(path, meta.to_json().encode(), exc)


def _overwrite_in_place(path: Path, data: bytes, cause: OSError) -> None:
    size = path.stat().st_size
    if len(data) + 1 > size:
        raise cause
    fd = os.open(path, os.O_WRONLY)
    try:
        # JSON first, then spaces over the rest of the old content: same size, no new blocks needed.
        os.pwrite(fd, data + b" " * (size - len(data) - 1) + b"\n", 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_metadata(episode_dir: str | Path) -> EpisodeMetadata:
    path = Path(episode_dir) / METADATA_FILE
    try:
        return EpisodeMetadata.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise EpisodeError(f"{episode_dir}: no {METADATA_FILE}") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise EpisodeError(f"{path}: unreadable metadata ({exc})") from None


@dataclass(frozen=True)
class EpisodeDir:
    """An episode directory and what its metadata says, with crashed recordings recognised."""

    path: Path
    meta: EpisodeMetadata

    @property
    def bag(self) -> Path:
        return self.path / BAG_DIR

    @property
    def effective_state(self) -> str:
        """``recording`` only while the recording process is alive; a dead recorder means ``incomplete``."""
        if self.meta.state == RECORDING and not _process_alive(self.meta.recorder):
            return INCOMPLETE
        return self.meta.state

    @property
    def crashed(self) -> bool:
        return self.meta.state == RECORDING and self.effective_state == INCOMPLETE


def list_episodes(root: str | Path) -> tuple[list[EpisodeDir], list[tuple[Path, str]]]:
    """Episode directories under ``root`` (sorted by id) and the ones whose metadata is unreadable."""
    root = Path(root)
    good: list[EpisodeDir] = []
    bad: list[tuple[Path, str]] = []
    if not root.is_dir():
        raise EpisodeError(f"episodes directory not found: {root}")
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (d / METADATA_FILE).exists():
            if (d / BAG_DIR).exists():
                bad.append((d, f"no {METADATA_FILE}"))
            continue
        try:
            good.append(EpisodeDir(d, read_metadata(d)))
        except EpisodeError as exc:
            bad.append((d, str(exc)))
    return good, bad


def record_bag_contents(episode_dir: str | Path, topics: dict[str, tuple[int, int, int]], payload_bytes: int) -> EpisodeMetadata:
    """Rewrite the counts of ``episode.json`` from what a (repaired) bag really holds.

    ``topics``: topic -> (messages, first bag time ns, last bag time ns); ``payload_bytes``: the sum of
    the serialized messages, as the recorder counts ``bytes_written``. A recorder killed mid-episode
    never wrote its counts (they stayed 0); the repaired bag is the truth."""
    meta = read_metadata(episode_dir)
    for topic, (n, first, last) in topics.items():
        rec = meta.topics.get(topic)
        if rec is None:
            continue  # a topic the metadata does not list keeps out of it (the bag still has it)
        rec.written = int(n)
        rec.received = max(rec.received, rec.written + rec.dropped)
        rec.first_time_ns, rec.last_time_ns = (int(first), int(last)) if n else (0, 0)
    meta.missing_topics = [t for t in meta.missing_topics if topics.get(t, (0,))[0] == 0]
    meta.bytes_written = int(payload_bytes)
    write_metadata(Path(episode_dir), meta)
    return meta


def mark_incomplete(ep: EpisodeDir, reason: str) -> EpisodeMetadata:
    """Persist ``incomplete`` for a crashed recording (used by ``motus-convert --repair``)."""
    try:  # re-read: a bag repair may have rewritten the counts since ``ep`` was listed
        meta = read_metadata(ep.path)
    except EpisodeError:
        meta = ep.meta
    meta.state = INCOMPLETE
    meta.error = meta.error or reason
    if not meta.stop_time:
        meta.stop_time = now_iso()
    write_metadata(ep.path, meta)
    return meta
