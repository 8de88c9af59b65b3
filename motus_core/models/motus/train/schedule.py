"""The official Stage-3 optimizer recipe: AdamW with a WAN parameter group, ``LambdaLinearScheduler``.

``LambdaLinearScheduler`` (official ``utils/scheduler.py``, one cycle): the lr multiplier rises
linearly from ``f_start`` to ``f_max`` over ``warmup_steps``, then follows
``f_min + (f_max - f_min) * (cycle_length - n) / cycle_length`` down to ``f_min`` at ``cycle_length``
and stays there. Both parameter groups (non-WAN at ``lr``, WAN at ``wan_lr``) get the same multiplier.
"""
from __future__ import annotations

import torch

from .config import OptimSection

WAN_PREFIX = "video."


def lr_multiplier(step: int, cfg: OptimSection) -> float:
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.f_start + (cfg.f_max - cfg.f_start) * step / cfg.warmup_steps
    left = max(0, cfg.cycle_length - step)
    return cfg.f_min + (cfg.f_max - cfg.f_min) * left / cfg.cycle_length


def param_groups(model: torch.nn.Module, cfg: OptimSection, vlm: torch.nn.Module | None = None) -> list[dict]:
    """[non-WAN group, WAN group, VLM group] of the parameters that require grad (the VAE and the VLM are not
    in the model; ``vlm`` is given when it is trained, at the experts' lr)."""
    other, wan = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (wan if name.startswith(WAN_PREFIX) or f".{WAN_PREFIX}" in name else other).append(p)
    groups = [{"params": other, "lr": cfg.lr, "name": "experts"}]
    if wan:
        groups.append({"params": wan, "lr": cfg.wan_lr if cfg.wan_lr is not None else cfg.lr, "name": "wan"})
    if vlm is not None:
        groups.append({"params": [p for p in vlm.parameters() if p.requires_grad], "lr": cfg.lr, "name": "vlm"})
    return [g for g in groups if g["params"]]


def build_optimizer(model: torch.nn.Module, cfg: OptimSection, vlm: torch.nn.Module | None = None
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    groups = param_groups(model, cfg, vlm)
    if not groups:
        raise RuntimeError("nothing to train: no parameter requires grad")
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, cfg))
    return opt, sched
