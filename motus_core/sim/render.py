"""Offscreen rendering of the simulated cameras (EGL, shadows and multi-sampling off).

``MUJOCO_GL`` must be set (``egl`` on a headless machine) before ``mujoco`` is first imported;
importing ``motus_core.sim`` first does it (see its ``__init__``). An EGL context
belongs to the thread that created it: create a :class:`CameraRenderer` on the thread that renders
(the sim node's physics thread) and close it there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from .model import CAMERA_NAMES


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of a rendered camera (pixels; ROS CameraInfo conventions, no distortion)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def k(self) -> list[float]:
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    @property
    def p(self) -> list[float]:
        return [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]


def intrinsics_from_fovy(fovy_deg: float, width: int, height: int) -> CameraIntrinsics:
    """MuJoCo cameras have square pixels and a vertical field of view ``fovy``; the optical axis goes
    through the image centre, which is pixel coordinate (w-1)/2, (h-1)/2 when pixel centres are integers."""
    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
    return CameraIntrinsics(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)


# MuJoCo cameras look along -z with +y up; ROS optical frames look along +z with +y down.
MJ_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


class CameraRenderer:
    """Renders the robot's cameras (roles ``high``, ``left_wrist``, ``right_wrist``) at one image size."""

    def __init__(self, model: mujoco.MjModel, width: int, height: int, roles: tuple[str, ...] = tuple(CAMERA_NAMES)):
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise ValueError(
                f"image size {width}x{height} exceeds the model's offscreen buffer "
                f"{model.vis.global_.offwidth}x{model.vis.global_.offheight} (build the model with a larger offscreen_size)"
            )
        self.model = model
        self.width = width
        self.height = height
        self.camera_ids = {}
        for role in roles:
            cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAMES[role])
            if cid < 0:
                raise ValueError(f"model has no camera {CAMERA_NAMES[role]!r} for role {role!r}")
            self.camera_ids[role] = cid
        self._renderer = mujoco.Renderer(model, height, width)
        self._option = mujoco.MjvOption()  # default: geom groups 0-2 visible, collision originals (3) hidden

    def intrinsics(self, role: str) -> CameraIntrinsics:
        return intrinsics_from_fovy(float(self.model.cam_fovy[self.camera_ids[role]]), self.width, self.height)

    def render(self, data: mujoco.MjData, role: str, out: np.ndarray | None = None) -> np.ndarray:
        """RGB image (height, width, 3) uint8 of camera ``role`` for the state in ``data``."""
        r = self._renderer
        r.update_scene(data, camera=self.camera_ids[role], scene_option=self._option)
        r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return r.render(out=out)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "CameraRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def camera_pose(model: mujoco.MjModel, data: mujoco.MjData, role: str) -> tuple[np.ndarray, np.ndarray]:
    """World position and rotation (3x3, columns = axes) of a camera's ROS optical frame."""
    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAMES[role])
    return data.cam_xpos[cid].copy(), data.cam_xmat[cid].reshape(3, 3) @ MJ_TO_OPTICAL
