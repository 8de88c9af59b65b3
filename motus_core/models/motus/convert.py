"""Converters from the official file layouts to ours, and strict state-dict loading.

* Motus DeepSpeed checkpoint (``mp_rank_00_model_states.pt``, weights under ``"module"``):
  canonical prefixes ``video_model.wan_model.`` (original Wan names -> diffusers
  ``WanTransformer3DModel`` names with diffusers' own converter), ``action_expert.`` and
  ``und_expert.`` (our modules use the official names), ``vlm_model.`` (Hugging Face Qwen3-VL names:
  ``model.*`` -> ``Qwen3VLModel``; ``lm_head.weight`` is tied to the input embeddings and unused for
  features, so it is dropped). Alias prefixes ``video_module.``, ``und_module.``, ``action_module.``
  (the same tensors registered twice by the official helper modules) are skipped.
* Original Wan2.2 VAE (``Wan2.2_VAE.pth``, ``WanVAE_`` names) -> diffusers ``AutoencoderKLWan``
  (the Wan2.2 rules of diffusers' repository conversion script; the installed wheel only has the
  Wan2.1 mapping).
* Wan's umT5 encoder (``models_t5_umt5-xxl-enc-bf16.pth``, ``wan/modules/t5.py`` names) ->
  transformers ``UMT5EncoderModel``.

Loading is strict: any missing, unexpected or mis-shaped key raises :class:`CheckpointError` naming
the keys. Nothing ever falls back to random weights.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping

import torch

from motus_core.policy.base import PolicyError

log = logging.getLogger(__name__)

CANONICAL_PREFIXES = {
    "video_model.wan_model.": "video",
    "action_expert.": "action_expert",
    "und_expert.": "und_expert",
    "vlm_model.": "vlm",
}
ALIAS_PREFIXES = ("video_module.", "und_module.", "action_module.")
DEEPSPEED_FILE = "mp_rank_00_model_states.pt"


class CheckpointError(PolicyError):
    """A checkpoint file is missing, unreadable, or does not fit the model (keys are named)."""


# ------------------------------------------------------------------------------------ strict loading


def _fmt_keys(keys, limit: int = 12) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}{f', ... ({len(keys)} in total)' if len(keys) > limit else ''}"


def check_state_dict(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], what: str,
                     optional: tuple[str, ...] = ()) -> None:
    """Raise CheckpointError unless ``given`` has exactly the keys and shapes of ``expected``.

    ``optional``: expected keys that may be absent (tied weights filled by the model itself).
    """
    missing = [k for k in expected if k not in given and k not in optional]
    unexpected = [k for k in given if k not in expected]
    misshaped = [f"{k} {tuple(given[k].shape)} != {tuple(expected[k].shape)}"
                 for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_fmt_keys(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped keys (checkpoint != model): {_fmt_keys(misshaped)}")
    if problems:
        raise CheckpointError(f"{what} does not match the model: " + "; ".join(problems))


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str,
                optional: tuple[str, ...] = ()) -> torch.nn.Module:
    """Strictly load ``state_dict`` into ``module`` (which may live on the meta device: tensors are assigned)."""
    check_state_dict(module.state_dict(), state_dict, what, optional)
    result = module.load_state_dict(dict(state_dict), strict=False, assign=True)
    left = [k for k in result.missing_keys if k not in optional]
    if left or result.unexpected_keys:  # cannot happen after the check; guard against torch changes
        raise CheckpointError(f"{what}: missing {_fmt_keys(left)}, unexpected {_fmt_keys(result.unexpected_keys)}")
    return module


# ------------------------------------------------------------------------------------ Motus checkpoint


def find_deepspeed_file(path: str | Path) -> Path:
    """``path`` is the file itself or a directory holding it at its root or in ``pytorch_model/``."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    for cand in (p / DEEPSPEED_FILE, p / "pytorch_model" / DEEPSPEED_FILE):
        if cand.is_file():
            return cand
    raise CheckpointError(f"no {DEEPSPEED_FILE} in {p} (looked at its root and pytorch_model/)")


def read_motus_checkpoint(path: str | Path) -> dict:
    """Read the official checkpoint and return its model state dict (``ckpt["module"]``)."""
    f = find_deepspeed_file(path)
    try:
        ckpt = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - DeepSpeed bookkeeping may hold objects weights_only refuses
        log.warning("Reading %s with weights_only=True failed (%s); reading it as a trusted full pickle.", f, exc)
        try:
            ckpt = torch.load(f, map_location="cpu", weights_only=False, mmap=True)
        except Exception as exc2:  # noqa: BLE001
            raise CheckpointError(f"cannot read {f}: {exc2}") from exc2
    if isinstance(ckpt, dict) and "module" in ckpt:
        sd = ckpt["module"]
    elif isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        sd = ckpt  # a plain state dict (e.g. the official pytorch_model_0.bin)
    else:
        raise CheckpointError(f"{f} holds no 'module' state dict (top-level keys: {_fmt_keys(sorted(ckpt)) if isinstance(ckpt, dict) else type(ckpt)})")
    return dict(sd)


def split_motus_state_dict(module_sd: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    """Group the official keys by component (prefix stripped); skip aliases; reject unknown prefixes."""
    groups: dict[str, dict] = {name: {} for name in CANONICAL_PREFIXES.values()}
    unknown = []
    for key, tensor in module_sd.items():
        if key.startswith(ALIAS_PREFIXES):
            continue
        for prefix, name in CANONICAL_PREFIXES.items():
            if key.startswith(prefix):
                groups[name][key[len(prefix):]] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"Motus checkpoint has keys outside the known prefixes "
                              f"{list(CANONICAL_PREFIXES) + list(ALIAS_PREFIXES)}: {_fmt_keys(unknown)}")
    return groups


def wan_original_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict:
    """Original Wan ``WanModel`` names -> diffusers ``WanTransformer3DModel`` names (diffusers' converter)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    return convert_wan_transformer_to_diffusers(dict(sd))


def motus_core_from_official(module_sd: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """Official ``module`` dict -> (our MotusModel state dict, Qwen3VLModel state dict)."""
    groups = split_motus_state_dict(module_sd)
    if not groups["video"]:
        raise CheckpointError("Motus checkpoint has no video_model.wan_model.* keys")
    core = {f"video.{k}": v for k, v in wan_original_to_diffusers(groups["video"]).items()}
    core.update({f"action_expert.{k}": v for k, v in groups["action_expert"].items()})
    core.update({f"und_expert.{k}": v for k, v in groups["und_expert"].items()})
    vlm = {}
    strange = []
    for k, v in groups["vlm"].items():
        if k.startswith("model."):
            vlm[k[len("model."):]] = v
        elif k == "lm_head.weight":
            continue  # tied to model.language_model.embed_tokens; Motus uses hidden states only
        else:
            strange.append(f"vlm_model.{k}")
    if strange:
        raise CheckpointError(f"unexpected VLM keys in the Motus checkpoint: {_fmt_keys(strange)}")
    return core, vlm


# ------------------------------------------------------------------------------------ Wan2.2 VAE

_VAE_RES = {"residual.0.": "norm1.", "residual.2.": "conv1.", "residual.3.": "norm2.", "residual.6.": "conv2.",
            "shortcut.": "conv_shortcut."}


def _vae_resnet(rest: str) -> str:
    for a, b in _VAE_RES.items():
        if rest.startswith(a):
            return b + rest[len(a):]
    return rest


def vae_original_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict:
    """Original Wan2.2 ``WanVAE_`` names -> diffusers ``AutoencoderKLWan`` names."""
    out = {}
    for key, v in sd.items():
        k = key
        if k.startswith("conv1."):
            k = "quant_conv." + k[len("conv1."):]
        elif k.startswith("conv2."):
            k = "post_quant_conv." + k[len("conv2."):]
        else:
            m = re.match(r"^(encoder|decoder)\.(.*)$", k)
            if not m:
                raise CheckpointError(f"unknown Wan VAE key {key!r}")
            part, rest = m.groups()
            if rest.startswith("conv1."):
                rest = "conv_in." + rest[len("conv1."):]
            elif rest.startswith("head.0."):
                rest = "norm_out." + rest[len("head.0."):]
            elif rest.startswith("head.2."):
                rest = "conv_out." + rest[len("head.2."):]
            elif (mm := re.match(r"^middle\.([012])\.(.*)$", rest)):
                idx, r = mm.groups()
                rest = {"0": "mid_block.resnets.0.", "1": "mid_block.attentions.0.", "2": "mid_block.resnets.1."}[idx]
                rest += _vae_resnet(r) if idx != "1" else r
            elif (mm := re.match(r"^(downsamples|upsamples)\.(\d+)\.(downsamples|upsamples)\.(\d+)\.(.*)$", rest)):
                kind, i, _, j, r = mm.groups()
                block = "down_blocks" if kind == "downsamples" else "up_blocks"
                sampler = "downsampler" if kind == "downsamples" else "upsampler"
                if r.startswith(("resample.", "time_conv.")):
                    rest = f"{block}.{i}.{sampler}.{r}"
                else:
                    rest = f"{block}.{i}.resnets.{j}.{_vae_resnet(r)}"
            else:
                raise CheckpointError(f"unknown Wan VAE key {key!r}")
            k = f"{part}.{rest}"
        out[k] = v
    return out


# ------------------------------------------------------------------------------------ umT5


def umt5_original_to_transformers(sd: Mapping[str, torch.Tensor]) -> dict:
    """Wan's umT5 encoder names -> transformers ``UMT5EncoderModel`` names."""
    out = {}
    for key, v in sd.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = v
            out["encoder.embed_tokens.weight"] = v
            continue
        if key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = v
            continue
        m = re.match(r"^blocks\.(\d+)\.(.*)$", key)
        if not m:
            raise CheckpointError(f"unknown umT5 key {key!r}")
        i, rest = m.groups()
        base = f"encoder.block.{i}.layer"
        table = {
            "norm1.weight": f"{base}.0.layer_norm.weight",
            "attn.q.weight": f"{base}.0.SelfAttention.q.weight",
            "attn.k.weight": f"{base}.0.SelfAttention.k.weight",
            "attn.v.weight": f"{base}.0.SelfAttention.v.weight",
            "attn.o.weight": f"{base}.0.SelfAttention.o.weight",
            "pos_embedding.embedding.weight": f"{base}.0.SelfAttention.relative_attention_bias.weight",
            "norm2.weight": f"{base}.1.layer_norm.weight",
            "ffn.gate.0.weight": f"{base}.1.DenseReluDense.wi_0.weight",
            "ffn.fc1.weight": f"{base}.1.DenseReluDense.wi_1.weight",
            "ffn.fc2.weight": f"{base}.1.DenseReluDense.wo.weight",
        }
        if rest not in table:
            raise CheckpointError(f"unknown umT5 key {key!r}")
        out[table[rest]] = v
    return out


def umt5_config_from_original(cfg: Mapping) -> dict:
    """Wan ``T5Encoder`` arguments -> transformers ``UMT5Config`` kwargs (encoder only)."""
    heads = int(cfg["num_heads"])
    return dict(
        vocab_size=int(cfg["vocab_size"]), d_model=int(cfg["dim"]), d_kv=int(cfg["dim_attn"]) // heads,
        d_ff=int(cfg["dim_ffn"]), num_layers=int(cfg["encoder_layers"]), num_heads=heads,
        relative_attention_num_buckets=int(cfg.get("num_buckets", 32)),
        relative_attention_max_distance=int(cfg.get("relative_attention_max_distance", 128)),
        feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=float(cfg.get("layer_norm_eps", 1e-6)),
        is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False,
    )


# umT5-XXL encoder as shipped with Wan2.2 (wan/modules/t5.py ``umt5_xxl``)
UMT5_XXL = dict(vocab_size=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64, encoder_layers=24,
                num_buckets=32, shared_pos=False)
