"""Marker geometry (``motus_core.viz.markers``) -> ``visualization_msgs`` messages.

Images and stamps go through ``motus_ros.conversions`` like every other node's.
"""
from __future__ import annotations

from typing import Sequence

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from motus_core.viz.markers import DELETE_ALL, LINE_STRIP, SPHERE, SPHERE_LIST, TEXT, MarkerGeometry

_TYPES = {LINE_STRIP: Marker.LINE_STRIP, SPHERE_LIST: Marker.SPHERE_LIST, SPHERE: Marker.SPHERE, TEXT: Marker.TEXT_VIEW_FACING}


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
