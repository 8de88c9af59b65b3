"""A RealSense colour camera through pyrealsense2: ``sensor_msgs/Image`` + ``CameraInfo``, stamped by the device.

The robot graphs start ``realsense2_camera`` per camera where it is installed (apt); this node is the
fallback for machines without it (pip-only), one process per camera. Parameters come from the robot
profile's camera entry (``robot`` + ``role``): serial number, width x height @ fps, topic, camera_info
topic, frame_id; each can be overridden.

* Colour stream only (RGB8), opened at the sensor level (no pipeline thread); frames go through a
  small ``rs.frame_queue`` to the ROS thread, which publishes what arrived (a full queue drops the
  oldest frames: latency before completeness).
* Stamps from the device (``frame.get_timestamp()``, ms): in the ``global_time`` domain (default for
  D400 cameras; the node turns ``global_time_enabled`` on) and ``system_time`` the timestamp is host
  epoch time and is used as is, so the stamps of several cameras are comparable (as realsense2_camera
  does). In the ``hardware_clock`` domain the first frame is anchored to the node clock and later frames
  follow the device clock (it may reset: a warning says so).
* CameraInfo from the stream's intrinsics (Brown-Conrady -> ``plumb_bob``), once per image, same stamp.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import motus_ros  # noqa: F401  (DDS environment before rclpy)
from motus_ros.node_main import run_node  # noqa: E402
import numpy as np
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from motus_core.robot_profile import load_profile
from motus_ros.conversions import image_msg
from motus_ros.params import declare_parameters

NS = 1_000_000_000


@dataclass
class RealsenseParams:
    robot: str = field(default="aloha_agilex_2", metadata={"help": "robot profile: the camera's serial, size, rate, topics"})
    role: str = field(default="high", metadata={"help": "camera role in the profile (high, left_wrist, right_wrist)"})
    serial: str = field(default="", metadata={"help": "device serial number ('' = the profile's; the only device when the profile has none)"})
    width: int = field(default=0, metadata={"help": "image width (0 = the profile's)"})
    height: int = field(default=0, metadata={"help": "image height (0 = the profile's)"})
    fps: int = field(default=0, metadata={"help": "frame rate (0 = the profile's)"})
    topic: str = field(default="", metadata={"help": "Image topic ('' = the profile's)"})
    info_topic: str = field(default="", metadata={"help": "CameraInfo topic ('' = the profile's)"})
    frame_id: str = field(default="", metadata={"help": "frame_id ('' = the profile's)"})
    queue_size: int = field(default=2, metadata={"help": "frames buffered between the device thread and ROS (oldest dropped)"})
    poll_rate_hz: float = field(default=200.0, metadata={"help": "how often the ROS thread looks for new frames"})
    device_timeout: float = field(default=10.0, metadata={"help": "s without a frame before the node reports the camera lost"})


def camera_info_from_intrinsics(intr, stamp: Time, frame_id: str) -> CameraInfo:
    """``rs.intrinsics`` -> ``sensor_msgs/CameraInfo`` (Brown-Conrady/none -> plumb_bob, 5 coefficients)."""
    info = CameraInfo()
    info.header.stamp = stamp
    info.header.frame_id = frame_id
    info.width, info.height = int(intr.width), int(intr.height)
    info.distortion_model = "plumb_bob"
    info.d = [float(c) for c in list(intr.coeffs)[:5]]
    fx, fy, cx, cy = float(intr.fx), float(intr.fy), float(intr.ppx), float(intr.ppy)
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class DeviceClock:
    """Frame timestamp (ms, domain) -> ROS stamp (ns)."""

    def __init__(self, now_ns):
        self.now_ns = now_ns
        self._anchor: tuple[int, float] | None = None  # (ROS ns, device ms) of the first hardware_clock frame
        self.warned = False

    def stamp_ns(self, timestamp_ms: float, domain) -> int:
        import pyrealsense2 as rs

        if domain == rs.timestamp_domain.hardware_clock:
            if self._anchor is None or timestamp_ms < self._anchor[1]:  # first frame, or the device clock reset
                self._anchor = (self.now_ns(), timestamp_ms)
            return self._anchor[0] + int(round((timestamp_ms - self._anchor[1]) * 1e6))
        return int(round(timestamp_ms * 1e6))


class RealsenseNode(Node):
    def __init__(self, device=None, **kwargs):
        """``device``: an ``rs.device`` to use (tests pass a software device); else found by serial."""
        super().__init__("realsense", **kwargs)
        import pyrealsense2 as rs

        self.rs = rs
        self.params = p = declare_parameters(self, RealsenseParams)
        profile = load_profile(p.robot)
        cam = profile.camera(p.role)
        self.width, self.height = p.width or cam.width, p.height or cam.height
        self.fps = p.fps or int(round(cam.fps))
        self.frame_id = p.frame_id or cam.frame_id
        topic, info_topic = p.topic or cam.topic, p.info_topic or cam.info_topic
        serial = p.serial or cam.serial
        self.device = device if device is not None else self._find_device(serial)
        self.sensor, self.stream = self._color_stream(self.device)
        try:
            if self.sensor.supports(rs.option.global_time_enabled):
                self.sensor.set_option(rs.option.global_time_enabled, 1)  # host-clock stamps comparable across cameras
        except RuntimeError:
            pass  # read-only on some devices / software devices
        self.intrinsics = self.stream.as_video_stream_profile().get_intrinsics()
        self.clock_map = DeviceClock(lambda: self.get_clock().now().nanoseconds)
        self.queue = rs.frame_queue(max(1, p.queue_size), keep_frames=True)
        qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.image_pub = self.create_publisher(Image, topic, qos)
        self.info_pub = self.create_publisher(CameraInfo, info_topic, qos)
        self.published = 0
        self._last_frame = time.monotonic()
        self._lost_reported = False
        self._warned_domain = False
        self.sensor.open(self.stream)
        self.sensor.start(self.queue)
        self.create_timer(1.0 / p.poll_rate_hz, self._poll)
        name = self.device.get_info(rs.camera_info.name) if self.device.supports(rs.camera_info.name) else "device"
        self.get_logger().info(f"RealSense {name} ({serial or 'first device'}) colour {self.width}x{self.height}@{self.fps} -> {topic}, "
                               f"{info_topic} (frame {self.frame_id!r})")

    def _find_device(self, serial: str):
        rs = self.rs
        devices = list(rs.context().query_devices())
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
        if serial:
            if serial not in serials:
                raise ValueError(f"RealSense {serial} not found (connected: {serials or 'none'}); check the cable/USB port and the "
                                 f"serial in the robot profile")
            return devices[serials.index(serial)]
        if len(devices) != 1:
            raise ValueError(f"no serial given and {len(devices)} RealSense devices connected ({serials}): set cameras.<role>.serial in "
                             f"the robot profile")
        return devices[0]

    def _color_stream(self, device):
        rs = self.rs
        offered = []
        for sensor in device.query_sensors():
            for sp in sensor.get_stream_profiles():
                if sp.stream_type() != rs.stream.color or not sp.is_video_stream_profile():
                    continue
                v = sp.as_video_stream_profile()
                offered.append(f"{v.width()}x{v.height()}@{sp.fps()} {sp.format()}")
                if (v.width(), v.height(), sp.fps(), sp.format()) == (self.width, self.height, self.fps, rs.format.rgb8):
                    return sensor, sp
        raise ValueError(f"the camera offers no RGB8 colour stream {self.width}x{self.height}@{self.fps}; offered: {sorted(set(offered))}")

    def _poll(self) -> None:
        while True:
            ok, frame = self.queue.try_wait_for_frame(0)
            if not ok:
                break
            self._publish(frame.as_video_frame())
        if time.monotonic() - self._last_frame > self.params.device_timeout and not self._lost_reported:
            self._lost_reported = True
            self.get_logger().error(f"no frame for {self.params.device_timeout:.0f} s: camera unplugged or USB bandwidth exhausted")

    def _publish(self, frame) -> None:
        rs = self.rs
        domain = frame.get_frame_timestamp_domain()
        if domain == rs.timestamp_domain.hardware_clock and not self._warned_domain:
            self._warned_domain = True
            self.get_logger().warning("frames in the hardware_clock domain: stamps follow the device clock from the first frame and "
                                      "may drift from other cameras (enable global time / metadata support)")
        ns = self.clock_map.stamp_ns(frame.get_timestamp(), domain)
        stamp = Time(sec=ns // NS, nanosec=ns % NS)
        pixels = np.asanyarray(frame.get_data())
        if pixels.shape != (self.height, self.width, 3):
            pixels = pixels.reshape(self.height, self.width, 3)
        self.image_pub.publish(image_msg(pixels, stamp, self.frame_id, "rgb8"))
        self.info_pub.publish(camera_info_from_intrinsics(self.intrinsics, stamp, self.frame_id))
        self.published += 1
        self._last_frame = time.monotonic()
        self._lost_reported = False

    def close(self) -> None:
        for call in (self.sensor.stop, self.sensor.close):
            try:
                call()
            except RuntimeError:
                pass


def main(args=None) -> int:
    def on_exit(node: RealsenseNode) -> None:
        node.close()
        print(f"realsense {node.params.role}: {node.published} frames published", file=sys.stderr, flush=True)

    return run_node(RealsenseNode, args, on_exit=on_exit)


if __name__ == "__main__":
    sys.exit(main())
