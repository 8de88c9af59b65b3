"""Enable or disable the arms' motors through the driver's enable topics (an explicit step, never automatic).

    python -m motus_ros.nodes.piper_enable enable  --robot aloha_agilex_2_single
    python -m motus_ros.nodes.piper_enable disable --robot aloha_agilex_2_single

The topics are the profile's ``driver.enable_topics`` (std_msgs/Bool: the Piper nodes' ``enable_flag``).
Before anything it waits for the measured pose on the profile's state topics (the driver must run).
``disable`` cuts motor power: an arm that is not at home FALLS. It therefore refuses (exit code 3) unless
every arm joint is within ``driver.disable_tolerance`` of the profile's home pose, and says what to do.
Exit codes: 0 done, 1 driver not found (no joint states / nobody subscribed), 2 bad arguments, 3 refused.
"""
from __future__ import annotations

import argparse
import sys
import time

import motus_ros  # noqa: F401  (DDS environment before rclpy)
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool

from motus_core.robot_profile import ProfileError, load_profile
from motus_ros.conversions import ConversionError, JointVectorAssembler


def _spin_until(node, predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        rclpy.spin_once(node, timeout_sec=0.05)
    return bool(predicate())


def measured_pose(node, profile, timeout: float) -> np.ndarray | None:
    joints = JointVectorAssembler(profile)
    errors: list[str] = []

    def cb(topic):
        def f(msg):
            try:
                joints.update(topic, msg)
            except ConversionError as exc:
                errors.append(str(exc))
        return f

    subs = [node.create_subscription(JointState, s.topic, cb(s.topic), QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
            for s in profile.state_sources]
    ok = _spin_until(node, lambda: joints.complete, timeout)
    for s in subs:
        node.destroy_subscription(s)
    if errors:
        print(f"joint states rejected: {errors[-1]}", file=sys.stderr)
    return joints.position.copy() if ok else None


def run(action: str, robot: str, timeout: float) -> int:
    try:
        profile = load_profile(robot)
    except ProfileError as exc:
        print(exc, file=sys.stderr)
        return 2
    topics = list(profile.driver.enable_topics)
    if not topics:
        print(f"robot {profile.name!r} (driver {profile.driver.kind}) has no enable topics in its profile (driver.enable_topics)",
              file=sys.stderr)
        return 2
    node = rclpy.create_node("arm_enable")
    try:
        q = measured_pose(node, profile, timeout)
        if q is None:
            print(f"no joint states on {[s.topic for s in profile.state_sources]} within {timeout:.0f} s: is the driver "
                  f"({profile.driver.kind}) running?", file=sys.stderr)
            return 1
        if action == "disable":
            blockers = profile.disable_blockers(q)
            if blockers:
                print("Refusing to disable: disabling cuts motor power and a raised arm falls. Away from home: "
                      + "; ".join(blockers) + ". Move the arms home first (the executor's move-to-pose 'home', or by hand "
                      "with the arm supported), then disable again.", file=sys.stderr)
                return 3
        pubs = [node.create_publisher(Bool, t, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)) for t in topics]
        if not _spin_until(node, lambda: all(p.get_subscription_count() > 0 for p in pubs), timeout):
            missing = [t for t, p in zip(topics, pubs) if p.get_subscription_count() == 0]
            print(f"nobody subscribes to {missing}: is the driver in control mode, and are its enable_flag topics remapped "
                  f"as the profile says?", file=sys.stderr)
            return 1
        for p in pubs:
            p.publish(Bool(data=action == "enable"))
        _spin_until(node, lambda: False, 0.3)  # let the reliable writes go out before the node is destroyed
        print(f"{action}d the arms of {profile.name!r} through {topics}")
        return 0
    finally:
        node.destroy_node()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("enable", "disable"))
    ap.add_argument("--robot", required=True, help="robot profile (config/robots/<robot>.yaml)")
    ap.add_argument("--timeout", type=float, default=5.0, help="s to wait for the driver's joint states and subscriptions")
    args, ros_args = ap.parse_known_args(argv)
    rclpy.init(args=["arm_enable", *ros_args])
    try:
        return run(args.action, args.robot, args.timeout)
    except KeyboardInterrupt:
        return 130
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
