"""motus-launch's exit code reflects every unexpected node death (issue 15, item 2)."""
import sys

from motus_ros import launcher
from motus_ros.graph.spec import NodeSpec

SCRIPTS = {
    # killed with SIGKILL while the graph runs (like `kill -9` of a node)
    "victim": "import os, signal, time; time.sleep(0.2); os.kill(os.getpid(), signal.SIGKILL)",
    # the required node: finishes its work cleanly after the victim has died
    "boss": "import time; time.sleep(2.5)",
    "quiet": "import time; time.sleep(60)",
}


def _run(monkeypatch, names_required):
    monkeypatch.setattr(launcher, "command_line", lambda spec, workdir: [sys.executable, "-c", SCRIPTS[spec.name]])
    nodes = [NodeSpec(name=n, executable="sim", required=r) for n, r in names_required]
    return launcher.run_graph(nodes, timeout=60, shutdown_grace=5)


def test_a_killed_node_makes_the_launch_fail_even_when_the_required_node_exits_cleanly(monkeypatch, capsys):
    assert _run(monkeypatch, [("victim", False), ("boss", True)]) == 1
    out = capsys.readouterr().out
    assert "victim died with exit code -9" in out and "died during the run: victim (-9)" in out


def test_clean_run_exits_zero(monkeypatch):
    # the non-required node still running when the required one ends is stopped by the launcher: not a failure
    assert _run(monkeypatch, [("quiet", False), ("boss", True)]) == 0
