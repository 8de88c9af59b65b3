"""Pictures for people: comparison images, contact sheets, top-down path plots (Pillow).

Everything returns HxWx3 uint8 RGB numpy arrays (what the visualizer node publishes as
``sensor_msgs/Image`` and the command-line tools write as PNG).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import cv2
from PIL import Image, ImageDraw, ImageFont

from .compare import ChunkComparison, Comparison
from .frames import PredictedViews
from .markers import DELETE_ALL, LINE_STRIP, SPHERE, SPHERE_LIST, TEXT, MarkerGeometry

BACKGROUND = (24, 24, 28)
MISSING = (60, 60, 66)
TEXT_RGB = (235, 235, 235)
MUTED_RGB = (160, 160, 170)


@lru_cache(maxsize=8)
def _font(size: int):
    # Pillow's bundled font: identical on every machine with the same Pillow (golden images).
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), mode="RGB")


class _Canvas:
    """An RGB numpy canvas: tiles are pasted as arrays (fast), text is drawn once at the end (Pillow)."""

    def __init__(self, width: int, height: int):
        self.img = np.broadcast_to(np.asarray(BACKGROUND, np.uint8), (height, width, 3)).copy()
        self.texts: list[tuple[tuple[float, float], str, int, tuple[int, int, int]]] = []

    def text(self, xy: tuple[float, float], text: str, size: int = 13, fill=TEXT_RGB) -> None:
        self.texts.append((xy, text, size, fill))

    def tile(self, img: np.ndarray | None, x: int, y: int, size: tuple[int, int], note: str = "") -> None:
        """Fit ``img`` into the (width, height) box at (x, y) keeping its aspect; ``None``: a grey box with ``note``."""
        w, h = size
        if img is None:
            self.img[y : y + h, x : x + w] = MISSING
            if note:
                fs = max(10, h // 10)
                width = _font(fs).getlength(note)
                self.text((x + (w - width) / 2, y + h / 2 - h // 20), note, fs, MUTED_RGB)
            return
        scale = min(w / img.shape[1], h / img.shape[0])
        nw, nh = max(1, int(round(img.shape[1] * scale))), max(1, int(round(img.shape[0] * scale)))
        if (nw, nh) != (img.shape[1], img.shape[0]):
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        x0, y0 = x + (w - nw) // 2, y + (h - nh) // 2
        self.img[y0 : y0 + nh, x0 : x0 + nw] = img

    def finish(self) -> np.ndarray:
        if not self.texts:
            return self.img
        pil = _pil(self.img)
        d = ImageDraw.Draw(pil)
        for xy, text, size, fill in self.texts:
            d.text(xy, text, font=_font(size), fill=fill)
        return np.array(pil)


def _aspect(views: Sequence[dict[str, np.ndarray]], roles: Sequence[str]) -> float:
    for v in views:
        for r in roles:
            img = v.get(r)
            if img is not None:
                return img.shape[1] / img.shape[0]
    return 4.0 / 3.0


def side_by_side(c: Comparison, roles: Sequence[str] | None = None, tile_height: int = 180) -> np.ndarray:
    """One predicted frame next to the live frames of the same time: a row per camera, [live | predicted]."""
    roles = list(roles or c.predicted)
    tile_w = int(round(tile_height * _aspect([c.predicted], roles)))
    label_w, head_h, gap = 96, 40, 4
    canvas = _Canvas(label_w + 2 * tile_w + 3 * gap, head_h + len(roles) * (tile_height + gap) + gap)
    canvas.text((gap, 6), f"chunk {c.chunk_id}  frame {c.index + 1}: predicts t_obs {c.offset:+.2f} s")
    canvas.text((label_w + gap + 2, head_h - 16), "live", fill=MUTED_RGB)
    canvas.text((label_w + tile_w + 2 * gap + 2, head_h - 16), "predicted", fill=MUTED_RGB)
    for i, role in enumerate(roles):
        y = head_h + i * (tile_height + gap)
        stamp = c.live_stamps.get(role)
        canvas.text((gap, y + 4), role)
        if stamp is not None:
            canvas.text((gap, y + 22), f"dt {int(round(1000 * (stamp - c.time))):+d} ms", 11, MUTED_RGB)
        canvas.tile(c.live.get(role), label_w + gap, y, (tile_w, tile_height), "no live frame")
        canvas.tile(c.predicted.get(role), label_w + tile_w + 2 * gap, y, (tile_w, tile_height), "not predicted")
    return canvas.finish()


def contact_sheet(prediction: PredictedViews, live: Sequence[dict[str, np.ndarray | None]] | None = None,
                  roles: Sequence[str] | None = None, tile_width: int = 160, title: str = "") -> np.ndarray:
    """All frames of one prediction in a grid: a column per frame, a row per camera.

    With ``live`` (one dict per frame), each camera gets a second row with the live frames of the
    same times (predicted vs actual). The first column shows the model input when known.
    """
    roles = list(roles or prediction.roles)
    frames = list(prediction.views)
    has_input = prediction.condition is not None
    tile_h = int(round(tile_width / _aspect(frames, roles)))
    label_w, head_h, gap = 110, 40, 3
    rows = [(r, "pred") for r in roles] if live is None else [(r, kind) for r in roles for kind in ("pred", "live")]
    first = 1 if has_input else 0
    cols = len(frames) + first
    canvas = _Canvas(label_w + cols * (tile_width + gap) + gap, head_h + len(rows) * (tile_h + gap) + gap)
    head = title or f"chunk {prediction.chunk_id}" + (f"  {prediction.model}/{prediction.mode}" if prediction.model or prediction.mode else "")
    canvas.text((gap, 4), head)
    offsets = prediction.offsets()
    for j in range(cols):
        x = label_w + gap + j * (tile_width + gap)
        canvas.text((x + 2, head_h - 16), "input" if j < first else f"{offsets[j - first]:+.2f} s", 11, MUTED_RGB)
    for i, (role, kind) in enumerate(rows):
        y = head_h + i * (tile_h + gap)
        canvas.text((gap, y + 4), role)
        canvas.text((gap, y + 22), "predicted" if kind == "pred" else "actual", 11, MUTED_RGB)
        for j in range(cols):
            x = label_w + gap + j * (tile_width + gap)
            if j < first:  # the model input has no "actual" counterpart
                if kind == "pred":
                    canvas.tile(prediction.condition.get(role), x, y, (tile_width, tile_h), "no input")  # type: ignore[union-attr]
                continue
            k = j - first
            if kind == "pred":
                canvas.tile(frames[k].get(role), x, y, (tile_width, tile_h), "not predicted")
            else:
                canvas.tile((live[k] or {}).get(role), x, y, (tile_width, tile_h), "no live frame")  # type: ignore[index]
    return canvas.finish()


def chunk_contact_sheet(cc: ChunkComparison, tile_width: int = 160) -> np.ndarray:
    """Predicted vs actual contact sheet of a settled prediction."""
    return contact_sheet(cc.prediction, cc.live_views, tile_width=tile_width)


def render_markers_topdown(markers: Sequence[MarkerGeometry], size: tuple[int, int] = (480, 360),
                           extent: tuple[float, float, float, float] | None = None, title: str = "") -> np.ndarray:
    """Draw marker geometry seen from above (x right, y up) for a quick look or a golden image.

    ``extent``: (x_min, x_max, y_min, y_max) in metres; default: the points' bounds plus a margin.
    Line strips are drawn segment by segment in their vertex colours, sphere lists as dots.
    """
    pts_all = [m.points for m in markers if m.kind in (LINE_STRIP, SPHERE_LIST) and len(m.points)]
    pts_all += [np.asarray([m.position]) for m in markers if m.kind == SPHERE]
    if extent is None:
        if pts_all:
            p = np.concatenate(pts_all)
            lo, hi = p[:, :2].min(axis=0), p[:, :2].max(axis=0)
        else:
            lo, hi = np.array([-0.5, -0.5]), np.array([0.5, 0.5])
        span = max(float((hi - lo).max()), 0.05)
        c = (lo + hi) / 2
        extent = (c[0] - 0.6 * span, c[0] + 0.6 * span, c[1] - 0.6 * span, c[1] + 0.6 * span)
    x0, x1, y0, y1 = extent
    w, h = size
    s = min(w / (x1 - x0), h / (y1 - y0))
    ox, oy = (w - s * (x1 - x0)) / 2, (h - s * (y1 - y0)) / 2

    def px(p) -> tuple[float, float]:
        return (ox + (p[0] - x0) * s, h - (oy + (p[1] - y0) * s))

    img = Image.new("RGB", size, BACKGROUND)
    d = ImageDraw.Draw(img)
    # 10 cm grid
    step = 0.1
    for gx in np.arange(np.ceil(x0 / step) * step, x1, step):
        d.line([px((gx, y0)), px((gx, y1))], fill=(45, 45, 52))
    for gy in np.arange(np.ceil(y0 / step) * step, y1, step):
        d.line([px((x0, gy)), px((x1, gy))], fill=(45, 45, 52))

    def rgb(c) -> tuple[int, int, int]:
        c = np.clip(np.asarray(c[:3], dtype=np.float64), 0, 1)
        return tuple(int(round(v * 255)) for v in c)  # type: ignore[return-value]

    # beads first, lines over them: seen from above the gripper track lies under the path
    order = sorted(markers, key=lambda m: {SPHERE_LIST: 0, LINE_STRIP: 1}.get(m.kind, 2))
    for m in order:
        if m.kind == DELETE_ALL:
            continue
        if m.kind == LINE_STRIP:
            width = max(1, int(round(m.scale[0] * s)))
            for a, b, col in zip(m.points[:-1], m.points[1:], m.colors[1:]):
                d.line([px(a), px(b)], fill=rgb(col), width=width)
        elif m.kind == SPHERE_LIST:
            r = max(1.5, m.scale[0] * s / 2)
            for p, col in zip(m.points, m.colors):
                x, y = px(p)
                d.ellipse([x - r, y - r, x + r, y + r], fill=rgb(col))
        elif m.kind == SPHERE:
            r = max(2.0, m.scale[0] * s / 2)
            x, y = px(m.position)
            d.ellipse([x - r, y - r, x + r, y + r], outline=rgb(m.color), width=2)
        elif m.kind == TEXT:
            x, y = px(m.position)
            d.text((x, y), m.text, font=_font(11), fill=rgb(m.color))
    if title:
        d.text((6, 4), title, font=_font(13), fill=TEXT_RGB)
    return np.asarray(img)


def save_png(img: np.ndarray, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _pil(img).save(p, format="PNG", optimize=True)
    return p


def load_png(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def image_difference(a: np.ndarray, b: np.ndarray, threshold: int = 48) -> dict[str, float]:
    """How different two renders are: mean absolute difference (0..255) and the fraction of pixels
    whose largest channel difference exceeds ``threshold``. Different shapes: infinite."""
    if a.shape != b.shape:
        return {"mean_abs": float("inf"), "frac_changed": 1.0}
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"mean_abs": float(diff.mean()), "frac_changed": float((diff.max(axis=-1) > threshold).mean())}
