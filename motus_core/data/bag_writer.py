"""``EpisodeRecorder``: one rosbag2 per episode, written off the caller's thread from raw CDR bytes.

The caller (the recorder node's subscription callbacks) only calls ``offer(topic, raw, stamp_ns)``:
an O(1) append to a queue bounded in bytes. A writer thread owns the rosbags ``Writer`` (sqlite3
connections are bound to the thread that opened them) and writes the bytes unchanged - never
re-serialised, because ``rclpy.serialization.serialize_message`` can pad messages and rosbags then
rejects them.

Nothing is dropped silently: when the queue is full (disk slower than the sensors), ``offer`` counts
the message as dropped for its topic and ``status()`` shows the back-pressure (queued bytes, write
MB/s, drops). Crash safety:

* ``episode.json`` is written with ``state: recording`` before the bag is opened;
* every ``flush_period_s`` the writer closes the pending MCAP chunk and flushes the file (or
  commits the sqlite3 transaction), so after a SIGKILL the bag is readable up to the last flush
  (``bag_reader`` reads unfinished bags; ``repair_bag`` finishes them);
* a write error (disk full, file too large) ends the episode at once: the bag file is closed as
  it is (readable up to the error), the episode is marked ``incomplete`` with the error, and the
  recorder refuses to start a new episode while free space is below ``min_free_bytes``.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from motus_core.data.episode import (
    BAG_DIR,
    COMPLETE,
    DISCARDED,
    FAILURE,
    INCOMPLETE,
    OUTCOMES,
    RECORDING,
    ROLE_EXTRA,
    SUCCESS,
    UNKNOWN,
    EpisodeError,
    EpisodeMetadata,
    TopicRecord,
    new_episode_id,
    now_iso,
    read_metadata,
    this_process,
    write_metadata,
)

log = logging.getLogger(__name__)

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSION = 9  # rosbag2 metadata version written by Jazzy/Kilted


class RecorderError(RuntimeError):
    """An episode cannot be started, stopped or written as asked."""


def make_typestore(msg_dirs: Iterable[str | Path] = ()):
    """rosbags typestore of ROS 2 Kilted plus the ``<pkg>/msg/*.msg`` definitions in ``msg_dirs``.

    Types must be known to write a bag's connection records (message definition + RIHS01 hash).
    """
    ts = get_typestore(Stores.ROS2_KILTED)
    add = {}
    for d in msg_dirs:
        d = Path(d)
        for f in sorted(d.glob("*.msg")):
            add.update(get_types_from_msg(f.read_text(), f"{d.parent.name}/msg/{f.stem}"))
    if add:
        ts.register(add)
    return ts


@dataclass(frozen=True)
class TopicSpec:
    """A topic to record: its type and what it is (``episode.ROLE_*``)."""

    topic: str
    msgtype: str
    role: str = ROLE_EXTRA
    camera_role: str = ""


@dataclass
class RecorderStatus:
    state: str  # idle | recording | finalizing | error
    episode_id: str = ""
    task: str = ""
    instruction: str = ""
    elapsed: float = 0.0
    episodes_recorded: int = 0
    topics: dict[str, TopicRecord] = field(default_factory=dict)
    queued_bytes: int = 0
    write_mb_s: float = 0.0
    message: str = ""


def _flush_storage(writer: Writer, fsync: bool) -> None:
    """Make everything written so far readable after a crash.

    rosbags 0.11 keeps the current MCAP chunk in memory and the whole sqlite3 episode in one
    transaction until ``close()``; closing the chunk / committing bounds what a SIGKILL can lose to
    one flush period. Uses the storage objects of the pinned rosbags version (checked at start).
    """
    storage = writer.storage
    if storage is None:
        return
    if hasattr(storage, "close_chunk"):  # MCAP
        if storage.chunk.msgs:
            storage.close_chunk()
        storage.bio.flush()
        if fsync:
            os.fsync(storage.bio.fileno())
    elif hasattr(storage, "conn"):  # sqlite3
        storage.conn.commit()


def _check_storage_api(writer: Writer) -> None:
    storage = writer.storage
    ok = (hasattr(storage, "close_chunk") and hasattr(storage, "chunk") and hasattr(storage, "bio")) or hasattr(storage, "conn")
    if not ok:
        raise RecorderError(f"rosbags storage {type(storage).__name__} has no flush hooks: crash safety needs rosbags 0.11.x")


class _Episode:
    """State of the episode being recorded (shared by the caller and the writer thread)."""

    def __init__(self, directory: Path, meta: EpisodeMetadata, specs: Mapping[str, TopicSpec], storage: str):
        self.dir = directory
        self.meta = meta
        self.specs = dict(specs)
        self.storage = storage
        self.queue: deque = deque()
        self.queued_bytes = 0
        self.accepting = False
        self.finishing = False
        self.discarding = False
        self.done = threading.Event()
        self.opened = threading.Event()
        self.error = ""
        self.started_mono = time.monotonic()
        self.bytes_written = 0
        self.rate_window: deque = deque()  # (monotonic time, total bytes written)
        self.thread: threading.Thread | None = None


class EpisodeRecorder:
    """Records episodes into ``root/<episode_id>/`` (see ``motus_core.data.episode``).

    Thread model: ``offer`` from any thread (cheap); ``start``/``stop``/``discard``/``status`` from
    one control thread. One episode at a time.
    """

    def __init__(
        self,
        root: str | Path,
        robot: str,
        *,
        storage: str = "mcap",
        max_queue_bytes: int = 512 << 20,
        flush_period_s: float = 1.0,
        min_free_bytes: int = 256 << 20,
        fsync: bool = False,
        typestore=None,
        profile_snapshot: Mapping | None = None,
        on_finished: Callable[[EpisodeMetadata], None] | None = None,
    ):
        if storage not in STORAGES:
            raise RecorderError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.root = Path(root)
        self.robot = robot
        self.storage = storage
        self.max_queue_bytes = int(max_queue_bytes)
        self.flush_period_s = float(flush_period_s)
        self.min_free_bytes = int(min_free_bytes)
        self.fsync = fsync
        self.typestore = typestore if typestore is not None else make_typestore()
        self.profile_snapshot = dict(profile_snapshot or {})
        self.on_finished = on_finished
        self._cv = threading.Condition()
        self._ep: _Episode | None = None
        self._last_kept: Path | None = None
        self.episodes_recorded = 0

    # ------------------------------------------------------------------------------- control

    @property
    def recording(self) -> bool:
        ep = self._ep
        return ep is not None and ep.accepting

    @property
    def current(self) -> EpisodeMetadata | None:
        return self._ep.meta if self._ep is not None else None

    def free_bytes(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free

    def start(
        self,
        topics: Iterable[TopicSpec],
        *,
        task: str,
        instruction: str,
        operator: str = "",
        episode_id: str | None = None,
        stamp_ns: int = 0,
    ) -> EpisodeMetadata:
        """Open a new episode (metadata first, then the bag). Raises ``RecorderError`` if it cannot."""
        if self._ep is not None and not self._ep.done.is_set():
            raise RecorderError(f"episode {self._ep.meta.episode_id} is still recording: stop or discard it first")
        specs = {t.topic: t for t in topics}
        if not specs:
            raise RecorderError("no topics to record")
        for t in specs.values():
            if t.msgtype not in self.typestore.types:
                raise RecorderError(f"topic {t.topic}: message type {t.msgtype} is unknown to the bag typestore")
        free = self.free_bytes()
        if free < self.min_free_bytes:
            raise RecorderError(
                f"only {free / 2**20:.0f} MiB free in {self.root} (minimum {self.min_free_bytes / 2**20:.0f} MiB): "
                "free disk space before recording"
            )
        eid = episode_id or new_episode_id(task)
        directory = self.root / eid
        if directory.exists():
            raise RecorderError(f"episode directory {directory} already exists")
        directory.mkdir(parents=True)
        meta = EpisodeMetadata(
            episode_id=eid, robot=self.robot, task=task, instruction=instruction, operator=operator,
            state=RECORDING, storage=self.storage, start_time=now_iso(), start_stamp_ns=int(stamp_ns),
            topics={t.topic: TopicRecord(msgtype=t.msgtype, role=t.role, camera_role=t.camera_role) for t in specs.values()},
            profile=self.profile_snapshot, recorder=this_process(),
        )
        write_metadata(directory, meta, reserve=True)
        ep = _Episode(directory, meta, specs, self.storage)
        ep.thread = threading.Thread(target=self._writer_loop, args=(ep,), name=f"bag-writer-{eid}", daemon=True)
        self._ep = ep
        ep.thread.start()
        ep.opened.wait(timeout=30.0)
        if ep.error or not ep.opened.is_set():
            ep.done.wait(timeout=10.0)
            raise RecorderError(f"episode {eid}: could not open the bag: {ep.error or 'timed out'}")
        with self._cv:
            ep.accepting = True
        log.info("episode %s: recording %d topics to %s", eid, len(specs), directory)
        return meta

    def offer(self, topic: str, data: bytes | memoryview, stamp_ns: int) -> bool:
        """Queue one raw CDR message for the current episode. False if not recording or dropped (counted)."""
        ep = self._ep
        if ep is None or not ep.accepting:
            return False
        rec = ep.meta.topics.get(topic)
        if rec is None:
            return False
        n = len(data)
        with self._cv:
            if not ep.accepting:
                return False
            rec.received += 1
            if ep.queued_bytes + n > self.max_queue_bytes:
                rec.dropped += 1
                return False
            ep.queue.append((topic, int(stamp_ns), data))
            ep.queued_bytes += n
            self._cv.notify()
        return True

    def stop(self, outcome: str = UNKNOWN, *, notes: str = "", stamp_ns: int = 0, incomplete_reason: str = "",
             timeout: float = 120.0) -> EpisodeMetadata:
        """Finish the episode: drain the queue, close the bag, write the final metadata.

        ``incomplete_reason`` (e.g. "recorder shut down") keeps the bag but marks it ``incomplete``.
        An episode that already ended with a write error is returned as it is (``incomplete``).
        """
        if outcome not in OUTCOMES:
            raise RecorderError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        ep = self._require_episode()
        if ep.done.is_set():  # ended by a write error: already final on disk
            return ep.meta
        self._finish(ep, discard=False, timeout=timeout)
        meta = ep.meta
        if meta.state == RECORDING:  # finished without a write error
            meta.outcome = outcome
            meta.notes = notes
            meta.state = INCOMPLETE if incomplete_reason else COMPLETE
            meta.error = incomplete_reason
            self._finalize_meta(ep, stamp_ns)
        if meta.state == COMPLETE:
            self.episodes_recorded += 1
        self._last_kept = ep.dir
        return meta

    def discard(self, reason: str = "", *, discard_last: bool = False, stamp_ns: int = 0) -> EpisodeMetadata:
        """Throw away the running episode (or, if none runs and ``discard_last``, the last kept one).

        The bag is deleted; ``episode.json`` stays with ``state: discarded`` as the record.
        """
        ep = self._ep
        if ep is not None and not ep.done.is_set():
            self._finish(ep, discard=True, timeout=60.0)
            ep.meta.state = DISCARDED
            ep.meta.error = reason
            shutil.rmtree(ep.dir / BAG_DIR, ignore_errors=True)
            self._finalize_meta(ep, stamp_ns)
            return ep.meta
        if not discard_last:
            raise RecorderError("no episode is recording (set discard_last to discard the last kept one)")
        if self._last_kept is None:
            raise RecorderError("no episode of this session left to discard")
        directory, self._last_kept = self._last_kept, None
        meta = read_metadata(directory)
        was_complete = meta.state == COMPLETE
        meta.state = DISCARDED
        meta.error = reason
        shutil.rmtree(directory / BAG_DIR, ignore_errors=True)
        write_metadata(directory, meta)
        if was_complete:
            self.episodes_recorded = max(0, self.episodes_recorded - 1)
        return meta

    def status(self) -> RecorderStatus:
        ep = self._ep
        if ep is None:
            return RecorderStatus(state="idle", episodes_recorded=self.episodes_recorded)
        with self._cv:
            topics = {k: TopicRecord(**vars(v)) for k, v in ep.meta.topics.items()}
            queued = ep.queued_bytes
        if ep.accepting:
            state = "recording"
        elif not ep.done.is_set():
            state = "finalizing"
        elif ep.meta.error and ep.meta.state != DISCARDED and ep.meta.state != COMPLETE:
            state = "error"
        else:
            state = "idle"
        elapsed = time.monotonic() - ep.started_mono if state in ("recording", "finalizing") else 0.0
        msg = ep.meta.error if state == "error" else ""
        return RecorderStatus(
            state=state, episode_id=ep.meta.episode_id, task=ep.meta.task, instruction=ep.meta.instruction,
            elapsed=elapsed, episodes_recorded=self.episodes_recorded, topics=topics, queued_bytes=queued,
            write_mb_s=self._write_rate(ep), message=msg,
        )

    def close(self, reason: str = "recorder shut down") -> EpisodeMetadata | None:
        """Shutdown: a running episode is kept as ``incomplete`` with ``reason``."""
        ep = self._ep
        if ep is not None and not ep.done.is_set():
            return self.stop(UNKNOWN, incomplete_reason=reason)
        return None

    # ------------------------------------------------------------------------------- internals

    def _require_episode(self) -> _Episode:
        ep = self._ep
        if ep is None:
            raise RecorderError("no episode has been started")
        if ep.done.is_set() and ep.meta.state != RECORDING:
            if ep.meta.state == INCOMPLETE and ep.meta.stop_time:
                return ep  # ended by a write error; stop() returns its metadata
            raise RecorderError(f"episode {ep.meta.episode_id} is already {ep.meta.state}")
        return ep

    def _finish(self, ep: _Episode, *, discard: bool, timeout: float) -> None:
        with self._cv:
            ep.accepting = False
            ep.finishing = True
            ep.discarding = discard
            self._cv.notify_all()
        if not ep.done.wait(timeout=timeout):
            raise RecorderError(f"episode {ep.meta.episode_id}: the bag writer did not finish within {timeout:.0f} s")

    def _finalize_meta(self, ep: _Episode, stamp_ns: int) -> None:
        meta = ep.meta
        meta.stop_time = meta.stop_time or now_iso()
        if stamp_ns:
            meta.stop_stamp_ns = int(stamp_ns)
        meta.bytes_written = ep.bytes_written
        meta.missing_topics = sorted(t for t, r in meta.topics.items() if r.received == 0)
        write_metadata(ep.dir, meta)
        if meta.missing_topics and meta.state != DISCARDED:
            log.warning("episode %s: topics never received: %s", meta.episode_id, ", ".join(meta.missing_topics))
        if self.on_finished is not None:
            self.on_finished(meta)

    def _write_rate(self, ep: _Episode) -> float:
        w = ep.rate_window
        if len(w) < 2:
            return 0.0
        (t0, b0), (t1, b1) = w[0], w[-1]
        return (b1 - b0) / max(t1 - t0, 1e-6) / 1e6

    def _writer_loop(self, ep: _Episode) -> None:
        writer = None
        conns = {}
        try:
            writer = Writer(ep.dir / BAG_DIR, version=BAG_VERSION, storage_plugin=STORAGES[ep.storage])
            writer.open()
            _check_storage_api(writer)
            for spec in ep.specs.values():
                conns[spec.topic] = writer.add_connection(spec.topic, spec.msgtype, typestore=self.typestore)
            _flush_storage(writer, self.fsync)
        except Exception as exc:  # noqa: BLE001 - reported to start()
            ep.error = f"{type(exc).__name__}: {exc}"
            if writer is not None and writer.storage is not None:
                try:
                    writer.close()
                except Exception:  # noqa: BLE001
                    pass
            ep.done.set()
            ep.opened.set()
            return
        ep.opened.set()
        next_flush = time.monotonic() + self.flush_period_s
        try:
            while True:
                with self._cv:
                    while not ep.queue and not ep.finishing and time.monotonic() < next_flush:
                        self._cv.wait(timeout=max(0.0, next_flush - time.monotonic()))
                    if ep.discarding:
                        ep.queue.clear()
                        ep.queued_bytes = 0
                        break
                    batch = list(ep.queue)
                    ep.queue.clear()
                    finishing = ep.finishing
                for i, (topic, stamp, data) in enumerate(batch):
                    try:
                        writer.write(conns[topic], stamp, data)
                    except OSError as exc:
                        self._write_failed(ep, writer, exc, lost=batch[i:])
                        return
                    rec = ep.meta.topics[topic]
                    rec.written += 1
                    if not rec.first_time_ns:
                        rec.first_time_ns = stamp
                    rec.last_time_ns = stamp
                    ep.bytes_written += len(data)
                    with self._cv:
                        ep.queued_bytes -= len(data)
                now = time.monotonic()
                if now >= next_flush or (finishing and not batch):
                    try:
                        _flush_storage(writer, self.fsync)
                    except OSError as exc:
                        self._write_failed(ep, writer, exc, lost=[])
                        return
                    ep.rate_window.append((now, ep.bytes_written))
                    while len(ep.rate_window) > 2 and now - ep.rate_window[0][0] > 3.0:
                        ep.rate_window.popleft()
                    next_flush = now + self.flush_period_s
                    if self.min_free_bytes and not finishing and shutil.disk_usage(ep.dir).free < self.min_free_bytes // 2:
                        self._write_failed(ep, writer, OSError(errno.ENOSPC, "free space fell below half the minimum"), lost=[])
                        return
                if finishing and not batch:
                    with self._cv:
                        if ep.queue:
                            continue
                    break
            if ep.discarding:
                self._abort_storage(writer)
            else:
                try:
                    writer.close()  # MCAP footer + summary, sqlite3 commit, metadata.yaml
                except OSError as exc:
                    self._write_failed(ep, writer, exc, lost=[])
                    return
        except Exception as exc:  # noqa: BLE001 - never die silently: the episode becomes incomplete
            log.exception("episode %s: bag writer failed", ep.meta.episode_id)
            self._write_failed(ep, writer, exc, lost=[])
            return
        finally:
            ep.done.set()

    @staticmethod
    def _abort_storage(writer: Writer) -> None:
        storage, writer.storage = writer.storage, None
        if storage is None:
            return
        try:
            if hasattr(storage, "close_chunk"):
                storage.bio.close()  # no index/footer: an unfinished bag, readable up to the last chunk
            else:
                storage.conn.commit()
                storage.conn.close()
        except Exception:  # noqa: BLE001 - the disk may be full: what is on it stays readable
            pass

    def _write_failed(self, ep: _Episode, writer: Writer, exc: BaseException, lost: list) -> None:
        """A write error ends the episode: keep what is on disk, count what is lost, say why."""
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            what = "disk full" if exc.errno != errno.EFBIG else "file size limit reached"
            reason = f"{what} while writing the bag ({exc.strerror or exc}); episode stopped, kept as incomplete"
        else:
            reason = f"bag write failed: {type(exc).__name__}: {exc}; episode stopped, kept as incomplete"
        with self._cv:
            ep.accepting = False
            pending = lost + list(ep.queue)
            ep.queue.clear()
            ep.queued_bytes = 0
            for topic, _, _ in pending:
                ep.meta.topics[topic].dropped += 1
        self._abort_storage(writer)
        ep.error = reason
        ep.meta.state = INCOMPLETE
        ep.meta.error = reason
        ep.meta.stop_time = now_iso()
        ep.meta.bytes_written = ep.bytes_written
        ep.meta.missing_topics = sorted(t for t, r in ep.meta.topics.items() if r.received == 0)
        log.error("episode %s: %s", ep.meta.episode_id, reason)
        try:
            write_metadata(ep.dir, ep.meta)
        except OSError as meta_exc:
            log.error("episode %s: could not update episode.json (%s): a reader will see it as crashed/incomplete", ep.meta.episode_id, meta_exc)
        self._last_kept = ep.dir
        ep.done.set()
        if self.on_finished is not None:
            try:
                self.on_finished(ep.meta)
            except Exception:  # noqa: BLE001
                log.exception("on_finished callback failed")


def profile_topics(profile, *, instruction_topic: str = "", camera_info: bool = True) -> list[TopicSpec]:
    """The topics a teleop episode records for a ``motus_core.robot_profile.RobotProfile``."""
    from motus_core.data.episode import ROLE_CAMERA, ROLE_CAMERA_INFO, ROLE_INSTRUCTION, ROLE_LEADER, ROLE_STATE

    out = [TopicSpec(s.topic, s.msg_type, ROLE_STATE) for s in profile.state_sources]
    out += [TopicSpec(s.topic, s.msg_type, ROLE_LEADER) for s in profile.leader_sources]
    for role, cam in profile.cameras.items():
        msgtype = "sensor_msgs/msg/CompressedImage" if cam.compressed else "sensor_msgs/msg/Image"
        out.append(TopicSpec(cam.topic, msgtype, ROLE_CAMERA, camera_role=role))
        if camera_info and cam.info_topic:
            out.append(TopicSpec(cam.info_topic, "sensor_msgs/msg/CameraInfo", ROLE_CAMERA_INFO, camera_role=role))
    if instruction_topic:
        out.append(TopicSpec(instruction_topic, "std_msgs/msg/String", ROLE_INSTRUCTION))
    seen: dict[str, TopicSpec] = {}
    for t in out:
        if t.topic in seen and seen[t.topic].role != t.role:
            raise RecorderError(f"topic {t.topic} is both {seen[t.topic].role} and {t.role} in profile {profile.name}")
        seen.setdefault(t.topic, t)
    return list(seen.values())


def profile_snapshot(profile) -> dict:
    """What the converter needs from the profile, frozen into each episode's metadata."""
    return {
        "name": profile.name,
        "source": profile.source_path,
        "joint_names": list(profile.joint_names),
        "state": [{"topic": s.topic, "joints": dict(s.names)} for s in profile.state_sources],
        "leader": [{"topic": s.topic, "joints": dict(s.names)} for s in profile.leader_sources],
        "cameras": {r: {"topic": c.topic, "width": c.width, "height": c.height, "encoding": c.encoding,
                        "compressed": c.compressed} for r, c in profile.cameras.items()},
        "stats_key": profile.stats_key,
        "action_rate_hz": profile.action_rate_hz,
    }


__all__ = [
    "EpisodeRecorder", "RecorderError", "RecorderStatus", "TopicSpec", "make_typestore", "profile_snapshot",
    "profile_topics", "STORAGES", "SUCCESS", "FAILURE", "UNKNOWN", "EpisodeError",
]
