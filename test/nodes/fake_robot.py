"""A synthetic robot: publishes a profile's cameras, follower and leader joint states and an instruction.

Used by the recorder tests and ``bench/recorder.py`` (a separate process, as a real robot's drivers
are). Messages are serialised once with rosbags and published as raw CDR bytes with only the stamp
and the frame code patched per message, so the publisher itself costs little CPU even at
3 x 640x480 @ 30 Hz.

Content that a test can check: camera ``role`` at frame ``k`` is filled with grey level
``code(role, k)``; joint ``j`` at time ``t`` (ns, header stamp) is ``joint_value(j, t)``; the leader
adds ``LEADER_OFFSET``.

    python test/nodes/fake_robot.py --robot sim_aloha --duration 10 --height 480 --width 640
Prints one JSON line with the messages published per topic when done.
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

import motus_ros  # noqa: E402,F401  (DDS environment before rclpy)
import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from motus_core.data.bag_writer import make_typestore  # noqa: E402
from test.helpers import wait_until  # noqa: E402
from motus_core.robot_profile import load_profile  # noqa: E402

NS = 1_000_000_000
CAM_OFFSETS = {"high": 0, "left_wrist": 60, "right_wrist": 120}
LEADER_OFFSET = 0.01


def code(role: str, k: int) -> int:
    return (CAM_OFFSETS[role] + 2 * k) % 250


def joint_value(j: int, t_ns: int) -> float:
    return 0.1 * j + 0.5 * float(np.sin(t_ns / NS + j))


class _ImageTemplate:
    """A serialised Image whose stamp and pixel values are patched in place per message."""

    def __init__(self, ts, role: str, frame_id: str, h: int, w: int):
        Image, Header, Time = ts.types["sensor_msgs/msg/Image"], ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
        msg = Image(header=Header(stamp=Time(sec=0, nanosec=0), frame_id=frame_id), height=h, width=w, encoding="rgb8",
                    is_bigendian=0, step=w * 3, data=np.zeros(h * w * 3, np.uint8))
        self.buf = bytearray(ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
        self.pixels = np.frombuffer(self.buf, dtype=np.uint8, count=h * w * 3, offset=len(self.buf) - h * w * 3)
        self.role = role

    def make(self, k: int, stamp_ns: int) -> bytes:
        struct.pack_into("<iI", self.buf, 4, stamp_ns // NS, stamp_ns % NS)
        self.pixels[:] = code(self.role, k)
        return bytes(self.buf)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--robot", default="sim_aloha")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of publishing")
    ap.add_argument("--height", type=int, default=0, help="camera height (default: the profile's)")
    ap.add_argument("--width", type=int, default=0)
    ap.add_argument("--camera-rate", type=float, default=30.0)
    ap.add_argument("--joint-rate", type=float, default=200.0)
    ap.add_argument("--instruction", default="pick up the cube")
    ap.add_argument("--instruction-topic", default="/instruction")
    ap.add_argument("--instruction-period", type=float, default=1.0, help="seconds between instruction messages")
    ap.add_argument("--skip", nargs="*", default=[], help="topics not to publish (a topic that is never received)")
    ap.add_argument("--wait-subscribers", type=float, default=20.0, help="wait this long for a subscriber on every topic")
    ap.add_argument("--reliable", action="store_true", help="RELIABLE publishers (default BEST_EFFORT)")
    ap.add_argument("--go-file", type=Path, help="after READY, wait for this file to exist before publishing")
    args = ap.parse_args(argv)

    prof = load_profile(args.robot)
    ts = make_typestore()
    rclpy.init()
    node = rclpy.create_node("fake_robot")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if args.reliable else ReliabilityPolicy.BEST_EFFORT)
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import String

    pubs, counts = {}, {}

    def pub(topic, cls):
        if topic in args.skip:
            return None
        pubs[topic] = node.create_publisher(cls, topic, qos)
        counts[topic] = 0
        return pubs[topic]

    cams = []
    for role, cam in prof.cameras.items():
        h, w = args.height or cam.height, args.width or cam.width
        cams.append((role, pub(cam.topic, Image), pub(cam.info_topic, CameraInfo), cam.topic, cam.info_topic,
                     _ImageTemplate(ts, role, cam.frame_id, h, w), (h, w)))
    joints = []
    for src, offset in [(s, 0.0) for s in prof.state_sources] + [(s, LEADER_OFFSET) for s in prof.leader_sources]:
        joints.append((src.topic, pub(src.topic, JointState), list(src.names), [prof.index_of(src.names[n]) for n in src.names], offset))
    instr_pub = pub(args.instruction_topic, String) if args.instruction_topic else None

    def wait_for_subscribers():
        wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), args.wait_subscribers,
                   spin=lambda: rclpy.spin_once(node, timeout_sec=0.05))
        waiting = [t for t, p in pubs.items() if p.get_subscription_count() == 0]
        if waiting:
            print(f"fake_robot: no subscriber on {waiting}", file=sys.stderr, flush=True)

    wait_for_subscribers()
    print("READY", flush=True)
    if args.go_file is not None:
        while not args.go_file.exists():
            rclpy.spin_once(node, timeout_sec=0.05)
        wait_for_subscribers()  # the subscriber may have re-subscribed meanwhile (QoS adaptation)

    JS, Header, Time = ts.types["sensor_msgs/msg/JointState"], ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    Info = ts.types["sensor_msgs/msg/CameraInfo"]
    cam_period = 1.0 / args.camera_rate
    joint_period = 1.0 / args.joint_rate
    t_start = time.monotonic()
    next_cam, next_joint, next_instr = t_start, t_start, t_start
    k = 0
    clock = node.get_clock()
    try:
        while True:
            now = time.monotonic()
            if now - t_start >= args.duration:
                break
            if now >= next_cam:
                stamp = clock.now().nanoseconds
                for role, img_pub, info_pub, topic, info_topic, tmpl, (h, w) in cams:
                    if img_pub is not None:
                        img_pub.publish(tmpl.make(k, stamp))
                        counts[topic] += 1
                    if info_pub is not None:
                        info = Info(header=Header(stamp=Time(sec=stamp // NS, nanosec=stamp % NS), frame_id=role), height=h, width=w,
                                    distortion_model="plumb_bob", d=np.zeros(5), k=np.eye(3).reshape(-1), r=np.eye(3).reshape(-1),
                                    p=np.zeros(12), binning_x=0, binning_y=0,
                                    roi=ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
                        info_pub.publish(bytes(ts.serialize_cdr(info, "sensor_msgs/msg/CameraInfo")))
                        counts[info_topic] += 1
                k += 1
                next_cam += cam_period
            if now >= next_joint:
                stamp = clock.now().nanoseconds
                for topic, jpub, names, idx, offset in joints:
                    if jpub is None:
                        continue
                    vals = np.array([joint_value(j, stamp) + offset for j in idx])
                    msg = JS(header=Header(stamp=Time(sec=stamp // NS, nanosec=stamp % NS), frame_id=""), name=names,
                             position=vals, velocity=np.zeros(0), effort=np.zeros(0))
                    jpub.publish(bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/JointState")))
                    counts[topic] += 1
                next_joint += joint_period
            if instr_pub is not None and now >= next_instr:
                instr_pub.publish(bytes(ts.serialize_cdr(ts.types["std_msgs/msg/String"](data=args.instruction), "std_msgs/msg/String")))
                counts[args.instruction_topic] += 1
                next_instr += args.instruction_period
            sleep = min(next_cam, next_joint) - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
    except KeyboardInterrupt:
        pass
    print(json.dumps({"published": counts, "frames": k, "seconds": time.monotonic() - t_start}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
