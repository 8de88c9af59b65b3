"""Build Motus components from configs and state dicts: meta-device init + strict assignment.

Nothing is materialised twice: modules are created on the ``meta`` device (no random init, no
memory), then the checkpoint tensors are assigned (strictly, see ``convert.load_strict``) and moved
to the target device/dtype. A full-size model therefore never needs a float32 copy on the CPU.
"""
from __future__ import annotations

import torch

from .config import MotusConfig
from .convert import CheckpointError, load_strict
from .model import MotusModel, init_random_
from .vae import MotusVAE


def _finish(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    module.to(device=device)
    if dtype is not None:
        module.to(dtype=dtype)
    return module.eval().requires_grad_(False)


def build_motus_model(config: MotusConfig, state_dict: dict | None = None, *, device="cpu",
                      dtype: torch.dtype = torch.float32, seed: int = 0) -> MotusModel:
    """The tri-stream model with ``state_dict`` (our layout) or, if None, random weights (``init_random_``)."""
    with torch.device("meta"):
        model = MotusModel(config)
    if state_dict is None:
        model.to(dtype=dtype)  # free on meta: the full model is only ever materialised in `dtype`
        model.to_empty(device=device)
        init_random_(model, seed)
    else:
        load_strict(model, state_dict, "Motus model weights")
        model.rebuild_rope("cpu")  # the only non-persistent buffers (still on meta)
        model.to(device=device)
    model.set_precision(dtype)
    return model.eval().requires_grad_(False)


def build_vae(vae_config: dict, state_dict: dict | None = None, *, device="cpu", dtype=torch.float32,
              seed: int = 0) -> MotusVAE:
    from diffusers import AutoencoderKLWan

    if state_dict is None:
        torch.manual_seed(seed)  # diffusers' default init draws from the global generator
        with torch.device(device):  # initialised where it will run (no CPU copy of a full-size VAE)
            vae = AutoencoderKLWan(**vae_config)
    else:
        with torch.device("meta"):
            vae = AutoencoderKLWan(**vae_config)
        load_strict(vae, state_dict, "Wan2.2 VAE weights")
    wrapper = MotusVAE(vae)
    return _finish(wrapper, device, dtype)


def build_vlm(vlm_config: dict, state_dict: dict | None = None, *, device="cpu", dtype=torch.float32, seed: int = 0):
    """transformers ``Qwen3VLModel`` (the part of Qwen3-VL whose last hidden state Motus uses)."""
    from transformers import Qwen3VLConfig, Qwen3VLModel

    cfg = Qwen3VLConfig(**vlm_config)
    if state_dict is None:
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen3VLModel._from_config(cfg, attn_implementation="sdpa", dtype=dtype or torch.float32)
    else:
        with torch.device("meta"):
            model = Qwen3VLModel._from_config(cfg, attn_implementation="sdpa")
        load_strict(model, state_dict, "Qwen3-VL weights")
        _rebuild_rotary(model, device)
    return _finish(model, device, dtype)


def _rebuild_rotary(model, device) -> None:
    """Non-persistent rotary ``inv_freq`` buffers stay on the meta device after assignment: recompute them."""
    for name, mod in model.named_modules():
        if hasattr(mod, "inv_freq") and isinstance(mod.inv_freq, torch.Tensor) and mod.inv_freq.is_meta:
            with torch.device("cpu"):
                fresh = type(mod)(mod.config) if hasattr(mod, "config") else None
            if fresh is None:
                raise CheckpointError(f"cannot rebuild rotary tables of {name}")
            for bname, buf in fresh.named_buffers(recurse=False):
                setattr(mod, bname, buf.to(device))
