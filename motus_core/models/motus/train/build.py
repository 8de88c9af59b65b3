"""Model construction for training: config resolution, initialisation (scratch / converted / pretrain)."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import DEFAULT_FILES, load_weights, read_policy_file, resolve
from ..config import PRESETS, MotusConfig
from ..convert import CheckpointError, check_state_dict, motus_core_from_official, read_motus_checkpoint
from ..loading import build_motus_model, build_vae, build_vlm
from ..model import MotusModel
from ..vae import MotusVAE
from ..vlm import ProcessorPrompt, TinyPrompt, VLMFeatures
from .config import InitSection, ModelSection, TrainConfigError

log = logging.getLogger("motus_train")

FULL_SIZE_PARAMS = 1_000_000_000  # above this, from-scratch training needs init.allow_full_size_scratch
# official load_pretrain_weights drops these (substring match): the Stage-2 action encoder/decoder
# have no state token and the latent-action width, so the finetune layout starts them fresh
PRETRAIN_DROPPED = ("action_expert.input_encoder", "action_expert.decoder")


def merge_config(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if k in ("wan", "vae", "vlm") and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_config(out[k], v) if k == "vlm" else {**out[k], **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


def model_config(section: ModelSection, base: MotusConfig | None = None) -> MotusConfig:
    """The preset (or ``base``: a converted checkpoint's config) with ``model.config`` overrides applied."""
    if base is None:
        if section.preset not in PRESETS:
            raise TrainConfigError(f"model.preset {section.preset!r} is not one of {sorted(PRESETS)}")
        base = PRESETS[section.preset]()
    try:
        return MotusConfig.from_dict(merge_config(base.to_dict(), section.config or {}))
    except (TypeError, ValueError) as exc:
        raise TrainConfigError(f"model.config: {exc}") from exc


@dataclass
class Built:
    config: MotusConfig
    model: MotusModel
    vae: MotusVAE
    vlm: VLMFeatures
    vlm_processor: Path | None  # processor directory (None: tiny prompt)
    source: str


def _prompt(config: MotusConfig, processor_dir: Path | None):
    if processor_dir is None:
        return TinyPrompt(config.vlm, (config.video_height, config.video_width))
    return ProcessorPrompt(processor_dir)


def build_models(section: ModelSection, init: InitSection, device: torch.device) -> Built:
    """Trainable model (float32 master weights) + frozen VAE and VLM on ``device`` (the VLM trainable, in
    float32, with ``section.train_vlm``)."""
    built = _build_models(section, init, device)
    if section.train_vlm:
        built.vlm.model.to(torch.float32).train().requires_grad_(True)
    return built


def _build_models(section: ModelSection, init: InitSection, device: torch.device) -> Built:
    if init.source == "converted":
        if not init.path:
            raise TrainConfigError("init.source=converted needs init.path (a motus-convert-checkpoint directory)")
        base = Path(init.path).expanduser()
        meta = read_policy_file(base)
        cfg = model_config(section, MotusConfig.load(resolve(base, meta.get("config", DEFAULT_FILES["config"]))))
        core = load_weights(resolve(base, meta.get("weights", DEFAULT_FILES["weights"])))
        model = build_motus_model(cfg, core, device=device, dtype=torch.float32)  # strict: names every bad key
        vae = build_vae(cfg.vae, load_weights(resolve(base, meta.get("vae", DEFAULT_FILES["vae"]))), device=device)
        if not meta.get("vlm") or cfg.vlm is None:
            raise CheckpointError(f"{base}: no VLM weights (motus_policy.yaml 'vlm')")
        vlm_model = build_vlm(cfg.vlm, load_weights(resolve(base, meta["vlm"])), device=device,
                              dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
        proc = meta.get("vlm_processor", DEFAULT_FILES["vlm_processor"])
        pdir = None if proc == "tiny" else resolve(base, proc)
        log.info("initialised from the converted checkpoint %s (strict)", base)
        return Built(cfg, _trainable(model), vae, VLMFeatures(vlm_model, _prompt(cfg, pdir)), pdir, f"converted:{base}")
    cfg = model_config(section)
    if cfg.vlm is None:
        raise TrainConfigError("the model config has no VLM (model.config.vlm): Motus training needs one")
    if init.source == "pretrain":
        return _from_pretrain(cfg, init, device)
    with torch.device("meta"):
        n = sum(p.numel() for p in MotusModel(cfg).parameters())
    if n > FULL_SIZE_PARAMS and not init.allow_full_size_scratch:
        raise TrainConfigError(f"model has {n / 1e9:.2f}B parameters: training it from random weights needs "
                               "init.allow_full_size_scratch=true (did you mean init.source=converted?)")
    model = build_motus_model(cfg, None, device=device, dtype=torch.float32, seed=init.seed)
    vae = build_vae(cfg.vae, None, device=device, seed=init.seed + 1)
    vlm_model = build_vlm(cfg.vlm, None, device=device, seed=init.seed + 2)
    log.info("initialised from scratch (seed %d): %.2fM trainable parameters; random frozen VAE and VLM", init.seed, n / 1e6)
    return Built(cfg, _trainable(model), vae, VLMFeatures(vlm_model, _prompt(cfg, None)), None, "scratch")


def _from_pretrain(cfg: MotusConfig, init: InitSection, device: torch.device) -> Built:
    """Official ``load_pretrain_weights``: a Stage-2 checkpoint into the finetune layout.

    The DeepSpeed file (dir root or ``pytorch_model/``; ``module`` or a plain dict) is read, every key
    containing ``action_expert.input_encoder`` / ``action_expert.decoder`` is dropped (fresh state
    encoder, registers' positions and action head), the rest must fit the model exactly (the official
    ``strict=False`` would hide a mismatch; here a missing or unexpected key is an error naming it,
    except the dropped ones and the registers, which are new in the finetune layout).
    """
    if not init.path:
        raise TrainConfigError("init.source=pretrain needs init.path (the Stage-2 checkpoint)")
    if cfg.training_mode != "finetune":
        raise TrainConfigError("init.source=pretrain loads INTO the finetune layout (model.config.training_mode=finetune)")
    module_sd = read_motus_checkpoint(init.path)
    kept = {k: v for k, v in module_sd.items() if not any(d in k for d in PRETRAIN_DROPPED)}
    core, vlm_sd = motus_core_from_official(kept)
    model = build_motus_model(cfg, None, device=device, dtype=torch.float32, seed=init.seed)
    fresh = {k for k in model.state_dict() if any(d.split("action_expert.")[1] in k for d in PRETRAIN_DROPPED)
             and k.startswith("action_expert.")} | {"action_expert.registers"}
    expected = {k: v for k, v in model.state_dict().items() if k not in fresh}
    given = {k: v for k, v in core.items() if k not in fresh}
    check_state_dict(expected, given, f"Stage-2 weights in {init.path}")
    with torch.no_grad():
        sd = model.state_dict()
        for k, v in given.items():
            sd[k].copy_(v.to(sd[k].dtype))
    vae = build_vae(cfg.vae, None, device=device, seed=init.seed + 1)
    if init.vae:
        vae = build_vae(cfg.vae, load_weights(Path(init.vae).expanduser()), device=device)
    vlm_model = build_vlm(cfg.vlm, vlm_sd, device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    log.info("initialised from the Stage-2 checkpoint %s: %d tensors loaded, fresh: %s", init.path, len(given), sorted(fresh))
    pdir = Path(init.vlm_processor).expanduser() if init.vlm_processor else None
    return Built(cfg, _trainable(model), vae, VLMFeatures(vlm_model, _prompt(cfg, pdir)), pdir, f"pretrain:{init.path}")


def _trainable(model: MotusModel) -> MotusModel:
    model.set_precision(torch.float32)
    return model.train().requires_grad_(True)
