"""MoIDM: three latent-action inverse-dynamics models (flow, depth, semantic) of identical shape.

Each IDM (Moto's "latent motion tokenizer" as MoLA ships it) reads two token sets - the current frame
``h_t`` and a future frame ``h_{t+k}`` - and returns ``Q`` discrete latent actions:

* **M-Former**: project both token sets to the hidden width, build the sequence
  ``[Q learned queries | N current | 1 separator | N future]``, add a learned absolute position
  embedding and token-type embedding row 0 to *every* position (the release's ``legacy`` mode), run
  pre-LN ViT layers (transformers' :class:`~transformers.models.vit.modeling_vit.ViTLayer`), final
  LayerNorm, keep the ``Q`` query outputs;
* **VQ**: ``Linear -> tanh -> Linear`` down to the code width, nearest code by squared L2 distance,
  straight-through estimator, commitment loss
  ``mean((sg(z_q) - z)^2) + beta * mean((z_q - sg(z))^2)`` (legacy: beta weights the codebook term);
* **up-resampler**: ``Linear -> tanh -> Linear`` back to the hidden width: the latent-action tokens the
  action head reads are the re-embedded quantised vectors, not the integer ids.

At policy time the token sets are the video model's features of imagined frames 0 and 5 after the
shared input projection :class:`IdmInputProjection` (the release's ``goal_emb`` + ``time_pos_emb``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTConfig
from transformers.models.vit.modeling_vit import ViTLayer

from .config import IdmConfig


class IdmInputProjection(nn.Module):
    """Video features of two frames -> M-Former input tokens (release: ``goal_emb``, ``time_pos_emb``)."""

    def __init__(self, feature_channels: int, input_dim: int):
        super().__init__()
        self.goal_emb = nn.Sequential(nn.Linear(feature_channels, input_dim), nn.GELU(), nn.Linear(input_dim, input_dim))
        self.time_pos_emb = nn.Parameter(torch.randn(2, 1, input_dim) * 0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 2, N, C) -> (B, 2, N, D_in)."""
        return self.goal_emb(tokens) + self.time_pos_emb.unsqueeze(0).to(tokens.dtype)


class MFormerEmbeddings(nn.Module):
    def __init__(self, cfg: IdmConfig, tokens_per_frame: int):
        super().__init__()
        w = cfg.hidden
        self.latent_motion_token = nn.Parameter(torch.randn(1, cfg.queries, w) * 0.02)
        self.sep_token = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        self.projection = nn.Linear(cfg.input_dim, w)
        self.position_embeddings_new = nn.Parameter(torch.randn(1, cfg.queries + 2 * tokens_per_frame + 1, w) * 0.02)
        self.token_type_embeddings = nn.Parameter(torch.randn(2, w) * 0.02)

    def forward(self, cond: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b = cond.shape[0]
        seq = torch.cat([
            self.latent_motion_token.expand(b, -1, -1),
            self.projection(cond),
            self.sep_token.expand(b, -1, -1),
            self.projection(target),
        ], dim=1)
        if seq.shape[1] != self.position_embeddings_new.shape[1]:
            raise ValueError(f"M-Former got {seq.shape[1]} tokens, its position table has {self.position_embeddings_new.shape[1]} "
                             f"(tokens per frame differ from the config)")
        # legacy token types: row 0 on every position, row 1 unused (kept for checkpoint compatibility)
        return seq + self.position_embeddings_new + self.token_type_embeddings[0]


class MFormer(nn.Module):
    def __init__(self, cfg: IdmConfig, tokens_per_frame: int, attn_implementation: str = "sdpa"):
        super().__init__()
        vit_cfg = ViTConfig(hidden_size=cfg.hidden, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                            intermediate_size=cfg.intermediate, hidden_act="gelu", layer_norm_eps=cfg.layer_norm_eps,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, qkv_bias=True)
        vit_cfg._attn_implementation = attn_implementation
        self.queries = cfg.queries
        self.embeddings = MFormerEmbeddings(cfg, tokens_per_frame)
        self.layers = nn.ModuleList([ViTLayer(vit_cfg) for _ in range(cfg.layers)])
        self.layernorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)

    def forward(self, cond: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """-> final-LayerNorm output of all Q + 2N + 1 positions."""
        x = self.embeddings(cond, target)
        for layer in self.layers:
            x = layer(x)
        return self.layernorm(x)


@dataclass
class Quantized:
    z_q: torch.Tensor  # straight-through vectors (B, Q, e)
    indices: torch.Tensor  # (B, Q) int64
    commit_loss: torch.Tensor  # scalar
    z: torch.Tensor  # pre-quantisation vectors (B, Q, e)


class VectorQuantizer(nn.Module):
    """Nearest-code VQ without EMA / restarts / l2-normalisation (Moto's ``VectorQuantizer2``, legacy)."""

    def __init__(self, codebook_size: int, code_dim: int, beta: float):
        super().__init__()
        self.beta = float(beta)
        self.embedding = nn.Embedding(codebook_size, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def forward(self, z: torch.Tensor) -> Quantized:
        flat = z.reshape(-1, z.shape[-1])
        codes = self.embedding.weight
        # the release's expanded form of the squared distance (index ties -> first index, as argmin)
        d = (flat.pow(2).sum(dim=1, keepdim=True) + codes.pow(2).sum(dim=1)
             - 2.0 * torch.einsum("bd,dn->bn", flat, codes.t()))
        idx = torch.argmin(d, dim=1)
        z_q = F.embedding(idx, codes).view_as(z)
        commit = torch.mean((z_q.detach() - z) ** 2) + self.beta * torch.mean((z_q - z.detach()) ** 2)
        z_st = z + (z_q - z).detach()  # straight-through: forward = code, backward = identity to z
        return Quantized(z_q=z_st, indices=idx.view(z.shape[:-1]), commit_loss=commit, z=z)


@dataclass
class IdmOutput:
    tokens: torch.Tensor  # (B, Q, hidden) latent-action tokens for the head
    indices: torch.Tensor  # (B, Q)
    commit_loss: torch.Tensor
    queries: torch.Tensor  # (B, Q, hidden) M-Former query outputs
    hidden_states: torch.Tensor  # (B, Q + 2N + 1, hidden)
    z: torch.Tensor
    z_q: torch.Tensor


class LatentActionIdm(nn.Module):
    """One IDM: M-Former -> down-resampler -> VQ -> up-resampler (release key names)."""

    def __init__(self, cfg: IdmConfig, tokens_per_frame: int, attn_implementation: str = "sdpa"):
        super().__init__()
        w, e = cfg.hidden, cfg.code_dim
        self.m_former = MFormer(cfg, tokens_per_frame, attn_implementation)
        self.vq_down_resampler = nn.Sequential(nn.Linear(w, w), nn.Tanh(), nn.Linear(w, e))
        self.vector_quantizer = VectorQuantizer(cfg.codebook_size, e, cfg.beta)
        self.vq_up_resampler = nn.Sequential(nn.Linear(e, e), nn.Tanh(), nn.Linear(e, w))

    def forward(self, cond: torch.Tensor, target: torch.Tensor) -> IdmOutput:
        hidden = self.m_former(cond, target)
        queries = hidden[:, : self.m_former.queries]
        q = self.vector_quantizer(self.vq_down_resampler(queries))
        tokens = self.vq_up_resampler(q.z_q)
        return IdmOutput(tokens=tokens, indices=q.indices, commit_loss=q.commit_loss, queries=queries,
                         hidden_states=hidden, z=q.z, z_q=q.z_q)


@dataclass
class LatentActions:
    tokens: torch.Tensor  # (B, Vi*Q*len(names), W), IDMs in ``names`` order
    commit_loss: torch.Tensor  # sum over the IDMs (the release adds the three)
    indices: dict[str, torch.Tensor]  # name -> (B, Vi, Q)
    commit_losses: dict[str, torch.Tensor]
    outputs: dict[str, IdmOutput]


class MoIDM(nn.Module):
    """Input projection + one IDM per name (+ a camera embedding when the IDMs see several cameras)."""

    def __init__(self, cfg: IdmConfig, feature_channels: int, tokens_per_frame: int, attn_implementation: str = "sdpa"):
        super().__init__()
        self.names = tuple(cfg.names)
        self.idm_input = IdmInputProjection(feature_channels, cfg.input_dim)
        self.idms = nn.ModuleDict({n: LatentActionIdm(cfg, tokens_per_frame, attn_implementation) for n in cfg.names})
        if len(cfg.cameras) > 1:  # ours: tell the head which camera a latent action came from
            self.camera_emb = nn.Parameter(torch.zeros(len(cfg.cameras), 1, cfg.hidden))

    def forward(self, frames: torch.Tensor) -> LatentActions:
        """frames (B, Vi, 2, N, C): video-feature tokens of the current and the future frame per IDM camera."""
        b, vi = frames.shape[:2]
        x = self.idm_input(frames.flatten(0, 1))  # (B*Vi, 2, N, D_in)
        tokens, indices, commits, outputs = [], {}, {}, {}
        for name, idm in self.idms.items():
            o = idm(x[:, 0], x[:, 1])
            t = o.tokens.view(b, vi, *o.tokens.shape[1:])
            if hasattr(self, "camera_emb"):
                t = t + self.camera_emb.to(t.dtype)
            tokens.append(t.flatten(1, 2))
            indices[name] = o.indices.view(b, vi, -1)
            commits[name] = o.commit_loss
            outputs[name] = o
        return LatentActions(tokens=torch.cat(tokens, dim=1), commit_loss=sum(commits.values()), indices=indices,
                             commit_losses=commits, outputs=outputs)


def idm_parameter_count(cfg: IdmConfig, tokens_per_frame: int) -> int:
    """Parameters of ONE IDM (M-Former + VQ + resamplers), built on the meta device (costs nothing)."""
    with torch.device("meta"):
        m = LatentActionIdm(cfg, tokens_per_frame)
    return sum(p.numel() for p in m.parameters())
