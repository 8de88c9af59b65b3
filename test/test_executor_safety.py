"""Safety monitors of the chunk executor (ROS-free): resume from the measured pose, tracking monitor,
joint-state freshness, move to pose (ruckig), policy liveliness bookkeeping, the trajectory lead.

A fake robot follows the commands exactly unless it is "released" (teach mode, motors off, a hand
moving it): then its measured pose is whatever the test says and commands are ignored.
"""
import numpy as np
import pytest

from motus_core.policy.base import ActionChunk
from motus_core.robot_profile import available_profiles, load_profile
from motus_core.runtime import metrics
from motus_core.runtime.executor import ChunkExecutor, ExecState, ExecutorConfig
from motus_core.runtime.liveness import PolicyLiveness, PolicyProcess
from motus_core.runtime.motion import profile_poses, resolve_target
from motus_core.runtime.safety import JointLimits
from motus_core.runtime.tracking import TrackingMonitor

DT = 0.005


@pytest.fixture(scope="module")
def profile():
    return load_profile("sim_aloha")


@pytest.fixture(scope="module")
def limits(profile):
    return JointLimits.from_profile(profile, use_urdf=False)


class FakeRobot:
    def __init__(self, q):
        self.q = np.array(q, dtype=float)
        self.released = False  # True: ignores commands (teach mode / moved by hand)
        self.publishing = True  # False: the driver stopped sending joint states

    def follow(self, cmd):
        if not self.released:
            self.q = cmd.position.copy()


class Loop:
    """Ticks the executor at 200 Hz and records the command stream."""

    def __init__(self, ex, robot, t=0.0):
        self.ex, self.robot, self.t = ex, robot, t
        self.T, self.P, self.S = [], [], []

    def run(self, until, each=None, step=None):
        """Tick until ``until``; ``step(i)`` gives the i-th tick length (default 5 ms)."""
        i = 0
        while self.t < until - 1e-9:
            if self.robot.publishing:
                self.ex.on_measured_state(self.t, self.robot.q)
            if each is not None:
                each(self.ex, self.t)
            cmd = self.ex.tick(self.t)
            if cmd is not None:
                self.robot.follow(cmd)
                self.T.append(self.t)
                self.P.append(cmd.position.copy())
                self.S.append(int(cmd.state))
            self.t = round(self.t + (DT if step is None else step(i)), 9)
            i += 1

    def chunk(self, target, n=48):
        """A chunk that goes from the current command towards ``target`` over 0.5 s and stays there."""
        start = self.ex.last.position if self.ex.last is not None else self.robot.q
        w = np.clip(np.arange(1, n + 1) / 15.0, 0, 1)[:, None]
        actions = start + w * (np.asarray(target) - start)
        return ActionChunk(actions=actions, step_period=1 / 30, stamp=self.t - 0.02)

    def arrays(self, since=-np.inf):
        T = np.asarray(self.T)
        k = T >= since
        return T[k], np.asarray(self.P)[k], np.asarray(self.S)[k]


def assert_stream_within_limits(T, P, limits, slack=1.021):
    v = metrics.limit_violations(T, P, limits.lower, limits.upper, limits.velocity, limits.acceleration)
    assert v["velocity_ratio"] <= slack and v["acceleration_ratio"] <= slack, v


def _moving_left_waist(limits, profile):
    """An executor (tracking tolerance 0.1 rad) that has just accepted a chunk moving left_waist by 0.6 rad."""
    home = np.asarray(profile.home, dtype=float)
    robot = FakeRobot(home)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc", tracking_tolerance=0.1), limits, chunk_length=48)
    ex.configure_monitors(profile.gripper_indices)
    loop = Loop(ex, robot)
    loop.run(0.2)
    target = home.copy()
    target[0] += 0.6
    assert ex.on_chunk(loop.chunk(target), loop.t).accepted
    return home, robot, ex, loop, target


@pytest.mark.parametrize("resume", ["enable", "chunk_after_watchdog"])
def test_resume_after_the_arm_was_moved_starts_at_the_measured_pose(limits, profile, resume):
    home = np.asarray(profile.home, dtype=float)
    robot = FakeRobot(home)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits, chunk_length=48)
    loop = Loop(ex, robot)
    loop.run(0.5)
    target = home + 0.1
    target[[6, 13]] = 0.5
    assert ex.on_chunk(loop.chunk(target), loop.t).accepted
    loop.run(1.5)
    assert ex.state in (ExecState.FADE_IN, ExecState.RUNNING)
    if resume == "enable":
        ex.set_enabled(loop.t, False, "test")
    loop.run(3.0)  # without chunks the watchdog stops it anyway
    assert ex.state == ExecState.HOLDING and np.all(ex.last.velocity == 0)
    held = ex.last.position.copy()
    # the arm is moved by hand while the executor holds (released: commands are ignored)
    robot.released = True
    moved = held.copy()
    moved[[1, 2, 8]] += [0.3, -0.25, 0.2]
    robot.q = moved.copy()
    loop.run(3.5)
    assert ex.state == ExecState.HOLDING  # holding: the tracking monitor does not latch
    robot.released = False
    t_resume = loop.t
    if resume == "enable":
        ex.set_enabled(loop.t, True)
        loop.run(loop.t + 0.1)
    assert ex.on_chunk(loop.chunk(moved + 0.05), loop.t).accepted
    loop.run(loop.t + 2.0)
    T, P, S = loop.arrays(since=t_resume)
    assert ex.resyncs == 1
    # the command stream restarts at the measured pose: the first command after the resume is where the
    # arm was moved to, and from there on nothing jumps (the limits hold between every pair of commands)
    np.testing.assert_allclose(P[0], moved, atol=1e-9)
    assert_stream_within_limits(T, P, limits)
    assert ExecState.FADE_IN in set(S.tolist())
    assert ex.estop_latch.count == 0


def test_small_servo_error_keeps_the_command_continuous(limits, profile):
    """Within resync_tolerance the hold command is kept (a servo's steady-state error is not a move)."""
    home = np.asarray(profile.home, dtype=float)
    robot = FakeRobot(home)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits, chunk_length=48)
    loop = Loop(ex, robot)
    loop.run(0.3)
    robot.released = True
    robot.q = home + 0.005
    loop.run(0.4)
    assert ex.on_chunk(loop.chunk(home + 0.1), loop.t).accepted
    assert ex.resyncs == 0
    np.testing.assert_allclose(ex.traj.evaluate(loop.t)[0], home, atol=1e-9)


def test_tracking_monitor_latches_a_stop_when_the_robot_stops_following(limits, profile):
    home, robot, ex, loop, target = _moving_left_waist(limits, profile)
    robot.released = True  # e.g. the driver dropped to standby: the arm stays where it is
    loop.run(3.0)
    assert ex.state == ExecState.ESTOP
    assert "tracking error" in ex.message and "left_waist" in ex.message, ex.message
    assert ex.status()["tracking_error_joint"] == "left_waist"
    assert ex.tracking.trips == 1
    T, P, S = loop.arrays()
    # latched once the error had exceeded 0.1 rad for 0.1 s (errors count against the commands of the last 0.1 s)
    t_over = T[np.nonzero(np.abs(P[:, 0] - home[0]) > 0.1)[0][0]]
    t_latch = T[np.nonzero(S == ExecState.ESTOP)[0][0]]
    assert t_over + 0.1 <= t_latch <= t_over + 0.1 + 0.1 + 2 * DT
    assert_stream_within_limits(T, P, limits)


def test_tracking_tolerances_are_looser_for_grippers(limits, profile):
    ex = ChunkExecutor(ExecutorConfig(tracking_tolerance=0.2, tracking_gripper_fraction=0.5), limits, chunk_length=48)
    ex.configure_monitors(profile.gripper_indices)
    tol = ex.tracking.tolerance
    assert tol[0] == pytest.approx(0.2) and tol[6] == pytest.approx(0.5) and tol[13] == pytest.approx(0.5)
    mon = TrackingMonitor(limits.names, tol, grace=0.0, lag=0.05)
    cmd = np.zeros(14)
    meas = cmd.copy()
    meas[6] = 0.4  # a gripper closed on an object: 0.4 from its command, within 0.5
    assert mon.update(1.0, meas, [(0.99, cmd), (1.0, cmd)], active=True) is None
    meas[3] = 0.25
    why = mon.update(1.0, meas, [(0.99, cmd), (1.0, cmd)], active=True)
    assert why is not None and "left_forearm_roll" in why
    with pytest.raises(ValueError):
        ChunkExecutor(ExecutorConfig(), limits, chunk_length=48).configure_monitors((), tracking_overrides=[0.1, 0.2])


def test_a_gripper_command_a_little_beyond_its_stop_is_clamped_an_arm_joint_is_rejected(limits, profile):
    """A model trained on the 0/1 gripper commands overshoots the stops: the fifth proof run opened the
    right gripper to 1.05-1.06 of its [0, 1] range, the sixth closed the left one to -0.10..-0.19
    (105 of its 131 rejected RTC chunks at a 10 % tolerance), the tenth opened the right gripper to
    1.25-1.27 after a missed grasp (184 rejected at 25 %, the robot held in every failed episode), each
    rejection stopping the robot. Grippers tolerate ``gripper_range_tolerance`` (one range) beyond their
    stops, clamped to the stop; further out (wrong units or statistics: several ranges) is still
    rejected, and arm joints keep ``range_tolerance``."""
    ex = ChunkExecutor(ExecutorConfig(), limits, chunk_length=48, step_period=1 / 30)
    ex.configure_monitors(profile.gripper_indices)
    g = profile.gripper_indices[-1]
    base = np.clip(np.zeros((48, 14)), limits.lower, limits.upper)
    base[:, g] = limits.upper[g]
    over = base.copy()
    over[:, g] = limits.upper[g] + 0.2 * (limits.upper[g] - limits.lower[g])
    assert ex.validator.check(ActionChunk(over, 1 / 30, 0.0)) is None
    clipped, n = ex.validator.clip(over)
    assert n == 48 and np.all(clipped[:, g] == limits.upper[g])
    under = base.copy()
    under[:, g] = limits.lower[g] - 0.2 * (limits.upper[g] - limits.lower[g])  # closing beyond the closed stop
    assert ex.validator.check(ActionChunk(under, 1 / 30, 0.0)) is None
    assert np.all(ex.validator.clip(under)[0][:, g] == limits.lower[g])
    tenth = base.copy()
    tenth[40:, g] = limits.upper[g] + 0.27 * (limits.upper[g] - limits.lower[g])  # the tenth model's tail
    assert ex.validator.check(ActionChunk(tenth, 1 / 30, 0.0)) is None
    far = base.copy()
    far[:, g] = limits.upper[g] + 1.1 * (limits.upper[g] - limits.lower[g])
    assert "outside" in ex.validator.check(ActionChunk(far, 1 / 30, 0.0))
    units = base.copy()
    units[:, g] = 10 * limits.upper[g]  # a gripper trained in other units (metres as 0..1: 10x)
    assert "outside" in ex.validator.check(ActionChunk(units, 1 / 30, 0.0))
    arm = base.copy()
    arm[:, 1] = limits.upper[1] + 0.06  # an arm joint as far out: rejected (range_tolerance 0.05 rad)
    assert "outside" in ex.validator.check(ActionChunk(arm, 1 / 30, 0.0))


def test_a_gripper_may_switch_within_one_action_an_arm_joint_may_not(limits, profile):
    """A policy trained on the demonstrator's commands closes or opens a gripper within an action or two,
    and successive chunks disagree on when: the sixth proof run rejected most of its chunks for a
    0.6-0.7 gripper step at the RTC prefix, each rejection stopping the robot. Grippers are left out of
    the discontinuity check by default (``gripper_step_check``); arm joints are not."""
    g = profile.gripper_indices[0]
    base = np.tile(np.asarray(limits.lower) + 0.5 * (limits.upper - limits.lower), (48, 1))
    snap = base.copy()
    snap[:4, g], snap[4:, g] = limits.lower[g], limits.upper[g]  # closed, then fully open in one action
    arm = base.copy()
    arm[4:, 1] += 0.5
    ex = ChunkExecutor(ExecutorConfig(), limits, chunk_length=48, step_period=1 / 30)
    ex.configure_monitors(profile.gripper_indices)
    assert ex.validator.check(ActionChunk(snap, 1 / 30, 0.0)) is None
    assert "per-step" in ex.validator.check(ActionChunk(arm, 1 / 30, 0.0))
    strict = ChunkExecutor(ExecutorConfig(gripper_step_check=True), limits, chunk_length=48, step_period=1 / 30)
    strict.configure_monitors(profile.gripper_indices)
    why = strict.validator.check(ActionChunk(snap, 1 / 30, 0.0))
    assert "per-step" in why and profile.joint_names[g] in why


def test_no_motion_without_fresh_joint_states(limits, profile):
    home = np.asarray(profile.home, dtype=float)
    robot = FakeRobot(home)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc", state_timeout=0.3), limits, chunk_length=48)
    loop = Loop(ex, robot)
    loop.run(0.2)
    target = home + 0.3
    assert ex.on_chunk(loop.chunk(target), loop.t).accepted
    loop.run(0.8)
    assert ex.state in (ExecState.FADE_IN, ExecState.RUNNING)
    robot.publishing = False  # the driver stops publishing
    t_lost = loop.t - DT  # the last joint state
    loop.run(2.0)
    assert ex.state == ExecState.HOLDING and "joint states are" in ex.message
    T, P, S = loop.arrays()
    t_hold = T[np.nonzero((T > t_lost) & (S == ExecState.HOLDING))[0][0]]
    assert t_hold <= t_lost + 0.3 + 2 * DT
    assert np.all(np.diff(P[T > 1.8], axis=0) == 0)  # at rest
    res = ex.on_chunk(loop.chunk(target), loop.t)
    assert not res.accepted and "state_timeout" in res.reason
    ok, msg, _ = ex.move_to(loop.t, home, "home")
    assert not ok and "state_timeout" in msg
    assert not ex.wants_request(loop.t) or ex.on_chunk(loop.chunk(target), loop.t).accepted is False
    robot.publishing = True
    loop.run(loop.t + 0.1)
    assert ex.on_chunk(loop.chunk(target), loop.t).accepted
    assert_stream_within_limits(T, P, limits)


def test_move_to_pose_is_jerk_limited_and_leaves_the_estop(limits, profile):
    home = np.asarray(profile.home, dtype=float)
    start = home.copy()
    start[[0, 1, 9]] += [0.8, 0.4, -0.5]
    robot = FakeRobot(start)
    cfg = ExecutorConfig(strategy="rtc", move_velocity_scale=0.5)
    ex = ChunkExecutor(cfg, limits, chunk_length=48)
    loop = Loop(ex, robot)
    loop.run(0.2)
    ex.estop(loop.t, "test")
    loop.run(0.4)
    ok, msg, _ = ex.move_to(loop.t, home, "pose 'home'")
    assert not ok and "reset_estop" in msg
    assert ex.reset_estop(loop.t)
    robot.released = True
    robot.q = start + 0.05  # it sagged a little while stopped: the move starts from there
    robot.q[[6, 13]] = start[[6, 13]]
    loop.run(loop.t + 0.05)
    robot.released = False
    t0 = loop.t
    ok, msg, duration = ex.move_to(t0, home, "pose 'home'")
    assert ok and duration > 0.5, msg
    assert "moving to pose 'home'" in ex.status()["message"] and ex.status()["moving_to"] == "pose 'home'"
    assert not ex.wants_request(loop.t)
    late = ActionChunk(actions=np.tile(start, (48, 1)), step_period=1 / 30, stamp=loop.t - 0.02)
    assert not ex.on_chunk(late, loop.t).accepted  # chunks wait until the move ends
    loop.run(t0 + duration + 0.3)
    T, P, S = loop.arrays(since=t0)
    np.testing.assert_allclose(P[0], start + np.where(np.isin(np.arange(14), [6, 13]), 0, 0.05), atol=1e-6)
    np.testing.assert_allclose(P[-1], home, atol=1e-9)
    assert ex.move is None and ex.state == ExecState.HOLDING
    v = np.diff(P, axis=0) / DT
    a = np.diff(v, axis=0) / DT
    j = np.diff(a, axis=0) / DT
    assert np.all(np.abs(v) <= limits.velocity * 0.5 * 1.01 + 1e-9)
    assert np.all(np.abs(a) <= limits.acceleration * cfg.limit_budget * 0.5 * 1.02 + 1e-6)
    j_max = limits.acceleration * cfg.limit_budget * 0.5 * cfg.move_jerk_factor
    assert np.all(np.abs(j) <= j_max * 1.05 + 1e-3), np.max(np.abs(j) / j_max)
    assert ex.guard.hits == 0
    # afterwards the policy may take over again (fade-in)
    assert ex.wants_request(loop.t)


def test_profile_poses_and_targets(limits):
    for name in available_profiles():
        prof = load_profile(name)
        poses = profile_poses(prof)
        assert {"home", "ready"} <= set(poses), name
        lim = JointLimits.from_profile(prof, use_urdf=False)
        for pose in poses:
            q, _ = resolve_target(poses, lim, pose, [])
            assert np.all(q >= lim.lower) and np.all(q <= lim.upper), (name, pose)
    poses = profile_poses(load_profile("sim_aloha"))
    with pytest.raises(ValueError, match="unknown pose"):
        resolve_target(poses, limits, "nowhere", [])
    with pytest.raises(ValueError, match="14 values"):
        resolve_target(poses, limits, "", [0.0] * 3)
    with pytest.raises(ValueError, match="outside its limits"):
        resolve_target(poses, limits, "", [10.0] * 14)


def test_policy_liveness_bookkeeping():
    lv = PolicyLiveness()
    assert lv.state == PolicyProcess.UNKNOWN
    assert not lv.on_liveliness(0.0, False)  # never alive: nothing to lose
    assert lv.on_status(0.1) and lv.state == PolicyProcess.ALIVE
    assert not lv.on_status(0.2)
    assert lv.on_liveliness(1.0, False) and lv.state == PolicyProcess.GONE and lv.lost == 1
    assert lv.on_liveliness(1.5, True) and lv.state == PolicyProcess.ALIVE and lv.returned == 1


def test_policy_loss_is_reported_apart_from_the_watchdog(limits, profile):
    home = np.asarray(profile.home, dtype=float)
    robot = FakeRobot(home)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits, chunk_length=48)
    loop = Loop(ex, robot)
    loop.run(0.2)
    assert ex.on_chunk(loop.chunk(home + 0.2), loop.t).accepted
    loop.run(3.0)  # no further chunk: the committed actions run out
    st = ex.status()
    assert st["starved"] and st["watchdog_stops"] == 1 and st["policy_lost_stops"] == 0
    assert ex.on_chunk(loop.chunk(home + 0.1), loop.t).accepted
    assert not ex.status()["starved"]
    loop.run(3.5)
    ex.policy_lost(loop.t, "gone")
    st = ex.status()
    assert st["policy_lost_stops"] == 1 and st["watchdog_stops"] == 1 and not st["starved"]


def test_trajectory_preview_lead_puts_no_point_in_the_past(limits, profile):
    home = np.asarray(profile.home, dtype=float)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits, chunk_length=48)
    loop = Loop(ex, FakeRobot(home))
    loop.run(0.3)
    for lead in (0.0, 0.04):
        times, P, V, A = ex.preview(loop.t, 0.25, 0.02, lead=lead)
        assert times[0] == pytest.approx(loop.t + lead)
        assert np.all(np.diff(times) > 0)


def test_real_hardware_graph_needs_a_policy_and_starts_the_executor_disabled():
    from motus_ros.graph import describe_graph

    with pytest.raises(ValueError, match="'policy' is required"):
        describe_graph({"graph": "policy", "hardware": "none", "robot": "aloha_agilex_2"})
    nodes = {n.name: n for n in describe_graph({"graph": "policy", "hardware": "none", "robot": "aloha_agilex_2", "policy": "/ckpt"})}
    params = {k: v for p in nodes["executor"].parameters if isinstance(p, dict) for k, v in p.items()}
    assert params["hardware"] == "real"
    assert any(isinstance(p, dict) and p.get("policy") == "/ckpt" for p in nodes["policy"].parameters)
    sim = {n.name: n for n in describe_graph({"graph": "policy"})}
    assert any(isinstance(p, dict) and p.get("policy") == "tiny_motus" for p in sim["policy"].parameters)
    assert any(isinstance(p, dict) and p.get("hardware") == "sim" for p in sim["executor"].parameters)


@pytest.mark.parametrize("phase", [0, 3, 6])
def test_watchdog_keeps_a_late_tick_in_hand(limits, profile, phase):
    """Ticks that come late (sim time in bursts on a loaded machine): the stop still ends before the
    committed actions run out, and the stream stays within the limits."""
    home = np.asarray(profile.home, dtype=float)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits, chunk_length=48)
    loop = Loop(ex, FakeRobot(home))
    loop.run(0.2)
    actions = home + np.linspace(0.0, 2.0, 48)[:, None] * np.isin(np.arange(14), [0, 3, 5, 7, 10, 12])  # +-pi joints, 1.25 rad/s
    assert ex.on_chunk(ActionChunk(actions=actions, step_period=1 / 30, stamp=loop.t - 0.02), loop.t).accepted
    plan_end = ex.plan.end_time
    loop.run(plan_end + 0.5, step=lambda i: 0.09 if i % 8 == phase else DT)  # every 8th tick 90 ms late
    T, P, S = loop.arrays()
    assert T[np.nonzero(S == ExecState.HOLDING)[0][0]] <= plan_end
    assert ex.watchdog_stops == 1 and ex.starved
    assert ex.stop is not None and ex.stop.end_time <= plan_end + 1e-9  # at rest when the committed actions run out
    assert_stream_within_limits(T, P, limits)


def test_a_gripper_blocked_open_by_its_grasp_is_not_a_tracking_fault(limits, profile):
    """Every grasp ends with the gripper more open than its command (the object is in the way): no stop.
    A gripper driven past its command in the closing direction is still a fault."""
    ex = ChunkExecutor(ExecutorConfig(tracking_tolerance=0.2, tracking_gripper_fraction=0.5), limits, chunk_length=48)
    ex.configure_monitors(profile.gripper_indices, gripper_open_sign=1.0)
    assert ex.tracking.grasp_sign[6] == 1.0 and ex.tracking.grasp_sign[13] == 1.0 and ex.tracking.grasp_sign[0] == 0.0
    mon = TrackingMonitor(limits.names, ex.tracking.tolerance, grace=0.0, lag=0.05, grasp_sign=ex.tracking.grasp_sign)
    cmd = np.zeros(14)
    cmd[6] = profile.gripper.closed_value  # commanded shut
    meas = cmd.copy()
    meas[6] = cmd[6] + 0.9  # held open by the cube: far beyond the 0.5 tolerance, in the opening direction
    assert mon.update(1.0, meas, [(0.99, cmd), (1.0, cmd)], active=True) is None
    cmd2 = cmd.copy()
    cmd2[6] = cmd[6] + 0.9  # commanded open, measured shut (pinched / a wrong unit): a fault
    why = mon.update(1.0, cmd, [(0.99, cmd2), (1.0, cmd2)], active=True)
    assert why is not None and "left_gripper" in why
    # the opposite sign convention (a gripper whose value shrinks as it opens): the same measurement is a fault
    ex.configure_monitors(profile.gripper_indices, gripper_open_sign=-1.0)
    mon = TrackingMonitor(limits.names, ex.tracking.tolerance, grace=0.0, lag=0.05, grasp_sign=ex.tracking.grasp_sign)
    assert mon.update(1.0, meas, [(0.99, cmd), (1.0, cmd)], active=True) is not None


class LaggingRobot(FakeRobot):
    """A servo that trails its command (first order, time constant ``tau``), as the simulated ones do."""

    def __init__(self, q, tau=0.12):
        super().__init__(q)
        self.tau = tau
        self.target = self.q.copy()

    def follow(self, cmd):
        self.target = cmd.position.copy()
        self.q = self.q + (self.target - self.q) * (DT / self.tau)


def test_a_robot_still_catching_up_after_a_stop_is_not_resynced(limits, profile):
    """Right after a watchdog stop the servos are still on their way to the hold command; a chunk arriving
    then fades in from the command (continuous), not from where the robot happens to be (a jump back)."""
    home = np.asarray(profile.home, dtype=float)
    robot = LaggingRobot(home)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits, chunk_length=48)
    loop = Loop(ex, robot)
    loop.run(0.3)
    target = home.copy()
    target[[0, 3, 5, 7, 10, 12]] += 1.5  # waist and roll joints (wide limits), still moving at the chunk's end
    ramp = np.arange(1, 49)[:, None] / 48.0
    assert ex.on_chunk(ActionChunk(actions=home + ramp * (target - home), step_period=1 / 30, stamp=loop.t - 0.02), loop.t).accepted
    sent = {}

    def resume_right_after_the_stop(e, t):
        if not sent and e.state == ExecState.HOLDING and e.stop is not None and t >= e.stop.end_time:
            sent["lag"] = float(np.max(np.abs(robot.q - e.last.position)))
            sent["t"] = t
            sent["ok"] = e.on_chunk(loop.chunk(home), t).accepted

    loop.run(5.0, each=resume_right_after_the_stop)
    assert sent, "the watchdog did not stop the robot"
    assert sent["ok"] and sent["lag"] > ex.cfg.resync_tolerance, sent  # the robot was still catching up
    assert ex.resyncs == 0
    T, P, _ = loop.arrays(since=sent["t"] - 0.05)
    assert_stream_within_limits(T, P, limits)


@pytest.mark.parametrize("shift", [-5.0, 2.0])
def test_joint_states_out_of_time_are_ignored_not_tracked(limits, profile, shift):
    """A driver whose clock jumps (stamps 5 s back, or 2 s ahead) must not latch a tracking stop by
    comparing the current pose with the commands of another time, nor make later states look stale."""
    home, robot, ex, loop, target = _moving_left_waist(limits, profile)

    def bad_clock(e, t):  # between 0.5 and 1.0 s every state comes out of time, none correct in between
        if 0.5 <= t < 1.0:
            why = e.on_measured_state(t + shift, robot.q, now=t)
            assert why is not None and ("ahead" in why if shift > 0 else "before the newest" in why)

    robot.publishing = False  # the loop's own states: stamped by the test
    loop.run(0.5, each=lambda e, t: e.on_measured_state(t, robot.q, now=t))
    loop.run(1.0, each=bad_clock)
    robot.publishing = True
    loop.run(1.2)
    # still following the chunk (taking the 5 s old stamps made the states look stale: the robot held)
    assert ex.state in (ExecState.FADE_IN, ExecState.RUNNING), ex.message
    loop.run(2.0)
    assert ex.tracking.trips == 0
    assert ex.status()["states_ignored"] == 100  # 0.5 s of 5 ms ticks
    assert abs(robot.q[0] - target[0]) < 0.05  # the motion went on
