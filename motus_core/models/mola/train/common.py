"""What the three MoLA training stages share: config, torchrun/DDP, precision, LR schedules,
deterministic batches, checkpoints with resume, TensorBoard and progress bars.

Multi-GPU: launch with ``torchrun --nproc_per_node N mola-train-stage3 --config ...``; each process
wraps the stage module in ``torch.nn.parallel.DistributedDataParallel`` (NCCL on GPU, gloo on CPU).
Precision: ``auto`` = bf16 autocast on CUDA (fp32 master weights), fp32 on CPU.

Determinism: batch ``s`` of rank ``r`` is made of dataset indices ``(s * world + r) * B + j`` (the
dataset draws each index reproducibly from its seed) and every random draw of step ``s`` comes from a
generator seeded with ``(seed, s, r)``, so a resumed run continues exactly where it stopped.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import logging
import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from motus_core.models.training import DistInfo, StepBatchSampler, setup_distributed  # shared with Motus' trainer (same resume order)
from tqdm import tqdm

log = logging.getLogger("motus_core.mola.train")


# ------------------------------------------------------------------------------------------ config


@dataclass
class DataConfig:
    root: str = ""
    stats_file: str | None = None  # default <root>/stat.json
    stats_key: str | None = None  # default: the only key of the stats file
    samples_per_episode: int = 1000
    num_workers: int = 2


@dataclass
class TrainConfig:
    out_dir: str = "runs/mola"
    steps: int = 1000
    batch_size: int = 8  # per process
    lr: float = 1e-4
    weight_decay: float = 0.0
    decay_matrices_only: bool = False  # weight decay on >= 2-D weights only (stage II recipe)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "constant"  # constant | warmup_cosine | tri_stage
    warmup_steps: int = 0  # warmup_cosine
    warmup_start: float = 0.5  # warmup_cosine: start at this fraction of lr
    min_lr: float = 0.0  # warmup_cosine floor
    tri_stage: tuple[float, float, float] = (0.02, 0.08, 0.90)  # warm-up / hold / decay fractions
    tri_init_scale: float = 0.1
    tri_final_scale: float = 1e-6
    grad_clip: float = 1.0
    seed: int = 42
    precision: str = "auto"  # auto | fp32 | bf16
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 2
    resume: bool = True
    gradient_checkpointing: bool = False
    device: str = "auto"  # auto | cpu | cuda


def build_dataclass(cls, data: dict | None, where: str):
    from ..config import dataclass_from_dict

    return dataclass_from_dict(cls, dict(data or {}), where)


def load_yaml_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Read a stage config; ``model: <file>`` is read relative to the config file, then the
    ``key=value`` overrides are applied (so ``model.video.pretrained=...`` works either way)."""
    import yaml

    from ..config import merge_overrides

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"training config not found: {p}")
    data = yaml.safe_load(p.read_text()) or {}
    model = data.get("model")
    if isinstance(model, str):
        mp = Path(model)
        mp = mp if mp.is_absolute() else p.resolve().parent / mp
        if not mp.is_file():
            raise FileNotFoundError(f"{p}: model config {mp} not found")
        data["model"] = yaml.safe_load(mp.read_text()) or {}
    merge_overrides(data, overrides or [])
    return data


# ------------------------------------------------------------------------------------ distribution




def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 1_009 + rank) % 2**62


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(step_seed(seed, step, rank))
    return g




# ------------------------------------------------------------------------------------- schedules


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    total = max(1, cfg.steps)
    if cfg.schedule == "constant":
        return lambda s: 1.0
    if cfg.schedule == "warmup_cosine":
        floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0

        def f(s):
            if s < cfg.warmup_steps:
                return cfg.warmup_start + (1 - cfg.warmup_start) * s / max(1, cfg.warmup_steps)
            p = (s - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

        return f
    if cfg.schedule == "tri_stage":
        w, h, d = (int(round(x * total)) for x in cfg.tri_stage)

        def f(s):
            if s < w:
                return cfg.tri_init_scale + (1 - cfg.tri_init_scale) * s / max(1, w)
            if s < w + h:
                return 1.0
            if s < w + h + d:
                p = (s - w - h) / max(1, d)
                return cfg.tri_final_scale + (1 - cfg.tri_final_scale) * 0.5 * (1 + math.cos(math.pi * p))
            return cfg.tri_final_scale

        return f
    raise ValueError(f"unknown schedule {cfg.schedule!r} (constant | warmup_cosine | tri_stage)")


def param_groups(module: nn.Module, cfg: TrainConfig) -> list[dict]:
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not cfg.decay_matrices_only:
        return [{"params": [p for _, p in params], "weight_decay": cfg.weight_decay}]
    decay = [p for _, p in params if p.dim() >= 2]
    no_decay = [p for _, p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ----------------------------------------------------------------------------------- checkpoints


class CheckpointIO:
    """``<out>/checkpoints/step_XXXXXXXX/{trainable.safetensors, optimizer.pt, state.json}`` + ``latest``."""

    def __init__(self, out_dir: Path, keep: int):
        self.root = out_dir / "checkpoints"
        self.keep = keep

    def latest(self) -> Path | None:
        f = self.root / "latest"
        if not f.is_file():
            return None
        p = self.root / f.read_text().strip()
        return p if (p / "state.json").is_file() else None

    def save(self, step: int, trainable: dict[str, torch.Tensor], optimizer, scheduler, extra: dict) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"step_{step:08d}"
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **extra}, indent=2))
        final = self.root / name
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        (self.root / "latest.tmp").write_text(name)
        (self.root / "latest.tmp").replace(self.root / "latest")
        for old in sorted(p for p in self.root.glob("step_*") if p.is_dir())[: -self.keep or None]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load(path: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
        state = json.loads((path / "state.json").read_text())
        opt = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
        return load_file(str(path / "trainable.safetensors")), opt, state


# ---------------------------------------------------------------------------------------- trainer


class StageModule(nn.Module, abc.ABC):
    """What a stage provides: ``forward(batch, generator) -> {"loss": ..., other logged scalars}``."""

    @abc.abstractmethod
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights this stage trains (what a checkpoint holds)."""

    @abc.abstractmethod
    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Strictly restore :meth:`trainable_state_dict` output."""


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def autocast_context(precision: str, device: torch.device):
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


class Trainer:
    def __init__(self, module: StageModule, dataset, collate_fn, train: TrainConfig, data: DataConfig, di: DistInfo,
                 stage_name: str):
        self.module, self.dataset, self.collate_fn = module, dataset, collate_fn
        self.cfg, self.data, self.di, self.name = train, data, di, stage_name
        self.out = Path(train.out_dir)
        self.ckpt = CheckpointIO(self.out, train.keep_checkpoints)

    def run(self, on_step: Callable[[int, dict], None] | None = None) -> int:
        cfg, di = self.cfg, self.di
        seed_everything(cfg.seed + di.rank)
        module = self.module.to(di.device)
        params = param_groups(module, cfg)
        if not any(len(g["params"]) for g in params):
            raise RuntimeError(f"{self.name}: nothing to train (no parameter requires grad)")
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        start = 0
        latest = self.ckpt.latest() if cfg.resume else None
        if latest is not None:
            trainable, opt, state = CheckpointIO.load(latest)
            module.load_trainable_state_dict(trainable)
            optimizer.load_state_dict(opt["optimizer"])
            scheduler.load_state_dict(opt["scheduler"])
            start = int(state["step"])
            if di.main:
                log.info("%s: resuming from %s (step %d)", self.name, latest, start)
        model = module
        if di.world > 1:
            model = nn.parallel.DistributedDataParallel(module, device_ids=[di.local_rank] if di.device.type == "cuda" else None)
        if start >= cfg.steps:
            return start
        sampler = StepBatchSampler(len(self.dataset), cfg.batch_size, start, cfg.steps, di.rank, di.world)
        loader = DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.collate_fn, num_workers=self.data.num_workers,
                            pin_memory=di.device.type == "cuda", persistent_workers=False)
        writer = None
        if di.main:
            from torch.utils.tensorboard import SummaryWriter

            self.out.mkdir(parents=True, exist_ok=True)
            writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=start)
        module.train()
        bar = tqdm(total=cfg.steps, initial=start, desc=self.name, disable=not di.main, dynamic_ncols=True)
        step = start
        trainable = [p for g in params for p in g["params"]]
        for batch in loader:
            batch = to_device(batch, di.device)
            gen = step_generator(cfg.seed, step, di.rank, di.device)
            torch.manual_seed(step_seed(cfg.seed, step, di.rank) + 1)  # global RNG (dropout) also a function of the step
            with autocast_context(cfg.precision, di.device):
                out = model(batch, gen)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.name}: non-finite loss at step {step}: {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            optimizer.step()
            scheduler.step()
            step += 1
            scalars = {k: float(v.detach()) for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
            scalars["grad_norm"] = float(grad_norm)
            scalars["lr"] = scheduler.get_last_lr()[0]
            if on_step is not None:
                on_step(step, scalars)
            if writer is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                for k, v in scalars.items():
                    writer.add_scalar(f"{self.name}/{k}", v, step)
            bar.update(1)
            bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}")
            if di.main and (step % cfg.save_every == 0 or step == cfg.steps):
                self.ckpt.save(step, module.trainable_state_dict(), optimizer, scheduler, {"stage": self.name, "seed": cfg.seed})
            if di.world > 1 and (step % cfg.save_every == 0 or step == cfg.steps):
                dist.barrier()
        bar.close()
        if writer is not None:
            writer.close()
        if di.world > 1:
            self._check_ranks_in_sync(trainable)
        return step

    def _check_ranks_in_sync(self, params: list[torch.Tensor]) -> None:
        """DDP keeps every rank's weights equal; a divergence (a rank that skipped a step, a parameter
        outside DDP's reducer) would export one rank's weights silently, so compare a checksum."""
        total = float(sum(p.detach().double().sum().item() + p.detach().double().abs().sum().item() for p in params))
        sums = [None] * self.di.world
        dist.all_gather_object(sums, total)
        if any(abs(v - sums[0]) > 1e-9 * max(1.0, abs(sums[0])) for v in sums):
            raise RuntimeError(f"{self.name}: ranks ended with different weights (checksums {sums})")
        if self.di.main:
            log.info("%s: %d ranks in sync (weight checksum %.12g)", self.name, self.di.world, sums[0])


def dataclass_to_dict(obj) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))
