"""H.264 video files with PyAV: the one encoder/decoder of dataset videos.

Why PyAV: its wheel ships libx264 (OpenCV's wheel cannot write H.264), and it decodes any mp4 the
official Motus/RoboTwin converters wrote (H.264 or MPEG-4 part 2).

Frames are uint8 RGB ``[H, W, 3]``; files are 30 fps, constant frame rate, yuv420p (what every
player and ``decord``/``torchvision`` read), a keyframe every ``gop`` frames so random access in
the dataset reader only decodes from the previous keyframe.
"""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import av
import cv2
import numpy as np

DEFAULT_FPS = 30


class VideoError(RuntimeError):
    """A video that cannot be written or read as asked."""


@dataclass(frozen=True)
class VideoOptions:
    """Encoder settings. ``crf`` 18 keeps sim renders within ~1.5 grey levels mean absolute error."""

    fps: int = DEFAULT_FPS
    crf: int = 18
    # Measured at 720x640, CRF 18, textured content, on the project's 2-core machine under load:
    # ultrafast 245 fps / 37.3 dB / 25 kB per frame, superfast 138 fps / 37.4 dB / 12 kB,
    # veryfast 73 fps / 36.5 dB / 6 kB. ultrafast keeps conversion >= 5x real time and decodes
    # fastest (training reads frames at random); pass --preset veryfast for 4x smaller files.
    preset: str = "ultrafast"
    gop: int = 30  # keyframe interval (frames): random access cost in the reader
    threads: int = 0  # 0 = let libx264 choose


class VideoWriter:
    """Streaming H.264 writer: ``write(frame)`` one RGB frame at a time, ``close()`` to finish.

    The frame size is fixed by the first frame. libx264 with yuv420p needs even sizes: odd sizes
    are rejected with a clear error instead of silently padding (padding would shift the mosaic).
    """

    def __init__(self, path: str | Path, options: VideoOptions = VideoOptions(), container_format: str = "mp4",
                 background: bool = True):
        self.path = Path(path)
        self.options = options
        self._container = av.open(str(self.path), mode="w", format=container_format)
        self._stream = None
        self.frames_written = 0
        self.size_hw: tuple[int, int] | None = None
        # Encoding runs on a worker thread (libx264 and PyAV release the GIL), so the caller's next
        # frame (bag reading, image decoding, mosaic) overlaps with this one's encoding.
        self._queue: queue.Queue | None = queue.Queue(maxsize=8) if background else None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _open_stream(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise VideoError(f"H.264 (yuv420p) needs an even frame size, got {height}x{width}")
        stream = self._container.add_stream("libx264", rate=self.options.fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, self.options.fps)
        stream.options = {"crf": str(self.options.crf), "preset": self.options.preset}
        stream.codec_context.gop_size = self.options.gop
        if self.options.threads:
            stream.codec_context.thread_count = self.options.threads
        self._stream = stream
        self.size_hw = (height, width)

    def write(self, frame: np.ndarray) -> None:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            got = getattr(frame, "shape", None), getattr(frame, "dtype", None)
            raise VideoError(f"{self.path.name}: frames must be uint8 [H, W, 3] RGB arrays, got {got}")
        if self._error is not None:
            raise VideoError(f"{self.path.name}: encoding failed: {self._error}") from self._error
        if self._stream is None:
            self._open_stream(frame.shape[0], frame.shape[1])
            if self._queue is not None:
                self._thread = threading.Thread(target=self._encode_loop, name=f"encode-{self.path.name}", daemon=True)
                self._thread.start()
        elif frame.shape[:2] != self.size_hw:
            raise VideoError(f"{self.path.name}: frame {self.frames_written} is {frame.shape[:2]}, earlier frames {self.size_hw}")
        # RGB -> YUV 4:2:0 with OpenCV (BT.601 limited range, the same matrix as swscale's default,
        # checked by test): 3x faster than letting PyAV's swscale convert rgb24, and it releases the GIL.
        yuv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YUV_I420)
        if self._queue is not None:
            self._queue.put((self.frames_written, yuv))
        else:
            self._encode(self.frames_written, yuv)
        self.frames_written += 1

    def _encode(self, index: int, yuv: np.ndarray | None) -> None:
        if yuv is None:
            packets = self._stream.encode()
        else:
            vf = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            vf.pts = index
            vf.time_base = Fraction(1, self.options.fps)
            packets = self._stream.encode(vf)
        for packet in packets:
            self._container.mux(packet)

    def _encode_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._encode(*item)
                except BaseException as exc:  # noqa: BLE001 - reported by the next write()/close()
                    self._error = exc

    def _join(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        if self._container is None:
            return
        try:
            self._join()
            if self._error is not None:
                raise VideoError(f"{self.path.name}: encoding failed: {self._error}") from self._error
            if self._stream is not None:
                self._encode(0, None)
        finally:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        """Close without caring about the file (it is removed)."""
        try:
            self._join()
        except Exception:  # noqa: BLE001
            pass
        try:
            if self._container is not None:
                self._container.close()
        except Exception:  # noqa: BLE001 - the partial file is deleted anyway
            pass
        self._container = None
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | Path, frames: Iterable[np.ndarray], options: VideoOptions = VideoOptions()) -> int:
    """Encode ``frames`` to ``path`` atomically (temp file + rename). Returns the number of frames."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = VideoWriter(tmp, options)
    try:
        for f in frames:
            writer.write(f)
        if writer.frames_written == 0:
            raise VideoError(f"{path.name}: no frames to write")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    os.replace(tmp, path)
    return writer.frames_written


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    height: int
    width: int
    fps: float
    codec: str


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """Decoded frame -> uint8 RGB. yuv420p (limited range) goes through OpenCV (5x faster than swscale)."""
    if frame.format.name == "yuv420p" and frame.color_range != 2:  # 2 = AVCOL_RANGE_JPEG (full range)
        yuv = frame.to_ndarray(format="yuv420p")
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


def _frame_index(frame: av.VideoFrame, stream, start: int, fps: float) -> int:
    if frame.pts is None:
        return -1
    return int(round(float((frame.pts - start) * stream.time_base) * fps))


def video_info(path: str | Path) -> VideoInfo:
    """Frame count, size, rate and codec. The count comes from the container; if it has none, by decoding."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise VideoError(f"{path}: no video stream")
        s = c.streams.video[0]
        n = int(s.frames or 0)
        fps = float(s.average_rate or s.guessed_rate or DEFAULT_FPS)
        h, w, codec = s.codec_context.height, s.codec_context.width, s.codec_context.name
        if n <= 0:
            n = sum(1 for _ in c.decode(video=0))
    return VideoInfo(frames=n, height=h, width=w, fps=fps, codec=codec)


def read_video(path: str | Path) -> np.ndarray:
    """All frames, uint8 ``[T, H, W, 3]`` RGB."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    with av.open(str(path)) as c:
        frames = [frame_to_rgb(f) for f in c.decode(video=0)]
    if not frames:
        raise VideoError(f"{path}: no decodable frames")
    return np.stack(frames)


def read_frames(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    """Frames at ``indices`` (0-based, repeats allowed), uint8 ``[len(indices), H, W, 3]`` RGB.

    Seeks to the keyframe before the first wanted frame and decodes forward, like ``decord``'s
    ``get_batch`` (which the official loader uses). Frame numbers come from presentation time, so
    files with B-frames or an edit list still give the right frames.
    """
    path = Path(path)
    if not len(indices):
        raise VideoError("read_frames: no indices")
    wanted = sorted(set(int(i) for i in indices))
    if wanted[0] < 0:
        raise VideoError(f"{path.name}: negative frame index {wanted[0]}")
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or DEFAULT_FPS)
        start = s.start_time or 0
        if wanted[0] > 0 and s.time_base:
            target_pts = start + int(wanted[0] / fps / float(s.time_base))
            c.seek(target_pts, stream=s, backward=True, any_frame=False)
        last = wanted[-1]
        counter = None  # fallback numbering if the file has no pts
        for frame in c.decode(s):
            idx = _frame_index(frame, s, start, fps)
            if idx < 0:
                counter = 0 if counter is None else counter + 1
                idx = counter
            if idx in wanted and idx not in got:
                got[idx] = frame_to_rgb(frame)
            if idx >= last:
                break
    missing = [i for i in wanted if i not in got]
    if missing:
        raise VideoError(f"{path.name}: frames {missing[:5]}{'...' if len(missing) > 5 else ''} not in the video")
    return np.stack([got[int(i)] for i in indices])
