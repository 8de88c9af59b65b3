"""The three MoLA training stages as DDP-ready modules, their builders and their exports.

* Stage I  (:class:`VideoStage`): fine-tune the SVD UNet on the robot's clips (all cameras), SVD's EDM
  loss, CLIP text conditioning with 5 % text dropout; VAE and CLIP frozen. Exports a diffusers SVD
  directory (``<out>/video_model/{unet,vae}``) for stages II-III and the policy.
* Stage II (:class:`IdmPretrainStage`): pretrain the IDMs (M-Former + VQ + resamplers) with RGB and
  modality reconstruction decoders on (current, future) frame pairs; image encoder and target
  producers frozen. Exports ``<out>/idms.safetensors`` (decoders dropped; kept separately).
* Stage III (:class:`PolicyStage`): train IDM input projection, IDMs, Video Former and action head end
  to end on the frozen video model's features; ``L = L_action + 0.1 * sum(commitment)``. Exports a
  policy directory (``<out>/policy``) that ``motus_core.models.mola.policy.create`` loads.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..checkpoint import load_release_checkpoint, load_strict, split_release_state_dict, write_policy_dir
from ..config import MolaConfig, MolaConfigError
from ..data import MolaDataset, collate
from ..model import MolaModel, MolaNet
from ..pretrain import FrozenImageEncoder, IdmPretrainModel
from ..sim_targets import CHANNELS as SIM_CHANNELS
from ..sim_targets import depth_target as sim_depth_target
from ..sim_targets import flow_target as sim_flow_target
from ..sim_targets import semantic_target as sim_semantic_target
from ..targets import DepthTarget, FlowTarget, SemanticTarget
from ..video import TextEmbedding, VideoModel
from .common import DataConfig, StageModule, TrainConfig, build_dataclass

log = logging.getLogger("motus_core.mola.train")


class TextCache:
    """CLIP embeddings per instruction string (the text encoder is frozen)."""

    def __init__(self, video: VideoModel, limit: int = 4096):
        self.video, self.limit, self.cache = video, limit, {}

    def __call__(self, instructions: list[str]) -> TextEmbedding:
        missing = sorted({s for s in instructions if s not in self.cache})
        if missing:
            if len(self.cache) + len(missing) > self.limit:
                self.cache.clear()
            emb = self.video.encode_text(missing)
            for i, s in enumerate(missing):
                self.cache[s] = (emb.tokens[i], emb.pooled[i])
        tok = torch.stack([self.cache[s][0] for s in instructions])
        pooled = torch.stack([self.cache[s][1] for s in instructions])
        return TextEmbedding(tokens=tok, pooled=pooled)


# ------------------------------------------------------------------------------------------- stage I


@dataclass
class Stage1Config:
    text_drop: float = 0.05
    p_mean: float = 0.7
    p_std: float = 1.6


class VideoStage(StageModule):
    def __init__(self, cfg: MolaConfig, s1: Stage1Config, gradient_checkpointing: bool = False):
        super().__init__()
        self.cfg, self.s1 = cfg, s1
        self.video = VideoModel.build(cfg.video)
        self.video.vae.requires_grad_(False).eval()
        self.video.text_encoder.requires_grad_(False).eval()
        self.video.unet.requires_grad_(True)
        if gradient_checkpointing:
            self.video.unet.enable_gradient_checkpointing()
        self.text = TextCache(self.video)

    def train(self, mode: bool = True):
        super().train(mode)
        self.video.vae.eval()
        self.video.text_encoder.eval()
        return self

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        images = batch["images"]  # (B, V, F, 3, S, S)
        b, v = images.shape[:2]
        text = self.text(batch["instruction"])
        loss = self.video.training_loss(images.flatten(0, 1), text.tokens.repeat_interleave(v, dim=0), generator=generator,
                                        text_drop=self.s1.text_drop if self.training else 0.0,
                                        p_mean=self.s1.p_mean, p_std=self.s1.p_std)
        return {"loss": loss}

    def trainable_state_dict(self):
        return self.video.unet.state_dict()

    def load_trainable_state_dict(self, state):
        load_strict(self.video.unet, state, "stage-I checkpoint (UNet)")

    def export(self, out_dir: Path) -> Path:
        target = out_dir / "video_model"
        self.video.unet.save_pretrained(target / "unet")
        self.video.vae.save_pretrained(target / "vae")
        data = self.cfg.to_dict()
        data["video"]["pretrained"] = str(target.resolve())
        MolaConfig.from_dict(data).save(out_dir / "mola_config.yaml")
        return target


# ------------------------------------------------------------------------------------------ stage II


@dataclass
class Stage2Config:
    targets: str = "learned"  # learned (frozen models + OpenCV flow) | sim (exact, from motus-sim-dataset --ground-truth)
    encoder: str = ""  # local dir: transformers ViT / ViT-MAE / DINOv2 with hidden = idm.input_dim and a token grid = tap grid
    encoder_image_size: int = 224
    depth_model: str = ""  # local Depth Anything V2 (Small: Apache-2.0) directory
    depth_input_size: int = 518  # Depth Anything V2's processor size (a multiple of its 14-px patch)
    semantic_model: str = ""  # local SAM or SAM2 directory
    semantic_kind: str = "auto"  # auto | sam | sam2
    rgb_size: int = 224
    rgb_patch: int = 16
    decoder_hidden: int = 768
    decoder_heads: int = 12
    rgb_layers: int = 12  # Moto's ViT-B decoder
    modality_layers: int = 6
    depth_grid: int = 224
    depth_patch: int = 16
    semantic_grid: int = 16
    semantic_patch: int = 1
    flow_grid: int = 28
    flow_patch: int = 2
    flow_size: int = 224
    flow_preset: str = "medium"
    random_shift: int = 10  # pixels at the model image size, the same shift for both frames of a pair


class IdmPretrainStage(StageModule):
    def __init__(self, cfg: MolaConfig, s2: Stage2Config, device="cpu"):
        super().__init__()
        self.cfg, self.s2 = cfg, s2
        names = cfg.idm.names
        n_tokens = cfg.video.tokens_per_frame
        if not s2.encoder:
            raise MolaConfigError("stage2.encoder must name a local image-encoder directory")
        encoder = FrozenImageEncoder.from_pretrained(s2.encoder, s2.encoder_image_size, n_tokens)
        self.targets: dict[str, Any] = {}
        specs = {}
        if s2.targets not in ("learned", "sim"):
            raise MolaConfigError(f"stage2.targets must be 'learned' or 'sim', got {s2.targets!r}")
        self.sim = s2.targets == "sim"
        grids = {"depth": (s2.depth_grid, s2.depth_patch), "semantic": (s2.semantic_grid, s2.semantic_patch),
                 "flow": (s2.flow_grid, s2.flow_patch)}
        for name in names:
            if self.sim:
                specs[name] = {"channels": SIM_CHANNELS[name], "grid": grids[name][0], "patch": grids[name][1]}
            elif name == "depth":
                if not s2.depth_model:
                    raise MolaConfigError("the depth IDM needs stage2.depth_model (Depth Anything V2 Small directory)")
                self.targets[name] = DepthTarget(s2.depth_model, s2.depth_grid, s2.depth_input_size, device=device)
                specs[name] = {"channels": 1, "grid": s2.depth_grid, "patch": s2.depth_patch}
            elif name == "semantic":
                if not s2.semantic_model:
                    raise MolaConfigError("the semantic IDM needs stage2.semantic_model (SAM or SAM2 directory)")
                t = SemanticTarget(s2.semantic_model, s2.semantic_grid, s2.semantic_kind, device=device)
                self.targets[name] = t
                specs[name] = {"channels": t.channels, "grid": s2.semantic_grid, "patch": s2.semantic_patch}
            else:
                self.targets[name] = FlowTarget(s2.flow_grid, s2.flow_size, preset=s2.flow_preset)
                specs[name] = {"channels": 2, "grid": s2.flow_grid, "patch": s2.flow_patch}
        f0, f1 = cfg.idm.frames
        if "flow" in names and f1 + 1 >= cfg.video.num_frames:
            raise MolaConfigError(f"flow targets need frame {f1 + 1}, the clip has {cfg.video.num_frames} frames")
        self.model = IdmPretrainModel(cfg.idm, encoder, n_tokens, specs, rgb_size=s2.rgb_size, rgb_patch=s2.rgb_patch,
                                      decoder_hidden=s2.decoder_hidden, rgb_layers=s2.rgb_layers,
                                      modality_layers=s2.modality_layers, decoder_heads=s2.decoder_heads)
        self.cam_index = [cfg.cameras.index(c) for c in cfg.idm.cameras]

    def _apply(self, fn, *args, **kwargs):  # keep the frozen target models on the module's device
        out = super()._apply(fn, *args, **kwargs)
        for t in self.targets.values():
            if hasattr(t, "model"):
                t.model._apply(fn)
        return out

    def _shift(self, x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, pad: int, mode: str = "replicate") -> torch.Tensor:
        """Translate each sample of (N, K, C, S, S) by its own (dx, dy) pixels with edge (or zero) padding."""
        if pad <= 0:
            return x
        n, k, c, h, w = x.shape
        padded = torch.nn.functional.pad(x.flatten(1, 2), (pad, pad, pad, pad), mode=mode).view(n, k, c, h + 2 * pad, w + 2 * pad)
        return torch.stack([padded[i, :, :, pad + int(dy[i]): pad + int(dy[i]) + h, pad + int(dx[i]): pad + int(dx[i]) + w]
                            for i in range(n)])

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        f0, f1 = self.cfg.idm.frames
        images = batch["images"][:, self.cam_index]  # (B, Vi, F, 3, S, S)
        want = [f0, f1] + ([f0 + 1, f1 + 1] if "flow" in self.targets else [])
        frames = images[:, :, want].flatten(0, 1)  # (N, K, 3, S, S)
        if self.training and self.s2.random_shift > 0:
            pad = self.s2.random_shift
            gdev = generator.device if generator is not None else frames.device
            d = torch.randint(-pad, pad + 1, (2, frames.shape[0]), generator=generator, device=gdev).cpu()
            frames = self._shift(frames, d[0], d[1], pad)
        cur, fut = frames[:, 0], frames[:, 1]
        if self.sim:
            return self.model(cur, fut, self._sim_modality(batch, d if self.training and self.s2.random_shift > 0 else None))
        modality = {}
        for name, producer in self.targets.items():
            if name == "flow":
                a, b = producer(cur, frames[:, 2]), producer(fut, frames[:, 3])
                modality[name] = (a.value.to(cur.device), b.value.to(cur.device), b.weight.to(cur.device))
            else:
                a, b = producer(cur), producer(fut)
                modality[name] = (a.value.to(cur.device), b.value.to(cur.device), None)
        return self.model(cur, fut, modality)

    def _sim_modality(self, batch: dict[str, Any], shift: torch.Tensor | None) -> dict[str, tuple]:
        """Exact targets from the dataset's dense simulator maps, moved by the same random shift as the images."""
        if "sim_targets" not in batch:
            raise MolaConfigError("stage2.targets is 'sim' but the batch has no simulator ground truth "
                                  "(build the dataset with sim_ground_truth=True)")
        dev = batch["images"].device
        maps = {k: v.to(dev).flatten(0, 1) for k, v in batch["sim_targets"].items()}  # (N, 2, C, S, S)
        if shift is not None:
            pad = self.s2.random_shift
            maps = {k: self._shift(v.float(), shift[0], shift[1], pad, mode="constant" if k == "valid" else "replicate")
                    for k, v in maps.items()}
        s2, modality = self.s2, {}
        for name in self.cfg.idm.names:
            if name == "depth":
                a, b = (sim_depth_target(maps["depth"][:, i], s2.depth_grid) for i in (0, 1))
                modality[name] = (a.value, b.value, None)
            elif name == "semantic":
                a, b = (sim_semantic_target(maps["labels"][:, i], s2.semantic_grid) for i in (0, 1))
                modality[name] = (a.value, b.value, None)
            else:
                a, b = (sim_flow_target(maps["flow"][:, i], maps["valid"][:, i], s2.flow_grid) for i in (0, 1))
                modality[name] = (a.value, b.value, b.weight)
        return modality

    def trainable_state_dict(self):
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith("encoder.")}

    def load_trainable_state_dict(self, state):
        full = {**{k: v for k, v in self.model.state_dict().items() if k.startswith("encoder.")}, **state}
        load_strict(self.model, full, "stage-II checkpoint")

    def export(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.idm_state_dict().items()}, str(out_dir / "idms.safetensors"))
        dec = {k: v for k, v in self.trainable_state_dict().items() if not k.startswith("idms.")}
        save_file({k: v.detach().cpu().contiguous() for k, v in dec.items()}, str(out_dir / "stage2_decoders.safetensors"))
        self.cfg.save(out_dir / "mola_config.yaml")
        return out_dir / "idms.safetensors"


# ----------------------------------------------------------------------------------------- stage III


@dataclass
class Stage3Config:
    idm_checkpoint: str = ""  # stage-II output directory (idms.safetensors) or the file itself
    release_checkpoint: str = ""  # optional: initialise everything from a released MoLA checkpoint


def load_stage2_idms(net: MolaNet, path: str) -> None:
    p = Path(path)
    f = p / "idms.safetensors" if p.is_dir() else p
    if not f.is_file():
        raise FileNotFoundError(f"stage-II IDM weights not found: {f}")
    state = load_file(str(f))
    for name, idm in net.moidm.idms.items():
        sub = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        if not sub:
            raise MolaConfigError(f"{f} has no weights for the {name!r} IDM (has {sorted({k.split('.')[0] for k in state})})")
        load_strict(idm, sub, f"stage-II {name} IDM ({f})")


class PolicyStage(StageModule):
    def __init__(self, cfg: MolaConfig, s3: Stage3Config):
        super().__init__()
        self.cfg, self.s3 = cfg, s3
        video = VideoModel.build(cfg.video)
        net = MolaNet(cfg)
        if s3.release_checkpoint:
            state, _, _ = split_release_state_dict(load_release_checkpoint(s3.release_checkpoint))
            load_strict(net, state, f"release checkpoint {s3.release_checkpoint}")
        if s3.idm_checkpoint:
            load_stage2_idms(net, s3.idm_checkpoint)
        self.model = MolaModel(cfg, video, net)
        self.text = TextCache(video)

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        text = self.text(batch["instruction"])
        images = batch["images"]
        current = images if images.dim() == 5 else images[:, :, 0]  # (B, V, 3, S, S)
        with torch.no_grad():
            feats, _ = self.model.video_features(current, text, generator)
        return self.model.loss(feats, text.pooled, batch["state"], batch["actions"], generator=generator)

    def trainable_state_dict(self):
        return self.model.net.state_dict()

    def load_trainable_state_dict(self, state):
        load_strict(self.model.net, state, "stage-III checkpoint")

    def export(self, out_dir: Path, stats_file: str | Path | None, stats_key: str | None) -> Path:
        policy = out_dir / "policy"
        policy.mkdir(parents=True, exist_ok=True)
        stats_name = None
        if stats_file:
            shutil.copyfile(stats_file, policy / "stat.json")
            stats_name = "stat.json"
        data = self.cfg.to_dict()
        for key in ("pretrained", "text_encoder"):
            if data["video"][key]:
                data["video"][key] = str(Path(data["video"][key]).resolve())
        return write_policy_dir(policy, MolaConfig.from_dict(data), self.model.net.state_dict(),
                                stats_file=stats_name, stats_key=stats_key)


# ------------------------------------------------------------------------------------------ builders


@dataclass
class StageSetup:
    model: MolaConfig
    data: DataConfig
    train: TrainConfig
    extra: Any


def parse_stage_config(raw: dict, stage: int) -> StageSetup:
    allowed = {"model", "data", "train", "stage", f"stage{stage}"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise MolaConfigError(f"stage-{stage} config: unknown top-level keys {unknown}; allowed {sorted(allowed)}")
    extra_cls = {1: Stage1Config, 2: Stage2Config, 3: Stage3Config}[stage]
    return StageSetup(model=MolaConfig.from_dict(raw.get("model")),
                      data=build_dataclass(DataConfig, raw.get("data"), "data"),
                      train=build_dataclass(TrainConfig, raw.get("train"), "train"),
                      extra=build_dataclass(extra_cls, raw.get(f"stage{stage}"), f"stage{stage}"))


def build_dataset(setup: StageSetup, stage: int, seed: int) -> MolaDataset:
    if not setup.data.root:
        raise MolaConfigError("data.root must name a Motus-layout dataset directory")
    return MolaDataset(setup.data.root, setup.model, stats_file=setup.data.stats_file, stats_key=setup.data.stats_key,
                       seed=seed, samples_per_episode=setup.data.samples_per_episode,
                       frames="current" if stage == 3 else "clip",
                       sim_ground_truth=stage == 2 and setup.extra.targets == "sim")


def build_stage(setup: StageSetup, stage: int, device="cpu") -> StageModule:
    if stage == 1:
        return VideoStage(setup.model, setup.extra, setup.train.gradient_checkpointing)
    if stage == 2:
        return IdmPretrainStage(setup.model, setup.extra, device=device)
    return PolicyStage(setup.model, setup.extra)


def export_stage(module: StageModule, setup: StageSetup, dataset: MolaDataset, stage: int) -> Path:
    out = Path(setup.train.out_dir)
    if stage == 1:
        return module.export(out)
    if stage == 2:
        return module.export(out)
    return module.export(out, dataset.stats_file, dataset.stats_key)


__all__ = ["IdmPretrainStage", "PolicyStage", "Stage1Config", "Stage2Config", "Stage3Config", "VideoStage",
           "build_dataset", "build_stage", "collate", "export_stage", "parse_stage_config"]
