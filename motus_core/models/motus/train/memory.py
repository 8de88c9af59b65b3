"""Training-memory estimate on the meta device (no weights, no compute): weights + gradients + optimizer + activations.

Method (docs/motus.md, "Training memory"):

* weights: counted per parameter from the real module tree built on the meta device - trainable
  parameters as float32 master weights (4 B), frozen parameters of the tri-stream model (the WAN base
  under LoRA) in bf16 (2 B) on CUDA, the frozen VLM in bf16, the frozen VAE in float32;
* gradients: 4 B per trainable parameter; optimizer: AdamW's two float32 moments, 8 B per trainable
  parameter;
* activations: one real forward of the loss (``stage3_loss``) on meta tensors of the training shapes,
  with the matmul weights in bf16 as under autocast, counting the bytes of every tensor autograd saves
  for backward (``torch.autograd.graph.saved_tensors_hooks``), split into the layer loop (per layer)
  and the rest. Without activation checkpointing all layers' saved tensors are live at the start of
  backward; with it, each layer keeps only its three input streams and one layer's saved tensors are
  rebuilt at a time: ``rest + L * layer_inputs + one_layer``.

Not included: the VAE/VLM forward transients (no grad; they end before the model's forward starts),
allocator fragmentation and CUDA/cuBLAS workspaces (a few GB on a real run).
"""
from __future__ import annotations

import torch

from ..config import MotusConfig
from ..model import Conditioning, MotusModel

GB = 1024**3


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def estimate(cfg: MotusConfig, *, batch_size: int = 8, lora=None, activation_checkpointing: bool = False,
             vlm_tokens: int | None = None, bf16: bool = True) -> dict:
    """Peak training memory in bytes (dict of parts and ``total``) for ``cfg`` at ``batch_size``."""
    with torch.device("meta"):
        model = MotusModel(cfg)
        model.requires_grad_(True)
        if lora is not None and lora.enabled:
            from .lora import add_lora

            add_lora(model, lora)
        vlm_n = 0
        from diffusers import AutoencoderKLWan

        vae_n = _params(AutoencoderKLWan(**cfg.vae))
        if cfg.vlm is not None:
            from transformers import Qwen3VLConfig, Qwen3VLModel

            vlm_n = _params(Qwen3VLModel._from_config(Qwen3VLConfig(**cfg.vlm)))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    low = 2 if bf16 else 4
    weights = trainable * 4 + frozen * low + vlm_n * low + vae_n * 4
    grads = trainable * 4
    optim = trainable * 8
    act = activation_bytes(model, cfg, batch_size, activation_checkpointing, vlm_tokens, bf16)
    total = weights + grads + optim + act["activations"]
    return {"weights": weights, "gradients": grads, "optimizer": optim, **act, "total": total,
            "trainable_params": trainable, "frozen_params": frozen + vlm_n + vae_n}


def activation_bytes(model: MotusModel, cfg: MotusConfig, b: int, checkpointing: bool, vlm_tokens: int | None,
                     bf16: bool) -> dict:
    if bf16:
        model.set_precision(torch.bfloat16)
    h, w = cfg.latent_hw
    n_u = vlm_tokens or (cfg.video_height // 32) * (cfg.video_width // 32) + 32  # image tokens + prompt text
    with torch.device("meta"):
        clean = torch.empty(b, int(cfg.wan["in_channels"]), cfg.latent_frames, h, w)
        actions = torch.empty(b, cfg.action_chunk_size, cfg.action_dim)
        state = torch.empty(b, cfg.state_dim)
        hidden = torch.empty(b, n_u, cfg.vlm_dim)
        t5 = torch.empty(b, cfg.text_len, int(cfg.wan["text_dim"]))
    counted = {"layer": 0, "rest": 0}
    in_layer = {"on": False}
    seen: set[int] = set()

    def pack(t):
        if id(t) not in seen:
            seen.add(id(t))
            counted["layer" if in_layer["on"] else "rest"] += t.numel() * t.element_size()
        return t

    original = model._layer
    boundary = {"bytes": 0}

    def layer(i, x_v, x_a, x_u, *rest):
        boundary["bytes"] += sum(x.numel() * x.element_size() for x in (x_v, x_a, x_u))
        in_layer["on"] = True
        try:
            return original(i, x_v, x_a, x_u, *rest)
        finally:
            in_layer["on"] = False

    model._layer = layer
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            cond = Conditioning(und=model.und_tokens(hidden), context_kv=model.context_kv(model.text_context(t5)))
            model.stage3_loss(clean, clean[:, :, :1], actions, state, cond,
                              video_index=torch.zeros(b, dtype=torch.long, device="meta"),
                              action_index=torch.zeros(b, dtype=torch.long, device="meta"),
                              video_noise=torch.empty_like(clean), action_noise=torch.empty_like(actions))
    finally:
        model._layer = original
    n = cfg.num_layers
    per_layer = counted["layer"] / n
    if checkpointing:
        acts = counted["rest"] + boundary["bytes"] + per_layer
    else:
        acts = counted["rest"] + counted["layer"]
    return {"activations": int(acts), "activations_per_layer": int(per_layer), "activations_outside_layers": int(counted["rest"])}


def summary_gb(est: dict) -> dict:
    return {k: round(v / GB, 3) for k, v in est.items() if k in ("weights", "gradients", "optimizer", "activations", "total")}
