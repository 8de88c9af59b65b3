"""Messages <-> numpy for the visualisation nodes (a minimal cv_bridge replacement for what they need).

cv_bridge is not installable from PyPI; decoding is done by ``motus_core.viz.images`` (shared with
the MCAP tools), this module only reads and fills message fields.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from motus_core.viz.images import compressed_to_rgb, raw_to_rgb
from motus_core.viz.markers import DELETE_ALL, LINE_STRIP, SPHERE, SPHERE_LIST, TEXT, MarkerGeometry

_TYPES = {LINE_STRIP: Marker.LINE_STRIP, SPHERE_LIST: Marker.SPHERE_LIST, SPHERE: Marker.SPHERE, TEXT: Marker.TEXT_VIEW_FACING}


def stamp_to_sec(t: Time) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


def sec_to_stamp(s: float) -> Time:
    ns = int(round(float(s) * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_msg_to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """Image / CompressedImage -> HxWx3 uint8 RGB (raises VizInputError on malformed messages)."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg.format, msg.data)
    return raw_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian)


def rgb_to_image_msg(img: np.ndarray, stamp: Time, frame_id: str = "") -> Image:
    img = np.ascontiguousarray(img, dtype=np.uint8)
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = int(img.shape[1] * 3)
    msg.data = img.tobytes()
    return msg


def _color(c: Sequence[float]) -> ColorRGBA:
    return ColorRGBA(r=float(c[0]), g=float(c[1]), b=float(c[2]), a=float(c[3]))


def marker_msg(g: MarkerGeometry, stamp: Time) -> Marker:
    m = Marker()
    m.header.frame_id = g.frame_id
    m.header.stamp = stamp
    m.ns = g.ns
    m.id = int(g.id)
    if g.kind == DELETE_ALL:
        m.action = Marker.DELETEALL
        return m
    m.action = Marker.ADD
    m.type = _TYPES[g.kind]
    m.pose.orientation.w = 1.0
    m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in g.position)
    m.scale.x, m.scale.y, m.scale.z = (float(v) for v in g.scale)
    m.color = _color(g.color)
    m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in g.points]
    m.colors = [_color(c) for c in g.colors]
    m.text = g.text
    m.frame_locked = False
    return m


def marker_array_msg(markers: Sequence[MarkerGeometry], stamp: Time) -> MarkerArray:
    return MarkerArray(markers=[marker_msg(g, stamp) for g in markers])
