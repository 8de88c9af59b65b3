"""The Wan2.2 VAE as Motus uses it, on diffusers' ``AutoencoderKLWan``.

Facts followed (official ``Wan2_2_VAE`` wrapper, motus-spec §2.7): pixels ``x -> 2x - 1`` as
``[B, 3, T, H, W]``; the encoder (causal in time: frame 0 alone, then chunks of 4) returns the
posterior mean (no sampling); Motus' latent is ``(mu - mean) * inv_std`` per channel (per channel and
grid cell with statistics measured for a random VAE, ``train/vae_stats.py``); decoding
inverts the scaling, decodes each batch item separately and clamps to [-1, 1].
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan


def latent_statistic(values) -> torch.Tensor:
    """A latent mean or std from the VAE config as a ``[1, C, 1, h, w]`` buffer: one value per channel (``[C]``,
    Wan's), or per channel and latent grid cell (``[C][h][w]``, measured for a random VAE, ``vae_stats``)."""
    t = torch.tensor(values, dtype=torch.float64)
    if t.dim() == 1:
        return t.view(1, -1, 1, 1, 1)
    if t.dim() == 3:
        return t[None, :, None]
    raise ValueError(f"latent statistics must be [C] or [C][h][w], got shape {tuple(t.shape)}")


class MotusVAE(torch.nn.Module):
    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        self.vae = vae
        cfg = vae.config
        mean = latent_statistic(cfg.latents_mean)
        inv_std = latent_statistic(cfg.latents_std).reciprocal()
        self.register_buffer("latents_mean", mean.float(), persistent=False)
        self.register_buffer("latents_inv_std", inv_std.float(), persistent=False)

    @property
    def per_position(self) -> bool:
        """Statistics per latent channel and grid cell (measured for a random VAE), not per channel only."""
        return self.latents_mean.shape[-1] > 1 or self.latents_mean.shape[-2] > 1

    def _check_grid(self, z: torch.Tensor) -> None:
        if self.per_position and tuple(z.shape[-2:]) != tuple(self.latents_mean.shape[-2:]):
            raise ValueError(f"latent grid {tuple(z.shape[-2:])} does not match the per-position latent statistics' "
                             f"{tuple(self.latents_mean.shape[-2:])}: they were measured at another image size")

    @classmethod
    def from_config(cls, config: dict) -> "MotusVAE":
        return cls(AutoencoderKLWan(**config))

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.encoder.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vae.encoder.conv_in.weight.device

    @torch.no_grad()
    def encode_pixels(self, video: torch.Tensor) -> torch.Tensor:
        """``video [B, 3, T, H, W]`` in [0, 1] -> normalised latent ``[B, 48, 1 + (T-1)//4, H/16, W/16]`` (float32)."""
        x = (video.to(self.device, torch.float32) * 2 - 1).to(self.dtype)
        mu = self.vae.encode(x).latent_dist.mean.float()
        self._check_grid(mu)
        return (mu - self.latents_mean) * self.latents_inv_std

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """``image [B, 3, H, W]`` in [0, 1] -> the 1-frame condition latent ``[B, 48, 1, h, w]``."""
        return self.encode_pixels(image[:, :, None])

    @torch.no_grad()
    def decode_raw(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent -> pixels in [-1, 1] ``[B, 3, T, H, W]`` (float32), one batch item at a time."""
        self._check_grid(latent)
        z = latent.to(self.device, torch.float32) / self.latents_inv_std + self.latents_mean
        out = [self.vae.decode(zi[None].to(self.dtype)).sample.float() for zi in z]
        return torch.cat(out)

    @torch.no_grad()
    def decode_frames(self, latent: torch.Tensor) -> torch.Tensor:
        """Motus' predicted frames: ``clamp((decode(latent)[:, :, 1:] + 1) / 2, 0, 1)`` ``[B, 3, F, H, W]``."""
        return torch.clamp((self.decode_raw(latent)[:, :, 1:] + 1) / 2, 0, 1)
