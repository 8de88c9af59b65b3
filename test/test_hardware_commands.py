"""FollowJointTrajectory against an action server that uses the REAL control_msgs interface (built from
../shared/third_party/ros2 by tools/build_ros2_upstream.sh): the executor's goals carry the profile's
joints, timed points that lie ahead of their arrival, and move the controller stand-in to the target.

(JointState per arm into a Piper-like driver: test_hardware_piper.py; into the ARX driver through the
bridge: test_hardware_arx.py; JointTrajectory into the simulator: the closed-loop tests.)
"""
from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from test.helpers import node_process, stop_process

pytestmark = pytest.mark.skipif(importlib.util.find_spec("control_msgs") is None,
                                reason="control_msgs is not built (tools/build_ros2_upstream.sh, part of make setup)")
PROFILE = load_profile("sim_aloha")


def test_follow_joint_trajectory_against_the_real_interface(tmp_path, ros_context):
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_srvs.srv import SetBool

    from motus_msgs.msg import ActionChunk, ExecutorStatus
    from motus_ros.conversions import duration_msg, time_msg

    out = tmp_path / "jtc.json"
    jtc = node_process("test.nodes.fake_jtc", args=("--out", str(out)))
    ex = node_process("motus_ros.nodes.executor_node", "-r", "__node:=executor", "-p", "command_interface:=follow_joint_trajectory",
                      "-p", "policy_lease:=0.0", "-p", "enabled:=true")
    node = rclpy.create_node("fjt_test", context=ros_context)
    exe = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    exe.add_node(node)
    states, status = [], []
    node.create_subscription(JointState, "/joint_states", states.append, 10)
    node.create_subscription(ExecutorStatus, "/executor/status", status.append, 10)
    chunk_pub = node.create_publisher(ActionChunk, "/policy/action_chunk", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    enable = node.create_client(SetBool, "/executor/enable")
    from motus_msgs.msg import PolicyStatus

    # the test plays the policy: the executor takes no chunk before it knows the chunk contract
    contract = node.create_publisher(PolicyStatus, "/policy/status", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    node.create_timer(0.1, lambda: contract.publish(PolicyStatus(state=PolicyStatus.STATE_ACTIVE, model="test", chunk_length=48,
                                                                 step_period=1 / 30)))

    def spin_until(pred, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            exe.spin_once(timeout_sec=0.05)
            if pred():
                return
            for p in (jtc, ex):
                if p.poll() is not None:
                    raise AssertionError(f"a process exited while waiting for {what}: {stop_process(p)[-3000:]}")
        raise AssertionError(f"timed out waiting for {what}")

    q0 = np.array(PROFILE.home)
    target = q0.copy()
    target[0] += 0.2  # left_waist
    try:
        spin_until(lambda: states and status and chunk_pub.get_subscription_count() > 0 and enable.service_is_ready()
                   and 0.0 <= status[-1].state_age < 0.5, 90, "the executor with a fresh joint state")
        fut = enable.call_async(SetBool.Request(data=True))
        spin_until(fut.done, 10, "enable")
        ramp = q0 + np.clip(np.linspace(0.0, 2.0, 48), 0.0, 1.0)[:, None] * (target - q0)
        for k in range(10):
            msg = ActionChunk()
            msg.header.stamp = time_msg(node.get_clock().now().nanoseconds * 1e-9)
            msg.chunk_id = k + 1
            msg.joint_names = list(PROFILE.joint_names)
            msg.step_period = duration_msg(1 / 30)
            msg.num_steps = 48
            msg.positions = ramp.reshape(-1).tolist()
            msg.model = "test"
            chunk_pub.publish(msg)
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                exe.spin_once(timeout_sec=0.05)
            if status[-1].chunks_received >= 1:
                break
        spin_until(lambda: abs(states[-1].position[0] - target[0]) < 2e-3, 30, "the controller to reach the target")
    finally:
        exe.shutdown()
        node.destroy_node()
        ex_log = stop_process(ex)
        stop_process(jtc)
    log = json.loads(out.read_text())
    assert log["accepted"] >= 10, ex_log[-3000:]
    assert log["names"] == [list(PROFILE.joint_names)]
    for g in log["goals"]:
        t = np.array(g["times"])
        assert np.all(np.diff(t) > 0) and np.all(np.isfinite(g["positions"]))
        P = np.array(g["positions"])
        assert np.all(P >= np.array(PROFILE.position_lower) - 1e-9) and np.all(P <= np.array(PROFILE.position_upper) + 1e-9)
    # goals arrive before their trajectory ends (a real JTC rejects trajectories entirely in the past)
    assert len(log["rejected"]) <= max(1, log["accepted"] // 20), log["rejected"][:5]
