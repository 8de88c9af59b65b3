"""Executor safety on the simulated robot, as on real hardware: disabled until an explicit enable,
``~/move_to_pose`` (jerk-limited, from the measured pose) and the way out of an e-stop.

The executor runs with ``hardware:=real`` (sim time still comes from the simulator): it must send
nothing before ``~/enable``.
"""
import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from motus_core.runtime.executor import ExecState
from motus_core.runtime.motion import profile_poses
from test.closed_loop_helpers import spawned_cleanup  # noqa: F401  (autouse: no node outlives its test)
from test.closed_loop_helpers import Monitor, check_limits, load_record, start_executor, start_sim
from test.helpers import stop_process


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import rclpy
    from rclpy.context import Context

    profile = load_profile("sim_aloha")
    sim = start_sim()
    ctx = Context()
    rclpy.init(context=ctx)
    mon = Monitor(ctx, profile)
    try:
        mon.wait(lambda: mon.clock > 0.5 and len(mon.joint_states) > 10, 60, "the simulator", procs=[sim])
        yield {"mon": mon, "profile": profile, "tmp": tmp_path_factory.mktemp("safety_nodes")}
    finally:
        mon.close()
        rclpy.shutdown(context=ctx)
        stop_process(sim)


def _call(mon, srv_type, name, request, timeout=10.0):
    cli = mon.node.create_client(srv_type, name)
    try:
        assert cli.wait_for_service(timeout_sec=timeout), f"{name} not available"
        fut = cli.call_async(request)
        mon.wait(fut.done, timeout, name)
        return fut.result()
    finally:
        mon.node.destroy_client(cli)


def _arm(q):
    return np.delete(np.asarray(q), [6, 13])


def test_real_hardware_waits_for_enable_then_moves_to_poses(env):
    from std_srvs.srv import SetBool, Trigger

    from motus_msgs.srv import MoveToPose

    mon, profile, tmp = env["mon"], env["profile"], env["tmp"]
    mon.forget()
    mon.trajectories.clear()
    record = tmp / "poses.npz"
    poses = profile_poses(profile)
    ex = start_executor("hardware:=real", f"record_file:={record}")
    try:
        mon.wait(lambda: mon.exec_status is not None, 60, "the executor", procs=[ex])
        t0 = mon.clock
        mon.wait(lambda: mon.clock > t0 + 1.0, 30, "one second of sim time", procs=[ex])
        assert not mon.exec_status.enabled
        assert len(mon.trajectories) == 0, "a disabled executor on real hardware sent commands"
        res = _call(mon, MoveToPose, "/executor/move_to_pose", MoveToPose.Request(pose="ready"))
        assert not res.success and "enable" in res.message
        assert len(mon.trajectories) == 0

        res = _call(mon, SetBool, "/executor/enable", SetBool.Request(data=True))
        assert res.success, res.message
        mon.wait(lambda: mon.exec_status.enabled and len(mon.trajectories) > 5, 20, "commands after the enable", procs=[ex])
        # the first command holds where the robot is (no policy: nothing else moves it)
        first = mon.trajectories[0]
        q_now = mon.joint_states[-1][1][:14]
        assert np.max(np.abs(_arm(first.points[0].positions) - _arm(q_now))) < 0.05

        res = _call(mon, MoveToPose, "/executor/move_to_pose", MoveToPose.Request(pose="nowhere"))
        assert not res.success and "unknown pose" in res.message
        res = _call(mon, MoveToPose, "/executor/move_to_pose", MoveToPose.Request(pose="ready", velocity_scale=0.6))
        assert res.success and res.duration > 0.2, res.message
        t_start = mon.clock
        mon.wait(lambda: mon.clock > t_start + res.duration + 0.5, 60, "the move to end", procs=[ex])
        assert np.max(np.abs(_arm(mon.joint_states[-1][1][:14]) - _arm(poses["ready"]))) < 0.05
        assert mon.exec_status.tracking_error_max < 0.1 and 0 <= mon.exec_status.state_age < 0.5

        # the e-stop: moves are refused until it is reset; then a move is the way out
        assert _call(mon, Trigger, "/executor/estop", Trigger.Request()).success
        mon.wait(lambda: mon.executor_state() == ExecState.ESTOP, 10, "the e-stop", procs=[ex])
        res = _call(mon, MoveToPose, "/executor/move_to_pose", MoveToPose.Request(pose="home"))
        assert not res.success and "reset_estop" in res.message
        assert _call(mon, Trigger, "/executor/reset_estop", Trigger.Request()).success
        res = _call(mon, MoveToPose, "/executor/move_to_pose", MoveToPose.Request(positions=list(poses["home"])))
        assert res.success, res.message
        t_start = mon.clock
        mon.wait(lambda: mon.clock > t_start + res.duration + 0.5, 60, "the move home to end", procs=[ex])
        assert np.max(np.abs(_arm(mon.joint_states[-1][1][:14]) - _arm(poses["home"]))) < 0.05
        assert mon.exec_status.enabled and mon.executor_state() == ExecState.HOLDING
    finally:
        out = stop_process(ex)
        print(out[-4000:])
    assert ex.returncode == 0, out[-3000:]
    rec = load_record(record)
    check_limits(rec)


def test_a_still_trajectory_starts_on_arrival():
    """Holding: every point the same, at rest -> header.stamp 0 ("now"), so a late message has no past point."""
    from motus_ros.runtime_msgs import trajectory_msg

    times = 10.0 + 0.1 + 0.02 * np.arange(5)
    P = np.ones((5, 14))
    Z = np.zeros((5, 14))
    msg = trajectory_msg(10.0, times, P, Z, Z, list(range(7)), [f"j{i}" for i in range(7)])
    assert msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0
    tfs = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
    np.testing.assert_allclose(tfs, times - 10.0, atol=1e-9)
    V = Z.copy()
    V[2, 3] = 0.1  # moving: stamped with the executor's clock
    msg = trajectory_msg(10.0, times, P, V, Z, list(range(7)), [f"j{i}" for i in range(7)])
    assert msg.header.stamp.sec == 10
