"""Helpers shared by the tests (importable as ``test.helpers``)."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The shared reference fixtures (parity fixtures etc.): MOTUS_SHARED_FIXTURES, else ../shared/fixtures.
FIXTURES = Path(os.environ.get("MOTUS_SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures"))
_DOMAIN_LOCKS = Path("/tmp/motus_ros_test_domains")


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
