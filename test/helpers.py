"""Helpers shared by the tests (importable as ``test.helpers``)."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
# The shared reference fixtures (parity fixtures etc.): MOTUS_SHARED_FIXTURES, else ../shared/fixtures.
FIXTURES = Path(os.environ.get("MOTUS_SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures"))
_DOMAIN_LOCKS = Path("/tmp/motus_ros_test_domains")
# Where a missing reference fixture is an error, not a reason to skip (CI sets one of them).
REQUIRE_FIXTURES_ENV = ("CI", "MOTUS_REQUIRE_FIXTURES")


def fixtures_required() -> bool:
    """True when ``CI`` or ``MOTUS_REQUIRE_FIXTURES`` is set (to anything but empty, 0, false or no)."""
    return any(os.environ.get(k, "").strip().lower() not in ("", "0", "false", "no") for k in REQUIRE_FIXTURES_ENV)


def require_fixture(path: Path, what: str = "reference fixture") -> Path:
    """``path`` if it exists; else skip the test on a developer machine, but FAIL it in CI.

    Parity tests compare with the official code's outputs stored as fixtures; in CI a missing fixture
    means the check silently did not run, so it fails (set ``MOTUS_SHARED_FIXTURES`` to the folder).
    """
    path = Path(path)
    if path.exists():
        return path
    message = f"{what} not found at {path} (set MOTUS_SHARED_FIXTURES to the shared fixtures folder)"
    if fixtures_required():
        import pytest

        pytest.fail(f"{message}; fixtures are required here ({' or '.join(REQUIRE_FIXTURES_ENV)} is set)", pytrace=False)
    import pytest

    pytest.skip(message)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reserve_domain_id(low: int = 20, high: int = 100) -> int:
    """Reserve a ROS_DOMAIN_ID for this process (lock file with our pid; stale locks are reclaimed)."""
    _DOMAIN_LOCKS.mkdir(parents=True, exist_ok=True)
    ids = list(range(low, high + 1))
    random.Random(os.getpid() ^ time.time_ns()).shuffle(ids)
    for did in ids:
        lock = _DOMAIN_LOCKS / f"{did}.pid"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and _pid_alive(owner):
                continue
            lock.unlink(missing_ok=True)
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return did
    return random.randint(low, high)


def wait_until(predicate: Callable[[], object], timeout: float, *, what: str | None = None, spin: Callable[[], object] | None = None,
               procs: Iterable[subprocess.Popen] = (), period: float = 0.02, describe: Callable[[], str] | None = None) -> bool:
    """THE wait of the tests: poll ``predicate`` until it is true or ``timeout`` seconds have passed.

    * ``spin``: called before each poll instead of sleeping ``period`` (e.g.
      ``lambda: executor.spin_once(timeout_sec=0.02)``: callbacks run while we wait);
    * ``procs``: processes that must stay alive meanwhile: if one exits, AssertionError with its output;
    * ``what``: on timeout raise AssertionError("timed out after T s waiting for <what>[; describe()]")
      instead of returning False (``describe`` adds the state that explains the failure).

    Returns True, or (without ``what``) the predicate's truth at the deadline. Never a bare sleep in a
    test: wait on the condition with a generous timeout (the CI machine has two busy cores).
    """
    procs = tuple(procs)
    deadline = time.monotonic() + timeout
    while True:
        if spin is not None:
            spin()
        if predicate():
            return True
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"waiting for {what or 'a condition'}: a process exited with {p.returncode}:\n"
                                     f"{stop_process(p)[-3000:]}")
        if time.monotonic() >= deadline:
            break
        if spin is None:
            time.sleep(period)
    if predicate():
        return True
    if what is None:
        return False
    extra = f"; {describe()}" if describe is not None else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")


def node_process(executable_module: str, *ros_args: str, env: dict | None = None, args: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start ``python -m executable_module [args] --ros-args ros_args...`` with the test environment."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
    full_env.update(env or {})
    cmd = [sys.executable, "-m", executable_module, *args]
    if ros_args:
        cmd += ["--ros-args", *ros_args]
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """SIGINT, then SIGKILL after ``timeout``; returns the process output."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = proc.stdout.read() if proc.stdout else ""
    return out or ""
