"""Official Motus files -> one converted checkpoint directory (the library behind ``motus-convert-checkpoint``,
whose command line is :mod:`motus_core.cli.convert_checkpoint`).

Reads (all local paths, offline):

* ``--motus``   the DeepSpeed checkpoint (directory with ``mp_rank_00_model_states.pt`` at its root or
                in ``pytorch_model/``, or the file itself) - Wan video stream, experts, Qwen3-VL;
* ``--wan``     the Wan2.2-TI2V-5B directory: ``config.json``, ``Wan2.2_VAE.pth``, and (unless
                ``--no-text-encoder``) ``models_t5_umt5-xxl-enc-bf16.pth`` + ``google/umt5-xxl/``;
                each can be given separately (``--wan-config``, ``--vae``, ``--umt5``, ``--umt5-tokenizer``);
* ``--vlm``     the Qwen3-VL-2B-Instruct directory (``config.json`` + processor/tokenizer files);
* ``--config``  the official training/inference yaml of the checkpoint (``common``/``model`` sections),
                or a json/yaml of official ``MotusConfig`` field names; default: the released
                real-world values (8 frames at 384x320, 48 actions, experts 1024/512).

Writes ``--out`` (layout in ``checkpoint.py``) with safetensors shards and a ``motus_policy.yaml``
(``kind: motus``) that ``load_policy(<out>)`` and the policy node read. ``--encode TEXT`` (repeatable)
pre-computes instruction embeddings into the directory's cache, so the runtime never loads umT5.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from .checkpoint import DEFAULT_FILES, save_converted
from .config import WAN22_VAE, MotusConfig, from_official, vae_config_from_original
from .convert import (
    UMT5_XXL,
    CheckpointError,
    load_strict,
    motus_core_from_official,
    read_motus_checkpoint,
    umt5_config_from_original,
    umt5_original_to_transformers,
    vae_original_to_diffusers,
)

log = logging.getLogger("motus-convert-checkpoint")
# the --dtype choices
DTYPES = {"keep": None, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}


def motus_fields(config: dict | None) -> dict:
    """Official MotusConfig field names from an official yaml (``common``/``model``) or a flat mapping."""
    if not config:
        return {}
    if "common" not in config and "model" not in config:
        return dict(config)
    c, m = config.get("common", {}) or {}, config.get("model", {}) or {}
    # training yamls nest the experts under "model"; the config.json the trainer writes next to a
    # checkpoint has them at the top level
    ae = m.get("action_expert") or config.get("action_expert") or {}
    ue = m.get("und_expert") or config.get("und_expert") or {}
    vlm = ue.get("vlm", {}) or {}
    lw = m.get("loss_weights", {}) or {}
    out = {
        "action_state_dim": c.get("state_dim"), "action_dim": c.get("action_dim"),
        "num_video_frames": c.get("num_video_frames"), "video_height": c.get("video_height"),
        "video_width": c.get("video_width"), "video_action_freq_ratio": c.get("video_action_freq_ratio"),
        "global_downsample_rate": c.get("global_downsample_rate"),
        "action_expert_dim": ae.get("hidden_size", ae.get("dim")), "action_expert_ffn_dim_multiplier": ae.get("ffn_dim_multiplier"),
        "action_expert_norm_eps": ae.get("norm_eps"),
        "und_expert_hidden_size": ue.get("hidden_size", ue.get("dim")), "und_expert_ffn_dim_multiplier": ue.get("ffn_dim_multiplier"),
        "und_expert_norm_eps": ue.get("norm_eps"), "vlm_adapter_input_dim": vlm.get("input_dim"),
        "vlm_adapter_projector_type": vlm.get("projector_type"),
        "num_inference_timesteps": (m.get("inference", {}) or {}).get("num_inference_timesteps"),
        "video_loss_weight": lw.get("video_loss_weight"), "action_loss_weight": lw.get("action_loss_weight"),
        "training_mode": m.get("training_mode") or c.get("training_mode") or config.get("training_mode"),
        "action_normalization": c.get("action_normalization"),
    }
    return {k: (float(v) if isinstance(v, str) and k.endswith("eps") else v) for k, v in out.items() if v is not None}


def load_mapping(path: str | Path | None) -> dict | None:
    if path is None:
        return None
    text = Path(path).read_text()
    return json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)


def _torch_load(path: Path) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return dict(sd)


def _fingerprint(path: Path, chunk: int = 16 * 1024**2) -> str:
    """sha256 of the size and the first/last 16 MB: cheap, stable identity of a large weight file."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if path.stat().st_size > chunk:
            f.seek(-chunk, 2)
            h.update(f.read(chunk))
    return h.hexdigest()[:16]


def convert_vae(src: Path, vae_config: dict) -> dict:
    """``Wan2.2_VAE.pth`` (original names) -> diffusers ``AutoencoderKLWan`` state dict, validated strictly."""
    from diffusers import AutoencoderKLWan

    sd = vae_original_to_diffusers(_torch_load(src))
    with torch.device("meta"):
        load_strict(AutoencoderKLWan(**vae_config), sd, f"Wan2.2 VAE weights in {src}")
    return sd


def convert_umt5(src: Path, out_dir: Path, *, config: dict | None = None, tokenizer: str | Path | None = None,
                 dtype: torch.dtype | None = None) -> str:
    """Wan's umT5 file -> a converted text-encoder directory (see text_encoder.py); returns its identity."""
    from safetensors.torch import save_file
    from transformers import UMT5Config, UMT5EncoderModel

    from .text_encoder import TEXT_ENCODER_FILE

    cfg = UMT5Config(**umt5_config_from_original(config or UMT5_XXL))
    sd = umt5_original_to_transformers(_torch_load(src))
    with torch.device("meta"):
        model = UMT5EncoderModel(cfg)
    load_strict(model, sd, f"umT5 weights {src}")  # validates names and shapes before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(str(out_dir))
    save_file({k: (v.to(dtype) if dtype is not None else v).contiguous() for k, v in sd.items()
               if k != "encoder.embed_tokens.weight"}, str(out_dir / "model.safetensors"))
    kind = "bytes" if tokenizer in (None, "bytes") else "hf"
    if kind == "hf":
        for f in Path(tokenizer).iterdir():
            if f.is_file():
                shutil.copy2(f, out_dir / f.name)
    name = "umt5-xxl" if config is None else "umt5"
    identity = f"{name}/{_fingerprint(src)}/{kind}"
    (out_dir / TEXT_ENCODER_FILE).write_text(json.dumps({"identity": identity, "text_len": 512, "tokenizer": kind},
                                                        indent=2))
    return identity


def convert_checkpoint(
    out: str | Path,
    *,
    motus: str | Path,
    wan_config: dict,
    vae: str | Path,
    vlm_config: dict,
    motus_config: dict | None = None,
    vae_config: dict | None = None,
    vlm_processor: str | Path | None = None,
    umt5: str | Path | None = None,
    umt5_config: dict | None = None,
    umt5_tokenizer: str | Path | None = None,
    dtype: torch.dtype | None = None,
    stats: str | Path | None = None,
    stats_key: str | None = None,
    encode: tuple[str, ...] = (),
    progress: bool = True,
) -> Path:
    """Convert everything and write ``out``. Raises CheckpointError naming any key that does not fit."""
    out = Path(out).expanduser()
    stages = tqdm(total=6, desc="motus-convert-checkpoint", unit="stage", disable=not progress)

    stages.set_postfix_str("reading the Motus checkpoint")
    module_sd = read_motus_checkpoint(motus)
    core, vlm = motus_core_from_official(module_sd)
    fields = motus_fields(motus_config)
    normalization = fields.pop("action_normalization", None)
    downsample = int(fields.pop("global_downsample_rate", 1) or 1)
    if "training_mode" not in fields:  # the layout tells: finetune checkpoints have a state encoder
        fields["training_mode"] = "finetune" if "action_expert.input_encoder.state_encoder.0.weight" in core else "pretrain"
        log.info("Checkpoint layout: %s (detected from its keys).", fields["training_mode"])
    stages.update()

    stages.set_postfix_str("checking shapes")
    vcfg = vae_config or {}
    vae_kwargs = vae_config_from_original({**{"dim": WAN22_VAE["base_dim"], "dec_dim": WAN22_VAE["decoder_base_dim"],
                                             "num_res_blocks": WAN22_VAE["num_res_blocks"]}, **vcfg},
                                          vcfg.get("latents_mean", WAN22_VAE["latents_mean"]),
                                          vcfg.get("latents_std", WAN22_VAE["latents_std"]))
    config: MotusConfig = from_official(wan_config, fields, vae=vae_kwargs, vlm=vlm_config)
    from .model import MotusModel

    with torch.device("meta"):
        load_strict(MotusModel(config), core, f"Motus weights in {motus}")
        from transformers import Qwen3VLConfig, Qwen3VLModel

        load_strict(Qwen3VLModel._from_config(Qwen3VLConfig(**vlm_config)), vlm, f"Qwen3-VL weights in {motus}")
    stages.update()

    stages.set_postfix_str("converting the Wan2.2 VAE")
    vae_sd = convert_vae(Path(vae), config.vae)
    stages.update()

    stages.set_postfix_str("writing the model")
    extra: dict = {}
    if normalization == "none":
        extra["normalization"] = "none"
    if downsample != 1:
        extra["step_period"] = downsample / 30.0  # actions every `downsample` frames of 30 Hz recordings
    save_converted(out, config, core, vae_sd, vlm, dtype=dtype, vlm_processor_dir=vlm_processor, extra=extra,
                   progress=progress)
    if stats is not None:
        shutil.copy2(stats, out / "stat.json")
        extra_stats = {"stats": "stat.json"}
        if stats_key:
            extra_stats["stats_key"] = stats_key
        _update_policy_file(out, extra_stats)
    del module_sd, core, vlm
    stages.update()

    stages.set_postfix_str("converting umT5")
    if umt5 is not None:
        identity = convert_umt5(Path(umt5), out / DEFAULT_FILES["text_encoder"], config=umt5_config,
                                tokenizer=umt5_tokenizer, dtype=dtype)
        _update_policy_file(out, {"text_encoder": DEFAULT_FILES["text_encoder"], "text_encoder_identity": identity})
    stages.update()

    stages.set_postfix_str("pre-encoding instructions")
    if encode:
        if umt5 is None:
            raise CheckpointError("--encode needs the umT5 encoder (--umt5 or --wan)")
        from .text_encoder import EmbeddingCache, load_text_encoder

        enc = load_text_encoder(out / DEFAULT_FILES["text_encoder"])
        cache = EmbeddingCache(out / DEFAULT_FILES["embedding_cache"])
        for text in tqdm(encode, desc="encoding instructions", disable=not progress):
            cache.get_or_compute(text, enc)
    stages.update()
    stages.close()
    return out


def _update_policy_file(out: Path, values: dict) -> None:
    from .checkpoint import POLICY_FILE, write_policy_file

    meta = yaml.safe_load((out / POLICY_FILE).read_text()) or {}
    meta.update(values)
    write_policy_file(out, meta)
