"""Motus' action expert and understanding expert (our own modules, official parameter names).

Both experts own their token streams but no attention of their own: each block projects its stream
into the Wan video model's head space (``[3, heads, D, head_dim]`` q/k/v tensors, q/k RMS-normalised
over the whole ``heads * head_dim`` vector), the three streams attend jointly (``model.py``), and the
block projects its share of the output back with a bias-free ``heads * head_dim -> D`` matrix.

Parameter names equal the official ``action_expert.*`` / ``und_expert.*`` state-dict keys, so a
checkpoint's expert weights load without renaming. Layer norms without parameters (``norm1``,
``norm2``, ``decoder.norm``) are functional here (they have no state-dict entries).

Facts followed (official ``models/action_expert.py``, ``models/und_expert.py``):
* action tokens ``[MLP_s(state), MLP_a(actions), registers] + pos_embedding[:, :1+K+R]``
  (finetune; pretrain: ``[MLP_a(actions)] + pos_embedding[:, :K]``), MLP = Linear·SiLU·Linear·SiLU·Linear;
* action AdaLN: ``time_embedding`` (256 -> D -> D, SiLU) and ``time_projection`` (SiLU, D -> 6D),
  per-block ``modulation [1, 6, D]`` added; decoder ``modulation [1, 2, D]`` with the pre-projection
  embedding; single Linear action head;
* und stream: ``vlm_adapter`` (mlp3x_silu) of the VLM's last hidden state, plain pre-LN residual
  blocks without timestep conditioning or gates;
* FFN = Linear·GELU(tanh)·Linear everywhere.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import MotusConfig


def sincos_position_table(length: int, dim: int) -> torch.Tensor:
    """MAE-style 1-D table ``[1, length, dim]``: ``[sin(p * om) | cos(p * om)]``, ``om_i = 1 / 10000^(i / (dim/2))``.

    Computed in float64 (returned as float32). Real checkpoints store this buffer rounded to bf16
    (the official model is cast to bf16 when built); the stored value is what gets loaded.
    """
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
    pos = torch.arange(length, dtype=torch.float64)
    out = pos[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)[None].float()


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without parameters, in float32 (as the official WanLayerNorm)."""
    return F.layer_norm(x.float(), (x.shape[-1],), eps=eps)


class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps)`` in float32, cast back, times ``weight`` (official WanRMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x) * self.weight.to(x.dtype)


def mlp3(in_dim: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))


def ffn(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


def run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Call ``module`` with ``x`` cast to the module's parameter dtype (mixed-precision inference)."""
    p = next(module.parameters())
    return module(x.to(p.dtype))


class _JointAttentionProjections(nn.Module):
    """q/k/v into the video model's head space and the output projection back (shared by both experts)."""

    def __init__(self, prefix: str, dim: int, heads: int, head_dim: int, eps: float):
        super().__init__()
        self._prefix = prefix
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        setattr(self, f"{prefix}_qkv", nn.Parameter(torch.randn(3, heads, dim, head_dim) / math.sqrt(dim * head_dim)))
        setattr(self, f"{prefix}_o", nn.Linear(inner, dim, bias=False))
        setattr(self, f"{prefix}_norm_q", RMSNorm(inner, eps))
        setattr(self, f"{prefix}_norm_k", RMSNorm(inner, eps))

    def project_qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``h [B, L, D]`` -> q, k, v ``[B, L, heads, head_dim]`` (q, k RMS-normed over all heads jointly)."""
        w = getattr(self, f"{self._prefix}_qkv")
        q, k, v = torch.einsum("btd,kndh->kbtnh", h.to(w.dtype), w)
        b, t = h.shape[:2]
        q = getattr(self, f"{self._prefix}_norm_q")(q.flatten(2)).view(b, t, self.heads, self.head_dim)
        k = getattr(self, f"{self._prefix}_norm_k")(k.flatten(2)).view(b, t, self.heads, self.head_dim)
        return q, k, v

    def project_out(self, o: torch.Tensor) -> torch.Tensor:
        """``o [B, L, heads, head_dim]`` -> ``[B, L, D]`` (float32)."""
        return run(getattr(self, f"{self._prefix}_o"), o.flatten(2)).float()


class ActionBlock(_JointAttentionProjections):
    def __init__(self, cfg: MotusConfig):
        super().__init__("wan_action", cfg.action_expert_dim, cfg.num_heads, cfg.head_dim, cfg.action_expert_norm_eps)
        d = cfg.action_expert_dim
        self.eps = cfg.action_expert_norm_eps
        self.ffn = ffn(d, cfg.action_expert_ffn_dim)
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / math.sqrt(d))


class UndBlock(_JointAttentionProjections):
    def __init__(self, cfg: MotusConfig):
        super().__init__("wan_und", cfg.und_expert_dim, cfg.num_heads, cfg.head_dim, cfg.und_expert_norm_eps)
        self.eps = cfg.und_expert_norm_eps
        self.ffn = ffn(cfg.und_expert_dim, cfg.und_expert_ffn_dim)


class StateActionEncoder(nn.Module):
    """State token, action tokens, registers, plus the additive sin|cos position table."""

    def __init__(self, cfg: MotusConfig):
        super().__init__()
        d = cfg.action_expert_dim
        self.has_state = cfg.has_state_token
        if self.has_state:
            self.state_encoder = mlp3(cfg.state_dim, d)
        self.action_encoder = mlp3(cfg.action_dim, d)
        self.register_buffer("pos_embedding", sincos_position_table(cfg.pos_embedding_length, d), persistent=True)

    def forward(self, state: torch.Tensor | None, actions: torch.Tensor, registers: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.has_state:
            if state is None:
                raise ValueError("this Motus model (finetune layout) needs the robot state")
            parts.append(run(self.state_encoder, state[:, None]).float())
        parts.append(run(self.action_encoder, actions).float())
        if registers is not None:
            parts.append(registers.float().expand(actions.shape[0], -1, -1))
        x = torch.cat(parts, dim=1)
        return x + self.pos_embedding[:, : x.shape[1]].float()


class ActionDecoder(nn.Module):
    def __init__(self, cfg: MotusConfig):
        super().__init__()
        d = cfg.action_expert_dim
        self.eps = cfg.action_expert_norm_eps
        self.action_head = nn.Sequential(nn.Linear(d, cfg.action_dim))
        self.modulation = nn.Parameter(torch.randn(1, 2, d) / math.sqrt(d))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``x [B, L, D]`` action stream, ``e [B, D]`` action time embedding -> ``[B, L, action_dim]``."""
        shift, scale = (self.modulation.float() + e.float()[:, None]).chunk(2, dim=1)
        h = layer_norm(x, self.eps) * (1 + scale) + shift
        return run(self.action_head, h).float()


class ActionExpert(nn.Module):
    def __init__(self, cfg: MotusConfig):
        super().__init__()
        d = cfg.action_expert_dim
        self.dim = d
        self.freq_dim = int(cfg.wan["freq_dim"])
        self.input_encoder = StateActionEncoder(cfg)
        self.time_embedding = nn.Sequential(nn.Linear(self.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList([ActionBlock(cfg) for _ in range(cfg.num_layers)])
        self.registers = nn.Parameter(torch.randn(1, cfg.num_registers, d) * 0.02) if cfg.num_registers else None
        self.decoder = ActionDecoder(cfg)


class UndExpert(nn.Module):
    def __init__(self, cfg: MotusConfig):
        super().__init__()
        self.vlm_adapter = mlp3(cfg.vlm_dim, cfg.und_expert_dim)
        self.blocks = nn.ModuleList([UndBlock(cfg) for _ in range(cfg.num_layers)])
