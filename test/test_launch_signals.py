"""Signals as ``ros2 launch`` delivers them, without launch: a node gets SIGINT twice on Ctrl-C (from the
terminal, to the whole process group, and forwarded by launch)."""
from __future__ import annotations

import os
import signal
import time


def test_double_sigint_during_clean_up_is_quiet():
    """A node gets SIGINT twice under ros2 launch (terminal + launch): the second, during its clean-up,
    must neither print a traceback nor end the process by the signal."""
    from test.helpers import node_process

    proc = node_process("motus_ros.nodes.executor_node", "-p", "policy_lease:=0.0")
    try:
        lines = []
        end = time.monotonic() + 120
        while time.monotonic() < end:
            line = proc.stdout.readline()
            lines.append(line)
            if "Strategy" in line or not line:
                break
        time.sleep(1.0)
        for _ in range(3):
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.02)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(lines) + out
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
