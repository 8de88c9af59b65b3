"""AC one (ARX X5): the ARX bridge against an X5Controller stand-in, in each driver mode.

ARX's message packages are not public on a registry: the tests build test-only packages with the same
definitions (test/interfaces/) with rosidl into a temporary prefix, once per session, and run the bridge
and the stand-in with that prefix on their paths.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from test.helpers import node_process, stop_process
from test.interfaces.build import BuildUnavailable, cached_build, env_for

PROFILE = load_profile("ac_one")
START = [0.0, 0.4, 0.6, 0.0, 0.2, 0.0, -1.5]
COMMAND_TOPICS = {"remote_slave": ["/arm_master_l_status", "/arm_master_r_status"],
                  "joint_control_v1": ["/arm_l_joint_control", "/arm_r_joint_control"],
                  "normal": ["/arm_l_cmd", "/arm_r_cmd"]}


@pytest.fixture(scope="module")
def arx_env():
    try:
        prefix = cached_build(["arx5_arm_msg", "arm_control"])
    except BuildUnavailable as exc:
        pytest.skip(str(exc))
    return env_for(prefix)


def test_ac_one_profile_is_the_bridge_convention():
    assert PROFILE.driver.kind == "arx_x5" and PROFILE.driver.exclusive_command_topics
    assert [s.topic for s in PROFILE.state_sources] == ["/arm_slave_l/joint_states", "/arm_slave_r/joint_states"]
    for s in PROFILE.state_sources:
        assert list(s.names) == ["joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper"]
    assert PROFILE.gripper.unit == "arx" and PROFILE.gripper.open_value < PROFILE.gripper.closed_value


def _run(arx_env, tmp_path, mode, *bridge_params, fake_args=(), steps=None, expect_reach=True):
    """Start the stand-in and the bridge, command both arms through the profile's JointState topics,
    return (fake summary, JointStates seen on the profile's state topics, bridge log)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    out = tmp_path / f"fake_arx_{mode}.json"
    fake = node_process("test.nodes.fake_arx", env=arx_env, args=("--mode", mode, "--out", str(out), *fake_args))
    params = ["-p", f"driver_mode:={mode}", "-p", f"command_topics:={json.dumps(COMMAND_TOPICS[mode])}"]
    for p in bridge_params:
        params += ["-p", p]
    bridge = node_process("motus_ros.nodes.arx_bridge_node", *params, env=arx_env)
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("arx_test", context=ctx)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    seen = {s.topic: [] for s in PROFILE.state_sources}
    for s in PROFILE.state_sources:
        node.create_subscription(JointState, s.topic, seen[s.topic].append, 50)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    cmd_pubs = [node.create_publisher(JointState, c.topic, qos) for c in PROFILE.commands]

    def spin_until(pred, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
            if pred():
                return
            for p in (fake, bridge):
                if p.poll() is not None:
                    raise AssertionError(f"a process exited while waiting for {what}: {stop_process(p)[-3000:]}")
        raise AssertionError(f"timed out waiting for {what}")

    def pause(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.02)

    try:
        spin_until(lambda: all(seen.values()) and all(p.get_subscription_count() > 0 for p in cmd_pubs), 60, "bridged joint states")
        up = time.monotonic()  # the bridge publishes: it is constructed; commands in its first 2 s are dropped (discovery grace)
        spin_until(lambda: time.monotonic() - up > 2.5, 5, "the bridge's discovery grace")
        for k, values in enumerate(steps or []):
            for pub, c, q in zip(cmd_pubs, PROFILE.commands, values):
                msg = JointState()
                msg.header.stamp = node.get_clock().now().to_msg()
                names = list(c.names.values())
                msg.name = list(reversed(names))  # order does not matter: names do
                msg.position = [float(v) for v in reversed(q)]
                pub.publish(msg)
            pause(0.1)
        if steps and expect_reach:
            last = steps[-1]
            spin_until(lambda: all(np.allclose(seen[s.topic][-1].position, last[i], atol=1e-6) for i, s in enumerate(PROFILE.state_sources)),
                       30, "the arms to report the last command")
        bad = JointState(name=["joint1", "joint2"], position=[9.0, 9.0])  # missing names: rejected, never 0 rad
        cmd_pubs[0].publish(bad)
        pause(0.5)
    except AssertionError as exc:
        failure = exc
    else:
        failure = None
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        log = stop_process(bridge)
        fake_log = stop_process(fake)
    if failure is not None:
        last = {t: list(m[-1].position) if m else None for t, m in seen.items()}
        raise AssertionError(f"{failure}\nlast states {last}\nbridge: {log[-3000:]}\nfake: {fake_log[-2000:]}")
    return json.loads(out.read_text()), seen, log


@pytest.mark.parametrize("mode", ["remote_slave", "joint_control_v1", "normal"])
def test_bridge_round_trip_in_each_driver_mode(arx_env, tmp_path, mode):
    left = [np.array(START) + np.array([0.05 * k, 0, 0, 0, 0, 0, 0.1 * k]) for k in range(1, 4)]
    right = [np.array(START) - np.array([0, 0.05 * k, 0, 0, 0, 0, 0.2 * k]) for k in range(1, 4)]
    fake, seen, log = _run(arx_env, tmp_path, mode, steps=list(zip(left, right)))
    for side, sent in (("l", left), ("r", right)):
        got = np.array(fake[side]["commands"], dtype=float)
        assert got.shape[0] >= 3, log[-3000:]
        assert np.allclose(got[-1], sent[-1], atol=1e-5)  # float32 in joint_control_v1
    # feedback: names by the profile, values of the driver, stamped
    js = seen["/arm_slave_l/joint_states"][-1]
    assert list(js.name) == ["joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper"]
    assert js.header.stamp.sec > 0 and len(js.effort) == 7 and js.effort[0] == pytest.approx(0.1)
    assert "rejected (1 so far)" in log and "missing from the message" in log
    assert "Traceback" not in log


def test_gripper_units_are_converted_explicitly(arx_env, tmp_path):
    """An X5-2023 follower in remote_slave multiplies the leader's gripper by 5: with gripper_command_scale 0.2
    the arm's gripper ends where the profile asked; feedback scaled by gripper_state_scale."""
    target = np.array(START) + np.array([0, 0, 0, 0, 0, 0, 0.5])
    fake, seen, log = _run(arx_env, tmp_path, "remote_slave", "gripper_command_scale:=0.2", "gripper_state_scale:=2.0",
                           fake_args=("--end-type", "2023"), steps=None)
    # feedback alone: the driver's -1.5 arrives as -3.0 in the profile's unit
    assert seen["/arm_slave_l/joint_states"][-1].position[6] == pytest.approx(2.0 * START[6])
    fake, seen, log = _run(arx_env, tmp_path, "remote_slave", "gripper_command_scale:=0.2",
                           fake_args=("--end-type", "2023"), steps=[(target, target)])
    assert fake["l"]["q"][6] == pytest.approx(target[6], abs=1e-6)  # 0.2 x 5 = 1
    assert fake["l"]["commands"][-1][6] == pytest.approx(target[6])


def test_remote_slave_refuses_when_the_leaders_run(arx_env, tmp_path):
    """In remote_slave the bridge publishes where the leader arms publish: if a leader runs, it refuses."""
    import subprocess
    import sys

    code = ("import rclpy\nfrom arx5_arm_msg.msg import RobotStatus\nrclpy.init()\nn=rclpy.create_node('arm_master_l')\n"
            "p=n.create_publisher(RobotStatus,'/arm_master_l_status',10)\n"
            "try:\n    while rclpy.ok():\n        p.publish(RobotStatus(joint_pos=[0.0]*6+[-1.0]))\n        rclpy.spin_once(n,timeout_sec=0.01)\n"
            "except KeyboardInterrupt:\n    pass\n")
    lead = subprocess.Popen([sys.executable, "-c", code], env=arx_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        time.sleep(1.0)  # the leader is up before the bridge (discovery then takes its usual time)
        steps = [(np.array(START) + 0.01 * k, np.array(START) + 0.01 * k) for k in range(30)]
        fake, seen, log = _run(arx_env, tmp_path, "remote_slave", steps=steps, expect_reach=False)
    finally:
        stop_process(lead)
    assert "Refusing to command the ARX follower" in log and "/arm_master_l" in log, log[-3000:]
    # what the left follower received came from the leader only (gripper -1.0), never from the bridge
    assert fake["l"]["commands"] and all(c[6] == pytest.approx(-1.0) for c in fake["l"]["commands"])
