"""A killed ROS process's Fast DDS shared-memory files are removed by motus_ros.shm_cleanup (the
``fastdds shm clean`` tool run with this interpreter), and a live process's files are kept."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from motus_ros.shm_cleanup import applies, clean_zombie_shm, fastdds_tool

pytestmark = pytest.mark.ros

NODE = """
import motus_ros, rclpy, time
from std_msgs.msg import String
rclpy.init()
n = rclpy.create_node("shm_cleanup_probe")
p = n.create_publisher(String, "/shm_cleanup_probe", 10)
print("up", flush=True)
while True:
    p.publish(String(data="x")); time.sleep(0.05)
"""


def _start():
    proc = subprocess.Popen([sys.executable, "-c", NODE], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "up"
    time.sleep(1.0)  # the participant's transports are up
    return proc



def _owned_segments(pid: int) -> set[str]:
    """The segments whose lock file ``pid`` holds (/proc/locks): that participant's own, whatever other
    graphs on the machine create meanwhile."""
    inodes = set()
    with open("/proc/locks") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 5 and parts[4] == str(pid):
                inodes.add(int(parts[5].rsplit(":", 1)[1]))
    owned = set()
    for name in os.listdir("/dev/shm"):
        if re.match(r"^fastdds_[0-9a-f]{16}_el$", name):
            try:
                if os.stat(f"/dev/shm/{name}").st_ino in inodes:
                    owned |= {name, name[:-3]}
            except FileNotFoundError:
                pass
    return owned


def _present(names: set[str]) -> set[str]:
    return {n for n in names if os.path.exists(f"/dev/shm/{n}")}


@pytest.mark.skipif(not applies(), reason="Fast DDS shared memory only (Linux, rmw_fastrtps_cpp)")
def test_a_killed_nodes_shared_memory_is_cleaned_and_a_live_ones_kept():
    assert fastdds_tool() is not None, "the Fast DDS CLI (fastdds shm clean) is not installed"
    live = _start()
    try:
        killed = _start()
        live_files, killed_files = _owned_segments(live.pid), _owned_segments(killed.pid)
        assert live_files and killed_files, "the probe nodes hold no shared-memory segment"
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        assert _present(killed_files) == killed_files  # SIGKILL leaves them behind
        removed = clean_zombie_shm()
        assert removed is not None and removed[0] >= 1, removed
        assert not _present(killed_files), sorted(_present(killed_files))
        assert _present(live_files) == live_files  # a live participant's files stay
        assert live.poll() is None
    finally:
        os.killpg(live.pid, signal.SIGINT)
        live.wait(10)
