"""One Motus Stage-3 training step: frozen VAE + frozen VLM inputs -> the official flow-matching loss.

:class:`MotusLoss` is the module the optimizer (and DDP/FSDP2) sees: it owns the trainable tri-stream
model and computes, for a collated batch (``data.collate``):

1. the clean video latent of ``[first_frame, video_frames...]`` with the frozen VAE (the condition
   latent is its first latent frame: the Wan VAE is causal in time and encodes frame 0 alone, so this
   equals the official separate ``encode(first_frame)``; a test checks it);
2. the VLM's last hidden state per sample (frozen, the policy node's prompt builder, one sample at a
   time like the policy; right-padded with zeros to the batch's longest prompt);
3. the understanding tokens and the text context (trainable adapters), then ``stage3_loss`` with the
   step's own generator (timestep indices and noises in the official draw order).

:func:`one_step` runs one complete optimizer step (forward, backward, clip, AdamW): the GPU benchmark
calls it for a full-size LoRA + activation-checkpointing step.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor

from ..model import Conditioning, MotusModel
from ..vae import MotusVAE
from ..vlm import VLMFeatures
from .encoder_cache import EncoderCache


def vlm_hidden_one(vlm: VLMFeatures, inp: dict) -> torch.Tensor:
    """One sample's VLM last hidden state ``[L, vlm_dim]`` (float32); with a graph only when the VLM is
    trained (``model.train_vlm``) and grad is enabled."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and vlm.trainable):
        x = {k: v.to(vlm.device) for k, v in inp.items()}
        x["pixel_values"] = x["pixel_values"].to(vlm.dtype)
        return vlm.model(**x, use_cache=False).last_hidden_state.float()[0]


def pad_stack(hs: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample ``[L_i, D]`` -> ``[B, L_max, D]``, right-padded with zeros."""
    n = max(h.shape[0] for h in hs)
    return torch.stack([torch.cat([h, h.new_zeros(n - h.shape[0], h.shape[1])]) if h.shape[0] < n else h for h in hs])


def vlm_hidden(vlm: VLMFeatures, inputs: list[dict]) -> torch.Tensor:
    """Per-sample VLM features, right-padded with zeros -> ``[B, L_max, vlm_dim]`` (float32)."""
    return pad_stack([vlm_hidden_one(vlm, inp) for inp in inputs])


def video_pixels(batch: dict) -> torch.Tensor:
    """``first_frame [B,3,H,W]`` + ``video_frames [B,F,3,H,W]`` -> ``[B, 3, 1+F, H, W]`` in [0, 1]."""
    return torch.cat([batch["first_frame"][:, None], batch["video_frames"]], dim=1).permute(0, 2, 1, 3, 4)


class MotusLoss(nn.Module):
    """The trainable model + its input encoders (kept outside the module tree: never wrapped by DDP/FSDP2;
    the VAE is always frozen, the VLM is trained only with ``model.train_vlm``, single process, its
    parameters in the optimizer's ``vlm`` group)."""

    def __init__(self, model: MotusModel, vae: MotusVAE, vlm: VLMFeatures, cache: EncoderCache | None = None):
        super().__init__()
        self.model = model
        object.__setattr__(self, "vae", vae)
        object.__setattr__(self, "vlm", vlm)
        object.__setattr__(self, "cache", cache)

    def encode(self, batch: dict) -> dict:
        """The input encoders: VAE latents (no graph) and VLM features (a graph when the VLM is trained);
        with an encoder cache (``train.encoder_cache_mb``) each sample's frozen outputs are computed once."""
        dev = self.model.device
        if self.cache is not None:
            # each sample on its own, cached or not: the same latents whatever the batch (bit-exact resume)
            c, keys, pixels = self.cache, self.cache.keys(batch), video_pixels(batch).to(dev)
            with torch.no_grad():
                clean = torch.stack([c.latent(k, lambda i=i: self.vae.encode_pixels(pixels[i:i + 1])[0]) for i, k in enumerate(keys)])
            if self.vlm.trainable:
                hidden = vlm_hidden(self.vlm, batch["vlm_inputs"])
            else:
                hidden = pad_stack([c.feature((*k, text), lambda inp=inp: vlm_hidden_one(self.vlm, inp))
                                    for k, text, inp in zip(keys, batch["instruction"], batch["vlm_inputs"])])
        else:
            with torch.no_grad():
                clean = self.vae.encode_pixels(video_pixels(batch).to(dev))
            hidden = vlm_hidden(self.vlm, batch["vlm_inputs"])
        return {
            "clean": clean,
            "vlm_hidden": hidden,
            "t5": batch["language_embedding"].to(dev),
            "actions": batch["action_sequence"].to(dev),
            "state": batch["initial_state"].to(dev) if batch.get("initial_state") is not None else None,
        }

    def forward(self, enc: dict, generator: torch.Generator | None = None, draws: dict | None = None) -> dict:
        m = self.model
        cond = Conditioning(und=m.und_tokens(enc["vlm_hidden"]), context_kv=m.context_kv(m.text_context(enc["t5"])))
        clean = enc["clean"]
        return m.stage3_loss(clean, clean[:, :, :1], enc["actions"], enc["state"], cond, generator=generator, **(draws or {}))


def autocast(precision: str, device: torch.device):
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def one_step(loss_module: MotusLoss, optimizer: torch.optim.Optimizer, batch: dict, *, generator: torch.Generator | None = None,
             grad_clip: float = 0.5, precision: str = "auto", wrapped: nn.Module | None = None) -> dict[str, Any]:
    """One optimizer step on ``batch``; returns the float losses and the grad norm.

    ``wrapped``: the DDP wrapper of ``loss_module`` when distributed (its forward syncs grads), or
    ``loss_module`` itself under FSDP2 (``fully_shard`` shards it in place).
    """
    dev = loss_module.model.device
    enc = loss_module.encode(batch)
    with autocast(precision, dev):
        out = (wrapped or loss_module)(enc, generator)
    loss = out["total_loss"]
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss.detach()):
        return {"total_loss": float(loss.detach()), "video_loss": float(out["video_loss"].detach()),
                "action_loss": float(out["action_loss"].detach()), "grad_norm": float("nan"), "finite": False}
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    clip = grad_clip if grad_clip > 0 else float("inf")
    gn = torch.nn.utils.clip_grad_norm_(params, clip)
    if isinstance(gn, DTensor):  # FSDP2: each rank's partial norm of its shards -> the norm over every rank
        gn = gn.full_tensor()
    if not torch.isfinite(gn):  # finite loss, non-finite gradient: never apply it
        optimizer.zero_grad(set_to_none=True)
        return {"total_loss": float(loss.detach()), "video_loss": float(out["video_loss"].detach()),
                "action_loss": float(out["action_loss"].detach()), "grad_norm": float(gn), "finite": False}
    optimizer.step()
    return {"total_loss": float(loss.detach()), "video_loss": float(out["video_loss"].detach()),
            "action_loss": float(out["action_loss"].detach()), "grad_norm": float(gn), "finite": True}


def synthetic_setup(config, *, device="cuda", batch_size: int = 1, lora=None, activation_checkpointing: bool = True,
                    seed: int = 0):
    """Random-weight trainer pieces for benchmarks: (MotusLoss, AdamW, one synthetic batch) on ``device``.

    The tri-stream model is materialised once on ``device`` (float32 trainable weights; with LoRA the
    frozen WAN base in bf16 on CUDA), the VAE in float32, the VLM in bf16 on CUDA; the batch has the
    training shapes (``first_frame``, ``video_frames``, ``action_sequence``, ``initial_state``, a
    ``language_embedding`` of ``text_len`` rows, VLM inputs from the tiny prompt builder).
    Use with :func:`one_step` (the GPU benchmark: full size, LoRA, activation checkpointing, bf16).
    """
    import numpy as np

    from ..loading import build_motus_model, build_vae, build_vlm
    from ..vlm import TinyPrompt
    from .config import OptimSection
    from .schedule import build_optimizer

    dev = torch.device(device)
    low = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = build_motus_model(config, None, device=dev, dtype=torch.float32, seed=seed).train().requires_grad_(True)
    if lora is not None and lora.enabled:
        from .lora import add_lora

        add_lora(model, lora, frozen_dtype=low if dev.type == "cuda" else None)
    model.activation_checkpointing = activation_checkpointing
    vae = build_vae(config.vae, None, device=dev, seed=seed + 1)
    vlm = VLMFeatures(build_vlm(config.vlm, None, device=dev, dtype=low, seed=seed + 2),
                      TinyPrompt(config.vlm, (config.video_height, config.video_width)))
    loss = MotusLoss(model, vae, vlm)
    opt, _ = build_optimizer(model, OptimSection())
    g = torch.Generator().manual_seed(seed)
    b, f, hh, ww = batch_size, config.num_video_frames, config.video_height, config.video_width
    image = (np.random.default_rng(seed).random((hh, ww, 3)) * 255).astype(np.uint8)
    batch = {
        "first_frame": torch.rand(b, 3, hh, ww, generator=g),
        "video_frames": torch.rand(b, f, 3, hh, ww, generator=g),
        "action_sequence": torch.rand(b, config.action_chunk_size, config.action_dim, generator=g),
        "initial_state": torch.rand(b, config.state_dim, generator=g),
        "language_embedding": torch.randn(b, config.text_len, int(config.wan["text_dim"]), generator=g),
        "vlm_inputs": [vlm.prompt(image, "transfer the cube to the other arm") for _ in range(b)],
    }
    return loss, opt, batch
