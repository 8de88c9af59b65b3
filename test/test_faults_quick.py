"""The fault-injection harness (bench/faults.py --quick) on the running closed loop: every kind of the
quick set leaves the nodes alive (the harness's recorder included), the measured motion within the
velocity limits, logs the expected rejection, and leaves the episode recorded around it intact on disk
(issue 15). Slow (a policy graph and a policy restart); the full set runs as a bench."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from test.helpers import ROOT


def test_quick_fault_kinds_pass():
    env = dict(os.environ, PYTHONPATH=str(ROOT), MUJOCO_GL="egl")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "faults.py"), "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    kinds = result["kinds"]
    assert result["fault_kinds"] == 6 and set(kinds) == {"image_wrong_size", "image_future_stamp", "joint_state_nan",
                                                         "chunk_nan", "sim_command_nan", "policy_kill"}
    failed = {k: v["why_failed"] for k, v in kinds.items() if not v["passed"]}
    assert not failed, failed
    assert result["max_measured_velocity_ratio"] <= 1.02
    assert all(v["expected_log_found"] for v in kinds.values())
    # every kind was recorded and checked (None would mean not checked)
    assert {k: v["data_intact"] for k, v in kinds.items()} == dict.fromkeys(kinds, True)
    assert all(v["nodes_alive"].get("episode_recorder") for v in kinds.values())
    assert kinds["policy_kill"]["details"]["policy_restarted"]
    # policy_kill is the last kind: its restarted policy joined the graph again and the executor runs its chunks
    assert isinstance(result["graph_running_again_at_end_s"], float), result["graph_running_again_at_end_s"]
