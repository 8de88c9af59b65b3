"""``motus_msgs/action/RunTask`` on the executor: run the policy for a given time, with feedback.

Simulated robot + replay policy + executor (started disabled: only the action moves the robot).
"""
import time

import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from motus_core.runtime.executor import ExecState
from motus_core.runtime.offline import synthetic_motion
from test.closed_loop_helpers import spawned_cleanup  # noqa: F401  (autouse: no node outlives its test)
from test.closed_loop_helpers import Monitor, start_executor, start_policy, start_sim
from test.helpers import stop_process, wait_until


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.context import Context

    from motus_msgs.action import RunTask

    tmp = tmp_path_factory.mktemp("run_task")
    profile = load_profile("sim_aloha")
    np.save(tmp / "motion.npy", synthetic_motion(profile, duration=60.0))
    sim = start_sim()
    ctx = Context()
    rclpy.init(context=ctx)
    mon = Monitor(ctx, profile)
    client = ActionClient(mon.node, RunTask, "/executor/run_task")
    try:
        mon.wait(lambda: mon.clock > 0.5 and len(mon.joint_states) > 10, 60, "the simulator", procs=[sim])
        yield {"mon": mon, "client": client, "motion": f"replay:{tmp / 'motion.npy'}"}
    finally:
        client.destroy()
        mon.close()
        rclpy.shutdown(context=ctx)
        stop_process(sim)


def _goal(instruction: str, seconds: float, stop_on_success: bool = False, enable: bool = True):
    from motus_msgs.action import RunTask
    from motus_ros.conversions import duration_msg

    return RunTask.Goal(instruction=instruction, duration=duration_msg(seconds), stop_on_success=stop_on_success, enable=enable)


def _nan_chunk(mon):
    from motus_msgs.msg import ActionChunk
    from motus_ros.conversions import duration_msg, time_msg

    msg = ActionChunk()
    msg.header.stamp = time_msg(mon.clock)
    msg.chunk_id = 999
    msg.joint_names = list(mon.profile.joint_names)
    msg.step_period = duration_msg(1 / 30)
    msg.num_steps = 48
    values = np.tile(mon.joint_states[-1][1][:14], (48, 1))
    values[5, 2] = np.nan
    msg.positions = values.reshape(-1).tolist()
    msg.model = "test"
    return msg


def _wait_future(fut, timeout: float):
    wait_until(fut.done, timeout, what="the action server's answer")  # the graph's executor spins in its thread
    return fut.result()


def test_run_task_runs_for_the_duration_then_holds_and_can_be_canceled(graph):
    from motus_msgs.action import RunTask

    mon, client = graph["mon"], graph["client"]
    policy = start_policy(graph["motion"], "options:=[align=time, loop=true]")
    ex = start_executor("strategy:=rtc", "enabled:=false")
    mon.wait(lambda: client.server_is_ready() and mon.exec_status is not None, 60, "the RunTask server", procs=[policy, ex])
    mon.wait(lambda: mon.policy_status is not None and mon.policy_status.state == 2, 60, "the policy to be active", procs=[policy, ex])
    assert mon.exec_status.chunks_received == 0  # disabled executors do not ask for chunks... and nothing moved

    # a goal with no duration is refused
    handle = _wait_future(client.send_goal_async(_goal("", 0.0)), 10)
    assert not handle.accepted
    # without enable a disabled executor is not enabled behind the operator's back
    handle = _wait_future(client.send_goal_async(_goal("", 2.0, enable=False)), 10)
    result = _wait_future(handle.get_result_async(), 30).result
    assert result.outcome == RunTask.Result.OUTCOME_ERROR and "disabled" in result.message, result.message
    assert mon.exec_status.chunks_received == 0 and not mon.exec_status.enabled

    feedback = []
    t0 = mon.clock
    handle = _wait_future(client.send_goal_async(_goal("transfer the cube", 2.0), feedback_callback=lambda f: feedback.append(f.feedback)), 10)
    assert handle.accepted
    result = _wait_future(handle.get_result_async(), 60).result
    assert result.outcome == RunTask.Result.OUTCOME_TIMEOUT, result.message
    # sim-time differences are sums of float steps (8.36 - 6.36 < 2.0), and the monitor's clock may
    # trail the executor's by a /clock message: allow 10 ms, far below the 2 s being checked
    assert result.elapsed >= 2.0 - 1e-6 and mon.clock - t0 >= 2.0 - 0.01
    assert result.chunks_executed > 0
    assert result.chunks_rejected == 0 and result.time_to_success == -1.0
    mon.wait(lambda: mon.executor_state() == ExecState.HOLDING, 10, "the executor to hold after the task", procs=[ex])
    assert result.limit_hits <= mon.exec_status.limit_hits
    assert len(feedback) >= 2 and feedback[-1].chunks_executed > 0
    assert [f.elapsed for f in feedback] == sorted(f.elapsed for f in feedback)
    # executing the policy (the first second is its fade-in; under load the feedback may only sample that)
    assert any(f.executor_state in (ExecState.FADE_IN, ExecState.RUNNING) for f in feedback)
    mon.wait(lambda: mon.executor_state() == ExecState.HOLDING, 10, "the executor to hold after the task", procs=[ex])

    # cancel a running task
    handle = _wait_future(client.send_goal_async(_goal("", 30.0)), 10)
    assert handle.accepted
    mon.wait(lambda: mon.executor_state() in (ExecState.FADE_IN, ExecState.RUNNING), 20, "the task to start", procs=[ex])
    rejected = mon.exec_status.chunks_rejected
    mon.chunk_pub.publish(_nan_chunk(mon))  # a rogue chunk during this task: counted in its result
    mon.wait(lambda: mon.exec_status.chunks_rejected > rejected, 10, "the NaN chunk to be rejected", procs=[ex])
    _wait_future(handle.cancel_goal_async(), 10)
    result = _wait_future(handle.get_result_async(), 30).result
    assert result.outcome == RunTask.Result.OUTCOME_CANCELED
    assert result.chunks_rejected == 1
    assert result.elapsed < 30.0
    mon.wait(lambda: mon.executor_state() == ExecState.HOLDING, 10, "the executor to hold after the cancel", procs=[ex])
    for p in (policy, ex):
        assert p.poll() is None
