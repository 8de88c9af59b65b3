"""motus_ros.conversions: images, camera info, joint states <-> canonical vectors, time (the
cv_bridge replacement), with real rclpy message types and their serialization."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, JointState

from motus_core.robot_profile import load_profile
from motus_ros.conversions import (
    ConversionError,
    JointVectorAssembler,
    camera_info_msg,
    canonical_to_joint_state,
    duration_msg,
    duration_to_sec,
    header_stamp_from_cdr,
    image_msg,
    image_msg_to_rgb,
    ImageError,
    joint_state_to_canonical,
    time_msg,
    time_to_ns,
    time_to_sec,
)


def test_time_round_trips_to_the_nanosecond():
    for s in (0.0, 1.5, 12.345678901, 1e6 + 0.000000001):
        t = time_msg(s)
        assert 0 <= t.nanosec < 1_000_000_000
        assert time_to_ns(t) == int(round(s * 1e9))
        assert time_to_sec(t) == pytest.approx(s, abs=1e-9)
    assert duration_to_sec(duration_msg(2.25)) == 2.25


def test_image_round_trip_rgb_bgr_mono_through_serialization():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    msg = deserialize_message(serialize_message(image_msg(rgb, 3.5, "cam")), Image)
    assert (msg.width, msg.height, msg.step, msg.encoding, msg.header.frame_id) == (7, 5, 21, "rgb8", "cam")
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    bgr = image_msg(rgb[:, :, ::-1], 0.0, encoding="bgr8")
    np.testing.assert_array_equal(image_msg_to_rgb(bgr), rgb)
    mono = image_msg(rgb[:, :, 0], 0.0, encoding="mono8")
    np.testing.assert_array_equal(image_msg_to_rgb(mono), np.repeat(rgb[:, :, :1], 3, axis=2))
    assert header_stamp_from_cdr(serialize_message(msg)) == pytest.approx(3.5)


def test_image_with_row_padding():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = Image(height=2, width=3, encoding="rgb8", step=12)
    msg.data = np.concatenate([np.r_[rgb[0].ravel(), 0, 0, 0], np.r_[rgb[1].ravel(), 0, 0, 0]]).astype(np.uint8).tobytes()
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(height=2, width=3, encoding="yuv422", step=6, data=bytes(12)), "unsupported"),
        (dict(height=2, width=3, encoding="rgb8", step=6, data=bytes(18)), "step 6 is smaller"),
        (dict(height=2, width=3, encoding="rgb8", step=9, data=bytes(17)), "needs 18"),
        (dict(height=0, width=3, encoding="rgb8", step=9, data=b""), "size"),
    ],
)
def test_malformed_images_are_reported(fields, match):
    with pytest.raises(ImageError, match=match):
        image_msg_to_rgb(Image(**fields))


def test_image_msg_refuses_wrong_arrays():
    with pytest.raises(ConversionError):
        image_msg(np.zeros((4, 4, 3), np.float32), 0.0)
    with pytest.raises(ConversionError):
        image_msg(np.zeros((4, 4), np.uint8), 0.0, encoding="rgb8")


def test_camera_info():
    info = camera_info_msg(320, 240, 200.0, 200.0, 159.5, 119.5, 1.0, "cam_high_optical")
    assert list(info.k) == [200.0, 0.0, 159.5, 0.0, 200.0, 119.5, 0.0, 0.0, 1.0]
    assert info.p[3] == 0.0 and info.distortion_model == "plumb_bob"


def test_joint_states_of_a_two_topic_profile():
    import dataclasses

    agx = load_profile("aloha_agilex_2")
    # a name the profile does not know is an error unless the source lists it in ignore_names
    asm0 = JointVectorAssembler(agx)
    src0 = agx.state_sources[0]
    with pytest.raises(ConversionError, match="unknown joint names"):
        asm0.update(src0.topic, canonical_to_joint_state(src0, agx.joint_names, np.zeros(14), 1.0, extra={"aux": 9.0}))
    agx = dataclasses.replace(agx, state_sources=tuple(dataclasses.replace(s, ignore=frozenset({"aux"})) for s in agx.state_sources))
    q = np.arange(14, dtype=float) / 10.0
    asm = JointVectorAssembler(agx)
    for i, src in enumerate(agx.state_sources):
        msg = canonical_to_joint_state(src, agx.joint_names, q, 1.0 + i, velocity=q * 2, effort=q * 3, extra={"aux": 9.0})
        assert list(msg.name)[:7] == [f"joint{k}" for k in range(7)] and msg.name[-1] == "aux"
        msg.name = list(reversed(msg.name))  # order in the message does not matter: names do
        msg.position = list(reversed(msg.position))
        msg.velocity = list(reversed(msg.velocity))
        msg.effort = list(reversed(msg.effort))
        assert not asm.complete
        asm.update(src.topic, msg)
    assert asm.complete and asm.stamp == 1.0
    np.testing.assert_allclose(asm.position, q)
    np.testing.assert_allclose(asm.velocity, 2 * q)
    np.testing.assert_allclose(asm.effort, 3 * q)


def test_joint_state_errors():
    prof = load_profile("sim_aloha")
    src = prof.state_sources[0]
    with pytest.raises(ConversionError, match="missing"):
        joint_state_to_canonical(JointState(name=["left_waist"], position=[0.0]), src, prof.joint_names)
    with pytest.raises(ConversionError, match="positions"):
        joint_state_to_canonical(JointState(name=list(prof.joint_names), position=[0.0]), src, prof.joint_names)
    with pytest.raises(ConversionError, match="duplicated"):
        joint_state_to_canonical(JointState(name=list(prof.joint_names) + ["left_waist"], position=[0.0] * 15), src, prof.joint_names)
    vals = joint_state_to_canonical(JointState(name=list(prof.joint_names), position=[0.5] * 14, velocity=[1.0]), src, prof.joint_names)
    assert vals.velocity is None and vals.effort is None  # too short to be per joint: treated as absent
