"""Helpers of the closed-loop tests: the simulator, policy and executor as processes, a monitor node.

Every node runs as its own process (as deployed); the test process hosts one rclpy node that
watches /clock, the executor and policy status, the joint states and the command topic, and can
publish chunks (a rogue policy) or relay a camera (to make it stop and come back).
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from test.helpers import node_process, stop_process, wait_until

SIM_ENV = {"MUJOCO_GL": "egl"}
_SPAWNED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def spawned_cleanup():
    """Stop every policy/executor process a test started, even when the test failed half-way."""
    n = len(_SPAWNED)
    yield
    while len(_SPAWNED) > n:
        p = _SPAWNED.pop()
        if p.poll() is None:
            stop_process(p)


def start_sim(*params: str) -> subprocess.Popen:
    return node_process("motus_ros.nodes.sim_node", "-r", "__node:=sim", "-p", "use_sim_time:=true", *_params(params), env=SIM_ENV)


def start_policy(policy: str, *params: str, remaps: tuple[str, ...] = ()) -> subprocess.Popen:
    args = ["-r", "__node:=policy", "-p", "use_sim_time:=true", "-p", f"policy:={policy}", *_params(params)]
    for r in remaps:
        args += ["-r", r]
    proc = node_process("motus_ros.nodes.policy_node", *args)
    _SPAWNED.append(proc)
    return proc


def start_executor(*params: str) -> subprocess.Popen:
    proc = node_process("motus_ros.nodes.executor_node", "-r", "__node:=executor", "-p", "use_sim_time:=true", *_params(params))
    _SPAWNED.append(proc)
    return proc


def _params(items) -> list[str]:
    out = []
    for p in items:
        out += ["-p", p]
    return out


def kill_hard(proc: subprocess.Popen) -> None:
    """SIGKILL the process group (a crashed policy: no clean DDS goodbye)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


class Monitor:
    """The test's view of the graph (an rclpy node spun on a background thread)."""

    def __init__(self, context, profile):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, JointState
        from trajectory_msgs.msg import JointTrajectory

        from motus_msgs.msg import ActionChunk, ExecutorStatus, PolicyStatus

        self.profile = profile
        self.node = rclpy.create_node("closed_loop_monitor", context=context)
        be = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.clock = 0.0
        self.exec_status = None
        self.exec_history: deque = deque(maxlen=2000)
        self.policy_status = None
        self.joint_states: deque = deque(maxlen=5000)
        self.trajectories: deque = deque(maxlen=2000)
        self.relay_enabled = {}
        self._relay_pubs = {}
        n = self.node
        n.create_subscription(Clock, "/clock", self._on_clock, be)
        n.create_subscription(ExecutorStatus, "/executor/status", self._on_exec_status, 10)
        n.create_subscription(PolicyStatus, "/policy/status", lambda m: setattr(self, "policy_status", m), 10)
        n.create_subscription(JointState, profile.state_sources[0].topic, self._on_joints, be)
        # "hold still" trajectories (stamp 0, see runtime_msgs.trajectory_msg) per command topic: the
        # executor's own ticks at rest, which a starved executor process sends late whatever the sim clock says
        self.still_commands: dict[str, int] = {}
        for target in profile.commands:
            if target.interface == "joint_trajectory":
                self.still_commands[target.topic] = 0
                n.create_subscription(JointTrajectory, target.topic, lambda m, topic=target.topic: self._on_trajectory(topic, m), 10)
        self.chunk_pub = n.create_publisher(ActionChunk, "/policy/action_chunk", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self._Image = Image
        self._be = be
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(n)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def forget(self) -> None:
        """Drop the statuses of nodes from an earlier test (a fresh executor/policy reports anew)."""
        self.exec_status = None
        self.policy_status = None
        self.exec_history.clear()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()

    def _on_trajectory(self, topic: str, m) -> None:
        self.trajectories.append(m)
        if m.header.stamp.sec == 0 and m.header.stamp.nanosec == 0:
            self.still_commands[topic] += 1

    def wait_held(self, messages: int = 20, sim_seconds: float = 0.4, timeout: float = 60.0, procs=()) -> None:
        """Wait until the executor has sent ``messages`` more hold-still trajectories on every command topic
        (20 at the 50 Hz trajectory rate: 0.4 s of its own ticks at rest, however starved it is) and the
        sim clock has run ``sim_seconds`` since the first of them (a crawling simulator: 20 messages were
        0.12 s of sim time once in CI, and a record's last 0.3 s still held the motion before the hold)."""
        start = dict(self.still_commands)
        self.wait(lambda: all(self.still_commands[t] >= start[t] + 1 for t in start), timeout,
                  "a hold-still command from the executor", procs=procs)
        t0 = self.clock
        self.wait(lambda: all(self.still_commands[t] >= start[t] + messages for t in start) and self.clock >= t0 + sim_seconds,
                  timeout, f"{messages} hold-still commands from the executor and {sim_seconds} s of sim time", procs=procs)

    def _on_clock(self, msg) -> None:
        self.clock = msg.clock.sec + msg.clock.nanosec * 1e-9

    def _on_exec_status(self, msg) -> None:
        self.exec_status = msg
        self.exec_history.append((time.monotonic(), msg.state, msg.chunks_received, msg.chunks_rejected, msg.message))

    def _on_joints(self, msg) -> None:
        self.joint_states.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, np.asarray(msg.position, dtype=float)))

    # ------------------------------------------------------------------ a stand-in policy status
    def declare_policy(self, chunk_length: int, step_period: float, lease: float = 0.05):
        """Publish a PolicyStatus with this chunk contract at 10 Hz (the test plays the policy): the
        executor takes no chunk before it knows the contract. Returns a function that stops it."""
        from rclpy.duration import Duration
        from rclpy.qos import LivelinessPolicy, QoSProfile, ReliabilityPolicy

        from motus_msgs.msg import PolicyStatus

        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, liveliness=LivelinessPolicy.AUTOMATIC,
                         liveliness_lease_duration=Duration(seconds=lease))
        pub = self.node.create_publisher(PolicyStatus, "/policy/status", qos)

        def beat():
            msg = PolicyStatus(state=PolicyStatus.STATE_ACTIVE, model="test", chunk_length=int(chunk_length), step_period=float(step_period))
            pub.publish(msg)

        timer = self.node.create_timer(0.1, beat)

        def stop():
            self.node.destroy_timer(timer)
            self.node.destroy_publisher(pub)

        return stop

    # ------------------------------------------------------------------ camera relay
    def relay_camera(self, name: str, source_topic: str, dest_topic: str) -> None:
        """Republish ``source_topic`` on ``dest_topic`` while ``relay_enabled[name]`` (a camera that can stop)."""
        pub = self.node.create_publisher(self._Image, dest_topic, self._be)
        self._relay_pubs[name] = pub
        self.relay_enabled[name] = True

        def cb(msg, r=name):
            if self.relay_enabled.get(r):
                pub.publish(msg)

        self.node.create_subscription(self._Image, source_topic, cb, self._be)

    # ------------------------------------------------------------------ waiting
    def wait(self, predicate, timeout: float, what: str, procs=()) -> None:
        wait_until(predicate, timeout, what=what, procs=procs,
                   describe=lambda: f"executor status: {getattr(self.exec_status, 'message', None)!r}, "
                                    f"policy status: {getattr(self.policy_status, 'message', None)!r}")

    def executor_state(self) -> int | None:
        return None if self.exec_status is None else int(self.exec_status.state)

    def joints_since(self, t: float) -> np.ndarray:
        return np.array([q for s, q in list(self.joint_states) if s >= t])


def load_record(path: Path) -> dict:
    with np.load(path) as z:
        rec = {k: z[k] for k in z.files}
    return rec


def segments(rec: dict) -> list[slice]:
    """Index ranges of the command stream between executor restarts: clock jumps (a restarted
    simulator: the executor restarts from the measured pose) and stalls (robot time went on without
    ticks: it holds where the robot was sent or is), by design. Differences across such a gap are
    not a motion the executor commanded."""
    t = rec["t"]
    cuts = [0]
    gaps = [*rec.get("clock_jumps", np.zeros((0, 2))), *rec.get("stalls", np.zeros((0, 2)))]
    for before, after in gaps:
        # the first command after the jump: stamped `after`, following one stamped `before` (or earlier:
        # no command is sent until a fresh joint state arrives)
        idx = np.nonzero((t[1:] >= after - 1e-9) & (t[1:] <= after + 1.0) & (np.abs(t[1:] - t[:-1]) > 0.25))[0]
        if idx.size:
            cuts.append(int(idx[0]) + 1)
    cuts.append(t.shape[0])
    cuts = sorted(set(cuts))
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b - a > 2]


def _unique(t: np.ndarray) -> np.ndarray:
    return np.concatenate([[True], np.diff(t) > 1e-9]) if t.size else np.zeros(0, bool)


def check_limits(rec: dict, slack: float = 1.021) -> dict:
    from motus_core.runtime import metrics

    worst = {"position_excess": 0.0, "velocity_ratio": 0.0, "acceleration_ratio": 0.0}
    for seg in segments(rec):
        t, P = rec["t"][seg], rec["position"][seg]
        k = _unique(t)
        v = metrics.limit_violations(t[k], P[k], rec["lower"], rec["upper"], rec["velocity_limit"], rec["acceleration_limit"])
        worst = {key: max(worst[key], v[key]) for key in worst}
    assert worst["position_excess"] <= 1e-9, worst
    assert worst["velocity_ratio"] <= slack, worst
    assert worst["acceleration_ratio"] <= slack, worst
    return worst


def check_boundaries(rec: dict) -> dict:
    """The thresholds of docs/runtime.md on the executor's own (p, v, a) stream."""
    from motus_core.runtime import metrics

    switches = rec["switches"][:, 0] if rec["switches"].size else np.zeros(0)
    worst = {"position": 0.0, "velocity": 0.0, "acceleration": 0.0}
    for seg in segments(rec):
        t = rec["t"][seg]
        k = _unique(t)
        inside = switches[(switches > t[0]) & (switches <= t[-1])]
        w = metrics.step_discontinuities(t[k], rec["position"][seg][k], rec["velocity"][seg][k], rec["acceleration"][seg][k], inside,
                                         acc_scale=rec["acceleration_limit"])
        worst = {key: max(worst[key], w[key]) for key in worst}
    assert worst["position"] < 1e-3, worst
    assert worst["velocity"] < 0.1, worst  # docs/runtime.md: C2 ~2e-3 (0.065 seen under CI load), positions-only > 0.3
    assert worst["acceleration"] < 0.25, worst  # of each joint's acceleration limit, per 5 ms tick
    return worst
