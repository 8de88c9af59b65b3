"""The policy and executor nodes on their own (no simulator).

* policy node with the tiny Motus-shaped model: lifecycle autostart, synchronized observations from
  this test's camera/joint publishers, an executor-style plan request -> a chunk that honours the
  RTC prefix (frozen actions equal the plan), per-stage timing in PolicyStatus, synchronizer
  diagnostics, the instruction service with its on-disk embedding cache;
* executor node: FollowJointTrajectory is refused with a clear error where control_msgs is missing.
"""
import importlib.util
import time

import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from test.helpers import node_process, stop_process, wait_until


def _spin_until(executor, predicate, timeout, what):
    wait_until(predicate, timeout, what=what, spin=lambda: executor.spin_once(timeout_sec=0.02))


def test_tiny_motus_policy_node_serves_prefixed_chunks(ros_context, tmp_path):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState

    from motus_core.runtime.executor import PlanRequest
    from motus_msgs.msg import ActionChunk, PolicyStatus
    from motus_msgs.srv import SetInstruction
    from motus_ros.conversions import image_msg, time_msg
    from motus_ros.runtime_msgs import msg_to_chunk, plan_to_msg

    profile = load_profile("sim_aloha")
    proc = node_process("motus_ros.nodes.policy_node", "-r", "__node:=policy", "-p", "policy:=tiny_motus",
                        "-p", f"options:=[embedding_cache={tmp_path / 'emb'}]", "-p", "instruction:=pick up the cube")
    node = rclpy.create_node("policy_node_test", context=ros_context)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    try:
        be = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        cams = {role: node.create_publisher(Image, cam.topic, be) for role, cam in profile.cameras.items()}
        joints = node.create_publisher(JointState, profile.state_sources[0].topic, be)
        plan_pub = node.create_publisher(ActionChunk, "/executor/plan", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        chunks, status, diags = [], [], []
        node.create_subscription(ActionChunk, "/policy/action_chunk", chunks.append, 10)
        node.create_subscription(PolicyStatus, "/policy/status", status.append, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
        images = {r: image_msg(np.full((c.height, c.width, 3), 40 * i, np.uint8), 0.0) for i, (r, c) in enumerate(profile.cameras.items())}
        home = np.asarray(profile.home)

        def publish_observation():
            t = time.time()
            for role, pub in cams.items():
                images[role].header.stamp = time_msg(t)
                pub.publish(images[role])
            js = JointState(name=list(profile.joint_names), position=home.tolist())
            js.header.stamp = time_msg(t + 0.001)
            joints.publish(js)

        timer = node.create_timer(1 / 30, publish_observation)
        _spin_until(ex, lambda: status and plan_pub.get_subscription_count() > 0, 90, "the policy node (model load)")
        if proc.poll() is not None:
            raise AssertionError(stop_process(proc)[-3000:])
        # the executor's request: a plan around the home pose, expected delay 4
        now = time.time()
        plan = np.tile(home, (40, 1)) + np.linspace(0, 0.02, 40)[:, None]
        plan_pub.publish(plan_to_msg(PlanRequest(1, now - 6 / 30, 1 / 30, plan, expected_delay=4, strategy="rtc"), profile.joint_names))
        _spin_until(ex, lambda: chunks, 60, "a chunk")
        msg = chunks[-1]
        chunk = msg_to_chunk(msg, profile.joint_names)
        assert chunk.actions.shape == (48, 14) and msg.model
        assert msg.prefix_length > 0 and msg.inference_latency > 0
        # the first d = 4 actions are the committed plan, resampled at the observation's grid
        t_obs = chunk.stamp
        plan_t = now - 6 / 30 + np.arange(1, 41) / 30
        for k in range(4):
            expected = np.array([np.interp(t_obs + (k + 1) / 30, plan_t, plan[:, j]) for j in range(14)])
            # float seconds near the epoch (1.8e9 s) round to ~2e-7 s: 1e-6 rad still pins the value exactly
            np.testing.assert_allclose(chunk.actions[k], expected, atol=1e-6)
        # per-stage timing and the synchronizer's diagnostics
        _spin_until(ex, lambda: status[-1].chunks_published >= 1, 10, "a status after the chunk")
        stages = {s.name for s in status[-1].last_timing}
        assert {"sync_wait", "preprocess", "model", "postprocess", "total"} <= stages
        _spin_until(ex, lambda: any("sync high" in s.name for d in diags for s in d.status), 10, "synchronizer diagnostics")
        # instruction service: a new instruction is encoded, the same one again comes from the cache
        cli = node.create_client(SetInstruction, "/policy/set_instruction")
        assert cli.wait_for_service(timeout_sec=10)
        results = []
        for _ in range(2):
            fut = cli.call_async(SetInstruction.Request(instruction="stack the blocks"))
            _spin_until(ex, fut.done, 30, "the instruction service")
            results.append(fut.result())
        assert all(r.success for r in results)
        assert results[1].cached
        _spin_until(ex, lambda: status[-1].instruction == "stack the blocks", 10, "the new instruction in the status")
        assert list((tmp_path / "emb").iterdir())  # embeddings cached on disk
        node.destroy_timer(timer)
    finally:
        out = stop_process(proc)
        ex.shutdown()
        node.destroy_node()
    assert "Policy summary" in out


@pytest.mark.skipif(importlib.util.find_spec("control_msgs") is not None, reason="control_msgs installed: the action path is available")
def test_follow_joint_trajectory_needs_control_msgs():
    proc = node_process("motus_ros.nodes.executor_node", "-p", "command_interface:=follow_joint_trajectory")
    try:
        proc.wait(timeout=60)
    finally:
        out = stop_process(proc)
    assert proc.returncode == 2
    assert "control_msgs" in out
