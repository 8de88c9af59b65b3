"""Record the visualisation into an MCAP file that Foxglove opens; render contact sheets from it.

Where rviz is not available (pip-only installs, headless servers):

    mcap_viz_recorder --output viz.mcap --duration 60          # record (also a node of the graph: viz_mcap:=FILE)
    mcap_viz_recorder sheets viz.mcap --out sheets/             # predicted-vs-actual PNG per prediction
    mcap_viz_recorder --output viz.mcap --png_dir sheets/       # ... or save the live contact sheets while recording

Recording subscribes with ``raw=True`` and writes the ROS 2 CDR bytes unchanged through foxglove-sdk
(``message_encoding='cdr'``) with ``ros2msg`` schemas from rosbags, so Foxglove (and ``mcap_ros2``)
decode every message, including ``motus_msgs``. Topics are subscribed as soon as a publisher appears,
with the publisher's type and a compatible QoS. Where nothing publishes ``/tf`` (no
robot_state_publisher), the robot's and the ghost's link transforms are computed from the URDF and
the joint states and written as ``/tf`` + ``/tf_static``, and the URDF as ``/robot_description``, so
Foxglove's 3D panel shows both robot models next to the trajectory markers.

Options of ``record`` are the fields of ``VizRecorderConfig`` (also settable as ROS parameters).
"""
from __future__ import annotations

import motus_ros  # noqa: F401  (DDS environment before rclpy)
from motus_ros.node_main import log_summary, run_node  # noqa: E402

import argparse
import importlib
import sys
import time
import typing
from collections import Counter
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image, JointState

from motus_core.robot_profile import load_profile
from motus_core.viz.config import VizRecorderConfig
from motus_core.viz.frames import VizInputError
from motus_core.viz.kinematics import KinematicsError, UrdfTree, load_urdf
from motus_core.viz.mcap_sheets import SchemaError, message_definition, normalize_type, render_sheets
from motus_core.viz.render import save_png
from motus_ros.params import declare_parameters, parameter_fields
from motus_ros.conversions import image_msg_to_rgb

TF_RATE_HZ = 30.0


def _msg_class(type_name: str):
    pkg, _, name = normalize_type(type_name).split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def recorded_topics(cfg: VizRecorderConfig, profile) -> list[str]:
    """Every topic the recorder looks for (subscribed once a publisher appears)."""
    prefix = "/" + cfg.viz_prefix.strip("/")
    topics = [f"{prefix}/predicted/{r}" for r in profile.cameras]
    topics += [f"{prefix}/comparison", f"{prefix}/contact_sheet", f"{prefix}/contact_sheet_vs_actual", f"{prefix}/trajectory",
               f"/{cfg.ghost_prefix.strip('/')}/joint_states", cfg.action_chunk_topic, cfg.predicted_future_topic,
               "/tf", "/tf_static", "/robot_description"]
    if cfg.record_live:
        topics += [c.topic for c in profile.cameras.values()] + [s.topic for s in profile.state_sources]
    topics += list(cfg.extra_topics or [])  # an empty list parameter reads back as None
    seen: list[str] = []
    for t in topics:
        if t and t not in seen:
            seen.append(t)
    return seen


class _TfWriter:
    """Link transforms of the robot and the ghost from joint states, serialised with rosbags (CDR)."""

    def __init__(self, urdf_path: Path, ghost_prefix: str):
        from rosbags.typesys import Stores, get_typestore

        self.tree = UrdfTree(load_urdf(urdf_path))
        self.urdf_text = urdf_path.read_text()
        self.store = get_typestore(Stores.LATEST)
        self.ghost = ghost_prefix.strip("/") + "/"
        self._last: dict[str, float] = {}
        t = self.store.types
        self.T, self.Header, self.Time = t["tf2_msgs/msg/TFMessage"], t["std_msgs/msg/Header"], t["builtin_interfaces/msg/Time"]
        self.TS, self.Tr = t["geometry_msgs/msg/TransformStamped"], t["geometry_msgs/msg/Transform"]
        self.V, self.Q = t["geometry_msgs/msg/Vector3"], t["geometry_msgs/msg/Quaternion"]
        self.String = t["std_msgs/msg/String"]

    def _stamped(self, stamp_ns: int, parent: str, child: str, m: np.ndarray):
        from scipy.spatial.transform import Rotation

        x, y, z, w = Rotation.from_matrix(m[:3, :3]).as_quat()
        header = self.Header(stamp=self.Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=parent)
        tr = self.Tr(translation=self.V(x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3])), rotation=self.Q(x=x, y=y, z=z, w=w))
        return self.TS(header=header, child_frame_id=child, transform=tr)

    def _tf(self, stamp_ns: int, items) -> bytes:
        msg = self.T(transforms=[self._stamped(stamp_ns, p, c, m) for p, c, m in items])
        return bytes(self.store.serialize_cdr(msg, "tf2_msgs/msg/TFMessage"))

    def static(self, stamp_ns: int) -> bytes:
        fixed = self.tree.fixed_transforms()
        items = fixed + [(self.ghost + p, self.ghost + c, m) for p, c, m in fixed]
        items.append((self.tree.root, self.ghost + self.tree.root, np.eye(4)))  # the ghost stands where the robot stands
        return self._tf(stamp_ns, items)

    def moving(self, stamp_ns: int, values: dict[str, float], ghost: bool) -> bytes | None:
        key = "ghost" if ghost else "robot"
        now = time.monotonic()
        if now - self._last.get(key, 0.0) < 1.0 / TF_RATE_HZ:
            return None
        self._last[key] = now
        items = self.tree.moving_transforms(values)
        if ghost:
            items = [(self.ghost + p, self.ghost + c, m) for p, c, m in items]
        return self._tf(stamp_ns, items)

    def description(self) -> bytes:
        return bytes(self.store.serialize_cdr(self.String(data=self.urdf_text), "std_msgs/msg/String"))


class VizRecorder(Node):
    def __init__(self, overrides: list[Parameter] | None = None):
        super().__init__("mcap_viz_recorder", parameter_overrides=overrides or [])
        import foxglove

        self.cfg: VizRecorderConfig = declare_parameters(self, VizRecorderConfig)
        self.profile = load_profile(self.cfg.robot)
        self.output = Path(self.cfg.output).expanduser().resolve()
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._fox = foxglove
        self._ctx = foxglove.Context()
        self._writer = foxglove.open_mcap(str(self.output), allow_overwrite=bool(self.cfg.overwrite), context=self._ctx)
        self._channels: dict[str, object] = {}
        self._wanted = recorded_topics(self.cfg, self.profile)
        self._subscribed: set[str] = set()
        self._bad_types: set[str] = set()
        self.counts: Counter[str] = Counter()
        self._png_dir = Path(self.cfg.png_dir).expanduser() if self.cfg.png_dir else None
        self._start = time.monotonic()
        self.done = False
        self._tf: _TfWriter | None = None
        self._tf_static_written = False
        prefix = "/" + self.cfg.viz_prefix.strip("/")
        self._sheet_topics = {f"{prefix}/contact_sheet", f"{prefix}/contact_sheet_vs_actual"}
        self._ghost_topic = f"/{self.cfg.ghost_prefix.strip('/')}/joint_states"
        if self.cfg.tf_from_joint_states or self.cfg.robot_description:
            try:
                if not (self.cfg.urdf or self.profile.urdf):
                    raise KinematicsError(f"profile {self.profile.name!r} names no URDF")
                urdf = Path(self.cfg.urdf).expanduser() if self.cfg.urdf else self.profile.resolve(self.profile.urdf)
                self._tf = _TfWriter(urdf, self.cfg.ghost_prefix)
            except KinematicsError as exc:
                self.get_logger().warning(f"No robot model in the recording: {exc}")
        self.create_timer(0.5, self._discover)
        self._discover()
        self.get_logger().info(f"Recording {len(self._wanted)} topics into {self.output} (each once it has a publisher)")

    # --------------------------------------------------------------------------------- channels
    def _channel(self, topic: str, type_name: str):
        ch = self._channels.get(topic)
        if ch is None:
            schema = self._fox.Schema(name=normalize_type(type_name), encoding="ros2msg", data=message_definition(type_name).encode())
            ch = self._fox.Channel(topic, schema=schema, message_encoding="cdr", context=self._ctx)
            self._channels[topic] = ch
        return ch

    def _log_time(self) -> int:
        ns = self.get_clock().now().nanoseconds
        return ns if ns > 0 else time.time_ns()

    def _write(self, topic: str, type_name: str, data: bytes) -> None:
        self._channel(topic, type_name).log(data, log_time=self._log_time())
        self.counts[topic] += 1

    # -------------------------------------------------------------------------------- discovery
    def _qos_for(self, infos) -> QoSProfile:
        reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10 if not latched else 1,
                          reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _discover(self) -> None:
        if self.cfg.duration > 0 and time.monotonic() - self._start >= self.cfg.duration:
            self.done = True
            return
        for topic in self._wanted:
            if topic in self._subscribed:
                continue
            infos = self.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            type_name = infos[0].topic_type
            try:
                cls = _msg_class(type_name)
                self._channel(topic, type_name)
            except (ImportError, AttributeError, SchemaError) as exc:
                if type_name not in self._bad_types:
                    self._bad_types.add(type_name)
                    self.get_logger().warning(f"Not recording {topic}: type {type_name} unavailable ({exc})")
                continue
            self.create_subscription(cls, topic, lambda data, t=topic, n=type_name: self._on_raw(t, n, data), self._qos_for(infos), raw=True)
            self._subscribed.add(topic)
            self.get_logger().info(f"Recording {topic} ({type_name})")
        self._write_robot_model()

    def _write_robot_model(self) -> None:
        if self._tf is None:
            return
        if self.cfg.robot_description and "/robot_description" not in self._subscribed and "/robot_description" not in self.counts \
                and not self.get_publishers_info_by_topic("/robot_description"):
            self._write("/robot_description", "std_msgs/msg/String", self._tf.description())
        if self.cfg.tf_from_joint_states and not self._tf_static_written and not self._tf_published_elsewhere():
            self._write("/tf_static", "tf2_msgs/msg/TFMessage", self._tf.static(self._log_time()))
            self._tf_static_written = True

    def _tf_published_elsewhere(self) -> bool:
        return bool(self.get_publishers_info_by_topic("/tf"))

    # -------------------------------------------------------------------------------- callbacks
    def _on_raw(self, topic: str, type_name: str, data: bytes) -> None:
        try:
            self._write(topic, type_name, data)
            if self._png_dir is not None and topic in self._sheet_topics:
                self._save_sheet(topic, data)
            if self._tf is not None and self._tf_static_written and normalize_type(type_name) == "sensor_msgs/msg/JointState":
                self._write_tf(topic, data)
        except (VizInputError, ValueError, RuntimeError) as exc:
            self.counts["rejected"] += 1
            self.get_logger().warning(f"Could not process a message on {topic}: {exc}", throttle_duration_sec=5.0)

    def _save_sheet(self, topic: str, data: bytes) -> None:
        msg = deserialize_message(data, Image)
        kind = "vs_actual" if topic.endswith("vs_actual") else "predicted"
        t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        save_png(image_msg_to_rgb(msg), self._png_dir / f"sheet_{t:012.3f}_{kind}.png")

    def _write_tf(self, topic: str, data: bytes) -> None:
        msg = deserialize_message(data, JointState)
        if len(msg.name) != len(msg.position) or not np.all(np.isfinite(msg.position)):
            raise VizInputError(f"{topic}: malformed joint state")
        blob = self._tf.moving(self._log_time(), dict(zip(msg.name, msg.position)), ghost=topic == self._ghost_topic)
        if blob is not None:
            self._write("/tf", "tf2_msgs/msg/TFMessage", blob)

    def close(self) -> None:
        self._writer.close()
        size = self.output.stat().st_size if self.output.exists() else 0
        summary = ", ".join(f"{t} {n}" for t, n in sorted(self.counts.items())) or "no messages"
        text = f"Wrote {self.output} ({size / 1e6:.1f} MB): {summary}"
        log_summary(self, text)


# ------------------------------------------------------------------------------------ command line
def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {v!r}")


def _record_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mcap_viz_recorder", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, f, tp in parameter_fields(VizRecorderConfig):
        kwargs: dict = {"help": f.metadata.get("help", ""), "default": None}
        if tp is bool:
            kwargs["type"] = _bool
        elif typing.get_origin(tp) is list:
            kwargs["nargs"] = "*"
        else:
            kwargs["type"] = tp
        p.add_argument(f"--{name}", **kwargs)
    return p


def _sheets_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mcap_viz_recorder sheets", description="Render predicted-vs-actual contact sheets (PNG) from an MCAP recording.")
    p.add_argument("mcap", help="recording (mcap_viz_recorder output or any MCAP with the prediction and camera topics)")
    p.add_argument("--out", default="sheets", help="output directory")
    p.add_argument("--robot", default="sim_aloha", help="robot profile (camera topics and sizes)")
    p.add_argument("--predicted_topic", default=VizRecorderConfig.predicted_future_topic)
    p.add_argument("--tolerance", type=float, default=0.04, help="largest |live stamp - predicted time| (s)")
    p.add_argument("--tile_width", type=int, default=160)
    return p


def sheets_main(argv: list[str]) -> int:
    ns = _sheets_parser().parse_args(argv)
    if not Path(ns.mcap).is_file():
        print(f"mcap_viz_recorder sheets: {ns.mcap} not found", file=sys.stderr)
        return 2
    written = render_sheets(ns.mcap, ns.out, load_profile(ns.robot), predicted_topic=ns.predicted_topic,
                            tolerance=ns.tolerance, tile_width=ns.tile_width)
    print(f"wrote {len(written)} contact sheets to {ns.out}")
    return 0


def main(args: list[str] | None = None) -> int:
    argv = list(sys.argv if args is None else args)
    from rclpy.utilities import remove_ros_args

    plain = remove_ros_args(argv)[1:]
    if plain and plain[0] == "sheets":
        return sheets_main(plain[1:])
    if plain and plain[0] == "record":
        plain = plain[1:]
    ns = _record_parser().parse_args(plain)
    overrides = [Parameter(k, value=(list(v) if isinstance(v, list) else v)) for k, v in vars(ns).items() if v is not None and v != []]
    def spin(node: VizRecorder) -> int:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
        return 0

    return run_node(lambda: VizRecorder(overrides), argv, spin=spin, on_exit=VizRecorder.close)


if __name__ == "__main__":
    sys.exit(main())
