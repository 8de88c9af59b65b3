"""Reading episode bags, finished or not, and finishing unfinished ones.

A bag is *finished* when rosbags closed it: ``metadata.yaml`` exists (and an MCAP file has its
footer). A recorder killed mid-episode leaves an *unfinished* bag:

* MCAP: no ``metadata.yaml``, no summary/footer. The complete records are read with the ``mcap``
  library's stream reader (which stops at the truncated tail);
* sqlite3: no ``metadata.yaml``; the committed rows are read with ``sqlite3``.

``repair_bag`` rewrites an unfinished bag into a finished one (same raw bytes), so any rosbag2 tool
opens it; the episode's metadata keeps saying ``incomplete``.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg

from motus_core.data.bag_writer import BAG_VERSION, make_typestore
from motus_core.data.episode import METADATA_FILE, record_bag_contents

FINISHED = "finished"
UNFINISHED = "unfinished"
MISSING = "missing"


class BagError(RuntimeError):
    """A bag that cannot be read (corrupted, truncated, missing)."""


@dataclass(frozen=True)
class RawMessage:
    topic: str
    msgtype: str
    timestamp: int  # bag (receive) time, ns
    data: bytes | memoryview


def _storage_file(bag_dir: Path) -> Path | None:
    for ext in (".mcap", ".db3"):
        files = sorted(bag_dir.glob(f"*{ext}"))
        if files:
            return files[0]
    return None


def bag_state(bag_dir: str | Path) -> str:
    bag_dir = Path(bag_dir)
    f = _storage_file(bag_dir) if bag_dir.is_dir() else None
    if f is None:
        return MISSING
    return FINISHED if (bag_dir / "metadata.yaml").is_file() else UNFINISHED


def bag_connections(bag_dir: str | Path) -> dict[str, str]:
    """topic -> message type of a bag (finished or not)."""
    bag_dir = Path(bag_dir)
    state = bag_state(bag_dir)
    if state == FINISHED:
        try:
            with Reader(bag_dir) as r:
                return {c.topic: c.msgtype for c in r.connections}
        except (ReaderError, OSError, ValueError, KeyError) as exc:
            raise BagError(f"{bag_dir}: cannot read bag ({exc})") from None
    if state == UNFINISHED:
        return {t: m for t, (m, _) in _unfinished_connections(bag_dir).items()}
    raise BagError(f"{bag_dir}: no bag file")


def read_messages(bag_dir: str | Path, topics: set[str] | None = None) -> Iterator[RawMessage]:
    """Raw messages of a bag in storage order (time order for finished bags).

    Raises ``BagError`` for corrupted or truncated finished bags (the caller skips and reports them).
    Unfinished bags yield everything up to the last complete record.
    """
    bag_dir = Path(bag_dir)
    state = bag_state(bag_dir)
    if state == FINISHED:
        yield from _read_finished(bag_dir, topics)
    elif state == UNFINISHED:
        f = _storage_file(bag_dir)
        if f.suffix == ".mcap":
            yield from _read_unfinished_mcap(f, topics)
        else:
            yield from _read_unfinished_sqlite(f, topics)
    else:
        raise BagError(f"{bag_dir}: no bag file")


def _read_finished(bag_dir: Path, topics) -> Iterator[RawMessage]:
    try:
        reader = Reader(bag_dir)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises many kinds of errors on damaged files
        raise BagError(f"{bag_dir}: corrupted or truncated bag ({type(exc).__name__}: {exc})") from None
    try:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        expected = sum(c.msgcount for c in conns)
        n = 0
        try:
            for conn, ts, data in reader.messages(connections=conns):
                n += 1
                yield RawMessage(conn.topic, conn.msgtype, ts, data)
        except Exception as exc:  # noqa: BLE001 - any failure inside the storage reader means a damaged bag
            raise BagError(f"{bag_dir}: corrupted bag after {n} messages ({type(exc).__name__}: {exc})") from None
        if expected and n != expected:
            raise BagError(f"{bag_dir}: bag index lists {expected} messages but {n} could be read (truncated?)")
    finally:
        reader.close()


def _unfinished_connections(bag_dir: Path) -> dict[str, tuple[str, str]]:
    """topic -> (msgtype, message definition text) of an unfinished bag."""
    f = _storage_file(bag_dir)
    out: dict[str, tuple[str, str]] = {}
    if f.suffix == ".mcap":
        from mcap import records
        from mcap.exceptions import McapError
        from mcap.stream_reader import StreamReader

        schemas: dict[int, tuple[str, str]] = {}
        with f.open("rb") as fh:
            try:
                for rec in StreamReader(fh, skip_magic=False).records:
                    if isinstance(rec, records.Schema):
                        schemas[rec.id] = (rec.name, rec.data.decode())
                    elif isinstance(rec, records.Channel):
                        out[rec.topic] = schemas.get(rec.schema_id, ("", ""))
                    elif isinstance(rec, records.Message):
                        break  # rosbags writes all schemas/channels before the first message
            except (McapError, EOFError, ValueError):
                pass
    else:
        con = _open_sqlite(f)
        try:
            defs = {}
            try:
                defs = dict(con.execute("SELECT topic_type, encoded_message_definition FROM message_definitions"))
            except sqlite3.Error:
                pass
            for name, typ in con.execute("SELECT name, type FROM topics"):
                out[name] = (typ, defs.get(typ, ""))
        except sqlite3.Error as exc:
            raise BagError(f"{f}: unreadable sqlite3 bag ({exc})") from None
        finally:
            con.close()
    return out


def _open_sqlite(f: Path) -> sqlite3.Connection:
    # Read-write on purpose: after a crash sqlite finds a hot journal and must roll the unfinished
    # transaction back before anything can be read (what remains is every committed flush).
    return sqlite3.connect(f"file:{f}", uri=True)


def _read_unfinished_mcap(f: Path, topics) -> Iterator[RawMessage]:
    from mcap import records
    from mcap.exceptions import McapError
    from mcap.stream_reader import StreamReader

    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    with f.open("rb") as fh:
        try:
            for rec in StreamReader(fh, skip_magic=False).records:
                if isinstance(rec, records.Schema):
                    schemas[rec.id] = rec.name
                elif isinstance(rec, records.Channel):
                    channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""))
                elif isinstance(rec, records.Message):
                    topic, msgtype = channels.get(rec.channel_id, ("", ""))
                    if topic and (topics is None or topic in topics):
                        yield RawMessage(topic, msgtype, rec.log_time, rec.data)
        except (McapError, EOFError, ValueError):
            return  # truncated tail: everything before it has been read


def _read_unfinished_sqlite(f: Path, topics, lock_wait: float = 30.0) -> Iterator[RawMessage]:
    # A bag still being written is locked while its writer commits a flush; on a loaded machine that
    # outlasted sqlite's 5-s busy wait once (test_sigkill_mid_episode_bag_readable_and_incomplete), so
    # opening is retried for a while. Once rows come, the reader's shared lock holds the writer off.
    deadline = time.monotonic() + lock_wait
    while True:
        con = _open_sqlite(f)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"topics", "messages"} <= tables:
                con.close()
                return  # killed before its schema was committed: an empty bag
            names = {tid: (name, typ) for tid, name, typ in con.execute("SELECT id, name, type FROM topics")}
            rows = con.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY timestamp, id")
            first = rows.fetchone()
            break
        except sqlite3.Error as exc:
            con.close()
            if "locked" in str(exc) and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise BagError(f"{f}: unreadable sqlite3 bag ({exc})") from None
    try:
        row = first
        while row is not None:
            tid, ts, data = row
            topic, msgtype = names.get(tid, ("", ""))
            if topic and (topics is None or topic in topics):
                yield RawMessage(topic, msgtype, ts, data)
            row = rows.fetchone()
    except sqlite3.Error as exc:
        raise BagError(f"{f}: unreadable sqlite3 bag ({exc})") from None
    finally:
        con.close()


def count_messages(bag_dir: str | Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in read_messages(bag_dir):
        counts[m.topic] = counts.get(m.topic, 0) + 1
    return counts


def repair_bag(bag_dir: str | Path, *, keep_original: bool = False) -> dict[str, int]:
    """Rewrite an unfinished bag as a finished one (same bytes); returns messages per topic.

    The original storage file is moved aside (``<bag>.unfinished``) while the new bag is written
    and removed afterwards unless ``keep_original``. When the bag belongs to an episode directory
    (``episode.json`` beside it), the episode's message and byte counts are rewritten from the bag.
    """
    bag_dir = Path(bag_dir)
    if bag_state(bag_dir) != UNFINISHED:
        raise BagError(f"{bag_dir}: not an unfinished bag ({bag_state(bag_dir)})")
    conns = _unfinished_connections(bag_dir)
    f = _storage_file(bag_dir)
    storage = StoragePlugin.MCAP if f.suffix == ".mcap" else StoragePlugin.SQLITE3
    aside = bag_dir.with_name(bag_dir.name + ".unfinished")
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(bag_dir, aside)
    ts = make_typestore()
    extra = {}
    for msgtype, msgdef in conns.values():
        if msgtype and msgtype not in ts.types and msgdef:
            try:
                extra.update(get_types_from_msg(msgdef.split("\n=====")[0], msgtype))
            except Exception:  # noqa: BLE001 - written below as an unknown type error
                pass
    if extra:
        ts.register(extra)
    counts: dict[str, int] = {}
    writer = Writer(bag_dir, version=BAG_VERSION, storage_plugin=storage)
    writer.open()
    try:
        handles = {}
        for topic, (msgtype, _) in conns.items():
            if msgtype not in ts.types:
                raise BagError(f"{aside}: topic {topic} has type {msgtype!r} that cannot be rebuilt")
            handles[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            counts[topic] = 0
        spans: dict[str, list[int]] = {}
        payload = 0
        for m in read_messages(aside):
            data = bytes(m.data)
            writer.write(handles[m.topic], m.timestamp, data)
            counts[m.topic] += 1
            payload += len(data)
            span = spans.setdefault(m.topic, [m.timestamp, m.timestamp])
            span[0], span[1] = min(span[0], m.timestamp), max(span[1], m.timestamp)
        writer.close()
    except BaseException:
        try:
            writer.close()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(bag_dir, ignore_errors=True)
        os.replace(aside, bag_dir)
        raise
    if not keep_original:
        shutil.rmtree(aside)
    if (bag_dir.parent / METADATA_FILE).is_file():
        record_bag_contents(bag_dir.parent, {t: (n, *spans.get(t, (0, 0))) for t, n in counts.items()}, payload)
    return counts
