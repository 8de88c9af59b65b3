"""Camera messages (``sensor_msgs/Image``, ``CompressedImage``) -> uint8 RGB ``[H, W, 3]``.

Works on any object with the message's fields (rosbags' decoded messages, rclpy messages), so the
converter (ROS-free) and nodes share the rules: ``step`` padding is honoured, BGR/RGBA/mono
encodings are converted, compressed images are decoded with OpenCV.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3}


class ImageError(ValueError):
    """An image message that cannot be turned into an RGB array."""


def raw_image_to_rgb(height: int, width: int, encoding: str, step: int, data, is_bigendian: int = 0) -> np.ndarray:
    enc = encoding.strip()
    if enc not in _CHANNELS:
        raise ImageError(f"unsupported image encoding {encoding!r} (supported: {sorted(_CHANNELS)})")
    ch = _CHANNELS[enc]
    h, w = int(height), int(width)
    if h <= 0 or w <= 0:
        raise ImageError(f"empty image {h}x{w}")
    row = w * ch
    step = int(step) or row
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).reshape(-1)
    if step < row or buf.size < step * (h - 1) + row:
        raise ImageError(f"image data of {buf.size} bytes is too small for {h}x{w} {enc} with step {step}")
    if step == row:
        img = buf[: h * row].reshape(h, w, ch)
    else:
        img = np.lib.stride_tricks.as_strided(buf, shape=(h, w, ch), strides=(step, ch, 1))
    if enc in ("rgb8", "8UC3"):
        return np.ascontiguousarray(img)
    if enc == "bgr8":
        return np.ascontiguousarray(img[:, :, ::-1])
    if enc == "rgba8":
        return np.ascontiguousarray(img[:, :, :3])
    if enc == "bgra8":
        return np.ascontiguousarray(img[:, :, 2::-1])
    return np.ascontiguousarray(np.repeat(img, 3, axis=2))


def compressed_to_rgb(data) -> np.ndarray:
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"could not decode a compressed image of {buf.size} bytes")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_msg_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/Image`` or ``CompressedImage`` (decoded message object) -> RGB uint8."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_to_rgb(msg.data)
    return raw_image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data, getattr(msg, "is_bigendian", 0))


def _align(pos: int, n: int) -> int:
    # CDR alignment is relative to the end of the 4-byte encapsulation header
    return 4 + ((pos - 4 + n - 1) // n) * n


def parse_image_cdr(raw: bytes | memoryview) -> tuple[int, int, str, int, memoryview]:
    """(height, width, encoding, step, data) of a little-endian CDR ``sensor_msgs/Image`` without copying pixels.

    Decoding the whole message with a generic deserializer copies the pixel buffer; a recorded
    episode holds gigabytes of them, so the converter reads the fields in place.
    """
    mv = memoryview(raw)
    if len(mv) < 4 or mv[1] != 1:
        raise ImageError("not a little-endian CDR message")
    le = "<"
    pos = 4 + 8  # header.stamp
    (n,) = struct.unpack_from(le + "I", mv, pos)
    pos = _align(pos + 4 + n, 4)
    height, width = struct.unpack_from(le + "II", mv, pos)
    pos += 8
    (n,) = struct.unpack_from(le + "I", mv, pos)
    encoding = bytes(mv[pos + 4: pos + 4 + n]).rstrip(b"\0").decode("ascii", "replace")
    pos = pos + 4 + n + 1  # is_bigendian (uint8)
    pos = _align(pos, 4)
    (step,) = struct.unpack_from(le + "I", mv, pos)
    pos += 4
    (n,) = struct.unpack_from(le + "I", mv, pos)
    pos += 4
    if pos + n > len(mv):
        raise ImageError(f"image message truncated: {n} data bytes announced, {len(mv) - pos} present")
    return height, width, encoding, step, mv[pos: pos + n]


def image_cdr_to_rgb(raw: bytes | memoryview, msgtype: str, typestore=None) -> np.ndarray:
    """A recorded camera message (raw CDR) -> RGB uint8."""
    if msgtype == "sensor_msgs/msg/Image":
        try:
            h, w, enc, step, data = parse_image_cdr(raw)
        except (struct.error, ImageError):
            if typestore is None:
                raise
        else:
            return raw_image_to_rgb(h, w, enc, step, data)
    if typestore is None:
        raise ImageError(f"cannot decode {msgtype} without a typestore")
    return image_msg_to_rgb(typestore.deserialize_cdr(raw, msgtype))
