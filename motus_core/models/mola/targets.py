"""Stage-II modality targets, produced online by frozen models (or OpenCV), loaded from local dirs.

* depth: Depth Anything V2 (transformers ``DepthAnythingForDepthEstimation``; use the Small model,
  Apache-2.0 - Base and larger are CC-BY-NC) -> relative depth, per-image standardised, on a grid;
* semantic: SAM (``SamModel``, what the release used) or SAM2 (``Sam2Model``, what the paper says)
  image embedding (SAM2: the last, 1/16-resolution FPN level) average-pooled to a 16x16 grid;
* flow: OpenCV DIS dense optical flow (MEDIUM preset) between a frame and the next imagined frame,
  sampled at the centres of a ``grid x grid`` cell lattice (release: CoTracker3 on a 28x28 grid of
  8-pixel cells at 224 px, which is CC-BY-NC and not installable), in cell units, with a
  forward-backward consistency visibility mask.

All producers take images (N, 3, S, S) in [0, 1] and return a map (N, C, G, G) (+ a weight map).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .loading import check_loading_info, local_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class TargetMap:
    value: torch.Tensor  # (N, C, G, G)
    weight: torch.Tensor | None = None  # (N, 1, G, G) per-cell loss weight (flow visibility)


class DepthTarget:
    channels = 1

    def __init__(self, model_dir: str, grid: int, input_size: int = 224, device="cpu"):
        from transformers import DepthAnythingForDepthEstimation

        model, info = DepthAnythingForDepthEstimation.from_pretrained(str(local_dir(model_dir, "depth model")),
                                                                     local_files_only=True, output_loading_info=True)
        check_loading_info(info, model_dir)
        patch = model.config.patch_size
        self.input_size = max(patch, input_size // patch * patch)
        self.model = model.to(device).eval().requires_grad_(False)
        self.grid = grid

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> TargetMap:
        dev = next(self.model.parameters()).device
        x = F.interpolate(images.to(dev).float(), size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        depth = self.model(pixel_values=imagenet_normalize(x)).predicted_depth[:, None]
        depth = F.adaptive_avg_pool2d(depth, self.grid)
        mean = depth.mean(dim=(2, 3), keepdim=True)
        std = depth.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        return TargetMap((depth - mean) / std)


class SemanticTarget:
    def __init__(self, model_dir: str, grid: int = 16, kind: str = "auto", device="cpu"):
        from transformers import AutoConfig, Sam2Model, SamModel

        root = local_dir(model_dir, "semantic (SAM/SAM2) model")
        if kind == "auto":
            kind = "sam2" if "sam2" in AutoConfig.from_pretrained(str(root), local_files_only=True).model_type else "sam"
        cls = {"sam": SamModel, "sam2": Sam2Model}.get(kind)
        if cls is None:
            raise ValueError(f"semantic target kind must be sam, sam2 or auto, got {kind!r}")
        model, info = cls.from_pretrained(str(root), local_files_only=True, output_loading_info=True)
        check_loading_info(info, model_dir)
        self.kind = kind
        self.model = model.to(device).eval().requires_grad_(False)
        vc = model.config.vision_config
        size = vc.backbone_config.image_size if kind == "sam2" else vc.image_size
        self.input_size = int(size[0] if isinstance(size, (list, tuple)) else size)
        self.grid = grid
        self.channels = int(vc.fpn_hidden_size if kind == "sam2" else vc.output_channels)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> TargetMap:
        dev = next(self.model.parameters()).device
        x = F.interpolate(images.to(dev).float(), size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        emb = self.model.get_image_embeddings(imagenet_normalize(x))
        if isinstance(emb, (list, tuple)):  # SAM2: FPN levels, the last is the 1/16 level the mask decoder reads
            emb = emb[-1]
        return TargetMap(F.adaptive_avg_pool2d(emb.float(), self.grid))


class FlowTarget:
    """Optical flow from ``frame_a`` to ``frame_b`` sampled on a cell lattice (OpenCV DIS)."""

    channels = 2

    def __init__(self, grid: int = 28, size: int = 224, visibility_px: float = 1.0, preset: str = "medium"):
        self.grid = grid
        self.size = size
        self.visibility_px = visibility_px
        self.preset = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                       "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[preset]
        cell = size / grid
        self.centres = (np.arange(grid) + 0.5) * cell  # pixel centres of the cells
        self.cell = cell

    def _grey(self, img: torch.Tensor) -> np.ndarray:
        x = F.interpolate(img[None].float(), size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        rgb = (x.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

    def pair(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dis = cv2.DISOpticalFlow_create(self.preset)
        fw = dis.calc(a, b, None)
        bw = dis.calc(b, a, None)
        ys, xs = np.meshgrid(self.centres, self.centres, indexing="ij")
        iy = np.clip(ys.astype(int), 0, self.size - 1)
        ix = np.clip(xs.astype(int), 0, self.size - 1)
        f = fw[iy, ix]  # (G, G, 2) x, y displacement in pixels
        # forward-backward consistency: flow back from where the point went should return it
        ty = np.clip(np.round(ys + f[..., 1]).astype(int), 0, self.size - 1)
        tx = np.clip(np.round(xs + f[..., 0]).astype(int), 0, self.size - 1)
        err = np.linalg.norm(f + bw[ty, tx], axis=-1)
        inside = (ys + f[..., 1] >= 0) & (ys + f[..., 1] < self.size) & (xs + f[..., 0] >= 0) & (xs + f[..., 0] < self.size)
        vis = (err < self.visibility_px) & inside
        return f / self.cell, vis.astype(np.float32)

    def __call__(self, frame_a: torch.Tensor, frame_b: torch.Tensor) -> TargetMap:
        flows, vis = [], []
        for a, b in zip(frame_a, frame_b):
            f, v = self.pair(self._grey(a), self._grey(b))
            flows.append(f)
            vis.append(v)
        value = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).float()
        return TargetMap(value, torch.from_numpy(np.stack(vis))[:, None])
