"""Video Former: VPP's 3-D perceiver resampler from all cameras' video features to the head's tokens.

Per layer: a perceiver cross-attention (each frame's learned latents attend to that frame's tokens and
to themselves), a temporal self-attention across frames for each latent index, and an MLP, all
residual; a final LayerNorm. Input (B, F, V*N, C) -> output (B, F * latents_per_frame, dim).
Module and parameter names follow the release (``Video_Former.*``) so its weights load one-to-one;
with the release sizes (C 2560, dim 384, 6 layers, 8 x 64 heads, 14 latents x 16 frames) it has
17,713,536 parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import attention
from .config import VideoFormerConfig


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        media = self.norm_media(media)
        latents = self.norm_latents(latents)
        kv = torch.cat([media, latents], dim=1)
        b, lq, _ = latents.shape
        q = self.to_q(latents).view(b, lq, self.heads, -1).transpose(1, 2)
        k = self.to_k(kv).view(b, kv.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(kv).view(b, kv.shape[1], self.heads, -1).transpose(1, 2)
        out = attention(q, k, v).transpose(1, 2).reshape(b, lq, -1)
        return self.to_out(out)


class TemporalAttention(nn.Module):
    """Self-attention across frames (fused qkv with bias, output projection with bias)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class VideoFormer(nn.Module):
    def __init__(self, cfg: VideoFormerConfig, feature_channels: int, num_frames: int):
        super().__init__()
        d = cfg.dim
        self.num_frames = num_frames
        self.goal_emb = nn.Sequential(nn.Linear(feature_channels, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.latents = nn.Parameter(torch.randn(num_frames, cfg.latents_per_frame, d) * 0.02)
        self.time_pos_emb = nn.Parameter(torch.randn(num_frames, 1, d) * 0.02)
        self.layers = nn.ModuleList([
            nn.ModuleList([PerceiverAttention(d, cfg.dim_head, cfg.heads), TemporalAttention(d, cfg.heads),
                           _feed_forward(d, cfg.ff_mult)])
            for _ in range(cfg.depth)
        ])
        self.norm = nn.LayerNorm(d)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, F, T, C): T tokens per frame (all cameras) -> (B, F * q, dim)."""
        b, f, _, _ = features.shape
        if f != self.num_frames:
            raise ValueError(f"Video Former built for {self.num_frames} frames, got {f}")
        media = (self.goal_emb(features) + self.time_pos_emb.unsqueeze(0).to(features.dtype)).flatten(0, 1)
        q, d = self.latents.shape[1:]
        x = self.latents.unsqueeze(0).expand(b, -1, -1, -1).reshape(b * f, q, d).to(media.dtype)
        for perceiver, temporal, ffw in self.layers:
            x = x + perceiver(media, x)
            x = x.view(b, f, q, d).transpose(1, 2).reshape(b * q, f, d)
            x = x + temporal(x)
            x = x.view(b, q, f, d).transpose(1, 2).reshape(b * f, q, d)
            x = x + ffw(x)
        return self.norm(x.view(b, f * q, d))
