"""Deterministic inputs for the visualisation tests: camera images, a prediction, a fixed chunk."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from motus_core.preprocessing import MOSAIC_ROLES, model_image_layout, motus_model_image
from motus_core.viz.render import image_difference, load_png, save_png

ROLE_RGB = {"high": (200, 60, 40), "left_wrist": (40, 170, 60), "right_wrist": (50, 80, 210)}


def camera_image(role: str, index: int, hw=(240, 320)) -> np.ndarray:
    """A camera frame that differs by role (colour) and by time (a moving square + gradient)."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    base = np.asarray(ROLE_RGB[role], np.float64)
    img[:] = (base[None, None] * (0.5 + 0.5 * xx[..., None] / w)).astype(np.uint8)
    s = max(4, h // 5)
    x0 = int((index * 17) % max(1, w - s))
    y0 = int((index * 11) % max(1, h - s))
    img[y0 : y0 + s, x0 : x0 + s] = (255, 255, 255)
    img[(yy // 20 + xx // 20) % 7 == 0] //= 2
    return img


def model_frame(index: int, hw=(240, 320)) -> np.ndarray:
    """What a world model would predict for frame ``index``: the mosaic of the live frames, model size."""
    return motus_model_image({r: camera_image(r, index, hw) for r in MOSAIC_ROLES})


def regions(hw=(240, 320), target_hw=(384, 320)):
    lay = model_image_layout(hw, target_hw)
    return [lay.regions[r] for r in MOSAIC_ROLES]


def fixed_chunk(profile, k: int = 48) -> np.ndarray:
    """A smooth (K, 14) chunk from the profile's home pose: both arms reach forward and sweep, grippers close."""
    home = np.asarray(profile.home, np.float64)
    s = np.linspace(0.0, 1.0, k)[:, None]
    q = np.repeat(home[None], k, axis=0)
    names = list(profile.joint_names)

    def col(n):
        return names.index(n)

    for side, sign in (("left", 1.0), ("right", -1.0)):
        q[:, col(f"{side}_waist")] += sign * 0.5 * np.sin(np.pi * s[:, 0])
        q[:, col(f"{side}_shoulder")] += 0.5 * s[:, 0]
        q[:, col(f"{side}_elbow")] -= 0.4 * s[:, 0]
        q[:, col(f"{side}_wrist_angle")] += 0.3 * s[:, 0]
        q[:, col(f"{side}_gripper")] = 1.0 - s[:, 0]
    return q


GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("MOTUS_UPDATE_GOLDEN") == "1"


def assert_matches_golden(img: np.ndarray, name: str) -> None:
    """Pixel comparison with a tolerance for font rasterisation / resampling differences between
    platforms: most pixels must be nearly equal, and only a small share may differ visibly."""
    path = GOLDEN / name
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"golden image {path} missing; run with MOTUS_UPDATE_GOLDEN=1 to create it and commit it")
        save_png(img, path)
    ref = load_png(path)
    d = image_difference(img, ref)
    assert img.shape == ref.shape, f"{name}: render is {img.shape}, golden is {ref.shape}"
    assert d["mean_abs"] < 2.0 and d["frac_changed"] < 0.01, f"{name} differs from the golden image: {d}"
