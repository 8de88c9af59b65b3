"""Zombie Fast DDS shared-memory files: what a killed ROS process leaves behind in /dev/shm.

A Fast DDS participant keeps its shared-memory segments and ports as files in /dev/shm, each with a
lock file its process holds. A process that dies without cleaning up (SIGKILL, the OOM killer, a
crash) leaves them: on this project's development machine repeated test and fault runs had left
7.9 GB of segments and 80 ports, and a stale port can keep a restarted node from receiving data
(eProsima/Fast-DDS#2811, #5053: "open_and_lock_file failed"). Fast DDS ships the cleaner,
``fastdds shm clean``, which deletes only files whose lock no live process holds, so running it
beside a live graph is safe. This module finds that tool and runs it with this interpreter (the tool
needs ``psutil``, which the suite installs; the ``fastdds`` wrapper script would use whatever
``python3`` is first on PATH).

``motus-launch`` and ``launch/motus.launch.py`` run it before they start a graph, the test suite and
the fault harness after their runs. After a node was killed in a running graph, ``fastdds shm clean``
by hand does the same.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def fastdds_tool() -> Path | None:
    """The Fast DDS CLI script (``<prefix>/tools/fastdds/fastdds.py``) beside the ``fastdds`` executable."""
    beside = Path(sys.executable).parent / "fastdds"  # a virtual environment not on PATH
    for exe in (shutil.which("fastdds"), str(beside) if beside.is_file() else None):
        if exe:
            tool = Path(exe).resolve().parent.parent / "tools" / "fastdds" / "fastdds.py"
            if tool.is_file():
                return tool
    return None


def applies(env: dict | None = None) -> bool:
    """Fast DDS is the middleware (the default one) and shared memory lives in /dev/shm (Linux)."""
    env = os.environ if env is None else env
    return env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") == "rmw_fastrtps_cpp" and Path("/dev/shm").is_dir()


def clean_zombie_shm(timeout: float = 30.0) -> tuple[int, int] | None:
    """Run ``fastdds shm clean``: (zombie segments, zombie ports) removed, or None when it does not apply
    or could not run (no Fast DDS tool, other middleware, an error): cleaning is never worth failing for."""
    if not applies():
        return None
    tool = fastdds_tool()
    if tool is None:
        return None
    try:
        out = subprocess.run([sys.executable, str(tool), "shm", "clean"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    segments = re.search(r"(\d+) zombie segments cleaned", out.stdout)
    ports = re.search(r"(\d+) zombie ports cleaned", out.stdout)
    if out.returncode != 0 or segments is None or ports is None:
        return None
    return int(segments.group(1)), int(ports.group(1))


def clean_and_describe() -> str:
    """``clean_zombie_shm`` for a launcher: what it removed, in words ("" when nothing)."""
    cleaned = clean_zombie_shm()
    if not cleaned or not any(cleaned):
        return ""
    return (f"removed {cleaned[0]} shared-memory segments and {cleaned[1]} ports that killed ROS processes had left "
            "in /dev/shm (fastdds shm clean)")
