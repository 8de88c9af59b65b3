"""Raw image buffers (the fields of ``sensor_msgs/Image`` / ``CompressedImage``) -> RGB numpy arrays.

ROS-free so that both the visualizer node (rclpy messages) and the MCAP tools (messages decoded by
``mcap_ros2``, which have the same field names) use one decoder. Every malformed buffer raises
:class:`~motus_core.viz.frames.VizInputError` with the reason (the node logs and counts it).
"""
from __future__ import annotations

import cv2
import numpy as np

from .frames import VizInputError

# encoding -> (channels, conversion to RGB or None)
_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "8uc1": (1, cv2.COLOR_GRAY2RGB),
    "8uc3": (3, None),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)
MAX_PIXELS = 8192 * 8192


def _as_uint8(data) -> np.ndarray:
    """bytes / bytearray / array.array('B') / memoryview / list of ints / ndarray -> flat uint8 view."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError as exc:
        raise VizInputError(f"image data of type {type(data).__name__} is not a byte buffer") from exc


def raw_to_rgb(height: int, width: int, encoding: str, step: int, data, is_bigendian: int = 0) -> np.ndarray:
    """Decode a raw 8-bit image buffer into an HxWx3 uint8 RGB array (always a copy or a fresh array)."""
    h, w, step = int(height), int(width), int(step)
    enc = str(encoding).lower()
    if h <= 0 or w <= 0:
        raise VizInputError(f"image of size {h}x{w} is empty")
    if h * w > MAX_PIXELS:
        raise VizInputError(f"image of size {h}x{w} is implausibly large")
    if enc not in _ENCODINGS:
        raise VizInputError(f"unsupported image encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    channels, conversion = _ENCODINGS[enc]
    row = w * channels
    if step < row:
        raise VizInputError(f"image step {step} is smaller than width x channels = {row}")
    buf = _as_uint8(data)
    if buf.size < step * (h - 1) + row:
        raise VizInputError(f"image data has {buf.size} bytes; {h}x{w} {encoding} with step {step} needs {step * h}")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1))
    img = rows.reshape(h, w, channels)
    if conversion is None:
        return img.copy()
    return cv2.cvtColor(np.ascontiguousarray(img), conversion)


def compressed_to_rgb(fmt: str, data) -> np.ndarray:
    """Decode a ``CompressedImage`` payload (jpeg/png) into an HxWx3 uint8 RGB array."""
    buf = _as_uint8(data)
    if buf.size == 0:
        raise VizInputError("compressed image has no data")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise VizInputError(f"cannot decode compressed image (format {fmt!r}, {buf.size} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
