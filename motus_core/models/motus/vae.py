"""The Wan2.2 VAE as Motus uses it, on diffusers' ``AutoencoderKLWan``.

Facts followed (official ``Wan2_2_VAE`` wrapper, motus-spec §2.7): pixels ``x -> 2x - 1`` as
``[B, 3, T, H, W]``; the encoder (causal in time: frame 0 alone, then chunks of 4) returns the
posterior mean (no sampling); Motus' latent is ``(mu - mean) * inv_std`` per channel; decoding
inverts the scaling, decodes each batch item separately and clamps to [-1, 1].
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan


class MotusVAE(torch.nn.Module):
    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        self.vae = vae
        cfg = vae.config
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float64)
        inv_std = torch.tensor(cfg.latents_std, dtype=torch.float64).reciprocal()
        self.register_buffer("latents_mean", mean.float().view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latents_inv_std", inv_std.float().view(1, -1, 1, 1, 1), persistent=False)

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
        return (mu - self.latents_mean) * self.latents_inv_std

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """``image [B, 3, H, W]`` in [0, 1] -> the 1-frame condition latent ``[B, 48, 1, h, w]``."""
        return self.encode_pixels(image[:, :, None])

    @torch.no_grad()
    def decode_raw(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent -> pixels in [-1, 1] ``[B, 3, T, H, W]`` (float32), one batch item at a time."""
        z = latent.to(self.device, torch.float32) / self.latents_inv_std + self.latents_mean
        out = [self.vae.decode(zi[None].to(self.dtype)).sample.float() for zi in z]
        return torch.cat(out)

    @torch.no_grad()
    def decode_frames(self, latent: torch.Tensor) -> torch.Tensor:
        """Motus' predicted frames: ``clamp((decode(latent)[:, :, 1:] + 1) / 2, 0, 1)`` ``[B, 3, F, H, W]``."""
        return torch.clamp((self.decode_raw(latent)[:, :, 1:] + 1) / 2, 0, 1)
