"""``motus-train --export-official``: a suite checkpoint in the official DeepSpeed layout.

Writes ``OUT/mp_rank_00_model_states.pt`` = ``{"module": state_dict}`` with the official canonical
prefixes (motus-spec §3.2): ``video_model.wan_model.*`` in the original Wan names (the inverse of
diffusers' ``convert_wan_transformer_to_diffusers``, checked by running that converter on the result),
``action_expert.*`` and ``und_expert.*`` (our names are the official ones), ``vlm_model.model.*`` plus
the tied ``vlm_model.lm_head.weight``. The official ``Motus.load_checkpoint(OUT)`` reads it (it loads
with ``strict=False``; the alias prefixes share storage with these). ``OUT/official_config.json``
holds the Wan ``config.json`` fields and the official ``MotusConfig`` fields of the model, and the
statistics file is copied next to it.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from ..checkpoint import DEFAULT_FILES, load_weights, read_policy_file, resolve
from ..config import MotusConfig
from ..convert import DEEPSPEED_FILE, CheckpointError, wan_original_to_diffusers

# diffusers WanTransformer3DModel name -> original Wan name (applied in this order)
_WAN_BACK = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"),
]


def wan_diffusers_to_original(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        n = k
        for a, b in _WAN_BACK:
            n = n.replace(a, b)
        n = re.sub(r"^scale_shift_table$", "head.modulation", n)
        n = n.replace(".scale_shift_table", ".modulation")
        n = n.replace(".norm2.", ".norm3.")  # diffusers' affine pre-cross-attention norm is Wan's norm3
        out[n] = v
    back = wan_original_to_diffusers(dict(out))
    if set(back) != set(sd):
        raise CheckpointError(f"Wan name inversion is not exact: {sorted(set(back) ^ set(sd))[:6]}")
    return out


def official_config(cfg: MotusConfig) -> dict:
    w = cfg.wan
    wan = {"dim": cfg.wan_dim, "num_heads": cfg.num_heads, "ffn_dim": int(w["ffn_dim"]), "in_dim": int(w["in_channels"]),
           "out_dim": int(w["out_channels"]), "text_dim": int(w["text_dim"]), "freq_dim": int(w["freq_dim"]),
           "num_layers": cfg.num_layers, "eps": float(w["eps"]), "patch_size": list(w["patch_size"]), "qk_norm": True,
           "cross_attn_norm": True, "text_len": cfg.text_len, "window_size": [-1, -1], "model_type": "ti2v"}
    motus = {"num_layers": cfg.num_layers, "action_state_dim": cfg.state_dim, "action_dim": cfg.action_dim,
             "action_expert_dim": cfg.action_expert_dim,
             "action_expert_ffn_dim_multiplier": cfg.action_expert_ffn_dim // cfg.action_expert_dim,
             "action_expert_norm_eps": cfg.action_expert_norm_eps, "und_expert_hidden_size": cfg.und_expert_dim,
             "und_expert_ffn_dim_multiplier": cfg.und_expert_ffn_dim // cfg.und_expert_dim,
             "und_expert_norm_eps": cfg.und_expert_norm_eps, "vlm_adapter_input_dim": cfg.vlm_dim,
             "vlm_adapter_projector_type": "mlp3x_silu", "num_video_frames": cfg.num_video_frames,
             "video_action_freq_ratio": cfg.video_action_freq_ratio, "video_height": cfg.video_height,
             "video_width": cfg.video_width, "training_mode": cfg.training_mode,
             "video_loss_weight": cfg.video_loss_weight, "action_loss_weight": cfg.action_loss_weight,
             "num_inference_timesteps": cfg.num_inference_steps}
    return {"wan": wan, "motus": motus, "vlm": cfg.vlm}


def official_state_dict(core: dict, vlm: dict | None, dtype: torch.dtype | None = torch.bfloat16) -> dict:
    def cast(t):
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    module = {}
    video = {k[len("video."):]: v for k, v in core.items() if k.startswith("video.")}
    for k, v in wan_diffusers_to_original(video).items():
        module[f"video_model.wan_model.{k}"] = cast(v)
    for k, v in core.items():
        if k.startswith(("action_expert.", "und_expert.")):
            module[k] = cast(v)
        elif not k.startswith("video."):
            raise CheckpointError(f"unexpected key {k} in the model weights")
    if vlm is not None:
        for k, v in vlm.items():
            module[f"vlm_model.model.{k}"] = cast(v)
        emb = vlm.get("language_model.embed_tokens.weight")
        if emb is not None:
            module["vlm_model.lm_head.weight"] = module["vlm_model.model.language_model.embed_tokens.weight"]
    return module


def export_official(src: str | Path, out: str | Path, dtype: torch.dtype | None = torch.bfloat16) -> Path:
    """Policy/checkpoint directory ``src`` -> ``out/mp_rank_00_model_states.pt`` (+ configs, statistics)."""
    src, out = Path(src).expanduser(), Path(out).expanduser()
    meta = read_policy_file(src)
    cfg = MotusConfig.load(resolve(src, meta.get("config", DEFAULT_FILES["config"])))
    core = load_weights(resolve(src, meta.get("weights", DEFAULT_FILES["weights"])))
    vlm = load_weights(resolve(src, meta["vlm"])) if meta.get("vlm") else None
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"module": official_state_dict(core, vlm, dtype)}, out / DEEPSPEED_FILE)
    (out / "official_config.json").write_text(json.dumps(official_config(cfg), indent=1))
    if meta.get("stats"):
        shutil.copy2(resolve(src, meta["stats"]), out / "stat.json")
    return out / DEEPSPEED_FILE
