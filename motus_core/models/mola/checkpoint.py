"""Checkpoints: the release's key names <-> ours, strict loading, and our own checkpoint directories.

Key map (release stage-III ``{"model": state_dict}`` -> :class:`~.model.MolaNet` names; docs/mola.md):

=====================================================  ==================================================
release                                                ours
=====================================================  ==================================================
``goal_emb.*``, ``time_pos_emb``                       ``moidm.idm_input.goal_emb.*``, ``moidm.idm_input.time_pos_emb``
``latent_{flow,cotracker}_motion_tokenizer.*``         ``moidm.idms.flow.*``
``latent_depth_motion_tokenizer.*``                    ``moidm.idms.depth.*``
``latent_{semantic,segment}_motion_tokenizer.*``       ``moidm.idms.semantic.*``
  ``m_former.encoder.layer.N.attention.attention.      ``m_former.layers.N.attention.{q,k,v}_proj``
  {query,key,value}``                                  (transformers 5 ``ViTLayer``)
  ``...attention.output.dense``                        ``...attention.o_proj``
  ``...intermediate.dense`` / ``...output.dense``      ``...mlp.fc1`` / ``...mlp.fc2``
``Video_Former.*``                                     ``video_former.*``
``model.inner_model.*`` (fixture: ``inner_model.*``)   ``head.*``
``TVP_encoder.pipeline.unet.*`` / ``.vae.*``           the SVD UNet / VAE (diffusers names, unchanged)
``TVP_encoder.text_encoder.*``                         the CLIP text model (transformers names, unchanged)
``TVP_encoder.pipeline.image_encoder.*``               ignored: SVD's CLIP image encoder, unused by MoLA
``language_goal.*``                                    ignored: the OpenAI-format copy of the same CLIP
                                                       (we take ``text_embeds`` of the transformers model)
=====================================================  ==================================================

Anything else is an error (unexpected key), and so is any key of our model the checkpoint lacks.

Our checkpoint directory (what training writes and ``policy.create`` reads)::

    motus_policy.yaml   kind: mola, config, weights, stats_file, stats_key (+ optional video paths)
    mola_config.yaml    the MolaConfig
    mola_net.safetensors  MolaNet state dict (our names)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from .config import MolaConfig, MolaConfigError

POLICY_FILE = "motus_policy.yaml"
CONFIG_FILE = "mola_config.yaml"
WEIGHTS_FILE = "mola_net.safetensors"

_IDM_PREFIXES = {
    "latent_flow_motion_tokenizer.": "moidm.idms.flow.",
    "latent_cotracker_motion_tokenizer.": "moidm.idms.flow.",  # LIBERO variant (VPP_policy25.py)
    "latent_depth_motion_tokenizer.": "moidm.idms.depth.",
    "latent_semantic_motion_tokenizer.": "moidm.idms.semantic.",
    "latent_segment_motion_tokenizer.": "moidm.idms.semantic.",
}
_VIT_LAYER_RULES = [  # (release, transformers-5 ViTLayer), applied in this order inside m_former.encoder.layer.N.
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
    ("layernorm_before.", "layernorm_before."),
    ("layernorm_after.", "layernorm_after."),
]
IGNORED_RELEASE_PREFIXES = ("TVP_encoder.pipeline.image_encoder.", "language_goal.")
VIDEO_PREFIXES = {"TVP_encoder.pipeline.unet.": "unet", "TVP_encoder.pipeline.vae.": "vae", "TVP_encoder.text_encoder.": "text_encoder"}


class CheckpointError(RuntimeError):
    """A checkpoint does not match the model/config it is loaded into."""


def idm_key_from_release(key: str) -> str:
    """Key inside one IDM (``m_former.*``, ``vq_*``, ``vector_quantizer.*``): release -> ours."""
    m = re.match(r"m_former\.encoder\.layer\.(\d+)\.(.*)$", key)
    if not m:
        return key
    rest = m.group(2)
    for old, new in _VIT_LAYER_RULES:
        if rest.startswith(old):
            return f"m_former.layers.{m.group(1)}.{new}{rest[len(old):]}"
    raise CheckpointError(f"unknown M-Former layer key {key!r}")


def idm_key_to_release(key: str) -> str:
    m = re.match(r"m_former\.layers\.(\d+)\.(.*)$", key)
    if not m:
        return key
    rest = m.group(2)
    for old, new in _VIT_LAYER_RULES:
        if rest.startswith(new):
            return f"m_former.encoder.layer.{m.group(1)}.{old}{rest[len(new):]}"
    raise CheckpointError(f"unknown M-Former layer key {key!r}")


def net_key_from_release(key: str) -> str | None:
    """Release key -> MolaNet key; None for keys that belong to the video model or are ignored."""
    if key.startswith(IGNORED_RELEASE_PREFIXES) or key.startswith(tuple(VIDEO_PREFIXES)):
        return None
    if key.startswith("goal_emb.") or key == "time_pos_emb":
        return "moidm.idm_input." + key
    for old, new in _IDM_PREFIXES.items():
        if key.startswith(old):
            return new + idm_key_from_release(key[len(old):])
    if key.startswith("Video_Former."):
        return "video_former." + key[len("Video_Former."):]
    for p in ("model.inner_model.", "inner_model."):
        if key.startswith(p):
            return "head." + key[len(p):]
    raise CheckpointError(f"unexpected key in a MoLA release checkpoint: {key!r}")


def net_key_to_release(key: str) -> str:
    if key.startswith("moidm.idm_input."):
        return key[len("moidm.idm_input."):]
    if key.startswith("moidm.idms."):
        name, rest = key[len("moidm.idms."):].split(".", 1)
        return f"latent_{name}_motion_tokenizer." + idm_key_to_release(rest)
    if key.startswith("video_former."):
        return "Video_Former." + key[len("video_former."):]
    if key.startswith("head."):
        return "model.inner_model." + key[len("head."):]
    raise CheckpointError(f"{key!r} has no release counterpart (an addition of ours, e.g. camera_emb)")


def split_release_state_dict(sd: Mapping[str, torch.Tensor]):
    """-> (net state dict in our names, {"unet"|"vae"|"text_encoder": state dict}, ignored keys)."""
    net, video, ignored = {}, {"unet": {}, "vae": {}, "text_encoder": {}}, []
    for k, v in sd.items():
        for p, part in VIDEO_PREFIXES.items():
            if k.startswith(p):
                video[part][k[len(p):]] = v
                break
        else:
            nk = net_key_from_release(k)
            if nk is None:
                ignored.append(k)
            else:
                if nk in net:
                    raise CheckpointError(f"two release keys map to {nk!r} (e.g. both latent_flow_ and latent_cotracker_)")
                net[nk] = v
    return net, video, ignored


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with errors that list what is wrong (missing / unexpected / shape)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {items[:5]})")
        raise CheckpointError(f"{what} does not match the model: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def load_release_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a release checkpoint (``.pt``/``.ckpt`` torch file with ``{"model": ...}``/``{"state_dict": ...}``, or safetensors)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"release checkpoint not found: {p}")
    if p.suffix == ".safetensors":
        return load_file(str(p))
    obj = torch.load(str(p), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            return obj[key]
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise CheckpointError(f"{p}: not a state dict nor a {{'model': state_dict}} checkpoint")


# ---------------------------------------------------------------------------------- our directories


def write_policy_dir(out_dir: str | Path, cfg: MolaConfig, net_state: Mapping[str, torch.Tensor], *,
                     stats_file: str | Path | None, stats_key: str | None, extra: dict | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / CONFIG_FILE)
    save_file({k: v.detach().cpu().contiguous() for k, v in net_state.items()}, str(out / WEIGHTS_FILE))
    meta = {"kind": "mola", "config": CONFIG_FILE, "weights": WEIGHTS_FILE,
            "stats_file": str(stats_file) if stats_file else "", "stats_key": stats_key or ""}
    meta.update(extra or {})
    (out / POLICY_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
    return out


def resolve(base: Path, value: str) -> str:
    """A path from a policy yaml: absolute, or relative to the yaml's directory."""
    if not value:
        return ""
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p))


def read_policy_dir(path: str | Path, options: Mapping | None = None):
    """-> (MolaConfig with resolved local paths, net state dict, meta)."""
    base = Path(path)
    meta_file = base / POLICY_FILE
    meta = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() else {}
    meta = {**(meta or {}), **dict(options or {})}
    if meta.get("kind", "mola") != "mola":
        raise CheckpointError(f"{meta_file}: kind is {meta.get('kind')!r}, not 'mola'")
    cfg_file = base / meta.get("config", CONFIG_FILE)
    if not cfg_file.is_file():
        raise CheckpointError(f"MoLA checkpoint {base}: config {cfg_file.name} not found")
    data = yaml.safe_load(cfg_file.read_text()) or {}
    video = data.setdefault("video", {})
    for key in ("pretrained", "text_encoder"):  # policy yaml / options override the config's paths
        if meta.get(f"video_{key}"):
            video[key] = meta[f"video_{key}"]
        video[key] = resolve(base, video.get(key, ""))
    try:
        cfg = MolaConfig.from_dict(data)
    except MolaConfigError as exc:
        raise CheckpointError(f"{cfg_file}: {exc}") from None
    w = base / meta.get("weights", WEIGHTS_FILE)
    if not w.is_file():
        raise CheckpointError(f"MoLA checkpoint {base}: weights {w.name} not found")
    return cfg, load_file(str(w)), meta
