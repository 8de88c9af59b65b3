"""Data path after faults (issue 15, item 3): a repaired bag's episode.json tells what the bag holds;
sync reports carry no placeholder values and one rate per stream."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from motus_core.data.bag_reader import FINISHED, UNFINISHED, bag_state, count_messages, read_messages
from motus_core.data.episode import INCOMPLETE, read_metadata
from motus_core.data.sync import NS, StreamReport, gap_runs, nominal_rate

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "test" / "data_record_worker.py"


def _wait(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def test_repair_rewrites_the_episode_counts(tmp_path):
    proc = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), "killed", "--frames", "3000", "--period", "0.01"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bag = tmp_path / "killed" / "bag"
    try:
        assert _wait(lambda: bag_state(bag) == UNFINISHED and count_messages(bag).get("/cam_high/image_raw", 0) >= 5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = read_metadata(tmp_path / "killed")
    assert before.bytes_written == 0 and all(t.written == 0 for t in before.topics.values())  # the crash left zeros
    from motus_core.data.convert import repair

    assert [eid for eid, _ in repair(tmp_path)] == ["killed"]
    assert bag_state(bag) == FINISHED
    counts = count_messages(bag)
    payload = sum(len(m.data) for m in read_messages(bag))
    meta = read_metadata(tmp_path / "killed")
    assert meta.state == INCOMPLETE and meta.error
    assert meta.bytes_written == payload > 0
    for topic, n in counts.items():
        if topic in meta.topics:
            rec = meta.topics[topic]
            assert rec.written == n and rec.received >= n
            assert 0 < rec.first_time_ns <= rec.last_time_ns
    assert meta.topics["/cam_high/image_raw"].written >= 5


def test_gap_without_any_message_has_a_real_duration():
    times = (np.arange(10) * NS // 30 + 5 * NS).astype(np.int64)
    ages = np.full(10, 10_000_000, dtype=np.int64)
    ages[:4] = -1  # the stream had sent nothing yet at the first four frames
    gaps = gap_runs("/cam_left", ages, times, max_age_ns=50_000_000)
    assert len(gaps) == 1
    d = gaps[0].as_dict()
    assert d["frames"] == 4 and d["frames_without_message"] == 4
    assert d["duration_s"] == round(3 / 30, 4)  # silent since the first frame: 3 frame intervals, not a placeholder


def test_one_nominal_rate_per_stream_despite_drops():
    stamps = (np.arange(90) * NS // 30).astype(np.int64)
    stamps = np.delete(stamps, [10, 11, 12, 40, 41, 70])  # drops lower the count, not the camera's rate
    assert abs(nominal_rate(stamps) - 30.0) < 0.01
    rep = StreamReport("/cam_high/image_raw", "camera:high")
    rep.set_timing(stamps, stamps + 1000)
    assert abs(rep.rate_hz - 30.0) < 0.01
