"""An ARX X5Controller stand-in for the two follower arms of an AC one (test-only ARX messages).

Per arm (``l``, ``r``) it publishes ``arx5_arm_msg/RobotStatus`` on ``/arm_slave_{l,r}_status`` (joint_pos
[0:6] rad, [6] gripper on the X5 scale) and follows commands of its ``--mode`` (ARX ``arm_control_type``):
``remote_slave``: RobotStatus on ``/arm_master_{l,r}_status`` (gripper copied as is for X5-2025, x5 for 2023);
``joint_control_v1``: ``arm_control/JointControl`` on ``/arm_{l,r}_joint_control``; ``normal``: ``RobotCmd`` on
``/arm_{l,r}_cmd``. The arm moves to each command at once. Writes a JSON summary to ``--out`` on SIGINT:
per arm the commands received (joint values) and the final pose.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import motus_ros  # noqa: E402,F401
import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from test.nodes.spin import spin_until_stopped  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("remote_slave", "joint_control_v1", "normal"), default="remote_slave")
    ap.add_argument("--end-type", choices=("2025", "2023"), default="2025")
    ap.add_argument("--start", type=float, nargs=7, default=[0.0, 0.4, 0.6, 0.0, 0.2, 0.0, -1.5])
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from arx5_arm_msg.msg import RobotCmd, RobotStatus

    rclpy.init()
    node = rclpy.create_node("fake_arx")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    arms = {s: {"q": list(args.start), "commands": []} for s in ("l", "r")}
    pubs = {s: node.create_publisher(RobotStatus, f"/arm_slave_{s}_status", qos) for s in arms}

    def follow(side, q):
        arms[side]["commands"].append(q)
        arms[side]["q"] = q

    for s in arms:
        if args.mode == "remote_slave":
            factor = 5.0 if args.end_type == "2023" else 1.0
            node.create_subscription(RobotStatus, f"/arm_master_{s}_status",
                                     lambda m, s=s: follow(s, [float(v) for v in m.joint_pos[:6]] + [float(m.joint_pos[6]) * factor]), qos)
        elif args.mode == "joint_control_v1":
            from arm_control.msg import JointControl

            node.create_subscription(JointControl, f"/arm_{s}_joint_control",
                                     lambda m, s=s: follow(s, [float(v) for v in m.joint_pos[:7]]), qos)
        else:
            node.create_subscription(RobotCmd, f"/arm_{s}_cmd", lambda m, s=s: follow(s, [float(v) for v in m.joint_pos] + [float(m.gripper)]), qos)

    def tick():
        for s, pub in pubs.items():
            msg = RobotStatus()
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.joint_pos = [float(v) for v in arms[s]["q"]]
            msg.joint_vel = [0.0] * 7
            msg.joint_cur = [0.1] * 7
            pub.publish(msg)

    node.create_timer(1.0 / args.rate, tick)
    spin_until_stopped(node, lambda: args.out.write_text(json.dumps(arms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
