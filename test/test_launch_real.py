"""The launch files under the real ``ros2 launch`` (launch / launch_ros / ros2cli built from the upstream
sources by tools/build_ros2_upstream.sh, part of ``make setup``).

* every graph starts: each node of the graph's description appears;
* ``run_time:=N`` ends the policy graph's launch (the executor is the required node), exit code 0;
* the demo graph runs to completion;
* Ctrl-C (SIGINT to the whole process group, as a terminal sends it: each node gets it twice, from
  the terminal and forwarded by launch) ends every node quietly: exit code 0, no KeyboardInterrupt
  traceback, no "process has died".

motus_ros is registered in a temporary ament prefix whose share dir is this source tree and whose
lib/motus_ros holds one small script per executable (what colcon installs).
"""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from motus_ros import graph as graph_mod
from motus_ros.executables import EXECUTABLES
from test.helpers import ROOT

ROS2 = Path(sys.executable).parent / "ros2"
pytestmark = pytest.mark.skipif(not ROS2.is_file() or importlib.util.find_spec("launch_ros") is None,
                                reason="the real launch / ros2cli are not built (tools/build_ros2_upstream.sh, part of make setup)")
SMALL = ["image_width:=64", "image_height:=48"]
BAD = ("Traceback", "KeyboardInterrupt", "process has died", "exit code -2")


@pytest.fixture(scope="module")
def ament_env(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("ament_prefix")
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "motus_ros").write_text("")
    (prefix / "share" / "motus_ros").symlink_to(ROOT)
    lib = prefix / "lib" / "motus_ros"
    lib.mkdir(parents=True)
    for name, target in EXECUTABLES.items():
        module, func = target.split(":")
        script = lib / name
        script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
        script.chmod(0o755)
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), sys.prefix])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Launch:
    """``ros2 launch motus_ros motus.launch.py ...`` in its own process group, output collected."""

    def __init__(self, env, *args):
        self.proc = subprocess.Popen([str(ROS2), "launch", "motus_ros", "motus.launch.py", *args], env=env, cwd="/",
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self.output):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{what}: not seen (exit {self.proc.poll()})\n{self.output[-4000:]}")

    def ctrl_c(self, timeout: float = 60) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)  # what a terminal does: launch and every node get SIGINT
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"the launch did not end within {timeout} s\n{self.output[-4000:]}")
        self._reader.join(timeout=10)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _started(names):
    return lambda out: all(f"[{n}-" in out for n in names)


def _assert_quiet(out: str, names):
    bad = [b for b in BAD if b in out]
    assert not bad, f"{bad} in the launch output:\n{out[-5000:]}"
    for n in names:
        assert f"[INFO] [{n}-" in out and "process has finished cleanly" in out, out[-3000:]


@pytest.mark.parametrize("values,settle", [
    ({"graph": "sim"}, 2.0),
    ({"graph": "policy", "strategy": "sync"}, 2.0),
    # Ctrl-C while the policy node still imports torch / loads the model: it once printed a traceback
    # (the exit re-imported the half-imported torch) and died with -2
    ({"graph": "policy", "strategy": "sync"}, 0.3),
    ({"graph": "record", "episodes": "50"}, 2.0),
    ({"graph": "viz"}, 2.0),
], ids=["sim", "policy", "policy-while-loading", "record", "viz"])
def test_graph_starts_and_ctrl_c_ends_every_node_quietly(ament_env, values, settle):
    names = [s.executable for s in graph_mod.describe_graph(values)]
    launch = Launch(ament_env, *[f"{k}:={v}" for k, v in values.items()], *SMALL)
    try:
        # every node started and logged (its first line comes once it is constructed)
        launch.wait_for(lambda out: all(re.search(rf"^\[{n}-\d+\] ", out, re.M) for n in names), 420, "every node's first log line")
        time.sleep(settle)
        code = launch.ctrl_c()
    finally:
        launch.kill()
    out = launch.output
    assert code == 0, out[-5000:]
    _assert_quiet(out, names)
    finished = [line for line in out.splitlines() if "process has finished cleanly" in line]
    assert len(finished) == len(names), out[-5000:]


def test_run_time_ends_the_policy_launch_even_when_every_chunk_is_rejected(ament_env):
    # tiny_motus (random weights): the safety layer rejects its chunks; run_time counts from the moment the
    # closed loop could start, not from the first accepted chunk, so the launch still ends (it once never did)
    launch = Launch(ament_env, "graph:=policy", "run_time:=4")
    try:
        code = launch.wait(600)
    finally:
        launch.kill()
    out = launch.output
    assert code == 0, out[-5000:]
    assert "Closed-loop summary" in out and "Closed loop ready: stopping after run_time 4 s" in out, out[-5000:]
    assert not [b for b in BAD if b in out], out[-5000:]


def test_demo_graph_runs_to_completion(ament_env):
    launch = Launch(ament_env, "graph:=demo", "episodes:=1", *SMALL)
    try:
        code = launch.wait(600)
    finally:
        launch.kill()
    out = launch.output
    assert code == 0, out[-5000:]
    assert not [b for b in BAD if b in out], out[-5000:]
