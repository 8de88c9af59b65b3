"""The evaluation graph: simulator + policy node + chunk executor, started as processes and supervised.

The nodes come from the project's graph description (``motus_ros.graph.describe_graph`` with
``graph:=policy``, the same nodes ``motus-launch`` and the launch files start), without the
visualizer, and with the executor starting disabled (the RunTask goal enables it).

Why the executor is restarted before every episode: the sim's reset puts the arms back at home at
once, while an executor that ran the previous episode keeps commanding the pose where that episode
ended (it holds its last command) and would drag the arms back there. A fresh executor holds the
measured pose (home) and fades into the policy, as at the start of any run. The simulator and the
policy node (the expensive model load) stay up; a node that died is restarted before the next episode.
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from motus_ros import configure_ros_environment
from motus_ros.graph import NodeSpec, describe_graph
from motus_ros.launcher import command_line

# executables of the evaluation graph, by node name (the policy graph minus the visualizer)
EVAL_NODES = ("sim", "policy", "executor")


class GraphError(RuntimeError):
    """The evaluation graph could not be started or does not come up."""


def eval_node_specs(values: dict[str, str], liveliness_lease: float = 0.5, executor_params: dict | None = None) -> dict[str, NodeSpec]:
    """The sim, policy and executor nodes of ``graph:=policy`` for these graph arguments.

    ``liveliness_lease``: the policy's DDS liveliness lease and the executor's ``policy_lease`` (s).
    The default graph uses 60 ms (a robot PC); on a loaded evaluation machine the DDS thread of a live
    policy misses that lease now and then, the executor holds the robot for a moment, and the success
    rate would measure the machine's load instead of the policy. A dead policy is still noticed
    within the lease (and by its process exit)."""
    specs = {n.name: n for n in describe_graph({**values, "graph": "policy", "run_time": "0"}) if n.name in EVAL_NODES}
    missing = set(EVAL_NODES) - set(specs)
    if missing:
        raise GraphError(f"the policy graph has no {sorted(missing)} node(s)")
    for spec in specs.values():
        spec.required = False
    specs["executor"].parameters.append({"enabled": False, "policy_lease": float(liveliness_lease)})  # moves only inside a RunTask goal
    specs["policy"].parameters.append({"liveliness_lease": float(liveliness_lease)})
    if executor_params:  # explicit overrides (e.g. step_tolerance); reported by the caller
        specs["executor"].parameters.append(dict(executor_params))
    return specs


class _Process:
    def __init__(self, spec: NodeSpec, cmd: list[str], env: dict[str, str], log_path: Path):
        self.spec = spec
        self.log_path = log_path
        self._log = open(log_path, "a")
        self._log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(cmd)}\n")
        self._log.flush()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()

    def log_tail(self, lines: int = 20) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


class EvalGraph:
    """Starts the evaluation nodes as processes; logs go to ``log_dir/<node>.log``."""

    def __init__(self, values: dict[str, str], log_dir: Path, liveliness_lease: float = 0.5, executor_params: dict | None = None):
        self.specs = eval_node_specs(values, liveliness_lease, executor_params)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="motus_eval_")
        env = configure_ros_environment(dict(os.environ))
        src_root = str(Path(__file__).resolve().parent.parent.parent)
        env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._env = env
        self.procs: dict[str, _Process] = {}
        self.restarts: dict[str, int] = {name: 0 for name in self.specs}

    def start(self, name: str) -> None:
        old = self.procs.get(name)
        if old is not None:
            old.stop()
            self.restarts[name] += 1
        spec = self.specs[name]
        cmd = command_line(spec, Path(self._tmp.name))
        self.procs[name] = _Process(spec, cmd, {**self._env, **spec.env}, self.log_dir / f"{name}.log")

    def start_all(self) -> None:
        for name in EVAL_NODES:
            self.start(name)

    def dead(self) -> dict[str, int]:
        """Nodes whose process has exited, with the exit code."""
        return {n: p.poll() for n, p in self.procs.items() if p.poll() is not None}

    def error_lines(self, name: str, lines: int = 60) -> list[str]:
        """The ERROR/FATAL lines (else the last lines) of a node's log: what a person needs to see first."""
        p = self.procs.get(name)
        tail = p.log_tail(lines) if p else []
        errors = [ln for ln in tail if "ERROR" in ln or "FATAL" in ln or "Error" in ln]
        return errors[-8:] or tail[-8:]

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs[name].stop()
        self.procs.clear()
        self._tmp.cleanup()
