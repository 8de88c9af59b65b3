"""A recorder killed mid-episode (issue 15, item 3): the demonstrator learns it from DDS liveliness
within the lease, says that the episode was not recorded, runs the remaining episodes, and the run
fails (exit 1) with a summary that names the lost episode; repair then finishes the bag with its counts."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

from motus_core.data.bag_reader import FINISHED, bag_state, count_messages, read_messages
from motus_core.data.episode import INCOMPLETE, list_episodes, read_metadata
from test.helpers import ROOT


def _reader(proc, lines: queue.Queue) -> None:
    for line in proc.stdout:
        lines.put(line)


def test_recorder_sigkill_mid_episode_the_demonstrator_goes_on(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MUJOCO_GL="egl")
    proc = subprocess.Popen([sys.executable, "-m", "motus_ros.launcher", "graph:=record", "episodes:=2", "seed:=3",
                             f"output_dir:={tmp_path / 'episodes'}", "image_width:=64", "image_height:=48"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc, lines), daemon=True).start()
    log: list[str] = []
    recorder_pid = None
    killed_at = None
    try:
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline and (proc.poll() is None or not lines.empty()):
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            log.append(line)
            m = re.search(r"started recorder \(pid (\d+)\)", line)
            if m:
                recorder_pid = int(m.group(1))
            if killed_at is None and "[recorder]" in line and "started: task" in line:
                time.sleep(2.5)  # mid-episode, after a flush (1 s period): some messages are on their way to the bag
                os.kill(recorder_pid, signal.SIGKILL)
                killed_at = time.monotonic()
                log.append(f"TEST: recorder killed at {killed_at:.1f}\n")
            if killed_at is not None and "was not recorded" in line:
                log.append(f"TEST: noticed after {time.monotonic() - killed_at:.1f} s\n")
        text = "".join(log)
        assert proc.poll() is not None, text[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert killed_at is not None, text[-4000:]
    assert "episode 1 was not recorded" in text and "continuing with the next episode" in text, text[-4000:]
    assert "episode 2/2" in text, text[-4000:]  # the next episode ran
    assert re.search(r"#1 seed 3: \w+, .*NOT RECORDED", text) and "2 episode(s) not recorded" in text, text[-4000:]  # it stays dead
    assert "did not answer stop_episode within 60 s" not in text and "Traceback" not in text, text[-4000:]
    assert proc.returncode == 1, text[-4000:]  # data were lost and a node died: the run is a failure
    eps, _ = list_episodes(tmp_path / "episodes")
    assert len(eps) == 1 and eps[0].crashed
    from motus_core.data.convert import repair

    assert len(repair(tmp_path / "episodes")) == 1
    meta = read_metadata(eps[0].path)
    assert bag_state(eps[0].bag) == FINISHED and meta.state == INCOMPLETE
    # the metadata now tells what the bag holds (whatever the last flush before the kill had written)
    assert meta.bytes_written == sum(len(m.data) for m in read_messages(eps[0].bag))
    counts = count_messages(eps[0].bag)
    assert all(meta.topics[t].written == n for t, n in counts.items() if t in meta.topics)
