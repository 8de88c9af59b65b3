"""The simulator node through ROS: configured image size and rates, JointTrajectory following and
replacement, every bad command, the reset service, and another robot profile's topics.

The node runs as a process (as deployed); the test hosts one rclpy node spun on a background thread.
Rates are measured against sim time (stamps), so they hold on a loaded machine too: the simulator
slows down rather than drop frames by default.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from motus_core.sim.tasks import TASKS
from test.helpers import node_process, stop_process, wait_until

SIM_ENV = {"MUJOCO_GL": "egl"}
PROFILE = load_profile("sim_aloha")


def start_sim(*params: str):
    args = ["-r", "__node:=sim", "-p", "use_sim_time:=true"]
    for p in params:
        args += ["-p", p]
    return node_process("motus_ros.nodes.sim_node", *args, env=SIM_ENV)


class Probe:
    """Subscribes to what the sim publishes, publishes commands; spun on a background thread."""

    def __init__(self, context, profile, sim_node: str = "sim"):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image, JointState
        from trajectory_msgs.msg import JointTrajectory

        from motus_msgs.srv import ResetSim
        from motus_ros.conversions import JointVectorAssembler, time_to_sec

        self.profile = profile
        self.node = n = rclpy.create_node("sim_probe", context=context)
        be = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
        rel = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.lock = threading.Lock()
        self.clock = 0.0
        self.images = {r: deque(maxlen=2000) for r in profile.cameras}
        self.infos = {}
        self.states: deque = deque(maxlen=20000)  # (stamp, canonical positions)
        self.raw_states = {}
        self.diag = {}
        self.objects = {}
        self._asm = JointVectorAssembler(profile)
        self._t2s = time_to_sec
        n.create_subscription(Clock, "/clock", self._on_clock, be)
        for role, cam in profile.cameras.items():
            n.create_subscription(Image, cam.topic, lambda m, r=role: self._on_image(r, m), be)
            n.create_subscription(CameraInfo, cam.info_topic, lambda m, r=role: self.infos.__setitem__(r, m), be)
        for src in profile.state_sources:
            n.create_subscription(JointState, src.topic, lambda m, t=src.topic: self._on_state(t, m), rel)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, rel)
        for obj in {o.name for t in TASKS.values() for o in t.objects}:
            n.create_subscription(PoseStamped, f"/{sim_node}/objects/{obj}/pose", lambda m, o=obj: self.objects.__setitem__(o, m), rel)
        self.traj_pubs = {}
        self.js_pubs = {}
        for target in profile.commands:
            if target.interface == "joint_trajectory":
                self.traj_pubs[target.topic] = n.create_publisher(JointTrajectory, target.topic, rel)
            else:
                self.js_pubs[target.topic] = n.create_publisher(JointState, target.topic, rel)
        for src in profile.leader_sources:
            if src.topic not in self.js_pubs:
                self.js_pubs[src.topic] = n.create_publisher(JointState, src.topic, rel)
        self.reset_client = n.create_client(ResetSim, f"/{sim_node}/reset")
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(n)
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self._stop:
            self.executor.spin_once(timeout_sec=0.05)

    def _on_clock(self, m):
        self.clock = m.clock.sec + m.clock.nanosec * 1e-9

    def _on_image(self, role, m):
        with self.lock:
            self.images[role].append((self._t2s(m.header.stamp), m.width, m.height, m.encoding, m.step, len(m.data)))

    def _on_state(self, topic, m):
        self.raw_states[topic] = m
        self._asm.update(topic, m)
        if self._asm.complete:
            with self.lock:
                self.states.append((self._t2s(m.header.stamp), self._asm.position.copy()))

    def _on_diag(self, m):
        for st in m.status:
            if st.name.startswith("/sim:"):
                self.diag = {kv.key: kv.value for kv in st.values}

    def wait(self, cond, timeout, what, proc=None):
        wait_until(cond, timeout, what=what, procs=[proc] if proc is not None else ())

    def wait_sim_time(self, t, proc=None, timeout=60.0):
        self.wait(lambda: self.clock >= t, timeout, f"sim time {t:.2f}", proc)

    def position_at(self, t):
        """Canonical positions of the first joint state stamped at or after ``t``."""
        with self.lock:
            for stamp, q in self.states:
                if stamp >= t - 1e-9:
                    return q
        raise AssertionError(f"no joint state at {t}")

    def latest(self):
        with self.lock:
            return self.states[-1][1].copy()

    def counter(self, key):
        return int(self.diag.get(key, -1))

    def trajectory(self, points, start=0.0, names=None, vel=False):
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from motus_ros.conversions import duration_msg, time_msg

        msg = JointTrajectory()
        msg.header.stamp = time_msg(start)
        msg.joint_names = list(PROFILE.joint_names if names is None else names)
        for t, pos in points:
            p = JointTrajectoryPoint(positions=[float(x) for x in pos], time_from_start=duration_msg(t))
            if vel:
                p.velocities = [0.0] * len(pos)
            msg.points.append(p)
        return msg

    def close(self):
        self._stop = True
        self.thread.join(timeout=5)
        self.node.destroy_node()


MARGIN = 0.03  # the rig places objects in a box widened by 3 cm (the proof's --placement-margin reaches the simulator)


@pytest.fixture(scope="module")
def rig():
    import rclpy
    from rclpy.context import Context

    proc = start_sim("image_width:=160", "image_height:=120", "camera_rate:=30.0", "joint_state_rate:=100.0",
                     "status_rate:=10.0", "seed:=3", f"placement_margin:={MARGIN}")
    ctx = Context()
    rclpy.init(context=ctx)
    probe = Probe(ctx, PROFILE)
    try:
        probe.wait(lambda: probe.clock > 0.3 and len(probe.states) > 10 and probe.diag, 90, "the simulator", proc)
        yield probe, proc
    finally:
        probe.close()
        rclpy.shutdown(context=ctx)
        out = stop_process(proc)
        assert "Traceback" not in out, out[-3000:]


def test_images_and_joint_states_at_configured_size_and_rates(rig):
    probe, proc = rig
    t0 = probe.clock + 0.2
    probe.wait_sim_time(t0 + 3.0, proc)
    time.sleep(0.3)  # let the last messages of the window arrive
    for role, frames in probe.images.items():
        with probe.lock:
            window = [f for f in frames if t0 <= f[0] < t0 + 3.0]
        assert abs(len(window) - 90) <= 9, f"{role}: {len(window)} frames in 3 s of sim time"
        _, w, h, enc, step, size = window[-1]
        assert (w, h, enc, step, size) == (160, 120, "rgb8", 480, 160 * 120 * 3)
        info = probe.infos[role]
        assert (info.width, info.height) == (160, 120) and info.k[2] == pytest.approx(79.5)
    with probe.lock:
        states = [s for s, _ in probe.states if t0 <= s < t0 + 3.0]
    assert abs(len(states) - 300) <= 30, f"{len(states)} joint states in 3 s of sim time"
    js = probe.raw_states["/joint_states"]
    assert list(js.name) == list(PROFILE.joint_names) and len(js.velocity) == 14 and len(js.effort) == 14


def test_joint_trajectory_reaches_targets_on_time(rig):
    probe, proc = rig
    q0 = probe.latest()
    target = q0.copy()
    target[[0, 1, 2, 7, 8, 9]] += [0.3, 0.15, -0.2, -0.3, 0.15, -0.2]
    start = probe.clock + 0.3  # an explicit start time: on time is measurable
    probe.traj_pubs["/arm_controller/joint_trajectory"].publish(probe.trajectory([(1.0, target)], start=start))
    probe.wait_sim_time(start + 1.4, proc)
    before = probe.position_at(start - 0.05)
    np.testing.assert_allclose(before[[0, 7]], q0[[0, 7]], atol=0.01)  # nothing moved before the start
    # on its way at half time (the setpoint is halfway; the waist servo lags a moving setpoint by about
    # friction / kp = 50 / 800 rad, so the joint is between 20 % and 80 % of the way)
    frac = (probe.position_at(start + 0.5)[[0, 7]] - q0[[0, 7]]) / (target[[0, 7]] - q0[[0, 7]])
    assert np.all((frac > 0.2) & (frac < 0.8)), frac
    np.testing.assert_allclose(probe.position_at(start + 1.3)[[0, 1, 2, 7, 8, 9]], target[[0, 1, 2, 7, 8, 9]], atol=0.03)


def test_new_trajectory_replaces_the_running_one_from_its_start(rig):
    probe, proc = rig
    q0 = probe.latest()
    a, b = q0.copy(), q0.copy()
    a[0] += 0.6  # left waist: slow ramp to +0.6 over 2 s
    b[0] -= 0.3  # replacement: to -0.3 within 0.6 s, starting 1 s into A
    t = probe.clock + 0.2
    pub = probe.traj_pubs["/arm_controller/joint_trajectory"]
    pub.publish(probe.trajectory([(2.0, a)], start=t))
    probe.wait_sim_time(t + 0.3, proc)
    pub.publish(probe.trajectory([(0.6, b)], start=t + 1.0))  # future start: A keeps running until then
    probe.wait_sim_time(t + 2.3, proc)
    on_a = probe.position_at(t + 0.95)[0] - q0[0]  # A's setpoint is at +0.285 here, B's start is later
    assert 0.15 < on_a < 0.35, on_a
    assert probe.position_at(t + 2.2)[0] == pytest.approx(b[0], abs=0.03)  # B, not A


BAD_TRAJECTORIES = {
    "unknown joint": lambda pr, q, now: pr.trajectory([(1.0, q)], names=[*PROFILE.joint_names[:13], "elbow_of_someone_else"]),
    "duplicated joint": lambda pr, q, now: pr.trajectory([(1.0, q)], names=[*PROFILE.joint_names[:13], PROFILE.joint_names[0]]),
    "wrong length": lambda pr, q, now: pr.trajectory([(1.0, q[:13])]),
    "NaN": lambda pr, q, now: pr.trajectory([(1.0, np.r_[np.nan, q[1:] + 0.2])]),
    "inf": lambda pr, q, now: pr.trajectory([(1.0, np.r_[np.inf, q[1:] + 0.2])]),
    "non-increasing times": lambda pr, q, now: pr.trajectory([(1.0, q + 0.2), (1.0, q + 0.3)]),
    "decreasing times": lambda pr, q, now: pr.trajectory([(1.0, q + 0.2), (0.5, q + 0.3)]),
    "all points in the past": lambda pr, q, now: pr.trajectory([(0.1, q + 0.2), (0.2, q + 0.3)], start=max(now - 5.0, 0.001)),
    "partial goal": lambda pr, q, now: pr.trajectory([(1.0, q[:7] + 0.2)], names=PROFILE.joint_names[:7]),
}


def _joint_state(names, pos):
    from sensor_msgs.msg import JointState

    return JointState(name=list(names), position=[float(x) for x in pos])


BAD_POSITIONS = {
    "unknown joint": lambda q: _joint_state(["left_waist", "x", *PROFILE.joint_names[2:7]], q[:7] + 0.2),
    "duplicated joint": lambda q: _joint_state(["left_waist", *PROFILE.joint_names[:6]], q[:7] + 0.2),
    "names/positions mismatch": lambda q: _joint_state(PROFILE.joint_names[:7], q[:6] + 0.2),
    "no names, wrong count": lambda q: _joint_state([], q[:5] + 0.2),
    "NaN": lambda q: _joint_state(PROFILE.joint_names[:7], np.r_[q[:6] + 0.2, np.nan]),
    "partial": lambda q: _joint_state(PROFILE.joint_names[:3], q[:3] + 0.2),
}


def test_every_bad_command_is_rejected_and_the_robot_holds(rig):
    probe, proc = rig
    probe.wait(lambda: probe.counter("commands_rejected") >= 0, 10, "diagnostics", proc)
    q0 = probe.latest()
    cases = [(f"trajectory: {k}", lambda f=f: probe.traj_pubs["/arm_controller/joint_trajectory"].publish(f(probe, q0, probe.clock)))
             for k, f in BAD_TRAJECTORIES.items()]
    cases += [(f"joint command: {k}", lambda f=f: probe.js_pubs["/left_arm/joint_command"].publish(f(q0))) for k, f in BAD_POSITIONS.items()]
    cases += [(f"leader: {k}", lambda f=f: probe.js_pubs["/leader/joint_states"].publish(f(q0))) for k, f in list(BAD_POSITIONS.items())[:2]]
    for what, send in cases:
        before = probe.counter("commands_rejected")
        send()
        probe.wait(lambda: probe.counter("commands_rejected") > before, 20, f"the rejection of {what}", proc)
    t = probe.clock
    probe.wait_sim_time(t + 0.5, proc)
    assert proc.poll() is None
    np.testing.assert_allclose(probe.latest()[:13], q0[:13], atol=0.02)  # nothing moved the arms
    assert probe.counter("commands_rejected") >= len(cases)


def test_out_of_limit_positions_are_clamped(rig):
    probe, proc = rig
    before = probe.counter("values_clamped")
    q = probe.latest()
    cmd = q[:7].copy()
    cmd[6] = 7.5  # left gripper far beyond fully open (1.0)
    probe.js_pubs["/left_arm/joint_command"].publish(_joint_state(PROFILE.joint_names[:7], cmd))
    probe.wait(lambda: probe.counter("values_clamped") > before, 20, "the clamp", proc)
    t = probe.clock
    probe.wait_sim_time(t + 1.0, proc)
    opened = probe.latest()
    # clamped to 1.0: the fingers open to their stop (0.057 m = 0.975 normalised), nothing breaks
    assert opened[6] == pytest.approx(0.975, abs=0.02)
    np.testing.assert_allclose(opened[:6], q[:6], atol=0.03)


def test_past_points_are_skipped(rig):
    probe, proc = rig
    before = probe.counter("points_skipped")
    q = probe.latest()
    target = q.copy()
    target[7] -= 0.25
    now = probe.clock
    msg = probe.trajectory([(0.05, q), (0.1, q), (now + 1.0 - max(now - 1.0, 0.001), target)], start=max(now - 1.0, 0.001))
    probe.traj_pubs["/arm_controller/joint_trajectory"].publish(msg)
    probe.wait(lambda: probe.counter("points_skipped") >= before + 2, 20, "skipped points", proc)
    probe.wait_sim_time(now + 1.5, proc)
    assert probe.latest()[7] == pytest.approx(target[7], abs=0.03)


def test_reset_service_places_the_seeded_objects(rig):
    from motus_msgs.srv import ResetSim

    probe, proc = rig
    probe.wait(probe.reset_client.service_is_ready, 20, "the reset service", proc)
    fut = probe.reset_client.call_async(ResetSim.Request(task="transfer_cube", seed=11))
    probe.wait(fut.done, 30, "the reset", proc)
    res = fut.result()
    assert res.success and res.seed == 11 and res.task == "transfer_cube", res.message
    expected = TASKS["transfer_cube"].sample_poses(np.random.default_rng(11), MARGIN)["box"][0]
    assert np.abs(expected[:2] - TASKS["transfer_cube"].sample_poses(np.random.default_rng(11))["box"][0][:2]).max() > 0.003
    t = probe.clock
    probe.wait(lambda: "box" in probe.objects and probe.objects["box"].header.stamp.sec + probe.objects["box"].header.stamp.nanosec * 1e-9 > t,
               20, "a fresh object pose", proc)
    p = probe.objects["box"].pose.position
    assert (p.x, p.y) == (pytest.approx(expected[0], abs=1e-3), pytest.approx(expected[1], abs=1e-3))
    np.testing.assert_allclose(probe.latest()[:6], PROFILE.home[:6], atol=0.05)  # arms back home
