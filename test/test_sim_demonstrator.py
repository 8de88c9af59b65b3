"""The scripted demonstrator through ROS: the ``demo`` graph (sim + demonstrator, started by the pip-only
launcher as ``make demo`` does) performs episodes of both tasks; the demonstrator publishes on the
leader topics, the simulated followers track them, and it exits 0 with a summary.

Small images keep the simulator fast; many more episodes run without ROS in test_sim_core.py and
bench/sim.py (success rates over 50 seeds).
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from test.helpers import ROOT


def run_demo(*assignments: str, timeout: float = 300.0) -> str:
    import os

    env = dict(os.environ, MUJOCO_GL="egl", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "motus_ros.launcher", "graph:=demo", "image_width:=64", "image_height:=48", "real_time_factor:=0.5", *assignments],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.parametrize("task, episodes", [("transfer_cube", 2), ("insertion", 1)])
def test_demo_graph_performs_successful_episodes(task, episodes):
    out = run_demo(f"task:={task}", f"episodes:={episodes}", "seed:=20")
    m = re.search(r"episodes\s+(\d+), successes (\d+)", out)
    assert m, out[-4000:]
    assert (int(m.group(1)), int(m.group(2))) == (episodes, episodes), out[-4000:]
    assert re.search(r"camera high\s+[\d.]+ Hz sim time", out), out[-2000:]
    assert "commands received" in out and "rejected 0" in out, out[-2000:]
    assert "Traceback" not in out, out[-4000:]
