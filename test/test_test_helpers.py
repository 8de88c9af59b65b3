"""The shared test helpers: the one wait, and reference fixtures that are required in CI."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from test.helpers import fixtures_required, require_fixture, wait_until


def test_wait_until_returns_when_true_and_false_at_timeout():
    t0 = time.monotonic()
    calls = []
    assert wait_until(lambda: calls.append(1) or len(calls) >= 3, 10.0, period=0.001)
    assert len(calls) == 3 and time.monotonic() - t0 < 10.0
    assert wait_until(lambda: False, 0.05) is False


def test_wait_until_spins_instead_of_sleeping_and_raises_with_what():
    spun = []
    assert wait_until(lambda: len(spun) >= 5, 10.0, spin=lambda: spun.append(1))
    assert len(spun) == 5  # spin runs before each poll
    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the moon; phase: new"):
        wait_until(lambda: False, 0.05, what="the moon", describe=lambda: "phase: new")


def test_wait_until_reports_a_process_that_exits():
    proc = subprocess.Popen([sys.executable, "-c", "print('bye from the node'); raise SystemExit(3)"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    with pytest.raises(AssertionError, match=r"(?s)waiting for messages: a process exited with 3.*bye from the node"):
        wait_until(lambda: False, 60.0, what="messages", procs=[proc])


def test_missing_fixture_skips_locally_and_fails_in_ci(tmp_path, monkeypatch):
    for key in ("CI", "MOTUS_REQUIRE_FIXTURES"):
        monkeypatch.delenv(key, raising=False)
    assert require_fixture(tmp_path) == tmp_path  # present: returned
    assert not fixtures_required()
    with pytest.raises(pytest.skip.Exception, match="parity fixture not found"):
        require_fixture(tmp_path / "missing", "parity fixture")
    monkeypatch.setenv("MOTUS_REQUIRE_FIXTURES", "0")
    assert not fixtures_required()
    for key in ("CI", "MOTUS_REQUIRE_FIXTURES"):
        monkeypatch.setenv(key, "1" if key == "MOTUS_REQUIRE_FIXTURES" else "true")
        assert fixtures_required()
        with pytest.raises(pytest.fail.Exception, match="fixtures are required"):
            require_fixture(tmp_path / "missing", "parity fixture")
        monkeypatch.delenv(key)
