"""The ``motus-train`` loop: one process, or one per device under ``torchrun`` (DDP or FSDP2).

Determinism and exact resume: batch ``s`` of rank ``r`` holds dataset indices
``(s * world + r) * B + j`` (the reader draws episode and condition frame of index ``i`` from its
own seeded generator) and every random draw of the loss at step ``s`` comes from a generator seeded
with ``(seed, s, r)``. The data position is therefore the step itself; a checkpoint stores the
model, the optimizer, the scheduler, the step and the global RNG states, and a resumed run
continues bit-exactly where the interrupted one stopped.

Safety: a non-finite loss or gradient stops the run before the optimizer applies it, naming the step
and the batch's episodes and condition frames, and leaves ``latest`` at the last good checkpoint.
Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a checkpoint and exits without a
traceback. Worker processes ignore SIGINT (the main process owns the shutdown).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from motus_core.models.training import DistInfo, StepBatchSampler, end_distributed_rank, setup_distributed  # shared with MoLA's trainer
from tqdm import tqdm

from motus_core.data.motus_layout import DatasetError

from ..checkpoint import DEFAULT_FILES, load_weights
from ..config import MotusConfig
from ..convert import CheckpointError
from ..sampler import sample
from ..model import Conditioning
from .build import build_models
from .checkpoints import TRAIN_STATE, CheckpointWriter, PolicyExtras
from .config import TrainConfig, TrainConfigError
from .data import TrainData, collate, open_data, validation_indices
from .encoder_cache import EncoderCache
from .schedule import build_optimizer
from .step import MotusLoss, one_step
from .vae_stats import apply_statistics, describe, measure_latent_statistics, sample_videos, vae_is_random

log = logging.getLogger("motus_train")

EXIT_OK, EXIT_INTERRUPTED, EXIT_NONFINITE = 0, 130, 3


class NonFiniteLoss(RuntimeError):
    pass


# ------------------------------------------------------------------------------------ distribution




def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 1_009 + rank) % 2**62




def _worker_init(_):
    # Ctrl-C and a stop of the whole process group (a session's end, `docker stop`, `kill -- -PGID`) are
    # handled by the main process, which saves a checkpoint and then ends the workers: a worker that died
    # of SIGTERM first made the main process fail before it could save
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------- text


def text_setup(cfg: TrainConfig, data: TrainData, text_dim: int):
    """(identity, encoder or None): which umT5 the dataset's embeddings came from.

    ``data.text_encoder: tiny`` rebuilds motus-convert's tiny umT5 and checks it reproduces a stored
    embedding (so a policy can encode new instructions consistently); a directory is loaded the same
    way; '' means the dataset's embeddings are all the policy will know.
    """
    from ..text_encoder import build_tiny_text_encoder, load_text_encoder

    spec = cfg.data.text_encoder
    if not spec:
        return f"dataset:{Path(cfg.data.path).expanduser().resolve().name}", None
    enc = build_tiny_text_encoder(seed=0, dim=text_dim) if spec == "tiny" else load_text_encoder(spec)
    if enc.dim != text_dim:
        raise TrainConfigError(f"data.text_encoder {spec!r} is {enc.dim} wide, the model's text width is {text_dim}")
    text, stored = next(iter(data.instructions.items()))
    mine = enc.encode([text])[0]
    if mine.shape != stored.shape or not torch.allclose(mine, stored.float(), atol=2e-2, rtol=2e-2):
        raise DatasetError(f"data.text_encoder {spec!r} does not reproduce the dataset's embedding of {text!r}: the "
                           "dataset was encoded with another text encoder (set data.text_encoder to that one, or '')")
    return enc.identity, enc


# ------------------------------------------------------------------------------------------ trainer


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.output_dir).expanduser()
        self._stop_signal: str | None = None
        self._log_handler: logging.Handler | None = None

    # ------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        if cfg.lora.enabled and cfg.train.distributed == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # checkpoints hold LoRA-merged weights, which peft computes from the live (here sharded) layers
            raise TrainConfigError("train.distributed=fsdp with lora.enabled is not supported; use train.distributed=ddp "
                                   "(the adapters' gradients and optimizer state are small)")
        if cfg.model.train_vlm and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # the VLM lives outside the wrapped module: DDP/FSDP would not reduce its gradients
            raise TrainConfigError("model.train_vlm trains in a single process only (the VLM is not wrapped by DDP/FSDP)")
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        if cfg.train.device == "cuda" and not torch.cuda.is_available():
            raise TrainConfigError("train.device=cuda but CUDA is not available")
        self.dist = d = setup_distributed(cfg.train.device)
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._log_handler = logging.FileHandler(self.out / "train.log")
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logging.getLogger("motus_train").addHandler(self._log_handler)
            if log.getEffectiveLevel() > logging.INFO:
                log.setLevel(logging.INFO)
        torch.manual_seed(cfg.init.seed)
        built = build_models(cfg.model, cfg.init, d.device)
        self.built = built
        self.mcfg = built.config
        cache_dir = self.out / "frame_cache"
        if not d.main:
            self._barrier()  # rank 0 checks the episodes and builds the frame cache first
        self.data = open_data(cfg.data, self.mcfg, built.vlm.prompt, seed=cfg.train.seed, cache_dir=cache_dir)
        if d.main:
            self._barrier()
        self.ckpt = CheckpointWriter(self.out, cfg.train.keep_checkpoints)
        latest = self.ckpt.latest() if cfg.train.resume else None
        self._vae_statistics(latest)
        identity, encoder = text_setup(cfg, self.data, int(self.mcfg.wan["text_dim"]))
        cache = EncoderCache(cfg.train.encoder_cache_mb) if cfg.train.encoder_cache_mb > 0 else None
        self.loss = MotusLoss(built.model, built.vae, built.vlm, cache)
        if cfg.lora.enabled:
            from .lora import add_lora

            add_lora(built.model, cfg.lora, frozen_dtype=torch.bfloat16 if d.device.type == "cuda" else None)
        built.model.activation_checkpointing = cfg.train.activation_checkpointing
        self.wrapped = None
        if d.world > 1:
            self.wrapped = self._wrap()
        # FSDP2 replaces the model's parameters in place (sharded DTensors): the optimizer takes them from the model
        self.optimizer, self.scheduler = build_optimizer(built.model, cfg.optim, self._trained_vlm)
        opts = {"step_period": 1.0 / 30.0 * cfg.data.global_downsample_rate}
        if cfg.train.num_threads > 0 and d.device.type == "cpu":
            opts["num_threads"] = cfg.train.num_threads
        self.extras = PolicyExtras(
            normalizer=self.data.normalizer, stats_key=self.data.stats_key, zero_range_joints=self.data.zero_range_joints,
            text_identity=identity, text_encoder=encoder, instructions=self.data.instructions,
            vlm_processor=built.vlm_processor, train_config=cfg.to_dict(), policy_options=opts)
        if d.main:
            # a trained VLM is written into every checkpoint instead
            self.ckpt.write_frozen(built.vae.vae.state_dict(), None if cfg.model.train_vlm else built.vlm.model.state_dict(),
                                   self.extras)
        self._barrier()
        if not d.main:
            self.ckpt.write_frozen(None, None, self.extras)  # reads the marker written by rank 0
        self.start = 0
        if latest is not None:
            self._resume(latest)
        n_train = sum(p.numel() for g in self.optimizer.param_groups for p in g["params"])
        if d.main:
            log.info("model: %.2fM trainable parameters%s; device %s; %d process(es); batch %d per process",
                     n_train / 1e6, " (the VLM's included)" if cfg.model.train_vlm else "", d.device, d.world,
                     cfg.train.batch_size)

    @property
    def _trained_vlm(self) -> torch.nn.Module | None:
        return self.built.vlm.model if self.cfg.model.train_vlm else None

    def _vae_statistics(self, latest: Path | None) -> None:
        """Measure the latent statistics of a random VAE (``vae_stats``); a resumed run keeps its checkpoint's."""
        init = self.cfg.init
        mode = init.vae_statistics
        random_vae = vae_is_random(self.built.source, init.vae)
        if mode == "measure_per_position" and not random_vae:
            raise ValueError("init.vae_statistics=measure_per_position is for a random VAE (a model trained from scratch): a "
                             "pretrained VAE's latents are what the pretrained model expects, normalised per channel")
        if mode == "config" or (mode == "auto" and not random_vae):
            return
        vae = self.built.vae
        if latest is not None:
            saved = MotusConfig.load(latest / DEFAULT_FILES["config"]).vae
            mean, std = saved["latents_mean"], saved["latents_std"]
            how = f"from {latest}"
        else:
            videos = sample_videos(self.data.train.reader, init.vae_statistics_samples)
            mean, std = measure_latent_statistics(vae, videos, per_position=mode == "measure_per_position")
            if self.dist.world > 1:  # one set for every rank, bit for bit
                t = torch.tensor([mean, std], dtype=torch.float64, device=self.dist.device)
                torch.distributed.broadcast(t, src=0)
                mean, std = t[0].tolist(), t[1].tolist()
            how = f"measured on {len(videos)} training samples"
        apply_statistics(vae, self.mcfg.vae, mean, std)
        if self.dist.main:
            log.info("VAE latent statistics %s (the VAE is random): %s", how, describe(mean, std))

    def _wrap(self):
        from torch.nn.parallel import DistributedDataParallel as DDP

        if self.cfg.train.distributed == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            # every rank starts from rank 0's weights (as DDP does): each rank keeps its own shard of them
            with torch.no_grad():
                for t in itertools.chain(self.loss.parameters(), self.loss.buffers()):
                    dist.broadcast(t, 0)
            # the mesh's device type is the process group's: cpu for gloo, cuda for nccl
            mesh = init_device_mesh(self.dist.device.type, (self.dist.world,))
            # One FSDP2 unit over the whole trainable model: parameters, gradients and optimizer state
            # are sharded across ranks and gathered for each forward/backward (the layer loop calls
            # the blocks' sub-modules directly, so per-block units would never be unsharded). The
            # root unit keeps its parameters gathered from forward to backward.
            return fully_shard(self.loss, mesh=mesh)
        # the last layer's understanding-stream output projection and FFN never reach the loss (the
        # und stream is not read after the last joint attention), so DDP must expect unused parameters
        return DDP(self.loss, device_ids=[self.dist.local_rank] if self.dist.device.type == "cuda" else None,
                   find_unused_parameters=True)

    def _barrier(self) -> None:
        if self.dist.world > 1:
            dist.barrier()

    # ------------------------------------------------------------------------------ state
    @property
    def fsdp(self) -> bool:
        return self.wrapped is not None and self.cfg.train.distributed == "fsdp"

    @contextlib.contextmanager
    def _full_params(self):
        """Every rank holds the whole (unsharded) model inside this context (FSDP2); a no-op otherwise.
        Read parameters directly here: ``state_dict()`` of an FSDP2 module reshards it."""
        if not self.fsdp:
            yield
            return
        self.wrapped.unshard()
        try:
            yield
        finally:
            self.wrapped.reshard()

    @staticmethod
    def _full_options(**kw):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **kw)

    def model_state(self) -> dict:
        """Full (merged, unsharded) model weights in our layout, on the CPU. FSDP2: on rank 0 only (the
        one that writes checkpoints), ``{}`` on the others."""
        if self.fsdp:
            return self.trainable_state()  # no LoRA with FSDP (setup refuses it): nothing to merge
        model = self.built.model
        if self.cfg.lora.enabled:
            from .lora import merged_state_dict

            return merged_state_dict(model)
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def trainable_state(self) -> dict:
        """The raw trainable module state (with LoRA adapters unmerged): what resume restores."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            sd = get_model_state_dict(self.wrapped, options=self._full_options(cpu_offload=True))
            return {k.removeprefix("model."): v for k, v in sd.items()}  # MotusLoss holds the model as .model
        return {k: v.detach().cpu().clone() for k, v in self.built.model.state_dict().items()}

    def _optimizer_state(self) -> dict:
        if self.fsdp:  # keyed by parameter name; rank 0 only
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            return get_optimizer_state_dict(self.wrapped, self.optimizer, options=self._full_options(cpu_offload=True))
        return self.optimizer.state_dict()

    def _train_state(self, step: int) -> dict:
        return {"step": step, "optimizer": self._optimizer_state(), "scheduler": self.scheduler.state_dict(),
                "model": self.trainable_state() if self.cfg.lora.enabled else None,
                "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
                "world": self.dist.world, "seed": self.cfg.train.seed}

    def _resume(self, path: Path) -> None:
        state = torch.load(path / TRAIN_STATE, map_location="cpu", weights_only=False)
        if state.get("world", 1) != self.dist.world:
            raise TrainConfigError(f"{path} was written by {state.get('world')} processes, this run has {self.dist.world}: "
                                   "the data position would not continue exactly")
        model = self.built.model
        if state.get("model") is not None:
            sd = state["model"]
        else:
            from ..checkpoint import read_policy_file, resolve

            sd = load_weights(resolve(path, read_policy_file(path)["weights"]))
        own = model.state_dict()
        missing = [k for k in own if k not in sd]
        if missing:
            raise TrainConfigError(f"{path}: checkpoint lacks {missing[:5]}... for this model")
        if self.fsdp:
            # every rank read the full state: each keeps its own shard of it
            from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

            set_model_state_dict(self.wrapped, {f"model.{k}": sd[k].to(v.dtype) for k, v in own.items()},
                                 options=self._full_options())
            # Parameters that never get a gradient (the last layer's und-stream output) have no optimizer
            # state in the checkpoint (strict=False) and must get none here either: the loader starts from
            # the state of a zero-gradient step for every trainable parameter.
            osd = state["optimizer"]
            set_optimizer_state_dict(self.wrapped, self.optimizer, osd, options=self._full_options(strict=False))
            for name, p in self.wrapped.named_parameters():
                if name not in osd["state"]:
                    self.optimizer.state.pop(p, None)
        else:
            with torch.no_grad():
                for k, v in own.items():
                    v.copy_(sd[k].to(v.dtype))
                if self._trained_vlm is not None:  # the trained VLM is the checkpoint's own (model.train_vlm)
                    from ..checkpoint import read_policy_file, resolve
                    from ..convert import check_state_dict

                    vsd = load_weights(resolve(path, read_policy_file(path)["vlm"]))
                    vown = self._trained_vlm.state_dict()
                    check_state_dict(vown, vsd, f"{path}: the trained VLM")
                    for k, v in vown.items():
                        v.copy_(vsd[k].to(v.dtype))
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        self.start = int(state["step"])
        if self.dist.main:
            log.info("resuming from %s at step %d", path, self.start)

    def save(self, step: int, name: str | None = None) -> Path | None:
        sd = self.model_state()
        ts = self._train_state(step)
        path = None
        if self.dist.main:
            vlm = self._trained_vlm
            path = self.ckpt.save(name or f"step_{step:08d}", config=self.mcfg, core_sd=sd, extras=self.extras, train_state=ts,
                                  vlm_sd=None if vlm is None else {k: v.detach().cpu().clone() for k, v in vlm.state_dict().items()})
            log.info("checkpoint %s (step %d)", path, step)
            if self.loss.cache is not None:
                log.info("encoder cache: %s", self.loss.cache.describe())
        self._barrier()
        return path

    # ------------------------------------------------------------------------------ validation
    def _val_batch(self):
        if not hasattr(self, "_val_cache"):
            ds = self.data.val
            if ds is None:
                self._val_cache = None
            else:
                idx = validation_indices(len(ds), self.cfg.train.val_samples)
                self._val_cache = collate([ds[i] for i in idx], self.mcfg.text_len)
        return self._val_cache

    @torch.no_grad()
    def validate(self, step: int) -> dict | None:
        """Action error (joint units) of the held-out samples; every rank takes part (FSDP2 gathers the
        weights), rank 0 reports."""
        batch = self._val_batch()
        if batch is None:
            return None
        model = self.built.model
        was = model.training
        model.eval()
        try:
            with self._full_params():
                enc = self.loss.encode(batch)
                gen = torch.Generator(device=self.dist.device).manual_seed(self.cfg.train.seed + 7)
                out = self.loss(enc, gen)
                cond = Conditioning(und=model.und_tokens(enc["vlm_hidden"]), context_kv=model.context_kv(model.text_context(enc["t5"])))
                res = sample(model, cond, enc["clean"][:, :, :1], enc["state"], mode="vla", num_steps=self.mcfg.num_inference_steps,
                             generator=torch.Generator(device="cpu").manual_seed(self.cfg.train.seed + 11))
                # the same samples with another sample's images (state, text and noise unchanged): as
                # good as with their own images means the model does not use them
                other = None
                if enc["state"].shape[0] > 1:
                    perm = torch.roll(torch.arange(enc["state"].shape[0], device=enc["state"].device), 1)
                    cond_o = Conditioning(und=model.und_tokens(enc["vlm_hidden"][perm]), context_kv=cond.context_kv)
                    other = sample(model, cond_o, enc["clean"][perm][:, :, :1], enc["state"], mode="vla",
                                   num_steps=self.mcfg.num_inference_steps,
                                   generator=torch.Generator(device="cpu").manual_seed(self.cfg.train.seed + 11))
        finally:
            model.train(was)
        if not self.dist.main:
            return None
        pred = res.actions.double().cpu().numpy()
        target = batch["action_sequence"].double().numpy()
        norm = self.data.normalizer
        if norm is not None:
            pred, target = norm.denormalize(pred), norm.denormalize(target)
        err = np.abs(pred - target)  # [B, K, D] joint units
        per_joint = err.mean(axis=(0, 1))
        m = {"val/loss": float(out["total_loss"]), "val/action_loss": float(out["action_loss"]),
             "val/action_mae": float(per_joint.mean()), "val/action_mae_first": float(err[:, 0].mean()),
             "val/action_mae_last": float(err[:, -1].mean())}
        if other is not None:
            pred_o = other.actions.double().cpu().numpy()
            m["val/action_mae_other_images"] = float(np.abs((pred_o if norm is None else norm.denormalize(pred_o)) - target).mean())
        per = {"per_joint_mae": per_joint.tolist(), "per_joint_mae_first": err[:, 0].mean(0).tolist(),
               "per_joint_mae_last": err[:, -1].mean(0).tolist()}
        with open(self.out / "validation.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **m, **per}) + "\n")
        for j, v in enumerate(per_joint):
            m[f"val_joint/{j:02d}_mae"] = float(v)
        log.info("validation at step %d: flow loss %.4f, action error %.4f (first %.4f, last %.4f) joint units; "
                 "per joint: %s", step, m["val/loss"], m["val/action_mae"], m["val/action_mae_first"],
                 m["val/action_mae_last"], " ".join(f"{v:.3f}" for v in per_joint))
        if other is not None:
            log.info("  with another held-out sample's images: action error %.4f (x%.2f; x1.00: the actions do not depend on the "
                     "images; the other sample is mostly another moment, so the arm differs too: whether the model finds "
                     "the task's object is what bench/image_reliance.py measures)",
                     m["val/action_mae_other_images"], m["val/action_mae_other_images"] / max(m["val/action_mae"], 1e-12))
        return m

    # ------------------------------------------------------------------------------ loop
    def _signals(self):
        def handler(signum, _frame):
            self._stop_signal = signal.Signals(signum).name

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return old

    def _agree(self, flag: bool) -> bool:
        """Rank 0 decides (time-based saves, signals) and every rank follows."""
        if self.dist.world == 1:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        if self.dist.device.type == "cuda":
            t = t.to(self.dist.device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def run(self) -> int:
        cfg, d = self.cfg, self.dist
        tc = cfg.train
        total = tc.steps
        if self.start >= total:
            if d.main:
                log.info("nothing to do: %s already reached step %d", self.out, self.start)
            if self._agree(not (self.out / "final").is_dir()):  # every rank takes part in a save (FSDP2 gathers)
                self.save(self.start, "final")
            return EXIT_OK
        loader = DataLoader(
            self.data.train, batch_sampler=StepBatchSampler(len(self.data.train), tc.batch_size, self.start, total, d.rank, d.world),
            collate_fn=functools.partial(collate, text_len=self.mcfg.text_len), num_workers=cfg.data.num_workers,
            worker_init_fn=_worker_init, prefetch_factor=cfg.data.prefetch_factor if cfg.data.num_workers > 0 else None,
            persistent_workers=False, pin_memory=d.device.type == "cuda")
        writer = None
        if d.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.start)
        bar = tqdm(total=total, initial=self.start, desc="motus-train", unit="step", disable=not d.main, dynamic_ncols=True)
        step = self.start
        t0 = time.perf_counter()
        last_save = time.monotonic()
        code = EXIT_OK
        try:
            for batch in loader:
                gen = torch.Generator(device=d.device).manual_seed(step_seed(tc.seed, step, d.rank))
                res = one_step(self.loss, self.optimizer, batch, generator=gen, grad_clip=cfg.optim.grad_clip,
                               precision=tc.precision, wrapped=self.wrapped)
                bad = self._agree(not res["finite"]) if d.world > 1 else not res["finite"]
                if bad:
                    eps = ", ".join(f"{e}@{c}" for e, c in zip(batch.get("episode", []), batch.get("cond_index", [])))
                    raise NonFiniteLoss(f"non-finite loss/gradient at step {step + 1} (loss {res['total_loss']}, video "
                                        f"{res['video_loss']}, action {res['action_loss']}, grad norm {res['grad_norm']}); "
                                        f"batch episodes@condition frame: {eps}")
                self.scheduler.step()
                step += 1
                lr = self.scheduler.get_last_lr()[0]
                sps = (step - self.start) * tc.batch_size * d.world / max(1e-9, time.perf_counter() - t0)
                bar.update(1)
                bar.set_postfix(loss=f"{res['total_loss']:.4f}", act=f"{res['action_loss']:.4f}", lr=f"{lr:.2e}", sps=f"{sps:.1f}")
                if writer is not None and (step % tc.log_every == 0 or step == total):
                    writer.add_scalar("train/loss", res["total_loss"], step)
                    writer.add_scalar("train/video_loss", res["video_loss"], step)
                    writer.add_scalar("train/action_loss", res["action_loss"], step)
                    writer.add_scalar("train/grad_norm", res["grad_norm"], step)
                    writer.add_scalar("train/samples_per_s", sps, step)
                    for g in self.optimizer.param_groups:
                        writer.add_scalar(f"lr/{g.get('name', 'group')}", g["lr"], step)
                if tc.val_every and step % tc.val_every == 0 and step != total:
                    m = self.validate(step)
                    if writer is not None and m:
                        for k, v in m.items():
                            writer.add_scalar(k, v, step)
                due = (tc.save_every and step % tc.save_every == 0) or (
                    tc.save_every_minutes > 0 and time.monotonic() - last_save >= tc.save_every_minutes * 60)
                stop = self._agree(self._stop_signal is not None)
                if step == total:
                    break
                if self._agree(bool(due)) or stop:
                    self.save(step)
                    last_save = time.monotonic()
                if stop:
                    if d.main:
                        bar.close()
                        log.info("%s received: saved step %d to %s; resume with the same command", self._stop_signal or "stop",
                                 step, self.out / "latest")
                    code = EXIT_INTERRUPTED
                    return code
            m = self.validate(step)
            if writer is not None and m:
                for k, v in m.items():
                    writer.add_scalar(k, v, step)
            bar.close()
            self.save(step, "final")
            if d.main:
                log.info("training finished at step %d: %s", step, self.out / "final")
            if d.world > 1:
                self.check_ranks_in_sync()
            return code
        except NonFiniteLoss as exc:
            bar.close()
            log.error("%s; stopping. The last good checkpoint is %s", exc, self.ckpt.latest() or "(none yet)")
            code = EXIT_NONFINITE
            return code
        finally:
            if writer is not None:
                writer.close()
            if d.main:
                self.write_summary(step, code)

    def check_ranks_in_sync(self) -> float:
        # the weights each rank computes with (FSDP2: as gathered on that rank)
        with torch.no_grad(), self._full_params():
            m = self.built.model
            total = float(sum(v.double().sum().item() + v.double().abs().sum().item()
                              for v in itertools.chain(m.parameters(), m.buffers())))
        sums = [None] * self.dist.world
        dist.all_gather_object(sums, total)
        if any(v != sums[0] for v in sums):
            raise RuntimeError(f"ranks ended with different weights (checksums {sums})")
        if self.dist.main:
            log.info("%d ranks ended with identical weights (checksum %.17g)", self.dist.world, sums[0])
        return total

    def close(self) -> None:
        """Detach the run's log file (a torchrun rank then leaves through train(): end_distributed_rank)."""
        if self._log_handler is not None:
            logging.getLogger("motus_train").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def write_summary(self, step: int, code: int) -> None:
        summary = {"step": step, "steps": self.cfg.train.steps, "exit_code": code,
                   "finished": (self.out / "final").is_dir() and step >= self.cfg.train.steps,
                   "skipped_episodes": [{"episode": s.episode, "reason": s.reason} for s in self.data.skipped],
                   "zero_range_joints": self.data.zero_range_joints, "stats_key": self.data.stats_key,
                   "latest": str(self.ckpt.latest()) if self.ckpt.latest() else None}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        if self.data.skipped:
            log.warning("skipped %d episode(s):\n%s", len(self.data.skipped),
                        "\n".join(f"  {s.episode}: {s.reason}" for s in self.data.skipped))


def train(cfg: TrainConfig) -> int:
    """Run a training from a resolved config; returns the process exit code."""
    t = Trainer(cfg)
    old = t._signals()  # Ctrl-C during setup is honoured too (no traceback, nothing half-written)
    code = 1  # an exception on the way out
    failure: BaseException | None = None
    try:
        t.setup()
        if t._stop_signal is not None:
            log.info("%s received during setup: exiting before training", t._stop_signal)
            code = EXIT_INTERRUPTED
        else:
            code = t.run()
        return code
    except BaseException as exc:
        failure = exc
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        t.close()
        if getattr(t, "dist", None) is not None and t.dist.world > 1:
            # never return into the teardown of DDP's process group (it deadlocks): say here what the
            # caller would have said about an exception, then end the rank
            if isinstance(failure, (TrainConfigError, DatasetError, CheckpointError)):
                log.error("%s", failure)
                code = 2
            elif failure is not None:
                log.error("rank %d failed", t.dist.rank, exc_info=failure)
            end_distributed_rank(code)

