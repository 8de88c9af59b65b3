"""Recorded camera messages (raw CDR) -> uint8 RGB ``[H, W, 3]`` for the converter.

The pixel decoding itself is ``motus_core.images`` (shared with the nodes); this module reads the
fields of a serialized ``sensor_msgs/Image`` in place, without copying the pixel buffer.
"""
from __future__ import annotations

import struct

from motus_core.images import ImageError, image_msg_to_rgb, raw_to_rgb

__all__ = ["ImageError", "image_cdr_to_rgb", "parse_image_cdr"]


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


def image_cdr_to_rgb(raw: bytes | memoryview, msgtype: str, typestore=None):
    """A recorded camera message (raw CDR) -> RGB uint8."""
    if msgtype == "sensor_msgs/msg/Image":
        try:
            h, w, enc, step, data = parse_image_cdr(raw)
        except (struct.error, ImageError):
            if typestore is None:
                raise
        else:
            return raw_to_rgb(h, w, enc, step, data)
    if typestore is None:
        raise ImageError(f"cannot decode {msgtype} without a typestore")
    return image_msg_to_rgb(typestore.deserialize_cdr(raw, msgtype))
