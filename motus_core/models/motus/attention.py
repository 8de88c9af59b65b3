"""The attention kernel of Motus' tri-model joint attention: flash-attn when usable, torch SDPA otherwise.

flash-attn is optional (``pip install flash-attn``, CUDA only). It is used on CUDA tensors in bf16 or
fp16 when importable; everything else (CPU, fp32, flash-attn missing or built for another torch) goes
through ``torch.nn.functional.scaled_dot_product_attention``. The official code always uses flash-attn
(and casts fp32 inputs to bf16 for it); in fp32 SDPA is the exact softmax attention the parity
fixtures were produced with.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # ImportError when absent; OSError/RuntimeError when built for another torch/CUDA
    from flash_attn import flash_attn_func  # type: ignore

    HAS_FLASH = True
except Exception:  # noqa: BLE001 - any failure to import means "not usable"
    flash_attn_func = None
    HAS_FLASH = False

BACKENDS = ("auto", "flash", "sdpa")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Full (unmasked, non-causal) multi-head attention, scale 1/sqrt(head_dim).

    ``q, k, v``: ``[B, L, H, D]`` (flash-attn layout); returns ``[B, L, H, D]`` in q's dtype.
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    use_flash = (
        backend in ("auto", "flash") and HAS_FLASH and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
    )
    if backend == "flash" and not use_flash:
        raise RuntimeError("flash-attn requested but unavailable (needs flash-attn installed, CUDA and bf16/fp16)")
    if use_flash:
        return flash_attn_func(q, k, v, causal=False)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)
