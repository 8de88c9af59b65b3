"""Leaving a distributed run is bounded: a hanging barrier or ``destroy_process_group`` (pytorch#75097;
it held a 3-step CPU run for 20 minutes once in CI) cannot keep a finished training alive."""
from __future__ import annotations

import threading
import time

import torch.distributed as dist

from motus_core.models import training


def test_a_hanging_teardown_is_given_up_after_the_timeout(monkeypatch):
    release = threading.Event()
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "barrier", lambda: release.wait(30))  # a peer that never comes
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    t0 = time.monotonic()
    assert training.leave_process_group(timeout=0.5) is False
    assert time.monotonic() - t0 < 5.0
    release.set()  # let the abandoned thread finish here, not inside the next test's patches
    deadline = time.monotonic() + 10.0
    while "destroy" not in calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == ["destroy"]


def test_a_clean_teardown_meets_the_peers_then_destroys(monkeypatch):
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    assert training.leave_process_group(timeout=5.0) is True
    assert calls == ["barrier", "destroy"]


def test_a_peer_already_gone_still_destroys_the_group(monkeypatch):
    calls = []

    def barrier():
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "barrier", barrier)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    assert training.leave_process_group(timeout=5.0) is True
    assert calls == ["destroy"]


RANK_SCRIPT = r"""
import atexit, logging, sys
import torch, torch.distributed as dist
from motus_core.models import training

logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
atexit.register(lambda: print("interpreter teardown ran", flush=True))
dist.init_process_group("gloo")
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
model(torch.ones(3, 4)).sum().backward()
logging.getLogger("rank").info("rank %d saved its work", dist.get_rank())
training.end_distributed_rank(5)
"""


def test_a_ddp_rank_ends_with_its_code_without_the_interpreter_teardown(tmp_path):
    """Two DDP ranks on gloo end through ``end_distributed_rank``: each exits with the given code and
    its log written, and the interpreter's teardown (where freeing DDP's reducer deadlocked against
    gloo's worker thread, found with py-spy in CI) never runs."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(tmp_path / f"rank{rank}.log")],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for rank, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 5, out
        assert "interpreter teardown ran" not in out
        assert f"rank {rank} saved its work" in (tmp_path / f"rank{rank}.log").read_text()
