"""The visualizer with the real robot profiles (aloha_agilex_2, ac_one): both arms stay apart.

Per-arm drivers name both arms' joints alike (``joint1..joint6, gripper`` or ``joint0..joint6``), so a
URDF joint name cannot be the message name: the profile maps every canonical joint to a distinct URDF
joint (``RobotProfile.urdf_joint_names``), the forward kinematics reads each arm's own columns, and the
ghost's JointState carries 14 distinct names with each arm's own values.
"""
from __future__ import annotations

import numpy as np
import pytest

from motus_core.robot_profile import available_profiles, load_profile

REAL = [p for p in available_profiles() if p != "sim_aloha"]


def dual_arm_urdf(profile, path):
    """A small URDF with the profile's URDF joint names: two 6-joint chains from the base frame to the
    profile's end-effector links (revolute joints alternating about z and y), a prismatic gripper each."""
    names = profile.urdf_joint_names
    links, joints = [f'<link name="{profile.base_frame}"/>'], []
    for side, y in (("left", 0.3), ("right", -0.3)):
        parent = profile.base_frame
        arm = [c for c in profile.joint_names if c.startswith(side)]
        grip = [profile.joint_names[i] for i in profile.gripper_indices if profile.joint_names[i].startswith(side)][0]
        for k, canon in enumerate(c for c in arm if c != grip):
            child = profile.ee_links[side] if k == 5 else f"{side}_l{k + 1}"
            xyz = f"0 {y} 0.1" if k == 0 else "0.1 0 0"
            axis = "0 0 1" if k % 2 == 0 else "0 1 0"
            links.append(f'<link name="{child}"/>')
            joints.append(f'<joint name="{names[canon]}" type="revolute"><parent link="{parent}"/><child link="{child}"/>'
                          f'<origin xyz="{xyz}" rpy="0 0 0"/><axis xyz="{axis}"/><limit lower="-3" upper="3" effort="1" velocity="1"/></joint>')
            parent = child
        links.append(f'<link name="{side}_finger"/>')
        joints.append(f'<joint name="{names[grip]}" type="prismatic"><parent link="{parent}"/><child link="{side}_finger"/>'
                      f'<origin xyz="0 0 0" rpy="0 0 0"/><axis xyz="0 1 0"/><limit lower="-4" upper="4" effort="1" velocity="1"/></joint>')
    path.write_text('<?xml version="1.0"?>\n<robot name="test_dual_arm">\n' + "\n".join(links + joints) + "\n</robot>\n")
    return path


def test_real_profiles_exist():
    assert {"aloha_agilex_2", "ac_one"} <= set(REAL)


@pytest.mark.parametrize("robot", REAL)
def test_urdf_joint_names_are_distinct_per_arm(robot):
    profile = load_profile(robot)
    names = profile.urdf_joint_names
    assert set(names) == set(profile.joint_names)
    assert len(set(names.values())) == profile.dof, names


@pytest.mark.parametrize("robot", REAL)
def test_forward_kinematics_reads_each_arms_own_joints(robot, tmp_path):
    from motus_core.viz.kinematics import chain_fk_for_profile

    profile = load_profile(robot)
    fk = chain_fk_for_profile(profile, dual_arm_urdf(profile, tmp_path / "robot.urdf"))
    q = np.zeros(profile.dof)
    base = fk.positions(q[None])
    q[profile.index_of(profile.joint_names[1])] = 0.8  # left joint 2 only
    moved = fk.positions(q[None])
    assert np.allclose(moved["right"], base["right"]), "moving a left joint moved the right end effector"
    assert not np.allclose(moved["left"], base["left"])


@pytest.mark.parametrize("robot", REAL)
def test_visualizer_ghost_keeps_both_arms_apart(robot, tmp_path, ros_context):
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState

    from motus_msgs.msg import ActionChunk
    from motus_ros.nodes.visualizer_node import VisualizerNode

    profile = load_profile(robot)
    urdf = dual_arm_urdf(profile, tmp_path / "robot.urdf")
    node = VisualizerNode(context=ros_context, parameter_overrides=[
        Parameter("robot", value=robot), Parameter("urdf", value=str(urdf)), Parameter("subscribe_live", value=False)])
    try:
        assert node.trajectory is not None
        sent = []
        node.pub_ghost.publish = sent.append
        # the robot's per-arm joint states, in the driver's own names (left = 0.1.., right = -0.1..)
        for src, sign in zip(profile.state_sources, (1.0, -1.0)):
            js = JointState()
            js.name = list(src.names)
            js.position = [sign * 0.1 * (i + 1) for i in range(len(src.names))]
            node._on_joint_state(src.topic, js)
        k = 4
        target = np.linspace(profile.position_lower, profile.position_upper, 7)[2]  # left and right differ
        q = np.repeat(target[None], k, axis=0)
        msg = ActionChunk()
        msg.num_steps = k
        msg.joint_names = list(profile.joint_names)
        msg.positions = q.ravel().tolist()
        msg.step_period.nanosec = 33_333_333
        node._handle_chunk(msg)
        assert sent, "no ghost published"
        ghost = sent[-1]
        assert len(ghost.name) == len(set(ghost.name)) == profile.dof, list(ghost.name)
        urdf_names = profile.urdf_joint_names
        got = dict(zip(ghost.name, ghost.position))
        for i, canon in enumerate(profile.joint_names):
            assert got[urdf_names[canon]] == pytest.approx(target[i]), canon
    finally:
        node.destroy_node()
