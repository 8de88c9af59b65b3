"""A joint_trajectory_controller stand-in with the REAL control_msgs/FollowJointTrajectory action
(control_msgs built from ../shared/third_party/ros2 by tools/build_ros2_upstream.sh).

Serves ``/arm_controller/follow_joint_trajectory`` for the profile's joints and publishes the profile's
joint states (one JointState with every joint, ``--rate`` Hz) at the position of the active goal's
trajectory at the current time (linear between points; the start pose before any goal). Like a real
JTC it rejects a goal with unknown joints, and one whose every point is already in the past
(``header.stamp + time_from_start < now``); a new goal preempts the active one. On SIGINT it writes a
JSON summary to ``--out``: goals accepted / rejected (with reasons), joint names seen, per goal the
stamp, the times and the positions of its points.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import motus_ros  # noqa: E402,F401
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from control_msgs.action import FollowJointTrajectory  # noqa: E402
from rclpy.action import ActionServer, CancelResponse, GoalResponse  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from motus_core.robot_profile import load_profile  # noqa: E402
from test.nodes.spin import spin_until_stopped  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--robot", default="sim_aloha")
    ap.add_argument("--action", default="/arm_controller/follow_joint_trajectory")
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    profile = load_profile(args.robot)
    names = list(profile.joint_names)
    rclpy.init()
    node = rclpy.create_node("fake_jtc")
    state = {"q": np.array(profile.home, dtype=float), "traj": None}
    log = {"accepted": 0, "rejected": [], "names": [], "goals": []}

    def now() -> float:
        return node.get_clock().now().nanoseconds * 1e-9

    def parse(goal):
        t = goal.trajectory
        start = t.header.stamp.sec + t.header.stamp.nanosec * 1e-9
        start = start if start > 0 else now()
        times = np.array([start + p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in t.points])
        P = np.array([list(p.positions) for p in t.points])
        return start, times, P

    def on_goal(goal):
        t = goal.trajectory
        if sorted(t.joint_names) != sorted(names) or not t.points:
            log["rejected"].append(f"joints {list(t.joint_names)}")
            return GoalResponse.REJECT
        start, times, P = parse(goal)
        if times[-1] < now():
            log["rejected"].append(f"every point in the past ({now() - times[-1]:.3f} s)")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def execute(handle):
        goal = handle.request
        start, times, P = parse(goal)
        order = [list(goal.trajectory.joint_names).index(n) for n in names]
        state["traj"] = (times, P[:, order])
        log["accepted"] += 1
        if list(goal.trajectory.joint_names) not in log["names"]:
            log["names"].append(list(goal.trajectory.joint_names))
        log["goals"].append({"received": now(), "stamp": start, "times": times.tolist(), "positions": P[:, order].tolist()})
        handle.succeed()
        return FollowJointTrajectory.Result(error_code=FollowJointTrajectory.Result.SUCCESSFUL)

    ActionServer(node, FollowJointTrajectory, args.action, execute_callback=execute, goal_callback=on_goal,
                 cancel_callback=lambda _: CancelResponse.ACCEPT)
    src = profile.state_sources[0]
    pub = node.create_publisher(JointState, src.topic, 10)

    def tick():
        if state["traj"] is not None:
            times, P = state["traj"]
            t = now()
            state["q"] = np.array([np.interp(t, times, P[:, j]) for j in range(P.shape[1])])
        msg = JointState()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.name = names
        msg.position = state["q"].tolist()
        pub.publish(msg)

    node.create_timer(1.0 / args.rate, tick)
    spin_until_stopped(node, lambda: args.out.write_text(json.dumps(log)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
