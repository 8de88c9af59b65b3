"""The pyrealsense2 camera node without hardware: a ``rs.software_device`` with a colour sensor stands in for
a D435; frames pushed with known pixels and device timestamps must come out as Image + CameraInfo on the
profile's topics, stamped from the device's timestamps, with the stream's intrinsics."""
from __future__ import annotations

import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 is not installed (requirements/main.txt pins it)")

from motus_core.robot_profile import load_profile  # noqa: E402

ROBOT, ROLE = "aloha_agilex_2", "left_wrist"
W, H, FPS = 640, 480, 30


def software_camera(width=W, height=H, fps=FPS):
    dev = rs.software_device()
    dev.register_info(rs.camera_info.name, "software D435")
    dev.register_info(rs.camera_info.serial_number, "000000000001")
    sensor = dev.add_sensor("RGB Camera")
    intr = rs.intrinsics()
    intr.width, intr.height = width, height
    intr.fx, intr.fy, intr.ppx, intr.ppy = 615.0, 616.0, 321.5, 238.25
    intr.model = rs.distortion.brown_conrady
    intr.coeffs = [0.01, -0.02, 0.001, 0.002, 0.0]
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid = rs.stream.color, 0, 1
    vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = width, height, fps, 3, rs.format.rgb8
    vs.intrinsics = intr
    profile = sensor.add_video_stream(vs)
    return dev, sensor, profile, intr


def push(sensor, profile, pixels, timestamp_ms, number, domain=rs.timestamp_domain.global_time):
    f = rs.software_video_frame()
    f.pixels = pixels
    f.bpp = 3
    f.stride = pixels.shape[1] * 3
    f.timestamp = timestamp_ms
    f.domain = domain
    f.frame_number = number
    f.profile = profile.as_video_stream_profile()
    sensor.on_video_frame(f)


def test_profile_cameras_are_realsense_with_topics():
    p = load_profile(ROBOT)
    for cam in p.cameras.values():
        assert cam.driver == "realsense" and (cam.width, cam.height, cam.fps) == (640, 480, 30.0)
        assert cam.info_topic == cam.topic.rsplit("/", 1)[0] + "/camera_info"


@pytest.mark.parametrize("domain", ["global_time", "hardware_clock"])
def test_frames_come_out_stamped_by_the_device(ros_context, domain):
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    from motus_ros.nodes.realsense_node import RealsenseNode

    dom = getattr(rs.timestamp_domain, domain)
    cam = load_profile(ROBOT).camera(ROLE)
    dev, sensor, profile, intr = software_camera()
    node = RealsenseNode(device=dev, context=ros_context,
                         parameter_overrides=[Parameter("robot", value=ROBOT), Parameter("role", value=ROLE)])
    import rclpy

    probe = rclpy.create_node("rs_probe", context=ros_context)
    ex = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    ex.add_node(probe)
    images, infos = [], []
    probe.create_subscription(Image, cam.topic, images.append, 10)
    probe.create_subscription(CameraInfo, cam.info_topic, infos.append, 10)
    try:
        end = time.monotonic() + 10
        while node.image_pub.get_subscription_count() == 0 and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        t0 = 1_796_000_000_000.0  # ms since the epoch (global time: the host clock)
        sent = []
        for k in range(5):
            pixels = np.zeros((H, W, 3), np.uint8)
            pixels[..., 0] = 10 * k
            pixels[k, :, 1] = 255  # a row that moves per frame
            ts = t0 + k * 1000.0 / FPS
            push(sensor, profile, pixels, ts, k + 1, dom)
            sent.append((ts, pixels))
            end = time.monotonic() + 10
            while len(images) < k + 1 and time.monotonic() < end:
                ex.spin_once(timeout_sec=0.02)
        end = time.monotonic() + 5
        while len(infos) < 5 and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.02)
    finally:
        node.close()
        ex.shutdown()
        probe.destroy_node()
        node.destroy_node()
    assert len(images) == 5 and len(infos) >= 5
    stamps = [m.header.stamp.sec * 1e9 + m.header.stamp.nanosec for m in images]
    if domain == "global_time":  # host epoch time: used as is
        assert stamps == pytest.approx([ts * 1e6 for ts, _ in sent], abs=1e3)
    else:  # anchored at the first frame, then the device's clock
        assert np.diff(stamps) == pytest.approx(np.diff([ts * 1e6 for ts, _ in sent]), abs=1e3)
        assert abs(stamps[0] - time.time_ns()) < 60e9
    for m, (_, pixels) in zip(images, sent):
        assert (m.width, m.height, m.encoding, m.step, m.header.frame_id) == (W, H, "rgb8", W * 3, cam.frame_id)
        np.testing.assert_array_equal(np.frombuffer(bytes(m.data), np.uint8).reshape(H, W, 3), pixels)
    info = infos[0]
    assert info.header.stamp == images[0].header.stamp and info.header.frame_id == cam.frame_id
    assert (info.width, info.height) == (W, H)
    np.testing.assert_allclose(info.k, [615.0, 0, 321.5, 0, 616.0, 238.25, 0, 0, 1], rtol=1e-6)
    np.testing.assert_allclose(info.d, [0.01, -0.02, 0.001, 0.002, 0.0], rtol=1e-5, atol=1e-9)


def test_wrong_stream_is_a_clear_error(ros_context):
    from rclpy.parameter import Parameter

    from motus_ros.nodes.realsense_node import RealsenseNode

    dev, *_ = software_camera(width=424, height=240)
    with pytest.raises(ValueError, match="offers no RGB8 colour stream 640x480@30"):
        RealsenseNode(device=dev, context=ros_context, parameter_overrides=[Parameter("robot", value=ROBOT), Parameter("role", value=ROLE)])


def test_missing_serial_is_a_clear_error(ros_context):
    from rclpy.parameter import Parameter

    from motus_ros.nodes.realsense_node import RealsenseNode

    with pytest.raises(ValueError, match="not found"):
        RealsenseNode(context=ros_context, parameter_overrides=[Parameter("robot", value=ROBOT), Parameter("role", value=ROLE),
                                                                Parameter("serial", value="123456789012")])
