"""LoRA adapters on the WAN video DiT through ``peft``, merged into plain weights on export.

``add_lora`` injects ``peft`` LoRA layers (``inject_adapter_in_model``, adapter ``default``) into
the chosen linear layers of ``model.video`` and freezes the rest of the video model; the action and
understanding experts stay fully trainable (Stage 3 trains them). ``merged_state_dict`` returns the
model's state dict in the plain layout (``...to_q.weight``), each adapted weight replaced by
``W + delta`` computed by peft itself (``get_delta_weight``), so every checkpoint directory and the
official export hold ordinary weights that load without peft.
"""
from __future__ import annotations

import logging
import re

import torch

from ..model import FP32_PARAMS, MotusModel
from .config import LoraSection

log = logging.getLogger("motus_train")
ADAPTER = "default"


def add_lora(model: MotusModel, cfg: LoraSection, *, frozen_dtype: torch.dtype | None = None) -> int:
    """Inject adapters; returns the number of adapted layers. ``frozen_dtype``: cast the frozen WAN weights
    (e.g. bf16 on CUDA: the base is never updated, so it needs no float32 master copy)."""
    from peft import LoraConfig, inject_adapter_in_model

    pattern = r".*\.(" + "|".join(re.escape(t) for t in cfg.targets) + r")$"
    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=pattern, bias="none")
    model.video.requires_grad_(False)
    inject_adapter_in_model(lcfg, model.video, adapter_name=ADAPTER)
    n = 0
    for name, p in model.video.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
            p.data = p.data.float()
            n += 1
        elif frozen_dtype is not None and not FP32_PARAMS.search(f"video.{name}"):
            p.data = p.data.to(frozen_dtype)
    layers = n // 2
    if layers == 0:
        raise ValueError(f"lora.targets {cfg.targets} match no linear layer of the video model")
    log.info("LoRA rank %d alpha %g on %d WAN linear layers; the rest of WAN is frozen", cfg.rank, cfg.alpha, layers)
    return layers


def lora_layers(model: torch.nn.Module):
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


@torch.no_grad()
def merged_state_dict(model: MotusModel) -> dict[str, torch.Tensor]:
    """Plain-layout weights (float32 on the CPU) with every adapter merged: ``W + delta``."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    layers = lora_layers(model)
    if not layers:
        return {k: v.clone() for k, v in sd.items()}
    out = {}
    prefixes = {n + "." for n, _ in layers}
    for k, v in sd.items():
        pre = next((p for p in prefixes if k.startswith(p)), None)
        if pre is None:
            out[k] = v.clone()
            continue
        rest = k[len(pre):]
        if rest.startswith("base_layer."):
            out[pre + rest[len("base_layer."):]] = v.float().clone()
    for name, m in layers:
        delta = m.get_delta_weight(ADAPTER).detach().float().cpu()
        out[f"{name}.weight"] = out[f"{name}.weight"] + delta
    return out
