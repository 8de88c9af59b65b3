"""Training data for ``motus-train``: checked episodes, a held-out split, samples with VLM inputs.

Samples come from the project's reader (:class:`motus_core.data.reader.MotusDataset`: the official
sampling rule, mosaic + resize-with-padding + [0, 1] from ``motus_core.preprocessing``, min-max
normalisation with one :class:`MinMaxNormalizer`). This module adds what training needs on top:

* every episode is checked before training (:func:`check_episode`): NaN/inf in qpos, a video whose
  frame count differs from qpos, an episode shorter than one chunk, a missing instruction
  embedding. Such an episode is skipped; its reason is logged and kept for the end-of-run summary.
  An empty dataset (or nothing left after the checks) and an embedding whose width differs from
  the model's text width are errors before training starts (the whole dataset was encoded with
  another text encoder);
* a deterministic held-out split by episode (the last ``val_episodes`` in sorted order);
* the VLM inputs of each sample, built by the same prompt builder as the policy node from the
  model-size condition image (or, for the official AC-One/Aloha recipe, from the condition frame at
  its original resolution).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from motus_core.data.motus_layout import DatasetError, EpisodeRef, find_episodes, load_embedding, load_qpos, load_targets, read_stat_file, resolve_instruction
from motus_core.data.reader import FrameCache, MotusDataset, collate as reader_collate
from motus_core.data.video import VideoError, video_info
from motus_core.preprocessing import MinMaxNormalizer, PreprocessingError, load_stats

from ..config import MotusConfig
from .config import DataSection

log = logging.getLogger("motus_train")


@dataclass
class SkippedEpisode:
    episode: str
    reason: str


@dataclass
class TrainData:
    train: "TrainSamples"
    val: "TrainSamples | None"
    normalizer: MinMaxNormalizer | None
    stats_key: str
    zero_range_joints: list[int]
    skipped: list[SkippedEpisode] = field(default_factory=list)
    instructions: dict[str, torch.Tensor] = field(default_factory=dict)  # text -> embedding [L, D] (policy cache)


def check_episode(ref: EpisodeRef, *, chunk: int, downsample: int, text_dim: int) -> str:
    """'' when the episode can train, else why not. Raises DatasetError for a wrong embedding width."""
    try:
        qpos = load_qpos(ref.qpos)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is a reason to skip, reported
        return f"unreadable qpos ({exc})"
    if qpos.ndim != 2 or qpos.shape[0] < 1:
        return f"qpos has shape {qpos.shape}, expected [T, D]"
    bad = ~np.isfinite(qpos)
    if bad.any():
        r, c = np.argwhere(bad)[0].tolist()
        return f"qpos contains NaN/inf (first at frame {r}, joint {c})"
    if ref.actions is not None:
        try:
            actions = load_targets(ref, qpos)
        except DatasetError as exc:
            return str(exc).removeprefix(f"episode {ref.name}: ")
        except Exception as exc:  # noqa: BLE001
            return f"unreadable actions ({exc})"
        bad = ~np.isfinite(actions)
        if bad.any():
            r, c = np.argwhere(bad)[0].tolist()
            return f"actions contain NaN/inf (first at frame {r}, joint {c})"
    try:
        n_video = video_info(ref.video).frames
    except (VideoError, OSError, ValueError) as exc:
        return f"unreadable video ({exc})"
    if n_video != len(qpos):
        return f"video has {n_video} frames but qpos has {len(qpos)} rows"
    need = chunk * downsample + 1
    if len(qpos) < need:
        return f"{len(qpos)} frames, shorter than one chunk ({need} frames: condition + {chunk} actions x downsample {downsample})"
    try:
        src = resolve_instruction(ref)
    except DatasetError as exc:
        return str(exc)
    if src.embedding is None:
        return "no instruction embedding (convert with --text-encoder or --tiny-text-encoder)"
    try:
        emb, _ = load_embedding(src.embedding)
    except (DatasetError, OSError, RuntimeError) as exc:
        return f"unreadable instruction embedding ({exc})"
    if emb.shape[1] != text_dim:
        raise DatasetError(
            f"episode {ref.name}: instruction embedding {src.embedding} is {emb.shape[1]} wide, the model's text width "
            f"is {text_dim}: the dataset was encoded with another text encoder (e.g. the tiny umT5's 32 instead of "
            "umT5-XXL's 4096); re-convert it or choose a model whose wan.text_dim matches")
    if not torch.isfinite(emb.float()).all():
        return "instruction embedding contains NaN/inf"
    return ""


def _normalizer(cfg: DataSection, root: Path) -> tuple[MinMaxNormalizer | None, str]:
    if not cfg.normalize:
        return None, cfg.stats_key or "none"
    stats_file = Path(cfg.stats_file) if cfg.stats_file else (root / "stat.json" if (root / "stat.json").is_file() else None)
    key = cfg.stats_key
    if not key:
        if stats_file is None:
            raise DatasetError(f"no stat.json in {root} and no data.stats_key: cannot normalise (data.normalize=false for raw joints)")
        keys = list(read_stat_file(stats_file))
        if len(keys) != 1:
            raise DatasetError(f"{stats_file} has statistics for {keys}: set data.stats_key")
        key = keys[0]
    if stats_file is None:
        log.info("no stat.json in %s: statistics %r from the packaged official file", root, key)
    try:
        return load_stats(stats_file, key), key  # None: the packaged official stat.json
    except PreprocessingError as exc:
        raise DatasetError(str(exc)) from exc


def zero_range(normalizer: MinMaxNormalizer | None) -> list[int]:
    if normalizer is None:
        return []
    return [int(i) for i in np.nonzero(normalizer.max - normalizer.min <= 0)[0]]


class TrainSamples(Dataset):
    """Reader samples + the VLM inputs of the condition image (built in the worker processes)."""

    def __init__(self, reader: MotusDataset, prompt, vlm_image: str = "model"):
        self.reader = reader
        self.prompt = prompt
        self.vlm_image = vlm_image

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def episodes(self) -> list[EpisodeRef]:
        return self.reader.episodes

    def _finish(self, s: dict[str, Any]) -> dict[str, Any]:
        image = s.pop("condition_frame") if self.vlm_image == "original" else s["condition_image"]
        s.pop("condition_frame", None)
        s["vlm_inputs"] = self.prompt(np.ascontiguousarray(image), s["instruction"])
        return s

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._finish(self.reader[index])

    def sample(self, ref, cond: int) -> dict[str, Any]:
        return self._finish(self.reader.sample(ref, cond))


def collate(batch: Sequence[dict[str, Any]], text_len: int) -> dict[str, Any]:
    """The reader's official collate (T5 zero-padded to ``text_len``) + the per-sample VLM inputs as a list."""
    out = reader_collate(batch, text_len=text_len)
    out["vlm_inputs"] = [b["vlm_inputs"] for b in batch]
    out["condition_image"] = np.stack([b["condition_image"] for b in batch])
    return out


def open_data(cfg: DataSection, model_cfg: MotusConfig, prompt, *, seed: int, cache_dir: Path | None = None) -> TrainData:
    """Check every episode, split, and build the train/validation sample sets. Raises DatasetError."""
    root = Path(cfg.path).expanduser()
    if not cfg.path:
        raise DatasetError("data.path is not set (the dataset root written by motus-convert)")
    episodes = find_episodes(root)
    if not episodes:
        raise DatasetError(f"empty dataset: no episodes (task folders with videos/, qpos/, instructions/) under {root}")
    chunk = model_cfg.action_chunk_size
    text_dim = int(model_cfg.wan["text_dim"])
    good, skipped = [], []
    for ref in episodes:
        why = check_episode(ref, chunk=chunk, downsample=cfg.global_downsample_rate, text_dim=text_dim)
        if why:
            skipped.append(SkippedEpisode(ref.name, why))
            log.warning("skipping episode %s: %s", ref.name, why)
        else:
            good.append(ref)
    if not good:
        raise DatasetError(f"no usable episode under {root}: " + "; ".join(f"{s.episode}: {s.reason}" for s in skipped))
    commanded = sum(r.actions is not None for r in good)
    if 0 < commanded < len(good):
        log.warning("%d episodes train on their recorded commands (actions/), %d on future follower positions (no actions/): "
                    "one dataset should use one kind of target (re-convert with the same --actions)", commanded, len(good) - commanded)
    else:
        log.info("action targets: %s", "the recorded commands (actions/)" if commanded else "future follower positions (qpos)")
    normalizer, key = _normalizer(cfg, root)
    if normalizer is not None and normalizer.dim != model_cfg.action_dim:
        raise DatasetError(f"statistics {key!r} have {normalizer.dim} joints, the model {model_cfg.action_dim}")
    dims = {int(load_qpos(r.qpos).shape[1]) for r in good}
    if dims != {model_cfg.action_dim}:
        raise DatasetError(f"qpos width {sorted(dims)} differs from the model's action_dim {model_cfg.action_dim}")
    zr = zero_range(normalizer)
    if zr:
        log.warning("joints %s never move in statistics %r (max == min): normalised as x - min (range taken as 1) "
                    "and de-normalised the same way by the policy", zr, key)
    n_val = min(cfg.val_episodes, len(good) - 1)
    if cfg.val_episodes and n_val < cfg.val_episodes:
        log.warning("only %d usable episodes: holding out %d for validation", len(good), n_val)
    train_refs, val_refs = (good[:-n_val], good[-n_val:]) if n_val > 0 else (good, [])
    cache = None
    if cfg.frame_cache and cache_dir is not None and cfg.vlm_image != "original":
        cache = FrameCache(cache_dir, (model_cfg.video_height, model_cfg.video_width))
        for ref in good:
            cache.ensure(ref)
        log.info("frame cache %s: %d episodes at %dx%d", cache_dir, len(good), model_cfg.video_height, model_cfg.video_width)
    kw = dict(frame_cache=cache, num_video_frames=model_cfg.num_video_frames, video_action_freq_ratio=model_cfg.video_action_freq_ratio,
              global_downsample_rate=cfg.global_downsample_rate, image_hw=(model_cfg.video_height, model_cfg.video_width),
              normalize=cfg.normalize, normalizer=normalizer, samples_per_episode=cfg.samples_per_episode,
              keep_condition_frame=cfg.vlm_image == "original")
    train = TrainSamples(MotusDataset(root, episodes=train_refs, seed=seed, **kw), prompt, cfg.vlm_image)
    val = TrainSamples(MotusDataset(root, episodes=val_refs, seed=seed + 1, **kw), prompt, cfg.vlm_image) if val_refs else None
    instructions: dict[str, torch.Tensor] = {}
    for ref in good:
        src = resolve_instruction(ref)
        if src.embedding_is_list:
            data = torch.load(src.embedding, map_location="cpu", weights_only=True)
            for text, emb in zip(src.texts, data):
                instructions.setdefault(text, (emb[0] if emb.ndim == 3 else emb).float())
        else:
            instructions.setdefault(src.texts[0], load_embedding(src.embedding)[0].float())
    log.info("dataset %s: %d episodes for training, %d held out, %d skipped; statistics %r; %d instruction(s)",
             root, len(train_refs), len(val_refs), len(skipped), key, len(instructions))
    return TrainData(train=train, val=val, normalizer=normalizer, stats_key=key, zero_range_joints=zr, skipped=skipped,
                     instructions=instructions)


def validation_indices(n: int, count: int) -> list[int]:
    """A fixed, evenly spread set of sample indices of the validation set."""
    count = max(1, min(count, n))
    return [int(math.floor(i * n / count)) for i in range(count)]
