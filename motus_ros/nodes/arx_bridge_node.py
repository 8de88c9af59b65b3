"""Bridge between ARX's X5 driver (``X5Controller``, AC one) and the suite's JointState interfaces.

ARX's driver speaks its own messages (``arx5_arm_msg/RobotStatus``, ``RobotCmd``; ``arm_control/JointControl``,
built from ARX's ``ROS2/X5_ws``); the suite speaks ``sensor_msgs/JointState`` through the robot profile.
Per arm (``left``, ``right``):

* feedback: ``RobotStatus`` on ``status_topics`` -> JointState on the profile's state topic, names from the
  profile (``joint1..joint6, gripper``), stamped with the status header (the driver stamps ``now()``);
* teleop leaders (optional, recording): ``RobotStatus`` on ``leader_status_topics`` -> the profile's leader topic;
* commands: the profile's JointState command topic (read BY NAME: a missing or unknown name is rejected,
  never a silent 0) -> the driver, in its ``driver_mode`` (ARX ``arm_control_type``):

  ``remote_slave`` (recommended for the AC one; ARX's own ``v2_joint_control`` launch runs the followers so):
      a ``RobotStatus`` (joint_pos[0:7]) on the topic the follower follows (``command_topics``, default the
      leaders' ``/arm_master_{l,r}_status``): the follower's 1 kHz position loop tracks it, as in teleop,
      which is how the Motus AC-one data were recorded. The real leader arms must be off: another
      publisher on that topic makes the bridge refuse (the arm would jump between both).
  ``joint_control_v1``: ``arm_control/JointControl`` (joint_pos[0:6] joints, [6] gripper, ``joint_control_mode``).
  ``normal``: ``arx5_arm_msg/RobotCmd`` (joint_pos[6], gripper, ``robot_cmd_mode``).

Gripper units, explicit: the profile (and Motus' stat.json ``ac_one``) uses ARX's X5-2025 scale as the
driver reports it (about -3.4 open .. 0 closed). ``gripper_state_scale`` converts driver feedback to the
profile (profile = driver x scale), ``gripper_command_scale`` profile commands to the driver's command unit
(driver = profile x scale). Both 1.0 for X5-2025; an X5-2023 follower in ``remote_slave`` multiplies the
leader's gripper by 5, so it needs ``gripper_command_scale`` 0.2.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import motus_ros  # noqa: F401  (DDS environment before rclpy)
from motus_ros.node_main import run_node  # noqa: E402
import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from motus_core.robot_profile import load_profile
from motus_ros.conversions import ConversionError, canonical_to_joint_state, joint_state_to_canonical
from motus_ros.params import declare_parameters

MODES = ("remote_slave", "joint_control_v1", "normal")
SIDES = ("left", "right")
LOG_PERIOD = 5.0  # s between log lines about rejected commands
DISCOVERY_GRACE = 2.0  # s after start during which commands are not forwarded (discovery of other publishers first)


@dataclass
class ArxBridgeParams:
    robot: str = field(default="ac_one", metadata={"help": "robot profile: state, leader and command topics and joint names"})
    driver_mode: str = field(default="remote_slave", metadata={"help": "ARX arm_control_type of the followers: remote_slave | joint_control_v1 | normal"})
    status_topics: list[str] = field(default_factory=lambda: ["/arm_slave_l_status", "/arm_slave_r_status"],
                                metadata={"help": "RobotStatus of the follower arms [left, right]"})
    leader_status_topics: list[str] = field(default_factory=lambda: ["", ""],
                                       metadata={"help": "RobotStatus of the leader arms [left, right] for recording ('' = none)"})
    command_topics: list[str] = field(default_factory=lambda: ["/arm_master_l_status", "/arm_master_r_status"],
                                 metadata={"help": "driver command topics [left, right]: what the followers follow (remote_slave), "
                                                   "their joint_control (joint_control_v1) or arm_cmd (normal) topic"})
    gripper_state_scale: float = field(default=1.0, metadata={"help": "profile gripper = driver feedback gripper x this"})
    gripper_command_scale: float = field(default=1.0, metadata={"help": "driver command gripper = profile gripper x this (0.2: X5-2023 in remote_slave)"})
    joint_control_mode: int = field(default=0, metadata={"help": "JointControl.mode sent in joint_control_v1"})
    robot_cmd_mode: int = field(default=5, metadata={"help": "RobotCmd.mode sent in normal mode (5 = joint control in ARX's SDK numbering)"})


def _interfaces(mode: str):
    """The ARX message classes (built from ARX's sources; not on PyPI)."""
    try:
        from arx5_arm_msg.msg import RobotCmd, RobotStatus
    except ImportError as exc:
        raise ValueError("the ARX bridge needs ARX's arx5_arm_msg package (ARX_X5 ROS2/X5_ws/src/arx5_arm_msg) built into "
                         "this workspace; build it with colcon and source the workspace") from exc
    joint_control = None
    if mode == "joint_control_v1":
        try:
            from arm_control.msg import JointControl as joint_control
        except ImportError as exc:
            raise ValueError("driver_mode joint_control_v1 needs ARX's arm_control message package built into this workspace") from exc
    return RobotStatus, RobotCmd, joint_control


class ArxBridgeNode(Node):
    def __init__(self, **kwargs):
        super().__init__("arx_bridge", **kwargs)
        self.params = p = declare_parameters(self, ArxBridgeParams)
        if p.driver_mode not in MODES:
            raise ValueError(f"driver_mode must be one of {MODES}, got {p.driver_mode!r}")
        for name in ("status_topics", "leader_status_topics", "command_topics"):
            if len(getattr(p, name)) != 2:
                raise ValueError(f"{name} needs two topics [left, right], got {getattr(p, name)}")
        for name in ("gripper_state_scale", "gripper_command_scale"):
            if not (np.isfinite(getattr(p, name)) and getattr(p, name) != 0):
                raise ValueError(f"{name} must be finite and non-zero")
        self.profile = profile = load_profile(p.robot)
        self.RobotStatus, self.RobotCmd, self.JointControl = _interfaces(p.driver_mode)
        if len(profile.state_sources) != 2 or len([c for c in profile.commands if c.interface == "joint_state"]) != 2:
            raise ValueError(f"robot profile {profile.name!r} needs two state topics and two joint_state command topics (per arm)")
        self.state_sources = profile.state_sources
        self.leader_sources = profile.leader_sources
        self.commands = [c for c in profile.commands if c.interface == "joint_state"]
        self.arm_index = [self._arm_indices(src.names.values()) for src in self.state_sources]
        for c in self.commands:
            self._arm_indices(c.names)  # 7 joints per arm, gripper last
        self.counts = {"status": 0, "leader": 0, "commands": 0, "rejected": 0}
        self._last_log = 0.0
        self.refused = ""
        status_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.state_pubs = [self.create_publisher(JointState, src.topic, reliable) for src in self.state_sources]
        for i, topic in enumerate(p.status_topics):
            self.create_subscription(self.RobotStatus, topic, lambda m, i=i: self._on_status(i, m, leader=False), status_qos)
        self.leader_pubs = {}
        for i, topic in enumerate(p.leader_status_topics):
            if topic and i < len(self.leader_sources):
                self.leader_pubs[i] = self.create_publisher(JointState, self.leader_sources[i].topic, reliable)
                self.create_subscription(self.RobotStatus, topic, lambda m, i=i: self._on_status(i, m, leader=True), status_qos)
        out_type = {"remote_slave": self.RobotStatus, "joint_control_v1": self.JointControl, "normal": self.RobotCmd}[p.driver_mode]
        self.cmd_pubs = [self.create_publisher(out_type, t, reliable) for t in p.command_topics]
        for i, c in enumerate(self.commands):
            self.create_subscription(JointState, c.topic, lambda m, i=i: self._on_command(i, m), reliable)
        self._joint_names = list(profile.joint_names)
        self._start = time.monotonic()
        self.get_logger().info(
            f"ARX bridge ({p.driver_mode}) for {profile.name!r}: {list(p.status_topics)} -> {[s.topic for s in self.state_sources]}; "
            f"{[c.topic for c in self.commands]} -> {list(p.command_topics)}; gripper x{p.gripper_state_scale:g} in, "
            f"x{p.gripper_command_scale:g} out")

    def _arm_indices(self, canonical) -> np.ndarray:
        idx = np.array([self.profile.index_of(c) for c in canonical])
        if len(idx) != 7 or idx[-1] not in self.profile.gripper_indices:
            raise ValueError(f"robot profile {self.profile.name!r}: each ARX arm topic needs 6 joints then the gripper, got "
                             f"{list(canonical)}")
        return idx

    # ---------------------------------------------------------------- driver -> suite
    def _on_status(self, arm: int, msg, leader: bool) -> None:
        q = np.asarray(msg.joint_pos, dtype=float)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            self._reject(f"status of arm {SIDES[arm]}: joint_pos must hold 7 finite values, got {q.tolist()}")
            return
        q = q.copy()
        q[6] *= self.params.gripper_state_scale
        vel = np.asarray(msg.joint_vel, dtype=float)
        cur = np.asarray(msg.joint_cur, dtype=float)
        src = (self.leader_sources if leader else self.state_sources)[arm]
        full = np.zeros(self.profile.dof)
        fv, fe = np.zeros(self.profile.dof), np.zeros(self.profile.dof)
        idx = self.arm_index[arm]
        full[idx] = q
        fv[idx] = vel if vel.shape == (7,) else 0.0
        fe[idx] = cur if cur.shape == (7,) else 0.0
        out = canonical_to_joint_state(src, self._joint_names, full, msg.header.stamp, fv, fe)
        (self.leader_pubs[arm] if leader else self.state_pubs[arm]).publish(out)
        self.counts["leader" if leader else "status"] += 1

    # ---------------------------------------------------------------- suite -> driver
    def _foreign_command_publishers(self, arm: int) -> list[str]:
        me = (self.get_name(), self.get_namespace())
        return [f"{i.node_namespace.rstrip('/')}/{i.node_name}" for i in self.get_publishers_info_by_topic(self.params.command_topics[arm])
                if (i.node_name, i.node_namespace) != me]

    def _on_command(self, arm: int, msg: JointState) -> None:
        if self.refused:
            return
        if time.monotonic() - self._start < DISCOVERY_GRACE:
            self.counts["early"] = self.counts.get("early", 0) + 1
            return
        cmd = self.commands[arm]
        # the command topic's names, read strictly by name (the profile's target names -> canonical)
        source = _CommandSource(cmd.topic, {drv: canon for canon, drv in cmd.names.items()})
        try:
            vals = joint_state_to_canonical(msg, source, self._joint_names)
        except ConversionError as exc:
            self._reject(str(exc))
            return
        order = {c: k for k, c in enumerate(vals.indices)}
        q = np.array([vals.position[order[i]] for i in self.arm_index_for_command(arm)])
        if not np.all(np.isfinite(q)):
            self._reject(f"{cmd.topic}: non-finite command {q.tolist()}")
            return
        if self.params.driver_mode == "remote_slave":
            others = self._foreign_command_publishers(arm)
            if others:
                self.refused = (f"Refusing to command the ARX follower: {others} also publish on {self.params.command_topics[arm]} "
                                f"(the leader arms' controller is running?). Stop the leader arms' X5Controller (v2_collect) before "
                                f"running a policy, then restart the bridge.")
                self.get_logger().error(self.refused)
                return
        self.cmd_pubs[arm].publish(self._driver_msg(q, msg))
        self.counts["commands"] += 1

    def arm_index_for_command(self, arm: int) -> np.ndarray:
        return np.array([self.profile.index_of(c) for c in self.commands[arm].names])

    def _driver_msg(self, q: np.ndarray, src: JointState):
        p = self.params
        grip = float(q[6] * p.gripper_command_scale)
        if p.driver_mode == "remote_slave":
            out = self.RobotStatus()
            out.header.stamp = src.header.stamp
            out.joint_pos = [float(v) for v in q[:6]] + [grip]
            return out
        if p.driver_mode == "joint_control_v1":
            out = self.JointControl()
            out.joint_pos = [float(v) for v in q[:6]] + [grip, 0.0]
            out.mode = int(p.joint_control_mode)
            return out
        out = self.RobotCmd()
        out.header.stamp = src.header.stamp
        out.joint_pos = [float(v) for v in q[:6]]
        out.gripper = grip
        out.mode = int(p.robot_cmd_mode)
        return out

    def _reject(self, text: str) -> None:
        self.counts["rejected"] += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_PERIOD:
            self._last_log = now
            self.get_logger().error(f"rejected ({self.counts['rejected']} so far): {text}")


@dataclass(frozen=True)
class _CommandSource:
    """A JointSource-shaped view of a command topic (driver name -> canonical name) for the strict by-name parser."""

    topic: str
    names: dict
    ignore: frozenset = frozenset()


def main(args=None) -> int:
    def on_exit(node: ArxBridgeNode) -> None:
        print(f"ARX bridge: {node.counts}", file=sys.stderr, flush=True)

    return run_node(ArxBridgeNode, args, on_exit=on_exit)


if __name__ == "__main__":
    sys.exit(main())
