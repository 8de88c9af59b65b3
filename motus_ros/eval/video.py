"""MP4 of an episode's camera frames (PyAV, H.264): what a person looks at to understand a failure."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np


def write_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: float = 30.0, crf: int = 23) -> Path:
    """Write HxWx3 uint8 RGB ``frames`` to ``path`` (yuv420p; odd sizes are padded by one pixel)."""
    import av

    if not len(frames):
        raise ValueError("no frames to write")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    H, W = h + (h % 2), w + (w % 2)
    with av.open(str(p), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for f in frames:
            if f.shape[:2] != (h, w):
                raise ValueError(f"frame size changed from {(h, w)} to {f.shape[:2]}")
            if (H, W) != (h, w):
                f = np.pad(f, ((0, H - h), (0, W - w), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return p
