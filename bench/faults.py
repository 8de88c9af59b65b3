"""Fault-injection harness: the closed loop under bad input and faults, one kind at a time.

The policy graph of ``motus-launch graph:=policy`` (simulator, policy node with the replay policy,
chunk executor; the same NodeSpecs, parameters and command lines as the launcher, each node its own
process) drives the simulated robot through a smooth periodic motion (a replayed trajectory that
loops seamlessly, peak 1 rad/s per arm joint). This process hosts one rclpy node that watches the
graph (/clock, /executor/status, the measured joint states) and injects the faults:

* images on the high camera's topic (a second publisher, as a misbehaving driver would be): wrong
  size, unsupported encoding, truncated data, empty, wrong step, stamps 0.3 s in the future, in the
  past (out of order) and 5 s in the past (a time jump); a camera (left wrist, relayed through
  this process) that stops for 2 s and comes back;
* joint states on the profile's state topic: missing / extra / duplicated names, wrong lengths,
  NaN, inf, out-of-order stamps, stamps jumping 2 s ahead and 5 s back;
* action chunks on /policy/action_chunk: NaN, out of limits, wrong joint count, stale (5 s old)
  and future stamps, steps above the per-step limit;
* commands to the simulator (/arm_controller/joint_trajectory): NaN, unknown joints, out of limits,
  entirely in the past;
* processes: policy SIGKILL (then restarted), policy stalled (SIGSTOP 1.5 s), recorder SIGKILL
  mid-episode (then ``motus-convert --repair``), disk full during recording (RLIMIT_FSIZE: write()
  fails with EFBIG, the path a full disk takes), two CPU-burning neighbour processes.

A recorder node (the project's, as the recorder kinds start it) runs next to the graph and records
one episode per kind, started before the injection and stopped after the settle time; the two
recorder kinds record with a recorder of their own instead. Bad input may be recorded as the robot
saw it; what must hold is the episode on disk.

For each kind: nodes alive (the recorder included; a killed or dead node is restarted by the
harness, and must come back), the executor's state, the largest measured arm joint speed over the
profile's velocity limit (finite differences of the simulator's joint states), the warning/error
lines the nodes (the recorder included) logged and no traceback among them, whether the expected
one is among them, and whether the data on disk is intact: the kind's episode is complete, its bag
finished and readable, and its messages and payload bytes per topic match episode.json (the
recorder kinds: the killed recorder's bag after ``motus-convert --repair``; the disk-full episode
as the recorder left it, repaired if unfinished). Loaded figures come from the CPU-neighbour phase:
spurious "Policy lost" reports per minute (no policy was killed) and kill-to-hold latency of the
policy kills made under that load (sim time, as the closed-loop tests measure it; wall time in the
details).

    python bench/faults.py            # every kind (several minutes)
    python bench/faults.py --quick    # a few kinds (the test)

Final line: JSON with fault_kinds, fault_kinds_passed, spurious_policy_lost_per_min_loaded,
kill_to_hold_ms_p99_loaded, max_measured_velocity_ratio, and per-kind details under "kinds" (a
recorded kind's episode check, and the seconds the recording added, under details.episode).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")
# A domain of its own unless told otherwise: a shared machine may run other graphs on the default one.
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))

import numpy as np  # noqa: E402

import motus_ros  # noqa: E402,F401  (DDS environment before rclpy)
from motus_ros.shm_cleanup import clean_zombie_shm  # noqa: E402

QUICK = ("image_wrong_size", "image_future_stamp", "joint_state_nan", "chunk_nan", "sim_command_nan", "policy_kill")
LOST_RE = re.compile(r"policy lost|policy process (is )?gone", re.I)
LOG_RE = re.compile(r"\b(WARN|WARNING|ERROR|FATAL)\b|Traceback")
TRACEBACK_RE = re.compile(r"Traceback")
REJECT_LOG_PERIOD = 5.0  # motus_core.rejections.DEFAULT_PERIOD
RECORDER = "episode_recorder"  # the harness's recorder process (node fault_episode_recorder), one episode per kind


# ------------------------------------------------------------------------------------------ processes
class NodeProc:
    """One node process with its output kept as (monotonic time, line)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], preexec=None):
        self.name = name
        self.cmd = cmd
        self.env = env
        self.preexec = preexec
        self.lines: deque[tuple[float, str]] = deque(maxlen=20000)
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     bufsize=1, start_new_session=True, preexec_fn=self.preexec)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()

    def _pump(self, proc) -> None:
        for line in proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip()))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)

    def since(self, t0: float, t1: float = math.inf) -> list[str]:
        return [line for t, line in list(self.lines) if t0 <= t <= t1]


def graph_commands(replay: Path, tmp: Path, relay_topic: str, source_topic: str) -> dict[str, list[str]]:
    """Command lines of the policy graph's sim, policy and executor, as motus-launch builds them."""
    from motus_ros.graph import describe_graph
    from motus_ros.launcher import command_line

    specs = describe_graph({"graph": "policy", "policy": f"replay:{replay}", "policy_options": "align=time loop=true",
                            "strategy": "rtc", "run_time": "0"})
    out = {}
    for spec in specs:
        if spec.name not in ("sim", "policy", "executor"):
            continue  # the visualizer and the graph's recorders are left out (two shared cores); the harness runs one recorder
        if spec.name == "policy":  # the left wrist camera comes through this process (it can stop)
            spec.remappings = list(spec.remappings) + [(source_topic, relay_topic)]
        spec.required = False
        out[spec.name] = command_line(spec, tmp)
    return out


def recorder_command(name: str, output_dir: Path) -> list[str]:
    return [sys.executable, "-c", "import sys; from motus_ros.nodes.recorder_node import main as m; sys.exit(m())",
            "--ros-args", "-r", f"__node:={name}", "-p", "use_sim_time:=true", "-p", f"output_dir:={output_dir}",
            "-p", "flush_period_s:=0.5", "-p", "min_free_mb:=1.0"]


def periodic_trajectory(profile, seconds: float = 60.0, period: float = 4.0, peak_speed: float = 1.0) -> np.ndarray:
    """A seamlessly looping motion around the simulator's home pose (profile units, 30 Hz)."""
    from motus_core.sim.commands import ProfileAdapter
    from motus_core.sim.simulator import DEFAULT_HOME

    home = ProfileAdapter(profile).from_sim(np.asarray(DEFAULT_HOME, float))
    lo, hi = np.asarray(profile.position_lower, float), np.asarray(profile.position_upper, float)
    amp = np.minimum(peak_speed * period / (2 * np.pi), 0.8 * np.minimum(home - lo, hi - home))
    amp[[i for i, n in enumerate(profile.joint_names) if "gripper" in n]] = 0.0
    dt = 1.0 / 30.0
    n = int(round(seconds / period)) * int(round(period / dt))
    t = np.arange(n) * dt
    return home[None, :] + amp[None, :] * np.sin(2 * np.pi * t / period)[:, None]


# ------------------------------------------------------------------------------------------ the watcher
class Watcher:
    """The harness's rclpy node: observes the graph and publishes the injected input."""

    def __init__(self, profile, relay_source: str, relay_topic: str):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, JointState
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        from motus_msgs.msg import ActionChunk, ExecutorStatus
        from motus_msgs.srv import StartEpisode, StopEpisode

        self.profile = profile
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        n = self.node = rclpy.create_node("fault_injector", context=self.ctx)
        be = QoSProfile(depth=20, reliability=ReliabilityPolicy.BEST_EFFORT)
        rel = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.clock = 0.0
        self.status = None
        self.status_log: deque = deque(maxlen=20000)  # (monotonic, clock, state, chunks_received, message)
        self.states: deque = deque(maxlen=20000)  # (stamp, positions) of the simulator's joint states
        self.commands_seen = None
        self.relay_on = True
        n.create_subscription(Clock, "/clock", lambda m: setattr(self, "clock", m.clock.sec + m.clock.nanosec * 1e-9), be)
        n.create_subscription(ExecutorStatus, "/executor/status", self._on_status, 10)
        self.state_topic = profile.state_sources[0].topic
        n.create_subscription(JointState, self.state_topic, self._on_state, be)
        traj_targets = [c for c in profile.commands if c.interface == "joint_trajectory"]
        self.command_topic = traj_targets[0].topic
        self.command_names = list(traj_targets[0].names.values())
        relay_pub = n.create_publisher(Image, relay_topic, be)
        n.create_subscription(Image, relay_source, lambda m: relay_pub.publish(m) if self.relay_on else None, be)
        self.image_pub = n.create_publisher(Image, profile.cameras["high"].topic, be)
        self.state_pub = n.create_publisher(JointState, self.state_topic, be)
        self.chunk_pub = n.create_publisher(ActionChunk, "/policy/action_chunk", rel)
        self.command_pub = n.create_publisher(JointTrajectory, self.command_topic, rel)
        self.StartEpisode, self.StopEpisode = StartEpisode, StopEpisode
        self.Trigger = Trigger
        self.reset_estop = n.create_client(Trigger, "/executor/reset_estop")
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(n)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self.executor.spin_once(timeout_sec=0.02)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)

    def _on_status(self, m) -> None:
        self.status = m
        self.status_log.append((time.monotonic(), self.clock, int(m.state), int(m.chunks_received), m.message))

    def _on_state(self, m) -> None:
        if m.header.frame_id == "fault_injection":
            return  # our own injected messages are not measurements
        self.states.append((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, np.asarray(m.position, float), list(m.name)))

    def call(self, client, request, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while not client.service_is_ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        fut = client.call_async(request)
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        return fut.result() if fut.done() else None

    # ------------------------------------------------------------------ measurements
    def max_velocity_ratio(self, t0: float, t1: float) -> float:
        """Largest |dq/dt| / limit of the arm joints between sim times t0 and t1 (finite differences)."""
        prof = self.profile
        rows = [(s, q, names) for s, q, names in list(self.states) if t0 <= s <= t1]
        if len(rows) < 2:
            return 0.0
        names = rows[0][2]
        src = prof.state_sources[0]
        canon = [src.names.get(nm, nm) for nm in names]
        idx = [prof.joint_names.index(c) for c in canon if c in prof.joint_names]
        lim = np.asarray(prof.velocity_limit, float)[idx]
        arm = np.array(["gripper" not in prof.joint_names[i] for i in idx])
        worst = 0.0
        prev = None
        for s, q, nm in rows:
            if nm != names:
                continue
            if prev is not None and s - prev[0] > 1e-4:
                v = np.abs(q[: len(idx)] - prev[1][: len(idx)]) / (s - prev[0])
                worst = max(worst, float(np.max((v / lim)[arm])))
            prev = (s, q)
        return worst


# ------------------------------------------------------------------------------------------ faults
@dataclass
class Fault:
    name: str
    group: str
    inject: Callable[["Harness"], dict]
    expect: tuple[str, str] | None = None  # (node, regex) a line the node must log
    settle: float = 2.0  # s after the injection before the verdict
    recorded: bool = True  # an episode of the harness's recorder around the kind (the recorder kinds bring their own)
    estop_expected: bool = False  # an e-stop is the right reaction (otherwise a latched e-stop fails the kind)


@dataclass
class Result:
    name: str
    group: str
    passed: bool = False
    nodes_alive: dict = field(default_factory=dict)
    executor_state: str = ""
    max_velocity_ratio: float = 0.0
    logged: dict = field(default_factory=dict)
    expected_log_found: bool | None = None
    data_intact: bool | None = None
    details: dict = field(default_factory=dict)
    why_failed: list = field(default_factory=list)


STATE_NAMES = {0: "idle", 1: "fade_in", 2: "running", 3: "holding", 4: "estop"}


class Harness:
    def __init__(self, tmp: Path, quick: bool):
        from motus_core.robot_profile import load_profile

        self.tmp = tmp
        self.quick = quick
        self.profile = load_profile("sim_aloha")
        self.relay_source = self.profile.cameras["left_wrist"].topic
        self.relay_topic = "/fault_injection/left_wrist_relay"
        replay = tmp / "periodic.npy"
        np.save(replay, periodic_trajectory(self.profile))
        self.env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), MUJOCO_GL="egl")
        cmds = graph_commands(replay, tmp, self.relay_topic, self.relay_source)
        self.watch = Watcher(self.profile, self.relay_source, self.relay_topic)
        self.nodes = {name: NodeProc(name, cmd, self.env) for name, cmd in cmds.items()}
        self.recorder_starts = 0
        self.start_recorder()
        self.policy_lost_loaded = 0
        self.loaded_seconds = 0.0
        self.kill_to_hold_sim_ms: list[float] = []
        self.kill_to_hold_wall_ms: list[float] = []
        self._chunk_id = 10_000_000

    # ------------------------------------------------------------------ graph
    def wait(self, pred, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.05)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")

    def running(self) -> bool:
        s = self.watch.status
        return s is not None and int(s.state) in (1, 2)

    def wait_running(self, timeout: float = 240.0) -> None:
        self.wait(self.running, timeout, "the executor running the policy")
        n0 = self.watch.status.chunks_received
        self.wait(lambda: self.watch.status.chunks_received >= n0 + 2 and int(self.watch.status.state) == 2, timeout,
                  "two fresh chunks executed")

    def close(self) -> None:
        for n in self.nodes.values():
            n.stop()
        self.watch.close()

    # ------------------------------------------------------------------ message builders
    def now_stamp(self) -> float:
        """The robot's time now, as fresh as this process knows it (its /clock can lag the simulator's stamps)."""
        newest = self.watch.states[-1][0] if self.watch.states else 0.0
        return max(self.watch.clock, newest)

    def image(self, stamp: float, height=240, width=320, enc="rgb8", step=None, nbytes=None):
        from sensor_msgs.msg import Image

        from motus_ros.conversions import time_msg

        m = Image()
        m.header.stamp = time_msg(max(stamp, 0.0))
        m.header.frame_id = "fault_injection"
        m.height, m.width, m.encoding = height, width, enc
        ch = 2 if enc == "mono16" else 3
        m.step = width * ch if step is None else step
        m.data = bytes(m.step * height if nbytes is None else nbytes)
        return m

    def joint_state(self, stamp: float, names=None, positions=None):
        from sensor_msgs.msg import JointState

        from motus_ros.conversions import time_msg

        m = JointState()
        m.header.stamp = time_msg(max(stamp, 0.0))
        m.header.frame_id = "fault_injection"
        src = self.profile.state_sources[0]
        m.name = list(src.names) if names is None else list(names)
        last = self.watch.states[-1][1] if self.watch.states else np.zeros(len(m.name))
        m.position = [float(x) for x in (last[: len(m.name)] if positions is None else positions)]
        return m

    def chunk(self, stamp: float, actions: np.ndarray, names=None):
        from motus_msgs.msg import ActionChunk

        from motus_ros.conversions import duration_msg, time_msg

        self._chunk_id += 1
        m = ActionChunk()
        m.header.stamp = time_msg(max(stamp, 0.0))
        m.chunk_id = self._chunk_id
        m.joint_names = list(self.profile.joint_names if names is None else names)
        m.step_period = duration_msg(1.0 / 30.0)
        m.num_steps = int(actions.shape[0])
        m.positions = [float(x) for x in actions.reshape(-1)]
        m.model = "fault_injection"
        m.mode = "vla"
        return m

    def current_pose(self) -> np.ndarray:
        from motus_core.sim.commands import ProfileAdapter  # noqa: F401  (profile units == message units here)

        s = self.watch.states[-1]
        src = self.profile.state_sources[0]
        q = np.zeros(self.profile.dof)
        for nm, v in zip(s[2], s[1]):
            c = src.names.get(nm)
            if c in self.profile.joint_names:
                q[self.profile.joint_names.index(c)] = v
        return q

    def trajectory(self, positions: np.ndarray | None, names=None, stamp: float = 0.0, t_from_start: float = 0.5):
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from motus_ros.conversions import time_msg

        m = JointTrajectory()
        m.header.stamp = time_msg(max(stamp, 0.0))
        m.joint_names = list(self.watch.command_names if names is None else names)
        p = JointTrajectoryPoint()
        p.positions = [float(x) for x in positions]
        sec = int(t_from_start)
        p.time_from_start = Duration(sec=sec, nanosec=int((t_from_start - sec) * 1e9))
        m.points = [p]
        return m

    def burst(self, publish: Callable[[float], None], seconds: float = 2.0, rate: float = 30.0) -> int:
        n = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            publish(self.now_stamp())
            n += 1
            time.sleep(1.0 / rate)
        return n

    # ------------------------------------------------------------------ the recorded episode of a kind
    def start_recorder(self) -> None:
        """(Re)start the harness's recorder, each time under a new node name: a killed recorder's service
        endpoints linger in DDS discovery for a while, and a request a client sends them is lost."""
        self.recorder_starts += 1
        name = "fault_episode_recorder" + (f"_{self.recorder_starts}" if self.recorder_starts > 1 else "")
        cmd = recorder_command(name, self.tmp / "episodes")
        if RECORDER in self.nodes:  # the same NodeProc keeps the dead one's output for the logs
            self.nodes[RECORDER].cmd = cmd
            self.nodes[RECORDER].start()
        else:
            self.nodes[RECORDER] = NodeProc(RECORDER, cmd, self.env)
        self.rec_start = self.watch.node.create_client(self.watch.StartEpisode, f"/{name}/start_episode")
        self.rec_stop = self.watch.node.create_client(self.watch.StopEpisode, f"/{name}/stop_episode")

    def start_episode(self, kind: str) -> tuple[Path | None, str]:
        """Start the harness recorder's episode for one kind: (its directory, "") or (None, why not)."""
        if not self.nodes[RECORDER].alive():
            return None, "the recorder is not running"
        req = self.watch.StartEpisode.Request(task="fault_injection", instruction=kind)
        # 60 s: a recorder restarted after the previous kind needs its start-up first
        res = self.watch.call(self.rec_start, req, 60)
        if res is None or not res.success:
            return None, f"the recorder did not start an episode: {getattr(res, 'message', 'no answer')}"
        return Path(res.path), ""

    def finish_episode(self, ep_dir: Path | None, why_not: str = "") -> tuple[bool, dict]:
        """Stop the kind's episode and read it back: complete, bag finished and readable, episode.json
        counts and bytes match the bag. The episode is deleted afterwards (GBs over a full run)."""
        if ep_dir is None:
            return False, {"error": why_not}
        req = self.watch.StopEpisode.Request(outcome=self.watch.StopEpisode.Request.OUTCOME_UNKNOWN, notes="fault injection")
        stopped = self.watch.call(self.rec_stop, req, 30) if self.nodes[RECORDER].alive() else None
        if stopped is None:
            alive = self.nodes[RECORDER].alive()
            return False, {"error": "no answer to stop_episode" if alive else "the recorder died during the kind"}
        try:
            ok, info = _check_episode(ep_dir)
        except Exception as exc:  # noqa: BLE001 - an unreadable episode.json is data not intact, not a harness error
            ok, info = False, {"error": f"{type(exc).__name__}: {exc}"}
        info["stop_answer"] = stopped.message
        if not stopped.success:  # the episode did not end complete (a write error, say)
            info.setdefault("error", stopped.message)
        shutil.rmtree(ep_dir, ignore_errors=True)
        return ok and stopped.success, info

    # ------------------------------------------------------------------ running one fault
    def run(self, fault: Fault) -> Result:
        res = Result(fault.name, fault.group)
        t_wait = time.monotonic()
        try:
            if not self.running():
                self.wait_running(180.0)
        except RuntimeError as exc:
            res.why_failed.append(f"graph not running before the fault: {exc}")
        # after a process fault of the previous kind: how long the restarted node took to rejoin
        res.details["waited_for_graph_s"] = round(time.monotonic() - t_wait, 1)
        t_rec = time.monotonic()
        ep_dir, why_not = self.start_episode(fault.name) if fault.recorded else (None, "")
        t0, c0 = time.monotonic(), self.watch.clock
        try:
            res.details.update(fault.inject(self) or {})
        except Exception as exc:  # noqa: BLE001 - a harness error fails this kind, not the run
            res.why_failed.append(f"injection failed: {type(exc).__name__}: {exc}")
        time.sleep(fault.settle)
        t1, c1 = time.monotonic(), self.watch.clock
        if fault.recorded:
            res.details["data_intact"], res.details["episode"] = self.finish_episode(ep_dir, why_not)
        t_end = time.monotonic()  # the recorder's lines about stopping the episode belong to the kind
        if fault.recorded:  # the time the recording adds to the kind
            res.details["episode"]["overhead_s"] = round(t0 - t_rec + t_end - t1, 2)
        res.nodes_alive = {name: n.alive() for name, n in self.nodes.items()}
        res.nodes_alive.update(res.details.pop("extra_alive", {}))
        s = self.watch.status
        res.executor_state = STATE_NAMES.get(int(s.state), "?") if s is not None else "none"
        res.max_velocity_ratio = round(self.watch.max_velocity_ratio(c0, c1), 3)
        procs = dict(self.nodes)
        procs.update(res.details.pop("extra_procs", {}))
        for name, n in procs.items():
            lines = [ln for ln in n.since(t0, t_end) if LOG_RE.search(ln)]
            if lines:
                res.logged[name] = {"lines": len(lines), "first": lines[0][-300:]}
            if any(TRACEBACK_RE.search(ln) for ln in n.since(t0, t_end)):
                res.why_failed.append(f"{name} printed a traceback")
        if fault.expect is not None:
            node, pattern = fault.expect
            src = procs.get(node)
            # rejections are logged once per cause and period (5 s): a line of the same cause just before
            # this kind began (from the previous kind's injection) means this one is only counted
            found = src is not None and any(re.search(pattern, ln, re.I) for ln in src.since(t0 - REJECT_LOG_PERIOD - 0.5, t1))
            res.expected_log_found = bool(found)
            if not found:
                res.why_failed.append(f"{node} logged nothing matching {pattern!r}")
        res.data_intact = res.details.pop("data_intact", None)
        if not all(res.nodes_alive.values()):
            res.why_failed.append(f"node(s) not alive: {[k for k, v in res.nodes_alive.items() if not v]}")
        if res.max_velocity_ratio > 1.02:
            res.why_failed.append(f"measured speed {res.max_velocity_ratio:.2f} x the limit")
        if res.data_intact is False:
            err = (res.details.get("episode") or res.details.get("recorder") or {}).get("error")
            res.why_failed.append("data on disk not intact" + (f": {err}" if err else ""))
        estops = [m for w, _, st, _, m in list(self.watch.status_log) if t0 <= w <= t_end and st == 4]
        if estops and not fault.estop_expected:
            # the robot stopped for good: a fault the graph should have absorbed, and a latched executor
            # would also fail the next kind (it waits for the policy running) for this kind's reason
            res.why_failed.append(f"the executor latched an e-stop: {estops[0]}")
        if estops:
            res.details["estop"] = estops[0]
            answer = self.watch.call(self.watch.reset_estop, self.watch.Trigger.Request(), 10)
            res.details["estop_reset"] = getattr(answer, "message", "no answer")
        res.why_failed += res.details.pop("problems", [])
        res.passed = not res.why_failed
        # leave the graph (and the recorder) running for the next kind
        for name, n in self.nodes.items():
            if not n.alive() and name == RECORDER:
                self.start_recorder()
            elif not n.alive():
                n.start()
        return res

    # ------------------------------------------------------------------ process faults
    def kill_policy_and_measure(self) -> dict:
        pol = self.nodes["policy"]
        t_wall, t_sim = time.monotonic(), self.watch.clock
        pol.signal(signal.SIGKILL)
        pol.proc.wait(10)
        hold = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            hits = [(w, c) for w, c, st, _, _ in list(self.watch.status_log) if w >= t_wall and st == 3]
            if hits:
                hold = hits[0]
                break
            time.sleep(0.005)
        out = {}
        problems = []
        if hold is None:
            problems.append("the executor did not hold within 20 s of the kill")
        else:
            out["kill_to_hold_wall_ms"] = round((hold[0] - t_wall) * 1000, 1)
            out["kill_to_hold_sim_ms"] = round(max(0.0, hold[1] - t_sim) * 1000, 1)
        # what a supervisor restarting a killed node does first (docs/runtime.md): the killed process's Fast DDS
        # shared-memory files stay behind, and a stale port can keep the new process from receiving data
        cleaned = clean_zombie_shm()
        if cleaned is not None:
            out["zombie_shm_cleaned"] = {"segments": cleaned[0], "ports": cleaned[1]}
        pol.start()
        t_start = time.monotonic()
        try:
            self.wait_running(240.0)
            out["policy_restarted"] = True
            out["rejoin_s"] = round(time.monotonic() - t_start, 1)  # restart -> its chunks executed again
        except RuntimeError as exc:
            problems.append(f"after the restart: {exc}")
        out["problems"] = problems
        return out


def _img(h: Harness, **kw):
    return lambda stamp: h.watch.image_pub.publish(h.image(stamp, **kw))


def fault_list() -> list[Fault]:
    F = Fault
    cam = "high"
    js = [
        F("joint_state_missing_name", "joint_states", lambda h: {"sent": h.burst(lambda s: h.watch.state_pub.publish(
            h.joint_state(s, names=list(h.profile.state_sources[0].names)[1:], positions=h.current_pose()[1:])), 2.0, 50)},
          ("executor", r"missing|rejected joint state")),
        F("joint_state_extra_name", "joint_states", lambda h: {"sent": h.burst(lambda s: h.watch.state_pub.publish(
            h.joint_state(s, names=list(h.profile.state_sources[0].names) + ["bogus_joint"],
                          positions=list(h.current_pose()) + [0.0])), 2.0, 50)},
          ("policy", r"bogus_joint")),
        F("joint_state_duplicate_name", "joint_states", lambda h: {"sent": h.burst(lambda s: h.watch.state_pub.publish(
            h.joint_state(s, names=list(h.profile.state_sources[0].names) + [list(h.profile.state_sources[0].names)[0]],
                          positions=list(h.current_pose()) + [0.0])), 2.0, 50)},
          ("executor", r"duplicated")),
        F("joint_state_wrong_length", "joint_states", lambda h: {"sent": h.burst(lambda s: h.watch.state_pub.publish(
            h.joint_state(s, positions=h.current_pose()[:-3])), 2.0, 50)}, ("executor", r"positions")),
        F("joint_state_nan", "joint_states", lambda h: {"sent": h.burst(lambda s: h.watch.state_pub.publish(
            h.joint_state(s, positions=np.where(np.arange(h.profile.dof) == 3, np.nan, h.current_pose()))), 2.0, 50)},
          ("executor", r"NaN")),
        F("joint_state_inf", "joint_states", lambda h: {"sent": h.burst(lambda s: h.watch.state_pub.publish(
            h.joint_state(s, positions=np.where(np.arange(h.profile.dof) == 8, np.inf, h.current_pose()))), 2.0, 50)},
          ("policy", r"NaN/inf")),
        F("joint_state_out_of_order_stamp", "joint_states", lambda h: {"sent": h.burst(lambda s: h.watch.state_pub.publish(
            h.joint_state(s - 0.2, positions=h.current_pose())), 2.0, 50)}, ("policy", r"out of order")),
        F("joint_state_stamp_jumps_ahead", "joint_states", lambda h: {"sent": h.burst(lambda s: h.watch.state_pub.publish(
            h.joint_state(s + 2.0, positions=h.current_pose())), 2.0, 50)}, ("policy", r"future")),
        F("joint_state_stamp_jumps_back", "joint_states", lambda h: {"sent": h.burst(lambda s: h.watch.state_pub.publish(
            h.joint_state(s - 5.0, positions=h.current_pose())), 1.0, 20)}, ("policy", r"time jumped back|reset|out of order")),
    ]
    images = [
        F("image_wrong_size", "images", lambda h: {"sent": h.burst(_img(h, height=480, width=640))}, ("policy", r"640x480")),
        F("image_unsupported_encoding", "images", lambda h: {"sent": h.burst(_img(h, enc="mono16"))}, ("policy", r"encoding")),
        F("image_truncated_data", "images", lambda h: {"sent": h.burst(_img(h, nbytes=1000))}, ("policy", r"short data")),
        F("image_empty", "images", lambda h: {"sent": h.burst(_img(h, height=0, width=0))}, ("policy", r"empty image")),
        F("image_wrong_step", "images", lambda h: {"sent": h.burst(_img(h, step=100))}, ("policy", r"wrong step")),
        F("image_future_stamp", "images", lambda h: {"sent": h.burst(lambda s: h.watch.image_pub.publish(h.image(s + 0.3)))},
          ("policy", rf"{cam}: stamped in the future")),
        F("image_past_stamp", "images", lambda h: {"sent": h.burst(lambda s: h.watch.image_pub.publish(h.image(s - 0.3)))},
          ("policy", rf"{cam}: out of order")),
        F("image_stamp_5s_back", "images", lambda h: {"sent": h.burst(lambda s: h.watch.image_pub.publish(h.image(s - 5.0)), 1.0, 5)},
          ("policy", r"time jumped back|reset")),
        F("camera_stops_and_returns", "images", _camera_gap, ("policy", r"left_wrist"), settle=3.0),
    ]
    chunks = [
        F("chunk_nan", "chunks", lambda h: _chunk(h, lambda a: np.where(np.arange(a.size).reshape(a.shape) == 30, np.nan, a)),
          ("executor", r"NaN|non-finite|finite")),
        F("chunk_out_of_limits", "chunks", lambda h: _chunk(h, lambda a: a + np.where(np.arange(a.shape[1]) == 1, 3.0, 0.0)),
          ("executor", r"limit|outside")),
        F("chunk_wrong_joint_count", "chunks", lambda h: _chunk(h, lambda a: a[:, :-2], names=list(h.profile.joint_names)[:-2]),
          ("executor", r"chunk")),
        F("chunk_stale_stamp", "chunks", lambda h: _chunk(h, lambda a: a, dt=-5.0), ("executor", r"chunk|stale|old|delay")),
        F("chunk_future_stamp", "chunks", lambda h: _chunk(h, lambda a: a, dt=+1.0), ("executor", r"ahead|future|clock")),
        F("chunk_step_above_limit", "chunks", lambda h: _chunk(h, lambda a: a + np.where(np.arange(a.shape[0])[:, None] >= 20, 0.5, 0.0)),
          ("executor", r"step")),
    ]
    commands = [
        F("sim_command_nan", "sim_commands", lambda h: _command(h, lambda q: np.where(np.arange(q.size) == 2, np.nan, q)),
          ("sim", r"NaN")),
        F("sim_command_unknown_joints", "sim_commands", lambda h: _command(h, lambda q: q, names=[f"nope_{i}" for i in range(12)]),
          ("sim", r"unknown joint")),
        F("sim_command_out_of_limits", "sim_commands", lambda h: _command(h, lambda q: q + 10.0), ("sim", r"clamp|limit")),
        F("sim_command_in_the_past", "sim_commands", lambda h: _command(h, lambda q: q, stamp_offset=-30.0), ("sim", r"past")),
    ]
    procs = [
        F("policy_kill", "processes", lambda h: h.kill_policy_and_measure(), ("executor", r"policy (lost|gone)|liveliness"), settle=0.5),
        F("policy_stall", "processes", _policy_stall, ("executor", r"watchdog|holding|stop|lost|gone"), settle=3.0),
        F("recorder_kill", "processes", _recorder_kill, None, settle=0.5, recorded=False),
        F("disk_full", "processes", _disk_full, ("recorder_disk", r"file size limit|no space left|too large"), settle=0.5,
          recorded=False),
        F("cpu_neighbour", "processes", _cpu_neighbour, None, settle=1.0),
    ]
    return images + js + chunks + commands + procs


def _camera_gap(h: Harness) -> dict:
    """The left wrist camera stops for 1.5 s of robot time (longer than the policy's max_age and its
    1 s wall-clock wait on a machine where sim time runs slower than wall time), then comes back."""
    c0 = h.now_stamp()
    h.watch.relay_on = False
    deadline = time.monotonic() + 60
    while h.now_stamp() < c0 + 1.5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.2)  # and at least the policy's wall-clock wait
    n0 = h.watch.status.chunks_received if h.watch.status else 0
    h.watch.relay_on = True
    try:
        h.wait(lambda: h.watch.status is not None and h.watch.status.chunks_received > n0 + 1, 60, "chunks after the camera came back")
        return {"chunks_after_return": True}
    except RuntimeError as exc:
        return {"problems": [str(exc)]}


def _chunk(h: Harness, mutate, names=None, dt: float = 0.0) -> dict:
    a = np.repeat(h.current_pose()[None, :], 48, axis=0)
    msg = h.chunk(h.now_stamp() + dt, mutate(a), names=names)
    h.watch.chunk_pub.publish(msg)
    time.sleep(0.5)
    h.watch.chunk_pub.publish(h.chunk(h.now_stamp() + dt, mutate(a), names=names))
    return {"sent": 2}


def _command(h: Harness, mutate, names=None, stamp_offset: float = 0.0) -> dict:
    src = h.profile.state_sources[0]
    q = h.current_pose()
    # the trajectory topic's joints, in its order (canonical -> driver names of the command target)
    target = [c for c in h.profile.commands if c.interface == "joint_trajectory"][0]
    vals = np.array([q[h.profile.joint_names.index(c)] for c in target.names])
    stamp = h.now_stamp() + stamp_offset if stamp_offset else 0.0
    del src
    for _ in range(3):
        h.watch.command_pub.publish(h.trajectory(mutate(vals.copy()), names=names, stamp=stamp))
        time.sleep(0.3)
    return {"sent": 3}


def _policy_stall(h: Harness) -> dict:
    pol = h.nodes["policy"]
    pol.signal(signal.SIGSTOP)
    time.sleep(1.5)
    pol.signal(signal.SIGCONT)
    try:
        h.wait_running(120)
        return {"resumed": True}
    except RuntimeError as exc:
        return {"problems": [str(exc)]}


def _check_episode(ep_dir: Path) -> tuple[bool, dict]:
    from motus_core.data.bag_reader import FINISHED, bag_state, count_messages, read_messages
    from motus_core.data.episode import read_metadata

    meta = read_metadata(ep_dir)
    bag = ep_dir / "bag"
    info = {"state": meta.state, "bag": bag_state(bag)}
    try:
        counts = count_messages(bag)
        payload = sum(len(m.data) for m in read_messages(bag))
    except Exception as exc:  # noqa: BLE001
        info["error"] = f"{type(exc).__name__}: {exc}"
        return False, info
    info["messages"] = sum(counts.values())
    ok = bag_state(bag) == FINISHED and meta.bytes_written == payload and all(
        meta.topics[t].written == n for t, n in counts.items() if t in meta.topics)
    return ok, info


def _recorder_kill(h: Harness) -> dict:
    from motus_core.data.convert import repair

    out_dir = h.tmp / "episodes_kill"
    rec = NodeProc("recorder", recorder_command("fault_recorder", out_dir), h.env)
    start = h.watch.node.create_client(h.watch.StartEpisode, "/fault_recorder/start_episode")
    res = h.watch.call(start, h.watch.StartEpisode.Request(task="fault", instruction="fault injection"), 60)
    problems = []
    if res is None or not res.success:
        rec.stop()
        return {"problems": [f"the recorder did not start an episode: {getattr(res, 'message', 'no answer')}"], "extra_procs": {"recorder": rec}}
    time.sleep(2.5)
    rec.signal(signal.SIGKILL)
    rec.proc.wait(10)
    repaired = repair(out_dir)
    eps = [p for p in out_dir.iterdir() if (p / "episode.json").is_file()]
    ok, info = _check_episode(eps[0]) if eps else (False, {"error": "no episode directory"})
    info["repaired"] = [m for _, m in repaired]
    return {"data_intact": ok, "recorder": info, "problems": problems, "extra_procs": {"recorder": rec}}


def _disk_full(h: Harness) -> dict:
    """Recording onto a 'disk' that fills up: RLIMIT_FSIZE makes write() fail with EFBIG (the
    recorder's disk-error path; a tmpfs needs a mount namespace that DDS shared memory does not cross)."""
    out_dir = h.tmp / "episodes_full"
    limit = 3 * 2**20

    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited across exec: EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    rec = NodeProc("recorder_disk", recorder_command("fault_recorder_disk", out_dir), h.env, preexec=preexec)
    start = h.watch.node.create_client(h.watch.StartEpisode, "/fault_recorder_disk/start_episode")
    stop = h.watch.node.create_client(h.watch.StopEpisode, "/fault_recorder_disk/stop_episode")
    res = h.watch.call(start, h.watch.StartEpisode.Request(task="fault", instruction="fault injection"), 60)
    if res is None or not res.success:
        rec.stop()
        return {"problems": [f"the recorder did not start an episode: {getattr(res, 'message', 'no answer')}"], "extra_procs": {"recorder_disk": rec}}
    # 3 cameras x 230 kB x 30 Hz of robot time: the 3 MB limit is reached within a fraction of a second
    # of robot time; on a loaded machine that can take a while of wall time
    full = re.compile(r"file size limit|no space left|too large|ENOSPC|EFBIG", re.I)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(full.search(ln) for ln in rec.since(0)):
        time.sleep(0.2)
    filled = any(full.search(ln) for ln in rec.since(0))
    stopped = h.watch.call(stop, h.watch.StopEpisode.Request(outcome=0, notes="disk full"), 30)
    alive = rec.alive()
    eps = [p for p in out_dir.iterdir() if (p / "episode.json").is_file()]
    info: dict = {"stop_answer": getattr(stopped, "message", "no answer")}
    ok = False
    if eps:
        from motus_core.data.bag_reader import UNFINISHED, bag_state
        from motus_core.data.convert import repair

        if bag_state(eps[0] / "bag") == UNFINISHED:
            info["repaired"] = [m for _, m in repair(out_dir)]
        ok, more = _check_episode(eps[0])
        info.update(more)
    rec.stop()
    problems = [] if filled else ["the recorder never reported the full disk within 60 s"]
    return {"data_intact": ok, "recorder": info, "problems": problems, "extra_alive": {"recorder_disk": alive},
            "extra_procs": {"recorder_disk": rec}}


def _cpu_neighbour(h: Harness) -> dict:
    """Two processes burning both cores for a while; spurious 'Policy lost' reports are counted, then
    the policy is killed under that load (kill-to-hold latency)."""
    burn = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(2)]
    ex = h.nodes["executor"]
    t0 = time.monotonic()
    out: dict = {}
    try:
        time.sleep(8.0 if h.quick else 30.0)
        lost = [ln for ln in ex.since(t0) if LOST_RE.search(ln)]
        h.loaded_seconds += time.monotonic() - t0
        h.policy_lost_loaded += len(lost)
        out["spurious_policy_lost"] = len(lost)
        kills = []
        for _ in range(1 if h.quick else 3):
            k = h.kill_policy_and_measure()
            kills.append({key: k.get(key) for key in ("kill_to_hold_sim_ms", "kill_to_hold_wall_ms")})
            if "kill_to_hold_sim_ms" in k:
                h.kill_to_hold_sim_ms.append(k["kill_to_hold_sim_ms"])
                h.kill_to_hold_wall_ms.append(k["kill_to_hold_wall_ms"])
            out.setdefault("problems", []).extend(k.get("problems", []))
        out["kills_under_load"] = kills
    finally:
        for p in burn:
            p.kill()
            p.wait()
    return out


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)} (and shorter load phases)")
    ap.add_argument("--kinds", default="", help="comma-separated kinds to run (default: all, or the quick set)")
    ap.add_argument("--repeat", type=int, default=1, help="run the chosen kinds this many times (e.g. policy_kill: does "
                    "the restarted policy rejoin every time)")
    ap.add_argument("--json", default="", help="also write the result to this file")
    ap.add_argument("--logs", default="", help="write every node's full output into this directory")
    ns = ap.parse_args(argv)
    faults = fault_list()
    wanted = [k for k in ns.kinds.split(",") if k] or (list(QUICK) if ns.quick else [f.name for f in faults])
    unknown = set(wanted) - {f.name for f in faults}
    if unknown:
        ap.error(f"unknown kinds {sorted(unknown)}; known: {[f.name for f in faults]}")
    per_round = len([f for f in faults if f.name in wanted])
    faults = [f for f in faults if f.name in wanted] * max(1, ns.repeat)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="motus_faults_") as tmp:
        h = Harness(Path(tmp), ns.quick)
        results: list[Result] = []
        running_at_end = None
        try:
            print("[faults] starting the policy graph (sim, replay policy, executor) ...", flush=True)
            h.wait_running(300)
            print(f"[faults] closed loop running after {time.monotonic() - t_start:.0f} s; {len(faults)} kind(s)", flush=True)
            for f in faults:
                r = h.run(f)
                results.append(r)
                print(f"[faults] {f.name:32s} {'PASS' if r.passed else 'FAIL'}  v/limit {r.max_velocity_ratio:.2f}  "
                      f"executor {r.executor_state:8s} {'; '.join(r.why_failed)}", flush=True)
            # the last kind's restarted nodes must rejoin too (each other kind is checked by the next one's start)
            try:
                t_end = time.monotonic()
                h.wait_running(180)
                running_at_end = round(time.monotonic() - t_end, 1)
            except RuntimeError as exc:
                running_at_end = str(exc)
        finally:
            h.close()
            clean_zombie_shm()  # the killed policies' and recorders' shared-memory files
            if ns.logs:
                Path(ns.logs).mkdir(parents=True, exist_ok=True)
                for name, n in h.nodes.items():
                    (Path(ns.logs) / f"{name}.log").write_text("\n".join(f"{t - t_start:8.2f} {ln}" for t, ln in n.lines))
    loaded_min = h.loaded_seconds / 60.0
    summary = {
        "fault_kinds": len(results),
        "fault_kinds_passed": sum(r.passed for r in results),
        "spurious_policy_lost_per_min_loaded": round(h.policy_lost_loaded / loaded_min, 2) if loaded_min > 0 else None,
        "kill_to_hold_ms_p99_loaded": round(float(np.percentile(h.kill_to_hold_sim_ms, 99)), 1) if h.kill_to_hold_sim_ms else None,
        "kill_to_hold_wall_ms_p99_loaded": round(float(np.percentile(h.kill_to_hold_wall_ms, 99)), 1) if h.kill_to_hold_wall_ms else None,
        "max_measured_velocity_ratio": round(max((r.max_velocity_ratio for r in results), default=0.0), 3),
        "graph_running_again_at_end_s": running_at_end,  # seconds, or why it never ran again
        "load_average_1min": round(os.getloadavg()[0], 1),
        "wall_s": round(time.monotonic() - t_start, 1),
        "kinds": {r.name + (f"#{i // per_round + 1}" if ns.repeat > 1 else ""): {k: v for k, v in r.__dict__.items() if k != "name"}
                  for i, r in enumerate(results)},
    }
    text = json.dumps(summary, default=str)
    if ns.json:
        Path(ns.json).write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
