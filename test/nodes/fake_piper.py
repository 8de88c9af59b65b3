"""A Piper-like driver stand-in for two arms (the topics, names, units and quirks of the vendor nodes).

Conventions (``--convention``), per robot profile:
* ``single``: two ``piper_ctrl_single_node`` instances: feedback ``/joint_states_single_{l,r}`` (names
  ``joint1..joint6, gripper``), commands ``/joint_states_{l,r}``: joints looked up BY NAME, a missing
  name becomes 0 rad (the vendor's ``get('jointN', 0)``, counted here as ``zeroed``), the gripper read
  by INDEX 6 (``position[6]``, metres); enable ``/enable_flag_{l,r}`` (std_msgs/Bool).
* ``ms``: the master/slave node, one per side: feedback ``/puppet/joint_{left,right}`` (``joint0..joint6``);
  in ``--mode control`` it follows ``/master/joint_{left,right}`` (by index, 7 values), in ``--mode read``
  it PUBLISHES the leaders' targets there itself (frame_id ``leader``); enable ``/enable_flag``.

Units as the driver's: joints rad, gripper opening m. The arm moves to each command at once (no dynamics)
while enabled; disabled, a raised arm "falls" (joints 2, 3 go to 0 at once, ``fell`` counted).
On SIGINT/SIGTERM (or after ``--duration``) it writes a JSON summary to ``--out``: per arm the commands
received, their stamps, names seen, zeroed names, enable flags, falls, the final pose.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import motus_ros  # noqa: E402,F401  (DDS environment before rclpy)
import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from test.nodes.spin import spin_until_stopped  # noqa: E402

SIDES = {"single": {"l": "l", "r": "r"}, "ms": {"l": "left", "r": "right"}}


class Arm:
    def __init__(self, node, convention: str, side: str, mode: str, start: list[float], enabled: bool):
        self.convention, self.side, self.mode = convention, side, mode
        self.q = list(start)
        self.enabled = enabled
        self.commands = 0
        self.stamps: list[float] = []
        self.positions: list[list[float]] = []  # every command as received (message order)
        self.names_seen: set[tuple[str, ...]] = set()
        self.zeroed = 0
        self.flags: list[bool] = []
        self.fell = 0
        s = SIDES[convention][side]
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        if convention == "single":
            self.names = [f"joint{k}" for k in range(1, 7)] + ["gripper"]
            self.state_pub = node.create_publisher(JointState, f"/joint_states_single_{s}", qos)
            node.create_subscription(JointState, f"/joint_states_{s}", self.on_command_single, qos)
            node.create_subscription(Bool, f"/enable_flag_{s}", self.on_enable, qos)
        else:
            self.names = [f"joint{k}" for k in range(7)]
            self.state_pub = node.create_publisher(JointState, f"/puppet/joint_{s}", qos)
            if mode == "control":
                node.create_subscription(JointState, f"/master/joint_{s}", self.on_command_ms, qos)
                node.create_subscription(Bool, "/enable_flag", self.on_enable, qos)
            else:
                self.leader_pub = node.create_publisher(JointState, f"/master/joint_{s}", qos)

    def _record(self, msg: JointState) -> None:
        self.commands += 1
        self.stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        self.names_seen.add(tuple(msg.name))
        self.positions.append([float(v) for v in msg.position])

    def on_command_single(self, msg: JointState) -> None:
        self._record(msg)
        by_name = dict(zip(msg.name, msg.position))
        target = []
        for n in self.names[:6]:
            if n not in by_name:
                self.zeroed += 1
            target.append(float(by_name.get(n, 0.0)))  # the vendor's silent default
        target.append(float(msg.position[6]) if len(msg.position) > 6 else self.q[6])  # gripper by index
        if self.enabled:
            self.q = target

    def on_command_ms(self, msg: JointState) -> None:
        self._record(msg)
        if self.enabled and len(msg.position) >= 7:
            self.q = [float(v) for v in msg.position[:7]]

    def on_enable(self, msg: Bool) -> None:
        self.flags.append(bool(msg.data))
        self.enabled = bool(msg.data)
        if not self.enabled and (abs(self.q[1]) > 0.2 or abs(self.q[2]) > 0.2):
            self.fell += 1
            self.q[1] = self.q[2] = 0.0

    def publish(self, stamp) -> None:
        msg = JointState()
        msg.header.stamp = stamp
        msg.name = list(self.names)
        msg.position = [float(v) for v in self.q]
        msg.velocity = [0.0] * 7
        msg.effort = [0.0] * 7
        self.state_pub.publish(msg)
        if self.convention == "ms" and self.mode == "read":
            lead = JointState()
            lead.header.stamp = stamp
            lead.header.frame_id = "leader"
            lead.name = list(self.names)
            lead.position = [float(v) for v in self.q]
            self.leader_pub.publish(lead)

    def summary(self) -> dict:
        return {"commands": self.commands, "stamps": self.stamps, "positions": self.positions, "names": sorted(self.names_seen), "zeroed": self.zeroed,
                "flags": self.flags, "fell": self.fell, "q": self.q, "enabled": self.enabled}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--convention", choices=("single", "ms"), default="single")
    ap.add_argument("--mode", choices=("control", "read"), default="control")
    ap.add_argument("--rate", type=float, default=200.0, help="feedback rate (Hz)")
    ap.add_argument("--start", type=float, nargs=7, default=[0.0, 0.5, -0.5, 0.0, 0.3, 0.0, 0.05],
                    help="start pose of both arms (rad, gripper m)")
    ap.add_argument("--disabled", action="store_true", help="start with the motors disabled")
    ap.add_argument("--duration", type=float, default=0.0, help="s, then exit (0 = until SIGINT)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    rclpy.init()
    node = rclpy.create_node("fake_piper")
    arms = {s: Arm(node, args.convention, s, args.mode, args.start, not args.disabled) for s in ("l", "r")}

    def tick():
        stamp = node.get_clock().now().to_msg()
        for arm in arms.values():
            arm.publish(stamp)

    node.create_timer(1.0 / args.rate, tick)
    spin_until_stopped(node, lambda: args.out.write_text(json.dumps({s: a.summary() for s, a in arms.items()})),
                       duration=args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
