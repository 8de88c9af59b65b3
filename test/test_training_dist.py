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
