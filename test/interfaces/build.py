"""Build the test-only interface packages of test/interfaces/ with rosidl into a temporary prefix.

The same recipe as tools/setup.sh uses for motus_msgs (plain cmake against the venv's ROS wheels), but
installed into ``prefix`` instead of the venv: the packages exist only for the test processes that get
``env_for(prefix)``. Raises ``BuildUnavailable`` (tests skip with the reason) when cmake is missing.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent


class BuildUnavailable(RuntimeError):
    pass


def env_for(prefix: Path, base: dict | None = None) -> dict:
    """Environment in which processes import the packages built into ``prefix``."""
    env = dict(os.environ if base is None else base)
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(prefix / "lib"), env.get("LD_LIBRARY_PATH", "")) if p)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), sys.prefix) if p)
    return env


def build(packages: list[str], prefix: Path, work: Path, timeout: float = 900) -> Path:
    if shutil.which("cmake") is None:
        raise BuildUnavailable("cmake is not installed: the test-only interface packages cannot be built")
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), sys.prefix])
    env["CMAKE_PREFIX_PATH"] = os.pathsep.join([str(prefix), sys.prefix])
    for pkg in packages:
        src, bld = HERE / pkg, work / pkg
        configure = ["cmake", "-S", str(src), "-B", str(bld), f"-DCMAKE_INSTALL_PREFIX={prefix}", f"-DPython3_EXECUTABLE={sys.executable}",
                     "-DBUILD_TESTING=OFF", f"-DCMAKE_PREFIX_PATH={prefix};{sys.prefix}"]
        for cmd in (configure, ["cmake", "--build", str(bld), "-j2"], ["cmake", "--install", str(bld)]):
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            if out.returncode != 0:
                raise RuntimeError(f"building {pkg} failed: {' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return prefix


def cached_build(packages: list[str]) -> Path:
    """``build`` into a temporary prefix named by the hash of the packages' sources and the interpreter,
    reused while it exists (a build takes 10-30 s per package on an idle machine, minutes on a busy one)."""
    h = hashlib.sha1(sys.executable.encode())
    for pkg in sorted(packages):
        for f in sorted((HERE / pkg).rglob("*")):
            if f.is_file():
                h.update(str(f.relative_to(HERE)).encode() + f.read_bytes())
    prefix = Path(tempfile.gettempdir()) / f"motus_test_interfaces_{h.hexdigest()[:12]}"
    with open(f"{prefix}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait and reuse its prefix
        if not (prefix / ".complete").is_file():
            shutil.rmtree(prefix, ignore_errors=True)
            work = Path(tempfile.mkdtemp(prefix="motus_test_interfaces_build_"))
            try:
                build(packages, prefix, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            (prefix / ".complete").write_text("")
    return prefix


if __name__ == "__main__":  # manual: python -m test.interfaces.build /tmp/prefix
    p = Path(sys.argv[1])
    build(["arx5_arm_msg", "arm_control"], p, p / "_build")
    print("built into", p, sysconfig.get_paths()["purelib"])
