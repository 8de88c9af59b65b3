"""The executor's output adapter: one kind of command message to the robot's driver or controller.

* ``joint_trajectory``: ``trajectory_msgs/JointTrajectory`` per joint_trajectory target of the profile.
* ``follow_joint_trajectory``: ``control_msgs/FollowJointTrajectory`` goals to
  ``<controller>/follow_joint_trajectory`` (each goal preempts the previous one; control_msgs is not on
  PyPI: without it the interface is refused at start with a clear error).
* ``joint_state``: ``sensor_msgs/JointState`` position commands, one message per target (per arm for the
  AgileX and ARX drivers), every joint named in the profile's order for that target. Each target's
  ``rate_hz`` and ``max_step`` (robot profile) are applied here (:class:`CommandShaper`): at most
  ``rate_hz`` messages per second and no joint moving more than its bound between two messages sent
  (clamped, counted, logged at most every 2 s). Piper drivers re-plan a MOVE J per message, so a dense
  stream makes the arm shake (piper_ros #52).

Driver mode check (profile ``driver.exclusive_command_topics``, on for real robots): another node
publishing on a command topic means the driver does not listen to us (a Piper master/slave node in read
mode publishes the leaders' targets there; or a teleop or a second controller runs). The adapter then
refuses: it sends nothing more, disables the executor and says what to do. Nothing is sent during
the first ``DISCOVERY_GRACE`` s (DDS discovery of the other publishers), then checked every ``CHECK_PERIOD`` s.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from motus_ros.runtime_msgs import command_targets, joint_state_command, trajectory_msg

CHECK_PERIOD = 1.0  # s (wall) between driver-mode checks
DISCOVERY_GRACE = 2.0  # s (wall) after start before the first command to an exclusive driver (discovery takes up to ~3 s)
LOG_PERIOD = 2.0  # s (wall) between log lines about clamped steps


class CommandShaper:
    """Rate and per-message step bound of one JointState target (ROS-free, for the tests).

    ``rate_hz`` 0 sends every command; ``bounds`` (per joint of the target, NaN = unbounded) limits the
    change of each joint between two messages sent; ``reference`` is where the first message is bounded
    from (the measured pose when known, else the first command)."""

    def __init__(self, rate_hz: float, bounds: np.ndarray):
        self.period = 1.0 / rate_hz if rate_hz > 0 else 0.0
        self.bounds = np.asarray(bounds, dtype=float)
        self.last_sent: np.ndarray | None = None
        self.last_stamp: float | None = None
        self.clamped_messages = 0
        self.sent = 0

    def due(self, stamp: float) -> bool:
        if self.period <= 0 or self.last_stamp is None:
            return True
        # a quarter-tick tolerance so that e.g. 50 Hz out of a 200 Hz loop is every 4th tick, not every 5th
        return stamp - self.last_stamp >= self.period * 0.999 - 1e-6

    def shape(self, stamp: float, target: np.ndarray, reference: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """The position to send for ``target`` (bounded), and whether it was clamped."""
        target = np.asarray(target, dtype=float)
        base = self.last_sent if self.last_sent is not None else reference
        out = target
        clamped = False
        if base is not None and np.all(np.isfinite(base)):
            limit = np.where(np.isfinite(self.bounds), self.bounds, np.inf)
            out = np.clip(target, base - limit, base + limit)
            clamped = bool(np.any(out != target))
        self.last_sent = out.copy()
        self.last_stamp = stamp
        self.sent += 1
        self.clamped_messages += int(clamped)
        return out, clamped


@dataclass
class _Target:
    topic: str
    indices: list[int]
    names: list[str]
    shaper: CommandShaper | None = None


class DriverModeError(RuntimeError):
    """Someone else commands the driver (or the driver is in read mode)."""


class CommandOutput:
    """One kind of command message to the robot (per-target publishers or action clients)."""

    def __init__(self, node, interface: str):
        self.node = node
        self.interface = interface
        profile = node.profile
        self.profile = profile
        kind = "joint_trajectory" if interface == "follow_joint_trajectory" else interface
        self.targets = command_targets(profile, kind)  # (topic, canonical indices, driver names)
        if not self.targets:
            raise ValueError(f"robot profile {profile.name!r} has no {kind} command target")
        by_topic = {t.topic: t for t in profile.commands if t.interface == kind}
        self._targets: list[_Target] = []
        for topic, idx, names in self.targets:
            shaper = None
            spec = by_topic[topic]
            if interface == "joint_state" and (spec.rate_hz > 0 or spec.max_step):
                canon = [profile.joint_names[i] for i in idx]
                bounds = np.array([spec.max_step.get(c, np.nan) for c in canon])
                shaper = CommandShaper(spec.rate_hz, bounds)
            self._targets.append(_Target(topic, list(idx), list(names), shaper))
        self.pubs = []
        self.clients = []
        if interface == "follow_joint_trajectory":
            try:
                from control_msgs.action import FollowJointTrajectory
            except ImportError as exc:
                raise ValueError(
                    "command_interface follow_joint_trajectory needs control_msgs (ros-<distro>-control-msgs), which is "
                    "not installed here (it is not on PyPI; tools/build_ros2_upstream.sh builds it); use joint_trajectory "
                    "(topic) instead") from exc
            from rclpy.action import ActionClient

            self._goal_type = FollowJointTrajectory
            for topic, _, _ in self.targets:
                action = topic.rsplit("/", 1)[0] + "/follow_joint_trajectory"
                self.clients.append(ActionClient(node, FollowJointTrajectory, action))
        else:
            msg_type = JointTrajectory if interface == "joint_trajectory" else JointState
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
            self.pubs = [node.create_publisher(msg_type, topic, qos) for topic, _, _ in self.targets]
        self.exclusive = bool(profile.driver.exclusive_command_topics) and interface != "follow_joint_trajectory"
        self.refused: str = ""  # why nothing is sent any more ("" = sending)
        self._next_check = 0.0
        self._send_after = time.monotonic() + (DISCOVERY_GRACE if self.exclusive else 0.0)
        self._last_clamp_log = 0.0

    # ------------------------------------------------------------------ driver mode
    def foreign_publishers(self) -> dict[str, list[str]]:
        """Command topic -> the other nodes publishing on it."""
        me = (self.node.get_name(), self.node.get_namespace())
        out = {}
        for t in self._targets:
            others = [f"{i.node_namespace.rstrip('/')}/{i.node_name}" for i in self.node.get_publishers_info_by_topic(t.topic)
                      if (i.node_name, i.node_namespace) != me]
            if others:
                out[t.topic] = sorted(set(others))
        return out

    def check_driver_mode(self) -> str:
        """'' when nobody else publishes on the command topics; else the refusal (also stored in ``refused``)."""
        if not self.exclusive or self.refused:
            return self.refused
        foreign = self.foreign_publishers()
        if foreign:
            where = "; ".join(f"{topic} by {', '.join(nodes)}" for topic, nodes in foreign.items())
            hint = {
                "piper_ms_node": "the Piper master/slave node is in read mode (it publishes the leader arms' targets there): "
                                 "unplug the leader arms, restart the node in control mode, then restart the executor",
                "piper_ctrl_single_node": "stop the other node (a teleop, a second executor, rviz_ctrl) that commands the arms, "
                                          "then restart the executor",
            }.get(self.profile.driver.kind, "stop the other node that commands the robot, then restart the executor")
            self.refused = (f"Refusing to command the robot: another node publishes on its command topic ({where}). "
                            f"Commands from two sources make the arm jump between them. {hint}.")
            self.node.get_logger().error(self.refused)
            self._disable_executor(self.refused)
        return self.refused

    def _disable_executor(self, reason: str) -> None:
        core, lock = getattr(self.node, "core", None), getattr(self.node, "lock", None)
        if core is None or not hasattr(core, "set_enabled"):
            return
        try:
            if lock is not None:
                with lock:
                    core.set_enabled(self.node.now(), False, reason)
            else:
                core.set_enabled(self.node.now(), False, reason)
        except Exception as exc:  # noqa: BLE001 - the refusal stands (nothing is published) whatever the core says
            self.node.get_logger().warning(f"could not disable the executor: {exc}")

    # ------------------------------------------------------------------ publishing
    def _measured(self) -> np.ndarray | None:
        joints = getattr(self.node, "_joints", None)
        if joints is None or not getattr(joints, "complete", False):
            return None
        return np.asarray(joints.position, dtype=float)

    def poll_driver_mode(self) -> bool:
        """The throttled driver-mode check; True when commands may go out now. Also called while the
        executor is disabled, so that an operator sees a refusal before enabling, not after."""
        if not self.exclusive:
            return True
        wall = time.monotonic()
        if wall >= self._next_check:
            self._next_check = wall + (CHECK_PERIOD if wall >= self._send_after else 0.2)
            self.check_driver_mode()
        return not self.refused and wall >= self._send_after

    def publish(self, cmd, preview) -> None:
        if not self.poll_driver_mode():
            return
        if self.interface == "joint_state":
            self._publish_joint_states(cmd)
            return
        if preview is None:
            return
        times, P, V, A = preview
        for i, (_, idx, names) in enumerate(self.targets):
            msg = trajectory_msg(cmd.stamp, times, P, V, A, idx, names)
            if self.interface == "joint_trajectory":
                self.pubs[i].publish(msg)
            else:
                goal = self._goal_type.Goal()
                goal.trajectory = msg
                self.clients[i].send_goal_async(goal)

    def _publish_joint_states(self, cmd) -> None:
        with_velocity = bool(getattr(self.node.params, "joint_state_velocity", False))
        measured = None
        for pub, t in zip(self.pubs, self._targets):
            position = np.asarray(cmd.position, dtype=float)
            velocity = cmd.velocity if with_velocity else None
            if t.shaper is not None:
                if not t.shaper.due(cmd.stamp):
                    continue
                if t.shaper.last_sent is None and measured is None:
                    measured = self._measured()
                ref = measured[t.indices] if measured is not None else None
                shaped, clamped = t.shaper.shape(cmd.stamp, position[t.indices], ref)
                if clamped:
                    self._log_clamp(t)
                position = position.copy()
                position[t.indices] = shaped
            pub.publish(joint_state_command(cmd.stamp, position, velocity, t.indices, t.names))

    def _log_clamp(self, t: _Target) -> None:
        wall = time.monotonic()
        if wall - self._last_clamp_log >= LOG_PERIOD:
            self._last_clamp_log = wall
            self.node.get_logger().warning(
                f"{t.topic}: command step larger than the profile's max_step, clamped ({t.shaper.clamped_messages} of "
                f"{t.shaper.sent} messages so far)")

    def stats(self) -> dict:
        """Messages sent and clamped per JointState target (for summaries and tests)."""
        return {t.topic: {"sent": t.shaper.sent, "clamped": t.shaper.clamped_messages} for t in self._targets if t.shaper}
