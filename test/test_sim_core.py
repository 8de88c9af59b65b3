"""The simulated robot without ROS: model, joint map, trajectories, command validation, tasks,
rendering and the scripted demonstrator (motus_core.sim)."""
from __future__ import annotations

import numpy as np
import pytest

import motus_core.sim  # noqa: F401  (MUJOCO_GL before mujoco)
import mujoco
from motus_core.robot_profile import load_profile
from motus_core.sim import AlohaSim, CommandRejected, JointTrajectoryFollower, TrajectoryGoal, ee_positions
from motus_core.sim.commands import CommandInterpreter, ProfileAdapter
from motus_core.sim.demonstrator import ScriptedDemonstrator, run_episode
from motus_core.sim.kinematics import Kinematics
from motus_core.sim.model import CAMERA_NAMES, FINGER_CLOSED, FINGER_SPAN, SIM_JOINT_NAMES, JointLayout, build_model
from motus_core.sim.render import CameraRenderer, camera_pose
from motus_core.sim.tasks import TASKS

PROFILE = load_profile("sim_aloha")


@pytest.fixture(scope="module")
def sim():
    return AlohaSim("transfer_cube")


# -- model and joint map ------------------------------------------------------------------------

def test_model_has_cameras_tcp_and_profile_joints(sim):
    m = sim.model
    for name in CAMERA_NAMES.values():
        assert mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, name) >= 0
    assert m.opt.timestep == pytest.approx(0.002)
    assert SIM_JOINT_NAMES == PROFILE.joint_names
    np.testing.assert_allclose(sim.layout.lower[[0, 1, 2]], PROFILE.position_lower[:3])
    np.testing.assert_allclose(sim.layout.upper[[7, 8, 9]], PROFILE.position_upper[7:10])


def test_joint_layout_round_trip_and_gripper_map():
    m = build_model("transfer_cube", render_mesh_cell=0.0)
    d = mujoco.MjData(m)
    lay = JointLayout.of(m)
    q = np.linspace(-0.5, 0.5, 14)
    q[[6, 13]] = [0.25, 0.75]
    lay.set_positions(d, q)
    np.testing.assert_allclose(lay.positions(d), q, atol=1e-12)
    left_finger = d.qpos[lay.finger_qpos[0, 0]]
    assert left_finger == pytest.approx(FINGER_CLOSED + 0.25 * FINGER_SPAN)
    assert d.qpos[lay.finger_qpos[0, 1]] == pytest.approx(-left_finger)
    lay.set_targets(d, np.r_[np.zeros(6), 5.0, np.zeros(6), -5.0])  # grippers far outside: clipped to the servo range
    assert d.ctrl[lay.finger_act[0, 0]] == pytest.approx(m.actuator_ctrlrange[lay.finger_act[0, 0], 1])
    assert d.ctrl[lay.finger_act[1, 0]] == pytest.approx(m.actuator_ctrlrange[lay.finger_act[1, 0], 0])


def test_ee_positions_batch_matches_single_and_moves_with_the_waist():
    q = np.array(PROFILE.home)
    one = ee_positions(q)
    assert one.shape == (2, 3)
    q2 = q.copy()
    q2[0] = 0.5  # left waist
    both = ee_positions(np.stack([q, q2]))
    np.testing.assert_allclose(both[0], one)
    assert np.linalg.norm(both[1, 0] - one[0]) > 0.05  # left end effector moved
    np.testing.assert_allclose(both[1, 1], one[1])  # right did not


def test_ik_reaches_pose_and_axis_targets():
    kin = Kinematics()
    q0 = np.array(PROFILE.home)
    kin.set(q0)
    p0, r0 = kin.pose("right")
    target = p0 + np.array([-0.05, 0.03, -0.04])
    q = kin.solve_ik(q0, "right", target, r0)
    kin.set(q)
    p, r = kin.pose("right")
    assert np.linalg.norm(p - target) < 1e-3
    assert np.abs(r - r0).max() < 1e-2
    np.testing.assert_array_equal(q[:7], q0[:7])  # the other arm is untouched
    down = np.array([0.0, 0.0, -1.0])
    q = kin.solve_ik(q0, "left", p0 * [-1, 1, 1] + [0, 0, -0.1], axis=(np.array([1.0, 0, 0]), down))
    kin.set(q)
    assert kin.pose("left")[1][:, 0] @ down > 0.999


# -- trajectory follower (JTC semantics) ----------------------------------------------------------

def _goal(times, positions, start=0.0, indices=(0,), vel=None, acc=None):
    return TrajectoryGoal(indices=np.array(indices), start=start, times=np.array(times, float),
                          positions=np.array(positions, float).reshape(len(times), -1),
                          velocities=None if vel is None else np.array(vel, float).reshape(len(times), -1),
                          accelerations=None if acc is None else np.array(acc, float).reshape(len(times), -1))


def test_linear_cubic_quintic_interpolation():
    f = JointTrajectoryFollower(np.zeros(2))
    f.submit(_goal([1.0, 2.0], [[1.0], [3.0]]), now=0.0)
    assert f.sample(0.5)[0][0] == pytest.approx(0.5)  # linear from the setpoint at the start
    assert f.sample(1.5)[0][0] == pytest.approx(2.0)
    assert f.sample(5.0)[0][0] == pytest.approx(3.0)  # holds the last point
    assert f.sample(5.0)[0][1] == 0.0  # joint not in the goal holds
    f = JointTrajectoryFollower(np.zeros(1))
    f.submit(_goal([1.0], [[1.0]], vel=[[0.0]]), now=0.0)
    p, v = f.sample(0.5)
    assert p[0] == pytest.approx(0.5) and v[0] == pytest.approx(1.5)  # cubic: 3t^2 - 2t^3
    f = JointTrajectoryFollower(np.zeros(1))
    f.submit(_goal([1.0], [[1.0]], vel=[[0.0]], acc=[[0.0]]), now=0.0)
    p, v = f.sample(0.5)
    assert p[0] == pytest.approx(0.5) and v[0] == pytest.approx(1.875)  # quintic min-jerk: 10t^3 - 15t^4 + 6t^5
    assert f.sample(0.25)[0][0] == pytest.approx(10 * 0.25**3 - 15 * 0.25**4 + 6 * 0.25**5)


def test_replacement_from_the_new_start_time():
    f = JointTrajectoryFollower(np.zeros(1))
    f.submit(_goal([4.0], [[4.0]]), now=0.0)  # 1 rad/s ramp
    f.submit(_goal([1.0], [[0.0]], start=2.0), now=0.5)  # starts in the future
    assert f.sample(1.5)[0][0] == pytest.approx(1.5)  # the old trajectory still runs
    assert f.sample(2.0)[0][0] == pytest.approx(2.0)  # replaced from its start, from the setpoint there
    assert f.sample(2.5)[0][0] == pytest.approx(1.0)
    assert f.sample(3.5)[0][0] == pytest.approx(0.0)


def test_past_points_skipped_and_all_past_rejected():
    f = JointTrajectoryFollower(np.zeros(1))
    skipped = f.submit(_goal([0.5, 1.0, 3.0], [[9.0], [9.0], [2.0]], start=0.0), now=2.0)
    assert skipped == 2
    assert f.sample(2.0)[0][0] == pytest.approx(0.0)  # starts from the current setpoint, now
    assert f.sample(2.5)[0][0] == pytest.approx(1.0)  # towards the first future point (2.0 at t=3)
    with pytest.raises(CommandRejected, match="in the past"):
        f.submit(_goal([0.5, 1.0], [[1.0], [2.0]], start=0.0), now=5.0)


def test_cancel_and_direct_command_override_trajectories():
    f = JointTrajectoryFollower(np.zeros(2))
    f.submit(_goal([2.0], [[2.0, 2.0]], indices=(0, 1)), now=0.0)
    f.cancel(1.0)
    assert f.sample(3.0)[0] == pytest.approx([1.0, 1.0])
    f.submit(_goal([2.0], [[5.0, 5.0]], start=1.0, indices=(0, 1)), now=1.0)
    f.set_positions(np.array([1]), np.array([-1.0]), now=2.0)
    p, _ = f.sample(10.0)
    assert p == pytest.approx([3.0, -1.0])  # joint 0 holds where it was, joint 1 jumped
    assert not f.active(10.0)


# -- command validation -------------------------------------------------------------------------

ALL = {n: n for n in PROFILE.joint_names}
LEFT = {n: n for n in PROFILE.joint_names[:7]}


def _pt(t, pos, vel=(), acc=()):
    return (t, list(pos), list(vel), list(acc))


@pytest.mark.parametrize(
    "names, points, match",
    [
        ([], [_pt(1.0, [])], "no joint names"),
        (["left_waist", "nope"], [_pt(1.0, [0, 0])], "unknown joint"),
        (["left_waist", "left_waist"], [_pt(1.0, [0, 0])], "duplicated"),
        (["left_waist"], [_pt(1.0, [0])], "partial goal"),
        (list(ALL), [_pt(1.0, [0] * 13)], "13 positions"),
        (list(ALL), [_pt(1.0, [0] * 14, [0] * 3)], "3 velocities"),
        (list(ALL), [_pt(1.0, [0] * 14, (), [0] * 14)], "without velocities"),
        (list(ALL), [_pt(1.0, [0] * 14, [0] * 14), _pt(2.0, [0] * 14)], "every point or for none"),
        (list(ALL), [_pt(1.0, [np.nan] + [0] * 13)], "NaN or inf"),
        (list(ALL), [_pt(1.0, [0] * 14, [np.inf] + [0] * 13)], "NaN or inf"),
        (list(ALL), [_pt(float("nan"), [0] * 14)], "NaN or inf"),
        (list(ALL), [_pt(1.0, [0] * 14), _pt(1.0, [0] * 14)], "strictly increase"),
        (list(ALL), [_pt(2.0, [0] * 14), _pt(1.0, [0] * 14)], "strictly increase"),
        (list(ALL), [_pt(-0.5, [0] * 14)], "negative"),
    ],
)
def test_trajectory_rejections(names, points, match):
    with pytest.raises(CommandRejected, match=match):
        CommandInterpreter(PROFILE).trajectory(ALL, names, points, start=0.0)


def test_trajectory_limits_clamp_or_reject_and_partial_allowed():
    names = list(ALL)
    pos = list(PROFILE.home)
    pos[1] = 5.0  # left shoulder far above its limit
    goal = CommandInterpreter(PROFILE).trajectory(ALL, names, [_pt(1.0, pos)], start=3.0)
    assert goal.clamped == 1 and goal.positions[0, 1] == pytest.approx(PROFILE.position_upper[1])
    assert goal.start == 3.0 and goal.kind == "linear"
    with pytest.raises(CommandRejected, match="outside the joint limits"):
        CommandInterpreter(PROFILE, out_of_limits="reject").trajectory(ALL, names, [_pt(1.0, pos)], start=0.0)
    partial = CommandInterpreter(PROFILE, allow_partial=True).trajectory(ALL, ["right_elbow"], [_pt(1.0, [0.5])], start=0.0)
    assert list(partial.indices) == [9]
    assert CommandInterpreter(PROFILE).trajectory(ALL, names, [], start=0.0) is None  # empty = cancel


def test_position_commands_by_name_or_order():
    ci = CommandInterpreter(PROFILE)
    cmd = ci.positions(LEFT, [], [0.1] * 7)  # no names: the topic's order
    assert list(cmd.indices) == list(range(7))
    with pytest.raises(CommandRejected, match="without names exactly 7"):
        ci.positions(LEFT, [], [0.1] * 6)
    with pytest.raises(CommandRejected, match="2 joint names but 1 positions"):
        ci.positions(LEFT, ["left_waist", "left_elbow"], [0.1])
    with pytest.raises(CommandRejected, match="unknown joint"):
        ci.positions(LEFT, ["right_waist"] + list(LEFT)[1:], [0.0] * 7)
    with pytest.raises(CommandRejected, match="NaN"):
        ci.positions(LEFT, list(LEFT), [0.0] * 6 + [float("inf")])


def test_foreign_profile_units_map_to_the_sim():
    agx = load_profile("aloha_agilex_2")
    ad = ProfileAdapter(agx)
    x = np.zeros(14)
    x[6], x[13] = 0.1, 0.05  # gripper openings in metres
    s = ad.to_sim(x)
    assert s[6] == pytest.approx(1.0) and s[13] == pytest.approx(0.5)
    np.testing.assert_allclose(ad.from_sim(s), x)
    cmd = CommandInterpreter(agx).positions({f"joint{i}": n for i, n in enumerate(agx.joint_names[:7])},
                                            [f"joint{i}" for i in range(7)], [0.0] * 6 + [0.1])
    assert cmd.values[6] == pytest.approx(1.0)


# -- tasks, physics, rendering -------------------------------------------------------------------

def test_seeded_object_poses():
    for task in TASKS.values():
        a = task.sample_poses(np.random.default_rng(3))
        b = task.sample_poses(np.random.default_rng(3))
        c = task.sample_poses(np.random.default_rng(4))
        for spec in task.objects:
            np.testing.assert_array_equal(a[spec.name][0], b[spec.name][0])
            assert not np.array_equal(a[spec.name][0], c[spec.name][0])
            x, y, _ = a[spec.name][0]
            assert spec.x_range[0] <= x <= spec.x_range[1] and spec.y_range[0] <= y <= spec.y_range[1]


def test_a_placement_margin_widens_the_box_and_keeps_the_draws_without_it():
    """Demonstrations may cover a box wider than the evaluation's (the proof's --placement-margin); margin 0 draws
    exactly the task's poses, so every recorded and evaluated seed keeps its cube."""
    task = TASKS["transfer_cube"]
    spec = task.objects[0]
    m = 0.03
    xy = np.array([task.sample_poses(np.random.default_rng(s), m)["box"][0][:2] for s in range(400)])
    assert xy[:, 0].min() >= spec.x_range[0] - m and xy[:, 0].max() <= spec.x_range[1] + m
    assert xy[:, 1].min() >= spec.y_range[0] - m and xy[:, 1].max() <= spec.y_range[1] + m
    outside = (xy[:, 0] < spec.x_range[0]) | (xy[:, 0] > spec.x_range[1]) | (xy[:, 1] < spec.y_range[0]) | (xy[:, 1] > spec.y_range[1])
    assert 0.3 < outside.mean() < 0.5  # 1 - (20/26)^2 = 0.41 of the draws fall beyond the task's box
    np.testing.assert_array_equal(task.sample_poses(np.random.default_rng(5), 0.0)["box"][0],
                                  task.sample_poses(np.random.default_rng(5))["box"][0])
    with pytest.raises(ValueError, match="margin"):
        task.sample_poses(np.random.default_rng(5), -0.01)


def test_reset_keeps_the_clock_and_places_objects(sim):
    sim.reset(seed=7)
    sim.step(50)
    t = sim.time
    poses = sim.reset(seed=8, task="transfer_cube")
    assert sim.time == pytest.approx(t) and sim.episode_time == 0.0
    expected = TASKS["transfer_cube"].sample_poses(np.random.default_rng(8))["box"][0]
    np.testing.assert_allclose(poses["box"].position, expected)
    assert not sim.success and sim.tracker.max_stage == 0


def test_the_tracker_tells_a_lift_from_a_cube_that_settles(sim):
    sim.reset(seed=9)
    sim.step(200)  # placed 5 cm up, the cube falls onto the table: that is no lift
    sim.update_task()
    assert sim.tracker.max_lift < 0.005
    adr = sim._object_qpos["box"]
    sim.data.qpos[adr + 2] += 0.12  # raised 12 cm, as a gripper would
    mujoco.mj_forward(sim.model, sim.data)
    sim.update_task()
    assert sim.tracker.max_lift == pytest.approx(0.12, abs=0.005)
    sim.reset(seed=9)
    assert sim.tracker.max_lift == 0.0


def test_trajectory_moves_the_physical_joints_on_time(sim):
    sim.reset(seed=0)
    q0 = sim.positions()
    target = q0.copy()
    target[[0, 1, 2, 7, 8, 9]] += [0.3, 0.2, -0.2, -0.3, 0.2, -0.2]
    goal = CommandInterpreter(PROFILE).trajectory(ALL, list(ALL), [_pt(1.0, target)], start=0.0)
    sim.command_trajectory(goal, start_now=True)
    t_end = sim.time + 1.0
    sim.step_until(t_end - 0.5)
    mid = sim.positions()
    assert np.all(np.abs(mid[[0, 7]] - (q0[[0, 7]] + target[[0, 7]]) / 2) < 0.05)  # halfway at half time
    sim.step_until(t_end + 0.3)
    np.testing.assert_allclose(sim.positions()[[0, 1, 2, 7, 8, 9]], target[[0, 1, 2, 7, 8, 9]], atol=0.03)


def test_rendered_cube_projects_where_the_intrinsics_say(sim):
    sim.reset(seed=5)
    sim.step(200)  # the cube settles on the table
    mujoco.mj_forward(sim.model, sim.data)
    with CameraRenderer(sim.model, 320, 240) as r:
        img = r.render(sim.data, "high")
        k = r.intrinsics("high")
    assert img.shape == (240, 320, 3) and img.dtype == np.uint8
    red = (img[:, :, 0] > 150) & (img[:, :, 1] < 60) & (img[:, :, 2] < 60)
    assert red.sum() > 10
    v, u = np.nonzero(red)
    pos, rot = camera_pose(sim.model, sim.data, "high")
    p_cam = rot.T @ (sim.object_poses()["box"].position - pos)  # optical frame: z forward, y down
    u_hat = k.fx * p_cam[0] / p_cam[2] + k.cx
    v_hat = k.fy * p_cam[1] / p_cam[2] + k.cy
    assert abs(u.mean() - u_hat) < 2.0 and abs(v.mean() - v_hat) < 2.0


# -- scripted demonstrator ------------------------------------------------------------------------

@pytest.mark.parametrize("task, seeds", [("transfer_cube", (10, 11, 12)), ("insertion", (10, 11))])
def test_scripted_demonstrator_succeeds(task, seeds):
    sim = AlohaSim(task)
    demo = ScriptedDemonstrator(task)
    results = [run_episode(sim, demo, seed) for seed in seeds]
    assert all(r.success for r in results), results
    assert all(0 < r.success_time <= r.duration for r in results)


def test_the_handover_leaves_no_wait_a_policy_cannot_see():
    """From the moment the left fingers rest on the cube (its measured opening stops changing) to the
    moment the right gripper measurably opens, nothing a policy observes changes: a policy cannot tell
    how long it has waited, so a demonstration that waits there teaches a release always the same time
    ahead. The sixth proof run's model predicted it 13-17 actions ahead throughout a 25-frame wait and
    held the cube with both grippers until the time limit. The wait must stay well inside the 16 actions
    RTC executes of each chunk (``execution_horizon``)."""
    sim = AlohaSim("transfer_cube")
    q = []
    r = run_episode(sim, ScriptedDemonstrator("transfer_cube"), 10, on_tick=lambda obs, cmd: q.append(np.asarray(obs.q, float)))
    assert r.success
    q = np.asarray(q)
    left, right = q[:, 6], q[:, 13]
    opened = int(np.argmax(left > left.max() - 0.01))  # the left gripper starts closed, opens on its way
    closing = opened + int(np.argmax(left[opened:] < left.max() - 0.05))  # and closes on the cube
    assert closing > opened
    still = (np.abs(np.diff(left[closing:])) < 2e-3)
    settled = closing + int(np.argmax(still[:-1] & still[1:]))  # its fingers rest on the cube
    opens = settled + int(np.argmax(right[settled:] > right[settled] + 0.01))
    assert opens > settled and left[settled] > 0.5  # resting on the cube, not shut on nothing
    assert opens - settled <= 10, f"{opens - settled} frames between the left grasp and the right release"
