"""Stage-II modality targets from the simulator's exact ground truth (``stage2.targets: sim``).

The learned producers of :mod:`.targets` stand in for what a real robot cannot measure. A simulated
dataset written by ``motus-sim-dataset --ground-truth high`` holds the exact depth, segmentation and
body poses of every frame (:mod:`motus_core.sim.ground_truth`); this module turns them into targets
of the same shapes and units as the learned ones, so the stage-II model and loss are unchanged:

* depth: inverse depth (1/m; 0 where nothing is hit and in the letterbox padding, like a far
  background), average-pooled to ``depth_grid`` and standardised per image, as the Depth Anything
  target (which is relative inverse depth) is;
* semantic: per-cell class fractions over :data:`SEMANTIC_CLASSES` (one channel per class) on
  ``semantic_grid`` - the exact counterpart of pooled SAM features for "what is where";
* flow: exact flow from a frame to the next clip frame, sampled at the cell centres of ``flow_grid``
  in cell units, with the visibility mask as loss weight (as :class:`~.targets.FlowTarget`).

Dense maps are built per sample in the dataset (so DataLoader workers do the work) at the model's
image size, letterboxed exactly like the camera images (:func:`motus_core.preprocessing.padding_info`),
and reduced to grids in the stage after the random-shift augmentation, which moves them with the images.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from motus_core.preprocessing import padding_info
from motus_core.sim.ground_truth import SEMANTIC_CLASSES, GroundTruthEpisode, GroundTruthError, ground_truth_path

from .targets import TargetMap

CHANNELS = {"depth": 1, "semantic": len(SEMANTIC_CLASSES), "flow": 2}


def letterbox(arr: np.ndarray, target_hw: Sequence[int], fill=0) -> tuple[np.ndarray, float]:
    """Place a per-pixel map (H, W[, C]) into ``target_hw`` with the geometry of ``resize_with_padding``
    (nearest neighbour: labels stay labels, depth edges stay sharp). Returns the map and its scale."""
    info = padding_info(arr.shape[:2], target_hw)
    c = info.content
    out = np.full((info.target_hw[0], info.target_hw[1], *arr.shape[2:]), fill, dtype=arr.dtype)
    resized = arr if (c.height, c.width) == arr.shape[:2] else cv2.resize(arr, (c.width, c.height), interpolation=cv2.INTER_NEAREST)
    out[c.y: c.y + c.height, c.x: c.x + c.width] = resized.reshape(c.height, c.width, *arr.shape[2:])
    return out, info.scale


class SimGroundTruthMaps:
    """Dense per-sample maps for the IDM cameras and frames of a MoLA config (used by the dataset)."""

    def __init__(self, roles: Sequence[str], frames: tuple[int, int], image_size: int, want_flow: bool, cache: int = 4):
        self.roles, self.frames, self.size, self.want_flow = tuple(roles), frames, int(image_size), want_flow
        self._open: OrderedDict[Path, GroundTruthEpisode] = OrderedDict()
        self._cache = cache

    def episode(self, task_dir: Path, episode_id: str) -> GroundTruthEpisode:
        path = ground_truth_path(task_dir, episode_id)
        if path not in self._open:
            if not path.is_file():
                raise GroundTruthError(f"stage2.targets is 'sim' but episode {task_dir.name}/{episode_id} has no ground truth "
                                       f"({path}); write the dataset with motus-sim-dataset --ground-truth high")
            self._open[path] = GroundTruthEpisode(path)
            while len(self._open) > self._cache:
                self._open.popitem(last=False)
        self._open.move_to_end(path)
        return self._open[path]

    def __call__(self, task_dir: Path, episode_id: str, clip_frames: Sequence[int]) -> dict[str, torch.Tensor]:
        """``clip_frames``: the episode frame index of every clip frame. Returns tensors with a leading
        camera axis: depth (V, 2, 1, S, S) inverse depth, labels (V, 2, 1, S, S) uint8, and with flow
        flow (V, 2, 2, S, S) in pixels of the S x S image and valid (V, 2, 1, S, S) (from each IDM frame
        to the next clip frame)."""
        gt = self.episode(Path(task_dir), episode_id)
        size = (self.size, self.size)
        f0, f1 = self.frames
        out = {"depth": [], "labels": [], "flow": [], "valid": []}
        for role in self.roles:
            depth, labels, flow, valid = [], [], [], []
            for f in (f0, f1):
                t = clip_frames[f]
                d = gt.depth(role, t)
                inv = np.where(d > 0, 1.0 / np.maximum(d, 1e-3), 0.0).astype(np.float32)
                depth.append(letterbox(inv, size)[0])
                labels.append(letterbox(gt.semantic(role, t).astype(np.int16), size)[0])
                if self.want_flow:
                    fl, vis = gt.flow(role, t, clip_frames[f + 1])
                    fl_box, scale = letterbox(fl, size)
                    flow.append(fl_box * np.float32(scale))
                    valid.append(letterbox(vis.astype(np.uint8), size)[0])
            out["depth"].append(np.stack(depth)[:, None])
            out["labels"].append(np.stack(labels)[:, None].astype(np.uint8))
            if self.want_flow:
                out["flow"].append(np.stack(flow).transpose(0, 3, 1, 2))
                out["valid"].append(np.stack(valid)[:, None].astype(np.float32))
        return {k: torch.from_numpy(np.ascontiguousarray(np.stack(v))) for k, v in out.items() if v}


def depth_target(inv_depth: torch.Tensor, grid: int) -> TargetMap:
    """(N, 1, S, S) inverse depth -> standardised (N, 1, G, G), as :class:`~.targets.DepthTarget`."""
    d = F.adaptive_avg_pool2d(inv_depth.float(), grid)
    mean = d.mean(dim=(2, 3), keepdim=True)
    std = d.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return TargetMap((d - mean) / std)


def semantic_target(labels: torch.Tensor, grid: int) -> TargetMap:
    """(N, 1, S, S) class indices -> per-cell class fractions (N, C, G, G)."""
    onehot = F.one_hot(labels[:, 0].long().clamp(0, len(SEMANTIC_CLASSES) - 1), len(SEMANTIC_CLASSES))
    return TargetMap(F.adaptive_avg_pool2d(onehot.permute(0, 3, 1, 2).float(), grid))


def flow_target(flow: torch.Tensor, valid: torch.Tensor, grid: int) -> TargetMap:
    """(N, 2, S, S) pixel flow + (N, 1, S, S) validity -> cell-centre samples in cell units (N, 2, G, G)
    with weights (N, 1, G, G), on the same lattice as :class:`~.targets.FlowTarget`."""
    size = flow.shape[-1]
    cell = size / grid
    idx = torch.clamp(((torch.arange(grid) + 0.5) * cell).long(), 0, size - 1).to(flow.device)
    value = flow[:, :, idx][:, :, :, idx] / cell
    weight = valid[:, :, idx][:, :, :, idx]
    return TargetMap(value.float(), weight.float())
