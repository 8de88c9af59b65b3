"""EpisodeRecorder (ROS-free part of the recorder): bags, metadata, crash safety, disk full, back-pressure."""
from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from motus_core.data.bag_reader import FINISHED, UNFINISHED, bag_state, count_messages, read_messages
from motus_core.data.bag_writer import EpisodeRecorder, RecorderError, profile_snapshot, profile_topics
from motus_core.data.convert import ConvertConfig, Converter, classify
from motus_core.data.episode import COMPLETE, DISCARDED, INCOMPLETE, RECORDING, list_episodes, read_metadata
from motus_core.robot_profile import load_profile
from test.data_helpers import TS, image_cdr, joints_cdr, record_synthetic
from test.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "test" / "data_record_worker.py"


def _worker(root: Path, eid: str, *extra: str, preexec=None, prefix=()) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, str(WORKER), str(root), eid, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=preexec)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_holds_raw_bytes_and_metadata(tmp_path, storage):
    prof = load_profile("sim_aloha")
    rec = EpisodeRecorder(tmp_path, prof.name, storage=storage, profile_snapshot=profile_snapshot(prof), min_free_bytes=0)
    topics = profile_topics(prof, instruction_topic="/instruction")
    meta = rec.start(topics, task="pick", instruction="pick it", operator="ann", episode_id="e1", stamp_ns=5)
    assert read_metadata(tmp_path / "e1").state == RECORDING  # metadata is on disk before any message
    sent = []
    for k in range(5):
        raw = image_cdr("high", k, 1000 + k, hw=(8, 10))
        sent.append(raw)
        assert rec.offer("/cam_high/image_raw", raw, 1000 + k)
        assert rec.offer("/joint_states", joints_cdr(["left_waist"], [0.1 * k], 1000 + k), 1000 + k) is True
    assert rec.offer("/not/configured", b"x", 1) is False
    meta = rec.stop("failure", notes="dropped it", stamp_ns=99)
    assert meta.state == COMPLETE and meta.outcome == "failure" and meta.notes == "dropped it"
    on_disk = read_metadata(tmp_path / "e1")
    assert on_disk.state == COMPLETE and on_disk.robot == "sim_aloha" and on_disk.operator == "ann"
    assert on_disk.start_time and on_disk.stop_time and on_disk.stop_stamp_ns == 99
    assert on_disk.topics["/cam_high/image_raw"].written == 5 and on_disk.topics["/joint_states"].received == 5
    # topics never received are reported at stop, not discovered at training time
    assert "/cam_left_wrist/image_raw" in on_disk.missing_topics and "/instruction" in on_disk.missing_topics
    assert "/cam_high/image_raw" not in on_disk.missing_topics
    assert on_disk.profile["joint_names"][0] == "left_waist"
    assert bag_state(tmp_path / "e1" / "bag") == FINISHED
    got = [bytes(m.data) for m in read_messages(tmp_path / "e1" / "bag", {"/cam_high/image_raw"})]
    assert got == sent  # the CDR bytes are written unchanged
    msg = TS.deserialize_cdr(got[2], "sensor_msgs/msg/Image")
    assert (msg.height, msg.width, int(msg.data[0])) == (8, 10, 4)


def test_discard_running_and_last(tmp_path):
    rec = record_synthetic(tmp_path, "kept", frames=5)
    record_synthetic(tmp_path, "running", frames=5, recorder=rec, stop=False)
    meta = rec.discard("operator dropped the cube")
    assert meta.state == DISCARDED and not (tmp_path / "running" / "bag").exists()
    assert read_metadata(tmp_path / "running").state == DISCARDED
    with pytest.raises(RecorderError):
        rec.discard()  # nothing running and discard_last not set
    meta = rec.discard("bad grasp", discard_last=True)
    assert meta.episode_id == "kept" and read_metadata(tmp_path / "kept").state == DISCARDED
    assert rec.episodes_recorded == 0
    eps, _ = list_episodes(tmp_path)
    assert {e.meta.episode_id: classify(e, ("success", "unknown")) for e in eps} == {
        "kept": "discarded: bad grasp", "running": "discarded: operator dropped the cube"}


def test_back_pressure_is_counted_never_silent(tmp_path):
    prof = load_profile("sim_aloha")
    one = len(image_cdr("high", 0, 0, hw=(120, 160)))
    rec = EpisodeRecorder(tmp_path, prof.name, max_queue_bytes=3 * one, min_free_bytes=0, profile_snapshot=profile_snapshot(prof))
    rec.start(profile_topics(prof), task="t", instruction="i", episode_id="bp")
    # Holding the recorder's lock keeps the writer thread from taking messages: a disk that cannot keep up.
    with rec._cv:
        accepted = [rec.offer("/cam_high/image_raw", image_cdr("high", k, k, hw=(120, 160)), k) for k in range(10)]
        status = rec.status()
    assert accepted == [True] * 3 + [False] * 7
    assert status.state == "recording" and status.queued_bytes == 3 * one
    assert status.topics["/cam_high/image_raw"].dropped == 7
    meta = rec.stop("success")
    t = meta.topics["/cam_high/image_raw"]
    assert (t.received, t.written, t.dropped) == (10, 3, 7)
    assert count_messages(tmp_path / "bp" / "bag")["/cam_high/image_raw"] == 3
    # the converter reports the drops of such an episode
    report = json.loads(json.dumps(meta.topics["/cam_high/image_raw"].__dict__))
    assert report["dropped"] == 7


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sigkill_mid_episode_bag_readable_and_incomplete(tmp_path, storage):
    proc = _worker(tmp_path, "killed", "--storage", storage, "--frames", "3000", "--period", "0.01")
    bag = tmp_path / "killed" / "bag"
    try:
        # wait until at least one flush put messages on disk, then kill without warning
        assert wait_until(lambda: bag_state(bag) == UNFINISHED and count_messages(bag).get("/cam_high/image_raw", 0) >= 5, 60, period=0.05)
        readable_before = count_messages(bag)["/cam_high/image_raw"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    eps, _ = list_episodes(tmp_path)
    ep = eps[0]
    assert ep.meta.state == RECORDING and ep.effective_state == INCOMPLETE and ep.crashed
    assert bag_state(bag) == UNFINISHED
    counts = count_messages(bag)
    assert counts["/cam_high/image_raw"] >= readable_before
    for m in read_messages(bag, {"/cam_high/image_raw"}):
        TS.deserialize_cdr(m.data, m.msgtype)  # every readable message is whole
    assert classify(ep, ("success", "unknown")).startswith("incomplete")
    out = tmp_path / "dataset"
    summary = Converter(ConvertConfig(tmp_path, out, progress=False)).run()
    assert [(e.episode_id, e.status) for e in summary.episodes] == [("killed", "skipped")]
    assert not (out / "pick_cube").exists()
    # repair: a finished bag with the same messages, the episode persisted as incomplete
    from motus_core.data.convert import repair

    assert [eid for eid, _ in repair(tmp_path)] == ["killed"]
    assert bag_state(bag) == FINISHED and count_messages(bag) == counts
    assert read_metadata(tmp_path / "killed").state == INCOMPLETE


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True).returncode == 0


def test_full_disk_stops_episode_keeps_earlier(tmp_path):
    """A real full disk (8 MB tmpfs in a user+mount namespace) where the system allows it; otherwise a
    file-size limit (RLIMIT_FSIZE -> EFBIG), which takes the same write-error path."""
    out = tmp_path / "episodes"
    small = ["--frames", "10", "--period", "0", "--hw", "60", "80"]
    big = ["--frames", "400", "--period", "0"]
    py = sys.executable
    if _can_mount_tmpfs():
        mnt = tmp_path / "disk"
        mnt.mkdir()
        script = (f"mount -t tmpfs -o size=8m tmpfs {mnt} && "
                  f"{py} {WORKER} {mnt}/eps first {' '.join(small)} && "
                  f"{py} {WORKER} {mnt}/eps second {' '.join(big)}; rc=$?; cp -a {mnt}/eps {out}; exit $rc")
        res = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, timeout=240)
        expected = "disk full"
    else:
        res = subprocess.run([py, str(WORKER), str(out), "first", *small], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        limit = 4 * 2**20

        def limit_fsize():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        res = subprocess.run([py, str(WORKER), str(out), "second", *big], capture_output=True, text=True, timeout=240,
                             preexec_fn=limit_fsize)
        expected = "file size limit"
    assert res.returncode == 0, res.stdout + res.stderr
    final = json.loads(res.stdout.rsplit("FINAL ", 1)[1].splitlines()[0])
    assert final["state"] == INCOMPLETE and expected in final["error"], final["error"]
    second = read_metadata(out / "second")
    assert second.state == INCOMPLETE and expected in second.error
    assert sum(t.written for t in second.topics.values()) > 0
    # what reached the disk before the error is readable
    assert count_messages(out / "second" / "bag").get("/cam_high/image_raw", 0) > 0
    first = read_metadata(out / "first")
    assert first.state == COMPLETE
    summary = Converter(ConvertConfig(out, tmp_path / "dataset", progress=False)).run()
    status = {e.episode_id: e.status for e in summary.episodes}
    assert status == {"first": "converted", "second": "skipped"}


def test_refuses_to_start_without_free_space(tmp_path):
    prof = load_profile("sim_aloha")
    rec = EpisodeRecorder(tmp_path, prof.name, min_free_bytes=10**18)
    with pytest.raises(RecorderError, match="free disk space"):
        rec.start(profile_topics(prof), task="t", instruction="i")
    assert not any(tmp_path.iterdir())
