"""The one definition of Motus' image and joint preprocessing.

Used identically by the runtime (policy input), the recorder/converter (dataset videos) and training
(dataset reader), so a model never sees data prepared differently at deploy time than at train time.

Facts followed (official Motus, thu-ml/Motus):
* three-camera "T" mosaic (``data/utils/multi_camera_concat.py``): the high camera unchanged on top,
  left and right wrist cameras resized to half the high camera's size, side by side below
  (480x640 high -> 720x640 mosaic; 240x320 -> 360x320). The bottom row is ``H//2`` tall and the two
  wrist tiles are ``W//2`` and ``W - W//2`` wide, so odd sizes still tile exactly;
* ``resize_with_padding`` to the model size (H, W) = (384, 320) (``data/utils/image_utils.py``):
  uniform scale ``min(H/h, W/w)``, bilinear resize, centred on black;
* images become float tensors in [0, 1], channels first;
* state and actions are min-max normalised per dimension with ``stat.json[<robot>]``:
  ``x_n = (x - min) / (max - min)``, and de-normalised with the inverse.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

MOSAIC_ROLES = ("high", "left_wrist", "right_wrist")
MOTUS_IMAGE_HW = (384, 320)
DEFAULT_STATS_FILE = Path(__file__).resolve().parent / "stats" / "motus_official_stat.json"


class PreprocessingError(ValueError):
    """Input that cannot be preprocessed (wrong shape, dtype, non-finite values, missing stats)."""


# --------------------------------------------------------------------------------------------- images


def check_rgb_image(img: np.ndarray, what: str = "image") -> np.ndarray:
    """Return ``img`` if it is an HxWx3 uint8 array, else raise a PreprocessingError that says why."""
    if not isinstance(img, np.ndarray):
        raise PreprocessingError(f"{what}: expected a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise PreprocessingError(f"{what}: expected dtype uint8, got {img.dtype}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise PreprocessingError(f"{what}: expected shape (H, W, 3), got {img.shape}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise PreprocessingError(f"{what}: image of {img.shape[0]}x{img.shape[1]} is too small")
    return img


@dataclass(frozen=True)
class Rect:
    """Axis-aligned rectangle in pixels: x (column), y (row), width, height."""

    x: int
    y: int
    width: int
    height: int

    def crop(self, img: np.ndarray) -> np.ndarray:
        return img[self.y : self.y + self.height, self.x : self.x + self.width]


@dataclass(frozen=True)
class MosaicLayout:
    """Where each camera sits in the T mosaic built from a high camera of ``high_hw``."""

    high_hw: tuple[int, int]
    size_hw: tuple[int, int]
    regions: Mapping[str, Rect]

    @classmethod
    def for_high_camera(cls, height: int, width: int) -> "MosaicLayout":
        bottom_h = height // 2
        left_w = width // 2
        regions = {
            "high": Rect(0, 0, width, height),
            "left_wrist": Rect(0, height, left_w, bottom_h),
            "right_wrist": Rect(left_w, height, width - left_w, bottom_h),
        }
        return cls(high_hw=(height, width), size_hw=(height + bottom_h, width), regions=regions)


def make_mosaic(high: np.ndarray, left_wrist: np.ndarray, right_wrist: np.ndarray) -> np.ndarray:
    """Build the T-shaped three-camera mosaic (uint8 RGB)."""
    check_rgb_image(high, "high camera")
    check_rgb_image(left_wrist, "left wrist camera")
    check_rgb_image(right_wrist, "right wrist camera")
    layout = MosaicLayout.for_high_camera(*high.shape[:2])
    out = np.empty((*layout.size_hw, 3), dtype=np.uint8)
    out[: high.shape[0]] = high
    for role, img in (("left_wrist", left_wrist), ("right_wrist", right_wrist)):
        r = layout.regions[role]
        if img.shape[:2] != (r.height, r.width):
            img = cv2.resize(img, (r.width, r.height), interpolation=cv2.INTER_LINEAR)
        out[r.y : r.y + r.height, r.x : r.x + r.width] = img
    return out


def make_mosaic_from_roles(images: Mapping[str, np.ndarray]) -> np.ndarray:
    missing = [r for r in MOSAIC_ROLES if r not in images]
    if missing:
        raise PreprocessingError(f"mosaic needs cameras {MOSAIC_ROLES}; missing {missing}")
    return make_mosaic(images["high"], images["left_wrist"], images["right_wrist"])


def split_mosaic(mosaic: np.ndarray, layout: MosaicLayout) -> dict[str, np.ndarray]:
    """Undo ``make_mosaic``: per-camera images (wrist views at their half size)."""
    if mosaic.shape[:2] != tuple(layout.size_hw):
        raise PreprocessingError(f"mosaic of shape {mosaic.shape[:2]} does not match layout {layout.size_hw}")
    return {role: rect.crop(mosaic) for role, rect in layout.regions.items()}


@dataclass(frozen=True)
class PadInfo:
    """How ``resize_with_padding`` placed the source image inside the target."""

    scale: float
    content: Rect  # where the resized source lies in the padded output
    source_hw: tuple[int, int]
    target_hw: tuple[int, int]

    def map_rect(self, rect: Rect) -> Rect:
        """Map a rectangle of the source image into the padded output image."""
        x0 = self.content.x + int(round(rect.x * self.scale))
        y0 = self.content.y + int(round(rect.y * self.scale))
        x1 = self.content.x + int(round((rect.x + rect.width) * self.scale))
        y1 = self.content.y + int(round((rect.y + rect.height) * self.scale))
        x1 = min(x1, self.content.x + self.content.width)
        y1 = min(y1, self.content.y + self.content.height)
        return Rect(x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def padding_info(source_hw: Sequence[int], target_hw: Sequence[int] = MOTUS_IMAGE_HW) -> PadInfo:
    h, w = int(source_hw[0]), int(source_hw[1])
    th, tw = int(target_hw[0]), int(target_hw[1])
    scale = min(th / h, tw / w)
    new_h = max(1, min(th, int(h * scale)))
    new_w = max(1, min(tw, int(w * scale)))
    return PadInfo(scale=scale, content=Rect((tw - new_w) // 2, (th - new_h) // 2, new_w, new_h),
                   source_hw=(h, w), target_hw=(th, tw))


def resize_with_padding(img: np.ndarray, target_hw: Sequence[int] = MOTUS_IMAGE_HW) -> np.ndarray:
    """Scale uniformly to fit ``target_hw`` (bilinear) and centre on black (uint8 in, uint8 out)."""
    check_rgb_image(img)
    info = padding_info(img.shape[:2], target_hw)
    c = info.content
    out = np.zeros((info.target_hw[0], info.target_hw[1], 3), dtype=np.uint8)
    if (c.height, c.width) == img.shape[:2]:
        resized = img
    else:
        resized = cv2.resize(img, (c.width, c.height), interpolation=cv2.INTER_LINEAR)
    out[c.y : c.y + c.height, c.x : c.x + c.width] = resized
    return out


def to_unit_chw(img: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW in [0, 1]."""
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) * np.float32(1.0 / 255.0)


def from_unit_chw(x: np.ndarray) -> np.ndarray:
    """float 3xHxW in [0, 1] -> uint8 HxWx3 (values outside [0, 1] are clipped)."""
    return (np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0).transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class ModelImageLayout:
    """Camera regions inside the model-size image (mosaic, then resize-with-padding)."""

    mosaic: MosaicLayout
    pad: PadInfo

    @property
    def regions(self) -> dict[str, Rect]:
        return {role: self.pad.map_rect(r) for role, r in self.mosaic.regions.items()}

    def split(self, model_image: np.ndarray) -> dict[str, np.ndarray]:
        """Crop each camera out of a model-size image (e.g. a predicted frame) at its native size."""
        out = {}
        for role, rect in self.regions.items():
            crop = rect.crop(model_image)
            native = self.mosaic.regions[role]
            out[role] = cv2.resize(crop, (native.width, native.height), interpolation=cv2.INTER_LINEAR)
        return out


def model_image_layout(high_hw: Sequence[int], target_hw: Sequence[int] = MOTUS_IMAGE_HW) -> ModelImageLayout:
    mosaic = MosaicLayout.for_high_camera(int(high_hw[0]), int(high_hw[1]))
    return ModelImageLayout(mosaic=mosaic, pad=padding_info(mosaic.size_hw, target_hw))


def motus_model_image(images: Mapping[str, np.ndarray], target_hw: Sequence[int] = MOTUS_IMAGE_HW) -> np.ndarray:
    """Camera images by role -> the uint8 model-size image Motus sees (mosaic + resize-with-padding)."""
    return resize_with_padding(make_mosaic_from_roles(images), target_hw)


# ------------------------------------------------------------------ per-camera models (MoLA)


def mosaic_layout_of(mosaic_hw: Sequence[int]) -> MosaicLayout:
    """The layout of a mosaic of size ``mosaic_hw`` (inverse of ``MosaicLayout.size_hw``)."""
    mh, mw = int(mosaic_hw[0]), int(mosaic_hw[1])
    for high_h in (2 * mh // 3, 2 * mh // 3 + 1, 2 * mh // 3 - 1):
        if high_h > 1 and high_h + high_h // 2 == mh:
            return MosaicLayout.for_high_camera(high_h, mw)
    raise PreprocessingError(f"{mh}x{mw} is not the size of a three-camera mosaic (high H + H//2 rows)")


def mosaic_camera_images(mosaic: np.ndarray, roles: Sequence[str], target_hw: Sequence[int]) -> np.ndarray:
    """Per-camera model inputs from a mosaic: split, resize-with-padding each camera, [0, 1] CHW.

    Returns float32 ``(len(roles), 3, H, W)``. Models that take cameras separately (MoLA) use this on
    dataset frames and on live observations (via ``make_mosaic_from_roles``), so the wrist views have
    the same (half) resolution at deploy time as in the recorded mosaics.
    """
    check_rgb_image(mosaic, "mosaic")
    parts = split_mosaic(mosaic, mosaic_layout_of(mosaic.shape[:2]))
    unknown = [r for r in roles if r not in parts]
    if unknown:
        raise PreprocessingError(f"unknown camera roles {unknown}; the mosaic has {sorted(parts)}")
    return np.stack([to_unit_chw(resize_with_padding(np.ascontiguousarray(parts[r]), target_hw)) for r in roles])


# ----------------------------------------------------------------------------------- normalisation


class MinMaxNormalizer:
    """Per-dimension min-max normalisation to [0, 1] (Motus ``data/utils/norm.py``).

    Dimensions with max == min (a joint that never moved in the data) would divide by zero in the
    official code; here their range is taken as 1, so they pass through shifted by ``min``.
    """

    def __init__(self, minimum: Sequence[float], maximum: Sequence[float], name: str = ""):
        lo = np.asarray(minimum, dtype=np.float64)
        hi = np.asarray(maximum, dtype=np.float64)
        if lo.ndim != 1 or lo.shape != hi.shape:
            raise PreprocessingError(f"stats {name!r}: min and max must be 1-D of equal length, got {lo.shape} and {hi.shape}")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise PreprocessingError(f"stats {name!r}: non-finite min/max")
        if np.any(hi < lo):
            raise PreprocessingError(f"stats {name!r}: max < min at dims {np.nonzero(hi < lo)[0].tolist()}")
        self.name = name
        self.min = lo
        self.max = hi
        rng = hi - lo
        self.range = np.where(rng > 0, rng, 1.0)

    @property
    def dim(self) -> int:
        return int(self.min.shape[0])

    def _check(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.dim:
            raise PreprocessingError(f"{what}: last dimension is {x.shape[-1]}, stats {self.name!r} have {self.dim}")
        if not np.all(np.isfinite(x)):
            raise PreprocessingError(f"{what}: contains NaN or inf")
        return x

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return (self._check(x, "normalize") - self.min) / self.range

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return self._check(x, "denormalize") * self.range + self.min

    def to_stat_entry(self) -> dict:
        return {"min": self.min.tolist(), "max": self.max.tolist(), "action_dim": self.dim}

    @classmethod
    def from_stat_entry(cls, entry: Mapping, name: str = "") -> "MinMaxNormalizer":
        try:
            return cls(entry["min"], entry["max"], name=name)
        except KeyError as exc:
            raise PreprocessingError(f"stats entry {name!r} has no {exc.args[0]!r}") from None


def load_stats(path: str | Path | None, key: str) -> MinMaxNormalizer:
    """Read ``stat.json`` (official structure: ``{key: {"min": [...], "max": [...], ...}}``)."""
    p = Path(path) if path else DEFAULT_STATS_FILE
    if not p.is_file():
        raise PreprocessingError(f"normalisation statistics file not found: {p}")
    data = json.loads(p.read_text())
    if key not in data:
        raise PreprocessingError(f"no normalisation statistics for robot {key!r} in {p}; available: {sorted(data)}")
    return MinMaxNormalizer.from_stat_entry(data[key], name=key)


def write_stats(path: str | Path, key: str, normalizer: MinMaxNormalizer, **extra) -> None:
    """Add or replace one robot's entry of a ``stat.json`` file, keeping the others."""
    p = Path(path)
    data = json.loads(p.read_text()) if p.is_file() else {}
    entry = normalizer.to_stat_entry()
    entry.update(extra)
    data[key] = entry
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=4))
    tmp.replace(p)


def check_state(state: np.ndarray, dim: int) -> np.ndarray:
    x = np.asarray(state, dtype=np.float64)
    if x.shape != (dim,):
        raise PreprocessingError(f"state must have shape ({dim},), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise PreprocessingError(f"state contains NaN or inf: {x.tolist()}")
    return x
