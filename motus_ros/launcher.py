"""``motus-launch``: start the graph of ``motus_ros.graph`` without ``ros2 launch``.

launch, launch_ros and ros2cli are not on PyPI, so a pip-only install cannot run the launch files.
This starts exactly the nodes the launch files start (same description, same parameters and
remappings), one process per node, prefixes their output with the node name, forwards Ctrl-C, and
ends the graph when a required node exits (its exit code becomes the launcher's; 1 when it
exited cleanly but another node died during the run).

    motus-launch graph:=demo episodes:=3
    motus-launch graph:=policy strategy:=rtc run_time:=20
    motus-launch graph:=demo --print        # list the nodes and their command lines
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

import motus_ros  # noqa: F401  (DDS environment defaults)
from motus_core.robot_profile import config_dir
from motus_ros import configure_ros_environment
from motus_ros.executables import EXECUTABLES
from motus_ros.graph import ARGUMENTS, NodeSpec, describe_graph, describe_launch_only
from motus_ros.shm_cleanup import clean_and_describe


def _param_files(spec: NodeSpec, workdir: Path) -> list[str]:
    files = []
    for i, p in enumerate(spec.parameters):
        if isinstance(p, dict):
            path = workdir / f"{spec.name}_{i}.yaml"
            path.write_text(yaml.safe_dump({"/**": {"ros__parameters": p}}, sort_keys=True))
            files.append(str(path))
        else:
            path = Path(p)
            if not path.is_absolute():
                path = config_dir() / path
            if not path.is_file():
                raise FileNotFoundError(f"node {spec.name}: parameter file {path} not found")
            files.append(str(path))
    return files


def command_line(spec: NodeSpec, workdir: Path) -> list[str]:
    """The command that starts ``spec`` as a process (the console script's module, run with -m)."""
    if spec.executable not in EXECUTABLES:
        raise KeyError(f"node {spec.name}: unknown executable {spec.executable!r}")
    module, func = EXECUTABLES[spec.executable].split(":")
    cmd = [sys.executable, "-c", f"import sys; from {module} import {func} as m; sys.exit(m())", *spec.arguments, "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        cmd += ["-r", f"__ns:={spec.namespace}"]
    for f in _param_files(spec, workdir):
        cmd += ["--params-file", f]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


class _Child:
    def __init__(self, spec: NodeSpec, cmd: list[str], env: dict[str, str]):
        self.spec = spec
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            sys.stdout.write(f"[{self.spec.name}] {line}")
            sys.stdout.flush()

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


def run_graph(nodes: list[NodeSpec], timeout: float = 0.0, shutdown_grace: float = 10.0) -> int:
    """Start ``nodes``; return when a required node exits (its code), on Ctrl-C, or after ``timeout`` s."""
    env = configure_ros_environment(dict(os.environ))
    cleaned = clean_and_describe()
    if cleaned:
        print(f"[motus-launch] {cleaned}", flush=True)
    src_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="motus_launch_") as tmp:
        children = []
        for spec in nodes:
            cmd = command_line(spec, Path(tmp))
            children.append(_Child(spec, cmd, {**env, **spec.env}))
            print(f"[motus-launch] started {spec.name} (pid {children[-1].proc.pid})", flush=True)
        interrupted = []
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
        signal.signal(signal.SIGTERM, lambda *_: interrupted.append(True))
        rc = 0
        failed: list[str] = []  # unexpected deaths: any of them makes the result non-zero
        start = time.monotonic()
        try:
            while not interrupted:
                # deaths of other nodes first: a required node's clean exit must not hide an earlier crash
                crashed = [c for c in children if not c.spec.required and c.proc.poll() not in (None, 0)]
                for c in crashed:
                    print(f"[motus-launch] node {c.spec.name} died with exit code {c.proc.returncode}", flush=True)
                    children.remove(c)
                    failed.append(f"{c.spec.name} ({c.proc.returncode})")
                required_done = [c for c in children if c.spec.required and c.proc.poll() is not None]
                if required_done:
                    rc = required_done[0].proc.returncode
                    print(f"[motus-launch] required node {required_done[0].spec.name} exited with {rc}; stopping the graph", flush=True)
                    break
                if all(c.proc.poll() is not None for c in children):
                    break
                if timeout and time.monotonic() - start > timeout:
                    print(f"[motus-launch] {timeout:.0f} s elapsed; stopping the graph", flush=True)
                    break
                time.sleep(0.1)
        finally:
            signal.signal(signal.SIGINT, previous)
            for c in children:
                c.signal(signal.SIGINT)
            deadline = time.monotonic() + shutdown_grace
            for c in children:
                try:
                    c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    print(f"[motus-launch] {c.spec.name} did not stop on SIGINT; killing it", flush=True)
                    c.signal(signal.SIGKILL)
                    c.proc.wait()
                c.thread.join(timeout=1.0)
        if interrupted:
            return 130
        if rc == 0 and failed:
            print(f"[motus-launch] exit code 1: node(s) died during the run: {', '.join(failed)}", flush=True)
            return 1
        return rc


def parse_assignments(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        if ":=" not in item:
            raise SystemExit(f"arguments are name:=value (got {item!r}); see motus-launch --help")
        k, v = item.split(":=", 1)
        values[k] = v
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="motus-launch",
        description="Start the motus-ros node graph without ros2 launch (same graph as launch/motus.launch.py).",
        epilog="graph arguments (name:=value):\n" + "\n".join(f"  {a.name:<18} {a.help} (default {a.default})" for a in ARGUMENTS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("assignments", nargs="*", help="graph arguments as name:=value")
    parser.add_argument("--print", action="store_true", help="print the nodes and command lines, start nothing")
    parser.add_argument("--timeout", type=float, default=0.0, help="stop the graph after this many seconds (0: never)")
    ns = parser.parse_args(argv)
    try:
        values = parse_assignments(ns.assignments)
        nodes = describe_graph(values)
        skipped = describe_launch_only(values)
    except ValueError as exc:
        parser.error(str(exc))
    if skipped:  # C++/Qt nodes of other ROS 2 packages: pip cannot install them, ros2 launch starts them
        names = ", ".join(f"{s.namespace + '/' if s.namespace else ''}{s.name} ({s.package})" for s in skipped)
        print(f"[motus-launch] not started (ROS 2 packages pip cannot install; `ros2 launch motus_ros motus.launch.py` starts them): "
              f"{names}. Without rviz, record the visualisation for Foxglove: viz_mcap:=viz.mcap", flush=True)
    if ns.print:
        with tempfile.TemporaryDirectory() as tmp:
            for spec in nodes:
                print(f"{spec.name}: {spec.executable}{' (required)' if spec.required else ''}")
                print("    " + " ".join(command_line(spec, Path(tmp))))
        return 0
    return run_graph(nodes, timeout=ns.timeout)


if __name__ == "__main__":
    sys.exit(main())
