"""The training configuration of ``motus-train``: every parameter declared once, here.

A recipe (``config/motus/<recipe>.yaml``) holds only what differs from these defaults, which are the
official Stage-3 values (motus-spec §4.1: AdamW betas (0.9, 0.95), weight decay 0.01, lr 5e-5,
grad clip 0.5, ``LambdaLinearScheduler`` warmup 200 / cycle 1e6 / f_max 0.99 / f_min 0.4, batch 8,
loss weights 1/1, 8 frames at 384x320, 48 actions). Command-line overrides are ``dotted.key=value``
(value parsed as YAML); an unknown key, a wrong type or a value outside its bounds/choices is an
error that names it.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml


class TrainConfigError(ValueError):
    """A recipe or override that is not a valid training configuration."""


def _f(default, help: str, *, choices: Sequence | None = None, lo=None, hi=None, factory=None):
    meta = {"help": help, "choices": tuple(choices) if choices else None, "lo": lo, "hi": hi}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelSection:
    preset: str = _f("full", "MotusConfig preset the overrides apply to", choices=("tiny", "reduced", "reduced_sim", "full"))
    config: dict = _f(None, "MotusConfig field overrides (nested dicts wan/vae/vlm are merged key by key)", factory=dict)
    train_vlm: bool = _f(False, "train the VLM with the model, at the experts' lr (official: frozen, it is pretrained; a "
                         "model trained from scratch otherwise reads its images through a fixed random VLM); "
                         "single process only, saved in every checkpoint")


@dataclass
class InitSection:
    source: str = _f("scratch", "where the weights come from: a converted checkpoint dir (motus-convert-checkpoint), "
                     "a Stage-2 pretrain-layout checkpoint (official load_pretrain_weights), or random",
                     choices=("scratch", "converted", "pretrain"))
    path: str = _f("", "checkpoint directory or file for source converted/pretrain")
    vae: str = _f("", "source pretrain: the VAE weights (a converted vae.safetensors); default random (reduced models)")
    vlm_processor: str = _f("", "source pretrain: the Qwen3-VL processor directory; default the tiny prompt (tiny VLMs)")
    allow_full_size_scratch: bool = _f(False, "permit training a full-size model from random weights (almost never wanted)")
    seed: int = _f(0, "seed of the random initialisation (scratch, and frozen VAE/VLM when they are random)")
    vae_statistics: str = _f("auto", "the per-channel latent mean/std Motus normalises VAE latents with: 'measure' them on "
                             "training frames (as Wan's were measured for its VAE), keep the model 'config' values, "
                             "'auto' (measure when the VAE is random: scratch, or pretrain without init.vae), or "
                             "'measure_per_position': per channel and latent grid cell (a random VAE only: the static "
                             "scene subtracted, each cell's variation scaled to one)",
                             choices=("auto", "measure", "config", "measure_per_position"))
    vae_statistics_samples: int = _f(64, "training samples (all their frames) the VAE statistics are measured on", lo=1)


@dataclass
class DataSection:
    path: str = _f("", "dataset root (Motus layout from motus-convert / motus-sim-dataset, AC-One/Aloha or RoboTwin 2.0 layout)")
    format: str = _f("auto", "dataset layout", choices=("auto", "motus", "robotwin"))
    stats_file: str = _f("", "stat.json (default <data.path>/stat.json; the packaged official stats for the official keys)")
    stats_key: str = _f("", "stat.json key (default: the file's only key)")
    normalize: bool = _f(True, "min-max normalise state/actions to [0, 1] (RoboTwin trains un-normalised: false)")
    global_downsample_rate: int = _f(1, "official global_downsample_rate (3 for RoboTwin)", lo=1)
    vlm_image: str = _f("model", "VLM image: the model-size image (what the policy node feeds) or the condition frame at "
                        "its original resolution (official AC-One/Aloha training)", choices=("model", "original"))
    text_encoder: str = _f("", "the umT5 the dataset's embeddings came from: 'tiny' (motus-convert --tiny-text-encoder), a "
                           "converted umT5 dir, or '' (embeddings only; policies then know only the dataset's instructions)")
    frame_cache: bool = _f(True, "decode + preprocess each episode once into output_dir/frame_cache (memory-mapped "
                           "model-size frames; not used with vlm_image=original)")
    val_episodes: int = _f(2, "episodes held out for validation (0: none)", lo=0)
    samples_per_episode: int = _f(1000, "dataset length multiplier (samples are drawn at random, as officially)", lo=1)
    num_workers: int = _f(2, "DataLoader worker processes (PyAV decode + preprocessing)", lo=0)
    prefetch_factor: int = _f(2, "batches each worker prepares ahead", lo=1)


@dataclass
class OptimSection:
    lr: float = _f(5e-5, "learning rate of the non-WAN parameters (experts, adapters)", lo=0.0)
    wan_lr: float | None = _f(None, "learning rate of the WAN video model (official wan_learning_rate; default lr)")
    betas: tuple = _f((0.9, 0.95), "AdamW betas")
    eps: float = _f(1e-8, "AdamW epsilon", lo=0.0)
    weight_decay: float = _f(0.01, "AdamW weight decay", lo=0.0)
    grad_clip: float = _f(0.5, "max global grad norm (0: no clipping)", lo=0.0)
    warmup_steps: int = _f(200, "LambdaLinearScheduler warm-up steps", lo=0)
    cycle_length: int = _f(1_000_000, "LambdaLinearScheduler cycle length (steps to reach f_min)", lo=1)
    f_start: float = _f(1e-6, "lr multiplier at step 0", lo=0.0)
    f_max: float = _f(0.99, "lr multiplier at the end of warm-up", lo=0.0)
    f_min: float = _f(0.4, "lr multiplier at cycle_length and after", lo=0.0)


@dataclass
class LoraSection:
    enabled: bool = _f(False, "LoRA adapters (peft) on the WAN video DiT; the rest of WAN is frozen, merged on export")
    rank: int = _f(16, "LoRA rank", lo=1)
    alpha: float = _f(16.0, "LoRA alpha", lo=0.0)
    dropout: float = _f(0.0, "LoRA dropout", lo=0.0, hi=1.0)
    targets: list = _f(None, "WAN linear layers that get adapters (regex on module names)",
                       factory=lambda: ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                                        "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"])


@dataclass
class TrainSection:
    steps: int = _f(100_000, "optimizer steps in total", lo=1)
    batch_size: int = _f(8, "samples per step per process", lo=1)
    seed: int = _f(42, "seed of sampling, noise and timesteps (a step's draws depend only on (seed, step, rank))")
    device: str = _f("auto", "auto (cuda when available) | cpu | cuda", choices=("auto", "cpu", "cuda"))
    precision: str = _f("auto", "auto = bf16 autocast on CUDA, fp32 on CPU", choices=("auto", "fp32", "bf16"))
    num_threads: int = _f(0, "torch CPU threads of the training process (0: torch's default)", lo=0)
    activation_checkpointing: bool = _f(False, "recompute each transformer layer in backward (memory for time)")
    encoder_cache_mb: float = _f(0.0, "memory (MB per process) for each sample's frozen VAE latents and frozen VLM features, "
                                 "computed once instead of every time the sample is drawn, each sample on its own (a "
                                 "resumed run stays bit-exact); 0: encoded every step as a batch (official)", lo=0.0)
    distributed: str = _f("ddp", "engine under torchrun: DDP (replicated) or FSDP (PyTorch's, sharded)", choices=("ddp", "fsdp"))
    log_every: int = _f(10, "TensorBoard scalars every N steps", lo=1)
    val_every: int = _f(500, "validation every N steps (0: only at the end)", lo=0)
    val_samples: int = _f(16, "validation samples (fixed; drawn once from the held-out episodes)", lo=1)
    save_every: int = _f(1000, "checkpoint every N steps (0: off)", lo=0)
    save_every_minutes: float = _f(30.0, "checkpoint every M minutes of wall time (0: off)", lo=0.0)
    keep_checkpoints: int = _f(3, "step checkpoints kept (oldest removed; final/ is always kept)", lo=1)
    resume: bool = _f(True, "continue from output_dir/latest when it exists")


@dataclass
class TrainConfig:
    output_dir: str = _f("runs/motus", "run directory: checkpoints/, latest, final/, tensorboard/, train.log")
    model: ModelSection = _f(None, "model geometry and widths", factory=ModelSection)
    init: InitSection = _f(None, "initial weights", factory=InitSection)
    data: DataSection = _f(None, "dataset and loading", factory=DataSection)
    optim: OptimSection = _f(None, "optimizer and lr schedule (official Stage-3 recipe)", factory=OptimSection)
    lora: LoraSection = _f(None, "LoRA on the video DiT", factory=LoraSection)
    train: TrainSection = _f(None, "loop, checkpoints, validation", factory=TrainSection)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# ------------------------------------------------------------------------------------------ build


def _check_value(cls, f: dataclasses.Field, value, where: str):
    hints = typing.get_type_hints(cls)
    t = hints[f.name]
    name = f"{where}.{f.name}" if where else f.name
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    allow_none = origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args
    base = next((a for a in args if a is not type(None)), t) if allow_none else t
    if value is None:
        if allow_none:
            return None
        raise TrainConfigError(f"{name}: null is not allowed ({f.metadata.get('help', '')})")
    if base is bool:
        if not isinstance(value, bool):
            raise TrainConfigError(f"{name}: expected true/false, got {value!r}")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TrainConfigError(f"{name}: expected an integer, got {value!r}")
    elif base is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TrainConfigError(f"{name}: expected a number, got {value!r}")
        value = float(value)
    elif base is str:
        if not isinstance(value, str):
            value = str(value) if isinstance(value, (int, float)) and f.name in ("path", "output_dir") else value
        if not isinstance(value, str):
            raise TrainConfigError(f"{name}: expected a string, got {value!r}")
    elif base in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TrainConfigError(f"{name}: expected a list, got {value!r}")
        value = base(value)
    elif base is dict:
        if not isinstance(value, Mapping):
            raise TrainConfigError(f"{name}: expected a mapping, got {value!r}")
        value = dict(value)
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise TrainConfigError(f"{name}: {value!r} is not one of {list(meta['choices'])}")
    if meta.get("lo") is not None and value < meta["lo"]:
        raise TrainConfigError(f"{name}: {value!r} is below the minimum {meta['lo']}")
    if meta.get("hi") is not None and value > meta["hi"]:
        raise TrainConfigError(f"{name}: {value!r} is above the maximum {meta['hi']}")
    return value


def build(cls, data: Mapping | None, where: str = ""):
    """``cls`` from a mapping: unknown keys, wrong types and out-of-range values are errors naming the key."""
    data = dict(data or {})
    fmap = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fmap))
    if unknown:
        pre = f"{where}." if where else ""
        raise TrainConfigError(f"unknown config keys {[pre + u for u in unknown]}; known in {where or 'top level'}: {sorted(fmap)}")
    kwargs = {}
    for name, value in data.items():
        f = fmap[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            if not isinstance(value, Mapping):
                raise TrainConfigError(f"{where + '.' if where else ''}{name}: expected a mapping")
            kwargs[name] = build(type(default), value, f"{where}.{name}" if where else name)
        else:
            kwargs[name] = _check_value(cls, f, value, where)
    return cls(**kwargs)


def set_dotted(data: dict, key: str, value) -> None:
    node = data
    parts = key.strip().split(".")
    if not all(parts):
        raise TrainConfigError(f"override key {key!r} is malformed")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise TrainConfigError(f"override {key!r}: {p!r} is not a mapping")
    node[parts[-1]] = value


def parse_overrides(items: Sequence[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items or ():
        if "=" not in item:
            raise TrainConfigError(f"override {item!r} is not dotted.key=value")
        k, raw = item.split("=", 1)
        out.append((k.strip(), yaml.safe_load(raw) if raw != "" else "")),
    return out


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A recipe file (or the defaults when ``path`` is None) + ``dotted.key=value`` overrides, validated."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise TrainConfigError(f"training recipe not found: {p}")
        raw = yaml.safe_load(p.read_text()) or {}
        if not isinstance(raw, dict):
            raise TrainConfigError(f"{p}: a recipe is a mapping")
    raw = copy.deepcopy(raw)
    for k, v in parse_overrides(overrides):
        if k.startswith("model.config."):  # free-form MotusConfig overrides, validated by MotusConfig
            set_dotted(raw, k, v)
            continue
        _check_key(k)
        set_dotted(raw, k, v)
    return build(TrainConfig, raw)


def _check_key(key: str) -> None:
    cls = TrainConfig
    parts = key.split(".")
    for i, p in enumerate(parts):
        fmap = {f.name: f for f in dataclasses.fields(cls)}
        if p not in fmap:
            raise TrainConfigError(f"override {key!r}: unknown key {'.'.join(parts[: i + 1])!r}; known: {sorted(fmap)}")
        f = fmap[p]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            cls = type(default)
        elif i != len(parts) - 1 and not isinstance(default, dict):
            raise TrainConfigError(f"override {key!r}: {p!r} is not a section")
        elif isinstance(default, dict):
            return


def describe(cls=TrainConfig, prefix: str = "") -> list[str]:
    """One line per parameter: ``key = default  # help`` (``motus-train --list-params``)."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(default):
            lines += describe(type(default), key + ".")
        else:
            extra = f" (one of {list(f.metadata['choices'])})" if f.metadata.get("choices") else ""
            lines.append(f"{key} = {default!r}  # {f.metadata.get('help', '')}{extra}")
    return lines
