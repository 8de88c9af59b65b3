"""The per-channel statistics Motus normalises VAE latents with, measured for a random VAE.

Motus feeds the DiT ``(mu - latents_mean) / latents_std`` per latent channel (``vae.py``); Wan2.2's
constants were measured on its own VAE's latents, so they have unit scale. A VAE built from random
weights (reduced models trained from scratch) has latents of another scale: the proof's random
VAE gives channel means of +-0.2 and standard deviations of 0.03-0.11, so with the config's 0 / 1 the
DiT saw image tokens about 10x smaller than the unit noise of flow matching, dominated by constant
channel offsets, with the cube's position a few per cent of their content. Measuring the statistics
on the training frames, as Wan's were measured, gives the random VAE's latents the scale the
architecture assumes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..vae import MotusVAE
from .step import video_pixels


def vae_is_random(source: str, init_vae: str) -> bool:
    """Whether the frozen VAE of a training run has random weights (see ``build_models``)."""
    return source == "scratch" or (source.startswith("pretrain") and not init_vae)


@torch.no_grad()
def measure_latent_statistics(vae: MotusVAE, frames: Sequence[torch.Tensor], batch: int = 8) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the VAE's raw latents (posterior means) over ``frames``:
    videos ``[3, T, H, W]`` in [0, 1] as the training step encodes them."""
    if not frames:
        raise ValueError("no frames to measure the VAE latent statistics on")
    total = None
    sq = None
    n = 0
    for i in range(0, len(frames), batch):
        video = torch.stack(list(frames[i:i + batch]))
        z = vae.encode_pixels(video).double() / vae.latents_inv_std.double() + vae.latents_mean.double()  # raw mu
        s = z.sum(dim=(0, 2, 3, 4))
        q = (z * z).sum(dim=(0, 2, 3, 4))
        total = s if total is None else total + s
        sq = q if sq is None else sq + q
        n += z.numel() // z.shape[1]
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return [float(x) for x in mean], [float(x) for x in std]


def sample_videos(dataset, count: int) -> list[torch.Tensor]:
    """``count`` training samples spread evenly over ``dataset`` (deterministic: every rank and every
    resume picks the same ones), as ``[3, T, H, W]`` videos."""
    idx = np.unique(np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int))
    out = []
    for i in idx:
        s = dataset[int(i)]
        batch = {"first_frame": torch.as_tensor(s["first_frame"])[None], "video_frames": torch.as_tensor(s["video_frames"])[None]}
        out.append(video_pixels(batch)[0])
    return out


def apply_statistics(vae: MotusVAE, vae_config: dict, mean: Sequence[float], std: Sequence[float]) -> None:
    """Use ``mean``/``std`` in ``vae`` and write them into the model config's VAE section (saved with
    every checkpoint, so the policy normalises as the training did)."""
    vae_config["latents_mean"] = [float(x) for x in mean]
    vae_config["latents_std"] = [float(x) for x in std]
    dev = vae.latents_mean.device
    vae.latents_mean.copy_(torch.tensor(mean, dtype=torch.float64, device=dev).float().view_as(vae.latents_mean))
    vae.latents_inv_std.copy_(torch.tensor(std, dtype=torch.float64, device=dev).reciprocal().float().view_as(vae.latents_inv_std))


def describe(mean: Sequence[float], std: Sequence[float]) -> str:
    m, s = np.asarray(mean), np.asarray(std)
    return f"channel means {m.min():+.3f}..{m.max():+.3f}, standard deviations {s.min():.4f}..{s.max():.4f}"
