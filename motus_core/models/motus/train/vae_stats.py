"""The per-channel statistics Motus normalises VAE latents with, measured for a random VAE.

Motus feeds the DiT ``(mu - latents_mean) / latents_std`` per latent channel (``vae.py``); Wan2.2's
constants were measured on its own VAE's latents, so they have unit scale. A VAE built from random
weights (reduced models trained from scratch) has latents of another scale: the proof's random
VAE gives channel means of +-0.2 and standard deviations of 0.03-0.11, so with the config's 0 / 1 the
DiT saw image tokens about 10x smaller than the unit noise of flow matching, dominated by constant
channel offsets, with the cube's position a few per cent of their content. Measuring the statistics
on the training frames, as Wan's were measured, gives the random VAE's latents the scale the
architecture assumes.

Per grid cell (``init.vae_statistics=measure_per_position``) is for a random VAE only: each cell's constant
content (the table, the arms at rest: the same in every frame) is subtracted and its variation scaled to
one, so a few-pixel object is no longer a few per cent of a token dominated by the static scene (a linear
probe on latents standardised this way reads the cube to 5-9 mm, ``bench/encoder_probe.py``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..vae import MotusVAE, latent_statistic
from .step import video_pixels


def vae_is_random(source: str, init_vae: str) -> bool:
    """Whether the frozen VAE of a training run has random weights (see ``build_models``)."""
    return source == "scratch" or (source.startswith("pretrain") and not init_vae)


# per grid cell, a deviation is floored at this fraction of its channel's: cells that never change (the black
# padding of resize_with_padding) would otherwise turn numerical noise into values of any size
CELL_STD_FLOOR = 0.1


@torch.no_grad()
def measure_latent_statistics(vae: MotusVAE, frames: Sequence[torch.Tensor], batch: int = 8,
                              per_position: bool = False) -> tuple[list, list]:
    """Mean and standard deviation of the VAE's raw latents (posterior means) over ``frames``: videos
    ``[3, T, H, W]`` in [0, 1] as the training step encodes them. Per channel (``[C]`` lists, as Wan's), or with
    ``per_position`` per channel and latent grid cell (``[C][h][w]``; a cell's deviation at least
    ``CELL_STD_FLOOR`` of its channel's)."""
    if not frames:
        raise ValueError("no frames to measure the VAE latent statistics on")
    total = sq = None
    n = 0
    for i in range(0, len(frames), batch):
        video = torch.stack(list(frames[i:i + batch]))
        z = vae.encode_pixels(video).double() / vae.latents_inv_std.double() + vae.latents_mean.double()  # raw mu
        s, q = z.sum(dim=(0, 2)), (z * z).sum(dim=(0, 2))  # [C, h, w]
        total = s if total is None else total + s
        sq = q if sq is None else sq + q
        n += z.shape[0] * z.shape[2]
    cell_mean = total / n
    channel_mean = cell_mean.mean(dim=(1, 2))
    channel_std = (sq.mean(dim=(1, 2)) / n - channel_mean ** 2).clamp_min(0).sqrt().clamp_min(1e-6)
    if not per_position:
        return [float(x) for x in channel_mean], [float(x) for x in channel_std]
    cell_std = (sq / n - cell_mean ** 2).clamp_min(0).sqrt()
    cell_std = torch.maximum(cell_std, CELL_STD_FLOOR * channel_std[:, None, None])
    return cell_mean.tolist(), cell_std.tolist()


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


def apply_statistics(vae: MotusVAE, vae_config: dict, mean: list, std: list) -> None:
    """Use ``mean``/``std`` (``[C]`` or ``[C][h][w]``) in ``vae`` and write them into the model config's VAE
    section (saved with every checkpoint, so the policy normalises as the training did)."""
    vae_config["latents_mean"] = mean
    vae_config["latents_std"] = std
    dev = vae.latents_mean.device
    vae.latents_mean = latent_statistic(mean).float().to(dev)
    vae.latents_inv_std = latent_statistic(std).reciprocal().float().to(dev)


def describe(mean: list, std: list) -> str:
    m, s = np.asarray(mean), np.asarray(std)
    where = "channel" if m.ndim == 1 else f"channel and grid cell ({m.shape[1]}x{m.shape[2]})"
    return f"per {where}: means {m.min():+.3f}..{m.max():+.3f}, standard deviations {s.min():.4f}..{s.max():.4f}"
