"""Exact depth, segmentation and optical flow of the simulated cameras (MoLA stage-II targets in sim).

On a real robot MoLA's modality targets come from frozen models (Depth Anything, SAM) and OpenCV
DIS flow (:mod:`motus_core.models.mola.targets`). In simulation the renderer knows the truth:

* depth: MuJoCo's depth buffer, metric z-depth along the optical axis (m);
* segmentation: the body under each pixel (MuJoCo's segmentation buffer gives the geom), mapped to
  :data:`SEMANTIC_CLASSES` by :func:`semantic_labels`;
* flow: every pixel is unprojected with its depth, attached to its body, moved with that body's
  recorded pose to the later frame and projected with the later camera pose (wrist cameras move).
  Rigid bodies make this exact. A pixel that hits no geom sees the background at infinity and moves
  with the camera's rotation only. A pixel is valid where it lands in the image, in front of the
  camera and is not hidden at the later frame (its predicted depth matches the later depth buffer,
  or background stays background).

:class:`GroundTruthRecorder` stores per frame the depth and body-id images of the chosen cameras at
the size the camera has in the dataset mosaic (wrist views at half size), plus every body's pose and
every camera's pose, in one ``.npz`` per episode beside the Motus layout
(``<task>/sim_ground_truth/<id>.npz``; one compressed member per image so a reader decompresses only
the frames it needs). :class:`GroundTruthEpisode` reads it back and computes flow between any two frames.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import mujoco
import numpy as np

from .model import CAMERA_NAMES
from .render import MJ_TO_OPTICAL, CameraIntrinsics, intrinsics_from_fovy

FORMAT_VERSION = 1
GROUND_TRUTH_DIR = "sim_ground_truth"

# Task-independent classes, so one semantic decoder serves every sim task.
SEMANTIC_CLASSES = ("background", "left_arm", "left_gripper", "right_arm", "right_gripper", "cube", "peg", "socket")
_OBJECT_CLASS = {"box": "cube", "peg": "peg", "socket": "socket"}
_BACKGROUND_BODIES = {"world", "table", "midair"}
_GRIPPER_PARTS = ("gripper_prop_link", "left_finger_link", "right_finger_link")


class GroundTruthError(ValueError):
    """A ground-truth file that is missing, of another format, or asked for a frame it does not hold."""


def semantic_labels(model: mujoco.MjModel) -> np.ndarray:
    """Class index (into :data:`SEMANTIC_CLASSES`) of every body; an unknown body is an error, not background."""
    labels = np.zeros(model.nbody, dtype=np.int16)
    for b in range(model.nbody):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) or ""
        side = "left" if "left" in name.split("/")[0] else "right" if "right" in name.split("/")[0] else None
        if name in _BACKGROUND_BODIES:
            cls = "background"
        elif name in _OBJECT_CLASS:
            cls = _OBJECT_CLASS[name]
        elif side and name.endswith(_GRIPPER_PARTS):
            cls = f"{side}_gripper"
        elif side and (name.startswith("vx300s_") or name.endswith("_wrist_camera_mount")):
            cls = f"{side}_arm"
        else:
            raise GroundTruthError(f"body {name!r} (id {b}) has no semantic class; extend semantic_labels()")
        labels[b] = SEMANTIC_CLASSES.index(cls)
    return labels


class GroundTruthRenderer:
    """Depth and body-id images of cameras, each at its own size (one offscreen renderer per size).

    Like :class:`~motus_core.sim.render.CameraRenderer`, create and use it on one thread (EGL context).
    """

    def __init__(self, model: mujoco.MjModel, sizes: dict[str, tuple[int, int]]):
        self.model = model
        self.sizes = {role: (int(h), int(w)) for role, (h, w) in sizes.items()}
        self.camera_ids = {}
        for role in self.sizes:
            if role not in CAMERA_NAMES:
                raise GroundTruthError(f"unknown camera role {role!r}; known: {sorted(CAMERA_NAMES)}")
            self.camera_ids[role] = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAMES[role])
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        for hw in set(self.sizes.values()):
            self._renderers[hw] = mujoco.Renderer(model, hw[0], hw[1])
        self._option = mujoco.MjvOption()  # the same geom groups as the RGB cameras

    def intrinsics(self, role: str) -> CameraIntrinsics:
        h, w = self.sizes[role]
        return intrinsics_from_fovy(float(self.model.cam_fovy[self.camera_ids[role]]), w, h)

    def render(self, data: mujoco.MjData, role: str) -> tuple[np.ndarray, np.ndarray]:
        """(depth (H, W) float32 in m, body id (H, W) int16, -1 where no geom is hit)."""
        r = self._renderers[self.sizes[role]]
        r.update_scene(data, camera=self.camera_ids[role], scene_option=self._option)
        r.enable_depth_rendering()
        depth = r.render().astype(np.float32, copy=True)
        r.disable_depth_rendering()
        r.enable_segmentation_rendering()
        seg = r.render()
        r.disable_segmentation_rendering()
        geom = seg[..., 0]
        is_geom = (geom >= 0) & (seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM))
        body = np.full(geom.shape, -1, dtype=np.int16)
        body[is_geom] = self.model.geom_bodyid[geom[is_geom]]
        depth[body < 0] = 0.0  # nothing hit: no depth (the far plane is not a distance)
        return depth, body

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


def _camera_pose(model, data, cam_id: int) -> np.ndarray:
    """4x4 world pose of a camera's ROS optical frame (+z forward, +y down)."""
    T = np.eye(4)
    T[:3, :3] = data.cam_xmat[cam_id].reshape(3, 3) @ MJ_TO_OPTICAL
    T[:3, 3] = data.cam_xpos[cam_id]
    return T


class GroundTruthRecorder:
    """Collects one episode's ground truth frame by frame and writes it atomically."""

    def __init__(self, model: mujoco.MjModel, sizes: dict[str, tuple[int, int]]):
        self.model = model
        self.renderer = GroundTruthRenderer(model, sizes)
        self.roles = tuple(sizes)
        self.labels = semantic_labels(model)
        self.reset()

    def reset(self) -> None:
        self._images: dict[str, np.ndarray] = {}
        self._body_pose: list[np.ndarray] = []
        self._cam_pose: list[np.ndarray] = []

    @property
    def frames(self) -> int:
        return len(self._body_pose)

    def add(self, data: mujoco.MjData) -> None:
        t = self.frames
        for role in self.roles:
            depth, body = self.renderer.render(data, role)
            self._images[f"depth_{role}_{t:06d}"] = depth.astype(np.float16)  # mm resolution at 1 m
            self._images[f"body_{role}_{t:06d}"] = body
        pose = np.zeros((self.model.nbody, 4, 4))
        pose[:, :3, :3] = data.xmat.reshape(-1, 3, 3)
        pose[:, :3, 3] = data.xpos
        pose[:, 3, 3] = 1.0
        self._body_pose.append(pose)
        self._cam_pose.append(np.stack([_camera_pose(self.model, data, self.renderer.camera_ids[r]) for r in self.roles]))

    def save(self, path: str | Path) -> Path:
        if self.frames == 0:
            raise GroundTruthError("no frames recorded")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ks = {r: self.renderer.intrinsics(r) for r in self.roles}
        intr = np.array([[*self.renderer.sizes[r], ks[r].fx, ks[r].fy, ks[r].cx, ks[r].cy] for r in self.roles], dtype=np.float64)
        names = [mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_BODY, b) or "" for b in range(self.model.nbody)]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez_compressed(
            tmp, format_version=np.array(FORMAT_VERSION), roles=np.array(self.roles), frames=np.array(self.frames),
            intrinsics=intr, body_pose=np.stack(self._body_pose).astype(np.float32),
            camera_pose=np.stack(self._cam_pose).astype(np.float32), body_names=np.array(names),
            body_class=self.labels, classes=np.array(SEMANTIC_CLASSES), **self._images)
        os.replace(tmp, path)
        return path

    def close(self) -> None:
        self.renderer.close()


class GroundTruthEpisode:
    """Read access to one episode's ground truth (lazy: only the asked frames are decompressed)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise GroundTruthError(f"no simulator ground truth at {self.path}")
        self._npz = np.load(self.path, allow_pickle=False)
        version = int(self._npz["format_version"])
        if version != FORMAT_VERSION:
            raise GroundTruthError(f"{self.path}: ground-truth format {version}, this reader knows {FORMAT_VERSION}")
        self.roles = tuple(str(r) for r in self._npz["roles"])
        self.frames = int(self._npz["frames"])
        self.body_pose = self._npz["body_pose"].astype(np.float64)  # (T, nbody, 4, 4)
        self.camera_pose = self._npz["camera_pose"].astype(np.float64)  # (T, roles, 4, 4)
        self.body_class = self._npz["body_class"].astype(np.int64)
        classes = tuple(str(c) for c in self._npz["classes"])
        if classes != SEMANTIC_CLASSES:
            raise GroundTruthError(f"{self.path}: semantic classes {classes} differ from {SEMANTIC_CLASSES}")
        self._intr = {r: row for r, row in zip(self.roles, self._npz["intrinsics"])}
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()  # a frame is read for depth, classes and flow

    def _image(self, kind: str, role: str, t: int) -> np.ndarray:
        self._role(role)
        key = f"{kind}_{role}_{self._frame(t):06d}"
        if key not in self._images:
            self._images[key] = self._npz[key]
            while len(self._images) > 8:
                self._images.popitem(last=False)
        self._images.move_to_end(key)
        return self._images[key]

    def _role(self, role: str) -> int:
        if role not in self.roles:
            raise GroundTruthError(f"{self.path}: no ground truth for camera {role!r} (has {self.roles})")
        return self.roles.index(role)

    def _frame(self, t: int) -> int:
        if not 0 <= t < self.frames:
            raise GroundTruthError(f"{self.path}: frame {t} outside [0, {self.frames})")
        return t

    def size(self, role: str) -> tuple[int, int]:
        h, w = self._intr[self.roles[self._role(role)]][:2]
        return int(h), int(w)

    def depth(self, role: str, t: int) -> np.ndarray:
        return self._image("depth", role, t).astype(np.float32)

    def body(self, role: str, t: int) -> np.ndarray:
        return self._image("body", role, t).astype(np.int64)

    def semantic(self, role: str, t: int) -> np.ndarray:
        """Class index per pixel; background where no geom is hit."""
        body = self.body(role, t)
        return np.where(body >= 0, self.body_class[np.clip(body, 0, None)], 0)

    def flow(self, role: str, ta: int, tb: int, occlusion_tol: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
        """Exact flow from frame ``ta`` to ``tb``: (H, W, 2) pixel displacement (x, y) and (H, W) validity.

        ``occlusion_tol``: metres (plus 1 % of the depth) by which the moved point may differ from the
        later depth buffer and still count as visible.
        """
        r = self._role(role)
        h, w, fx, fy, cx, cy = self._intr[role]
        h, w = int(h), int(w)
        depth_a, body_a, depth_b = self.depth(role, ta), self.body(role, ta), self.depth(role, tb)
        v, u = np.mgrid[0:h, 0:w].astype(np.float64)
        hit = body_a >= 0
        # a pixel that hits nothing sees the background at infinity: a direction (w = 0), moved by
        # camera rotation only
        z = np.where(hit, depth_a.astype(np.float64), 1.0)
        pts_cam = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z, hit.astype(np.float64)], axis=-1)  # (H, W, 4)
        world_a = pts_cam @ self.camera_pose[ta, r].T
        # move each point with its body: p_b = T_body(tb) @ inv(T_body(ta)) @ p_a
        motion = self.body_pose[tb] @ np.linalg.inv(self.body_pose[ta])  # (nbody, 4, 4)
        m = motion[np.clip(body_a, 0, None)]  # (H, W, 4, 4); world body 0 has identity motion
        world_b = np.einsum("hwij,hwj->hwi", m, world_a)
        cam_b = world_b @ np.linalg.inv(self.camera_pose[tb, r]).T
        zb = cam_b[..., 2]
        in_front = zb > 1e-6
        zs = np.where(in_front, zb, 1.0)
        ub = fx * cam_b[..., 0] / zs + cx
        vb = fy * cam_b[..., 1] / zs + cy
        inside = in_front & (ub > -0.5) & (ub < w - 0.5) & (vb > -0.5) & (vb < h - 0.5)
        iu = np.clip(np.rint(ub), 0, w - 1).astype(np.int64)
        iv = np.clip(np.rint(vb), 0, h - 1).astype(np.int64)
        seen = depth_b[iv, iu].astype(np.float64)
        visible_point = hit & (seen > 0) & (np.abs(seen - zb) <= occlusion_tol + 0.01 * zb)
        visible_background = ~hit & (seen == 0)  # still background at the later frame
        visible = inside & (visible_point | visible_background)
        flow = np.stack([ub - u, vb - v], axis=-1)
        flow[~inside] = 0.0
        return flow.astype(np.float32), visible


def ground_truth_path(task_dir: str | Path, episode_id: str) -> Path:
    return Path(task_dir) / GROUND_TRUTH_DIR / f"{episode_id}.npz"


def mosaic_sizes(high_hw: Sequence[int], roles: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Each camera's size inside the dataset mosaic of a high camera of ``high_hw`` (wrists at half size)."""
    from motus_core.preprocessing import MosaicLayout

    layout = MosaicLayout.for_high_camera(int(high_hw[0]), int(high_hw[1]))
    unknown = [r for r in roles if r not in layout.regions]
    if unknown:
        raise GroundTruthError(f"unknown camera roles {unknown}; the mosaic has {sorted(layout.regions)}")
    return {r: (layout.regions[r].height, layout.regions[r].width) for r in roles}
