"""MDT-style encoder-decoder DiT action head (the release's ``GCDenoiser.inner_model``).

Context tokens ``[language | video tokens | (proprioception) | latent actions]`` go through a
non-causal transformer encoder; the decoder embeds the noisy action chunk, runs causal self-attention
and an MLP modulated by the noise level (AdaLN with six chunks: ``shift + LN(x) * scale`` - note
``* scale``, not ``* (1 + scale)``, as the release computes it) and an un-modulated cross-attention to
the context. Module and parameter names are the release's, so its state dict loads one-to-one.

Release quirks kept as options (``HeadConfig``):

* ``causal_cross_attention``: the release applies its causal flag to the cross-attention too, with a
  top-left aligned mask, so action row ``i`` sees context tokens ``0..i`` only (row 0 sees only the
  language token). Needed to reproduce the released weights; our default turns it off.
* ``keep_release_unused``: ``goal_emb``, ``pos_emb`` (and ``proprio_emb`` when unused) exist in every
  release checkpoint and count towards the paper's 22.90 M, but are never used; kept frozen so
  strict loading works and the parameter count matches.

The network is objective-agnostic: ``noise_feature`` is the scalar the sinusoid embeds (``ln(sigma)/4``
for EDM, ``t * 1000`` for flow matching; see :mod:`.objectives`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .attention import attention, top_left_causal_mask
from .config import HeadConfig


class SelfOrCrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, attn_pdrop: float, resid_pdrop: float):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.c_proj = nn.Linear(dim, dim, bias=False)
        self.attn_pdrop = attn_pdrop
        self.resid_drop = nn.Dropout(resid_pdrop)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *, causal: bool = False) -> torch.Tensor:
        src = x if context is None else context
        b, lq, c = x.shape
        lk = src.shape[1]
        q = self.query(x).view(b, lq, self.heads, -1).transpose(1, 2)
        k = self.key(src).view(b, lk, self.heads, -1).transpose(1, 2)
        v = self.value(src).view(b, lk, self.heads, -1).transpose(1, 2)
        drop = self.attn_pdrop if self.training else 0.0
        if causal and context is None:
            out = attention(q, k, v, causal_square=True, dropout=drop)
        elif causal:
            out = attention(q, k, v, mask=top_left_causal_mask(lq, lk, x.device), dropout=drop)
        else:
            out = attention(q, k, v, dropout=drop)
        return self.resid_drop(self.c_proj(out.transpose(1, 2).reshape(b, lq, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: int, pdrop: float):
        super().__init__()
        self.c_fc = nn.Linear(dim, ratio * dim, bias=False)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(ratio * dim, dim, bias=False)
        self.dropout = nn.Dropout(pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class EncoderBlock(nn.Module):
    def __init__(self, cfg: HeadConfig):
        super().__init__()
        e = cfg.embed_dim
        self.ln_1 = nn.LayerNorm(e, bias=False)
        self.attn = SelfOrCrossAttention(e, cfg.heads, cfg.attn_pdrop, cfg.resid_pdrop)
        self.ln_2 = nn.LayerNorm(e, bias=False)
        self.mlp = Mlp(e, cfg.mlp_ratio, cfg.mlp_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class AdaLNModulation(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, c: torch.Tensor):
        return self.modulation(c).chunk(6, dim=-1)


class DecoderBlock(nn.Module):
    def __init__(self, cfg: HeadConfig):
        super().__init__()
        e = cfg.embed_dim
        self.causal_cross = cfg.causal_cross_attention
        self.ln_1 = nn.LayerNorm(e, bias=False)
        self.attn = SelfOrCrossAttention(e, cfg.heads, cfg.attn_pdrop, cfg.resid_pdrop)
        self.ln3 = nn.LayerNorm(e)
        self.cross_att = SelfOrCrossAttention(e, cfg.heads, cfg.attn_pdrop, cfg.resid_pdrop)
        self.ln_2 = nn.LayerNorm(e, bias=False)
        self.mlp = Mlp(e, cfg.mlp_ratio, cfg.mlp_pdrop)
        self.adaLN_zero = AdaLNModulation(e)

    def forward(self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_zero(c)
        x = x + gate1 * self.attn(shift1 + self.ln_1(x) * scale1, causal=True)
        x = x + self.cross_att(self.ln3(x), context, causal=self.causal_cross)
        return x + gate2 * self.mlp(shift2 + self.ln_2(x) * scale2)


class Stack(nn.Module):
    def __init__(self, blocks: list[nn.Module], dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.ln = nn.LayerNorm(dim, bias=False)


class SinusoidalEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=s.device) * -(math.log(10000.0) / (half - 1)))
        arg = s[:, None].float() * freqs[None]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class ActionHead(nn.Module):
    def __init__(self, cfg: HeadConfig, *, action_dim: int, chunk_length: int, video_token_dim: int,
                 num_video_tokens: int, latent_token_dim: int):
        super().__init__()
        e = cfg.embed_dim
        self.cfg = cfg
        self.action_dim = action_dim
        self.chunk_length = chunk_length
        self.tok_emb = nn.Linear(video_token_dim, e)
        self.tok_emb_token = nn.Linear(latent_token_dim, e)
        self.lang_emb = nn.Sequential(nn.Linear(cfg.goal_dim, 2 * e), nn.GELU(), nn.Linear(2 * e, e))
        self.encoder = Stack([EncoderBlock(cfg) for _ in range(cfg.enc_layers)], e)
        self.decoder = Stack([DecoderBlock(cfg) for _ in range(cfg.dec_layers)], e)
        self.sigma_emb = nn.Sequential(SinusoidalEmbedding(e), nn.Linear(e, 2 * e), nn.Mish(), nn.Linear(2 * e, e))
        self.action_emb = nn.Linear(action_dim, e)
        self.action_pred = nn.Linear(e, action_dim)
        self.drop = nn.Dropout(cfg.embed_pdrop)
        if cfg.use_proprio or cfg.keep_release_unused:
            self.proprio_emb = nn.Sequential(nn.Linear(cfg.proprio_dim, 2 * e), nn.Mish(), nn.Linear(2 * e, e))
        if cfg.keep_release_unused:
            # never used in the forward pass (release: frozen); kept for strict loading + the paper's count
            self.goal_emb = nn.Sequential(nn.Linear(cfg.goal_dim, 2 * e), nn.GELU(), nn.Linear(2 * e, e))
            self.pos_emb = nn.Parameter(torch.zeros(1, 1 + num_video_tokens + chunk_length, e))
            unused = [self.goal_emb, self.pos_emb] + ([] if cfg.use_proprio else [self.proprio_emb])
            for m in unused:
                for p in (m.parameters() if isinstance(m, nn.Module) else [m]):
                    p.requires_grad_(False)
        self.apply(_init_weights)

    def encode(self, lang: torch.Tensor, video_tokens: torch.Tensor, latent_tokens: torch.Tensor,
               proprio: torch.Tensor | None = None) -> torch.Tensor:
        """lang (B, 1, goal_dim), video (B, Nv, dv), latent (B, Ntok, dl), proprio (B, P) -> context (B, L, E)."""
        if lang.dim() == 2:
            lang = lang[:, None]
        if self.training and self.cfg.lang_drop > 0:
            keep = (torch.rand(lang.shape[0], 1, 1, device=lang.device) >= self.cfg.lang_drop).to(lang.dtype)
            lang = lang * keep
        parts = [self.lang_emb(lang), self.tok_emb(video_tokens)]
        if self.cfg.use_proprio:
            if proprio is None:
                raise ValueError("this head was configured with a proprioception token; pass the state")
            parts.append(self.proprio_emb(proprio[:, None] if proprio.dim() == 2 else proprio))
        parts.append(self.tok_emb_token(latent_tokens))
        x = torch.cat(parts, dim=1)
        for block in self.encoder.blocks:
            x = block(x)
        return self.encoder.ln(x)

    def decode(self, context: torch.Tensor, x: torch.Tensor, noise_feature: torch.Tensor) -> torch.Tensor:
        """Noisy chunk x (B, H, A) and the per-sample noise feature (B,) -> network output F (B, H, A)."""
        c = self.sigma_emb(noise_feature.reshape(-1)).to(context.dtype)[:, None]
        h = self.drop(self.action_emb(x))
        for block in self.decoder.blocks:
            h = block(h, c, context)
        return self.action_pred(self.decoder.ln(h))


def _init_weights(module: nn.Module) -> None:
    """The release's initialisation: N(0, 0.02) linears, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
