"""Undo the model's image layout: predicted frames -> one image per camera.

A world model (Motus) predicts frames in the layout it was fed: the T-shaped three-camera mosaic,
resized with padding to the model resolution (``motus_core.preprocessing``, the one definition of
that layout). ``PredictedFuture`` carries the layout name and each camera's rectangle, so a viewer
can cut the frame back into camera views. This module does that with
``preprocessing.model_image_layout(...).split`` and checks that the rectangles in the message agree
with the definition; when they do not (a producer that padded differently), it trusts the message's
rectangles and crops them without resizing, so the views are still right, only smaller.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from motus_core.preprocessing import MOSAIC_ROLES, Rect, model_image_layout

LAYOUT_MOSAIC = "motus_t_mosaic"
LAYOUT_SINGLE = "single"
LAYOUTS = (LAYOUT_MOSAIC, LAYOUT_SINGLE)

# Rectangles in a message may differ from ours by rounding (int(h * scale) vs round()).
_REGION_TOLERANCE_PX = 1


class VizInputError(ValueError):
    """Input the visualisation cannot use (wrong shape, layout, lengths, non-finite values)."""


def check_frame(img: np.ndarray, what: str = "frame") -> np.ndarray:
    """Return ``img`` if it is a non-empty HxWx3 uint8 array, else raise VizInputError."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        shape = getattr(img, "shape", None)
        dtype = getattr(img, "dtype", type(img).__name__)
        raise VizInputError(f"{what}: expected an HxWx3 uint8 image, got shape {shape} dtype {dtype}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise VizInputError(f"{what}: image of {img.shape[0]}x{img.shape[1]} pixels is too small")
    return img


def _regions_match(a: Mapping[str, Rect], b: Mapping[str, Rect]) -> bool:
    for role, r in a.items():
        o = b.get(role)
        if o is None:
            return False
        if max(abs(r.x - o.x), abs(r.y - o.y), abs(r.width - o.width), abs(r.height - o.height)) > _REGION_TOLERANCE_PX:
            return False
    return True


def _check_region(rect: Rect, hw: tuple[int, int], role: str) -> None:
    if rect.width < 1 or rect.height < 1 or rect.x < 0 or rect.y < 0 or rect.x + rect.width > hw[1] or rect.y + rect.height > hw[0]:
        raise VizInputError(f"camera region of {role!r} {rect} lies outside the {hw[0]}x{hw[1]} frame")


@dataclass
class Unmosaicer:
    """Splits frames of one ``PredictedFuture`` layout into camera views.

    ``high_hw`` is the native size of the high camera (it sets the size the views are scaled back
    to); when unknown, the size of the high camera's rectangle in the frame is used.
    """

    layout: str
    camera_names: Sequence[str]
    regions: Sequence[Rect] = ()
    high_hw: tuple[int, int] | None = None
    mismatch_reason: str = field(default="", init=False)  # why the message's regions were used instead

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise VizInputError(f"unknown frame layout {self.layout!r}; known: {LAYOUTS}")
        names = list(self.camera_names)
        if len(set(names)) != len(names):
            raise VizInputError(f"duplicated camera names {names}")
        if self.regions and len(self.regions) != len(names):
            raise VizInputError(f"{len(names)} camera names but {len(self.regions)} camera regions")
        if self.layout == LAYOUT_SINGLE and len(names) != 1:
            raise VizInputError(f"layout 'single' needs exactly one camera name, got {names}")
        if self.layout == LAYOUT_MOSAIC and sorted(names) != sorted(MOSAIC_ROLES):
            raise VizInputError(f"layout {LAYOUT_MOSAIC!r} needs cameras {MOSAIC_ROLES}, got {names}")

    def split(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        """One frame -> {camera role: HxWx3 uint8 view}."""
        check_frame(frame)
        if self.layout == LAYOUT_SINGLE:
            return {self.camera_names[0]: frame}
        given = dict(zip(self.camera_names, self.regions))
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        for role, rect in given.items():
            _check_region(rect, hw, role)
        high_hw = self.high_hw
        if high_hw is None:
            high_hw = (given["high"].height, given["high"].width) if given else (hw[0] * 2 // 3, hw[1])
        expected = model_image_layout(high_hw, target_hw=hw)
        if not given or _regions_match(expected.regions, given):
            return expected.split(frame)
        # The producer placed the cameras differently than our layout would for this camera size:
        # follow the message (its regions are the truth for its frames).
        self.mismatch_reason = (
            f"camera regions in the message {({k: astuple(v) for k, v in given.items()})} differ from "
            f"the {LAYOUT_MOSAIC} layout of a {high_hw[0]}x{high_hw[1]} high camera; cropping the message's regions"
        )
        return {role: np.ascontiguousarray(rect.crop(frame)) for role, rect in given.items()}


@dataclass
class PredictedViews:
    """The frames of one prediction, split into camera views, with the time each frame predicts."""

    chunk_id: int
    stamp: float  # observation stamp the prediction was made from (s)
    times: np.ndarray  # (F,) absolute time each frame predicts (s)
    views: list[dict[str, np.ndarray]]  # per frame: role -> view
    model: str = ""
    mode: str = ""
    condition: dict[str, np.ndarray] | None = None  # the model input split the same way, if given

    @property
    def roles(self) -> list[str]:
        return list(self.views[0]) if self.views else []

    def offsets(self) -> np.ndarray:
        return self.times - self.stamp


def split_prediction(
    *,
    chunk_id: int,
    stamp: float,
    layout: str,
    camera_names: Sequence[str],
    regions: Sequence[Rect],
    frames: Sequence[np.ndarray],
    frame_times: Sequence[float],
    high_hw: tuple[int, int] | None = None,
    condition_frame: np.ndarray | None = None,
    model: str = "",
    mode: str = "",
) -> tuple[PredictedViews, str]:
    """Validate a prediction and split every frame. Returns the views and a warning ('' if none)."""
    if len(frames) == 0:
        raise VizInputError("prediction has no frames")
    if len(frame_times) != len(frames):
        raise VizInputError(f"{len(frames)} frames but {len(frame_times)} frame times")
    times = np.asarray(frame_times, dtype=np.float64)
    if not np.all(np.isfinite(times)) or not np.isfinite(stamp):
        raise VizInputError("prediction has non-finite stamps")
    if np.any(np.diff(times) <= 0):
        raise VizInputError(f"frame times are not increasing: {times.tolist()}")
    shapes = {tuple(np.shape(f)) for f in frames}
    if len(shapes) != 1:
        raise VizInputError(f"frames of one prediction have different shapes: {sorted(shapes)}")
    splitter = Unmosaicer(layout, list(camera_names), list(regions), high_hw)
    views = [splitter.split(f) for f in frames]
    condition = None
    if condition_frame is not None and np.size(condition_frame) > 0:
        condition = splitter.split(condition_frame)
    out = PredictedViews(chunk_id=int(chunk_id), stamp=float(stamp), times=times, views=views, model=model, mode=mode, condition=condition)
    return out, splitter.mismatch_reason
