"""Camera image buffers -> RGB numpy arrays: the one decoder of the suite (replaces cv_bridge).

Works on the fields of ``sensor_msgs/Image`` / ``CompressedImage``, so rclpy messages (nodes),
rosbags / mcap_ros2 decoded messages (converter, MCAP tools) and raw CDR fields all share it.
Every malformed buffer raises :class:`ImageError` (a ``ValueError``) saying why; nodes log and count it.
"""
from __future__ import annotations

import cv2
import numpy as np


class ImageError(ValueError):
    """An image that cannot be turned into an RGB array."""


# encoding (lower case) -> (channels, OpenCV conversion to RGB or None)
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


def as_uint8(data) -> np.ndarray:
    """bytes / bytearray / array.array('B') / memoryview / list of ints / ndarray -> flat uint8 array."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError as exc:
        raise ImageError(f"image data of type {type(data).__name__} is not a byte buffer") from exc


def raw_image_problem(height: int, width: int, encoding: str, step: int, nbytes: int) -> tuple[str, str] | None:
    """Why a raw image header cannot be decoded, as (short cause, explanation), or None: checks
    without touching the pixels, so a receiver can reject a frame at once instead of at decode time."""
    h, w = int(height), int(width)
    enc = str(encoding).strip().lower()
    if h <= 0 or w <= 0:
        return "empty image", f"image of size {h}x{w} is empty"
    if h * w > MAX_PIXELS:
        return "implausible size", f"image of size {h}x{w} is implausibly large"
    if enc not in _ENCODINGS:
        return "unsupported encoding", f"unsupported image encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})"
    row = w * _ENCODINGS[enc][0]
    step = int(step) or row
    if step < row:
        return "wrong step", f"image step {step} is smaller than width x channels = {row}"
    if nbytes < step * (h - 1) + row:
        return "short data", f"image data has {nbytes} bytes; {h}x{w} {encoding} with step {step} needs {step * h}"
    return None


def raw_to_rgb(height: int, width: int, encoding: str, step: int, data, is_bigendian: int = 0) -> np.ndarray:
    """Decode a raw 8-bit image buffer into a fresh HxWx3 uint8 RGB array.

    ``step`` padding is honoured; ``step == 0`` is read as tightly packed rows (some drivers leave it
    unset). ``is_bigendian`` does not matter for 8-bit encodings.
    """
    h, w = int(height), int(width)
    enc = str(encoding).strip().lower()
    buf = as_uint8(data)
    problem = raw_image_problem(h, w, enc, step, buf.size)
    if problem is not None:
        raise ImageError(problem[1])
    channels, conversion = _ENCODINGS[enc]
    row = w * channels
    step = int(step) or row
    if step == row:
        img = buf[: h * row].reshape(h, w, channels)
    else:
        img = np.lib.stride_tricks.as_strided(buf, shape=(h, w, channels), strides=(step, channels, 1))
    if conversion is None:
        return img.copy()
    return cv2.cvtColor(np.ascontiguousarray(img), conversion)


def compressed_to_rgb(data, fmt: str = "") -> np.ndarray:
    """Decode a ``CompressedImage`` payload (jpeg/png) into an HxWx3 uint8 RGB array."""
    buf = as_uint8(data)
    if buf.size == 0:
        raise ImageError("compressed image has no data")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"cannot decode compressed image (format {fmt!r}, {buf.size} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_msg_to_rgb(msg) -> np.ndarray:
    """``Image`` or ``CompressedImage`` (any object with the message's fields) -> HxWx3 uint8 RGB."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_to_rgb(msg.data, msg.format)
    return raw_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data, getattr(msg, "is_bigendian", 0))
