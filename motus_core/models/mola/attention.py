"""Scaled dot-product attention for the MoLA modules we write ourselves (Video Former, action head).

flash-attn is used when it is installed, the tensors are on CUDA in fp16/bf16 and no explicit mask is
needed; everything else goes through ``torch.nn.functional.scaled_dot_product_attention`` (which picks
its own fused kernel on GPU). Masks are always explicit booleans here: the release's causal
cross-attention is *top-left* aligned (``tril(ones(Lq, Lk))``), which flash-attn's causal flag is not
(it aligns bottom-right when Lq != Lk).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # optional GPU kernel; ImportError when absent, OSError/RuntimeError when built for another torch/CUDA
    from flash_attn import flash_attn_func  # type: ignore

    HAS_FLASH = True
except Exception:  # noqa: BLE001
    flash_attn_func = None
    HAS_FLASH = False


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
              causal_square: bool = False, dropout: float = 0.0) -> torch.Tensor:
    """q (B, H, Lq, D), k/v (B, H, Lk, D) -> (B, H, Lq, D).

    ``mask``: boolean (Lq, Lk), True = may attend. ``causal_square``: the usual causal mask (Lq == Lk).
    """
    if (HAS_FLASH and mask is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
            and (not causal_square or q.shape[-2] == k.shape[-2])):
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout,
                              causal=causal_square)
        return out.transpose(1, 2)
    if causal_square and mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


def top_left_causal_mask(lq: int, lk: int, device=None) -> torch.Tensor:
    """Row i may attend to keys 0..i (the release's mask for its causal cross-attention)."""
    return torch.ones(lq, lk, dtype=torch.bool, device=device).tril()
