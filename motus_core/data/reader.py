"""Training samples from a Motus-layout dataset, built exactly as the official loaders build them.

Official rule (``_calculate_sampling_indices``, identical in the robotwin/ac_one/aloha/lerobot
loaders), with ``K = num_video_frames * video_action_freq_ratio`` and ``g = global_downsample_rate``:

* condition frame ``c = randint(0, T - K*g - 1)`` (both ends included; 0 if negative);
* action indices ``c + (i+1)*g`` for ``i < K``, clamped to ``T - 1``;
* video indices ``action_idx[(j+1)*ratio - 1]`` for ``j < num_video_frames``;
* ``initial_state = qpos[c]``, ``action_sequence = qpos[action_idx]`` (future follower qpos as
  actions), both min-max normalised with ``stat.json[stats_key]``. Where the episode has
  ``actions/<id>.pt`` (the recorded commands, this project's addition; see ``motus_layout``),
  ``action_sequence = actions[action_idx]``, same indices, and the state stays ``qpos[c]``;
* frames: mosaic -> ``resize_with_padding`` to (384, 320) -> float [0, 1], channels first.

With the defaults (8 frames, ratio 6, g 1) and 30 Hz episodes: actions are qpos[c+1 .. c+48] at
30 Hz and the video frames are c+6, c+12, ..., c+48 (5 Hz).

The official loaders pick the episode and ``c`` with the global ``random`` module on every call.
Here, with ``seed`` set, sample ``i`` uses its own ``random.Random((seed, i))``: the same index gives
the same sample in every worker and every run (reproducible training and tests); without a seed
the global ``random`` module is used, as in the official code.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from motus_core.preprocessing import (
    MOTUS_IMAGE_HW,
    MinMaxNormalizer,
    load_stats,
    resize_with_padding,
    to_unit_chw,
)
from motus_core.data.motus_layout import (
    DatasetError,
    EpisodeRef,
    find_episodes,
    load_embedding,
    load_qpos,
    load_targets,
    read_stat_file,
    resolve_instruction,
)
from motus_core.data.video import read_frames, read_video, video_info

log = logging.getLogger(__name__)

T5_TEXT_LEN = 512  # official collate pads/truncates the umT5 sequence to 512 tokens


@dataclass(frozen=True)
class SampleIndices:
    cond: int
    actions: tuple[int, ...]
    video: tuple[int, ...]


def sampling_indices(total_frames: int, cond: int, *, num_video_frames: int = 8, video_action_freq_ratio: int = 6,
                     global_downsample_rate: int = 1) -> SampleIndices:
    """Action and video frame indices for condition frame ``cond`` (official rule, see module doc)."""
    k = num_video_frames * video_action_freq_ratio
    g = global_downsample_rate
    actions = tuple(min(cond + (i + 1) * g, total_frames - 1) for i in range(k))
    video = []
    for j in range(num_video_frames):
        step = (j + 1) * video_action_freq_ratio - 1
        video.append(actions[step] if step < len(actions) else actions[-1])
    return SampleIndices(cond=cond, actions=actions, video=tuple(video))


def max_condition_index(total_frames: int, *, num_video_frames: int = 8, video_action_freq_ratio: int = 6,
                        global_downsample_rate: int = 1) -> int:
    """Largest condition frame the official rule draws (``T - K*g - 1``; 0 if the episode is shorter)."""
    return max(0, total_frames - num_video_frames * video_action_freq_ratio * global_downsample_rate - 1)


def draw_condition_index(total_frames: int, rng, **kw) -> int:
    """``randint(0, T - K*g - 1)``, or 0 when that bound is negative (official)."""
    hi = total_frames - kw.get("num_video_frames", 8) * kw.get("video_action_freq_ratio", 6) * kw.get("global_downsample_rate", 1) - 1
    return 0 if hi < 0 else rng.randint(0, hi)


def _default_stats(root: Path, stats_file, stats_key) -> tuple[Path | None, str | None]:
    if stats_file is None and (root / "stat.json").is_file():
        stats_file = root / "stat.json"
    if stats_key is None and stats_file is not None:
        keys = list(read_stat_file(stats_file))
        if len(keys) != 1:
            raise DatasetError(f"{stats_file} has statistics for {keys}: pass stats_key to choose the robot")
        stats_key = keys[0]
    return (Path(stats_file) if stats_file is not None else None), stats_key


class MotusDataset(Dataset):
    """Motus training samples from a Motus real-robot layout (or RoboTwin layout) directory.

    ``ds[i]`` returns ``first_frame [3,H,W]`` float32 in [0,1], ``video_frames [F,3,H,W]``,
    ``initial_state [14]`` and ``action_sequence [K,14]`` (normalised, float32),
    ``language_embedding [L,D]`` (as stored, if the dataset has embeddings), ``instruction`` (str),
    ``episode`` (``task/id``) and ``cond_index`` (int).

    ``normalize=False`` returns raw joint values (RoboTwin training does not normalise).
    Statistics default to ``<root>/stat.json`` (its only key, or ``stats_key``).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        stats_file: str | Path | None = None,
        stats_key: str | None = None,
        num_video_frames: int = 8,
        video_action_freq_ratio: int = 6,
        global_downsample_rate: int = 1,
        image_hw: Sequence[int] = MOTUS_IMAGE_HW,
        seed: int | None = None,
        normalize: bool = True,
        samples_per_episode: int = 10,
        episodes: Sequence[EpisodeRef] | None = None,
        normalizer: MinMaxNormalizer | None = None,
        keep_condition_frame: bool = False,
        frame_cache: "FrameCache | None" = None,
    ):
        self.root = Path(root)
        if min(num_video_frames, video_action_freq_ratio, global_downsample_rate) < 1:
            raise ValueError("num_video_frames, video_action_freq_ratio and global_downsample_rate must be >= 1")
        self.num_video_frames = int(num_video_frames)
        self.video_action_freq_ratio = int(video_action_freq_ratio)
        self.global_downsample_rate = int(global_downsample_rate)
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.seed = seed
        self.samples_per_episode = int(samples_per_episode)
        self.episodes: list[EpisodeRef] = list(episodes) if episodes is not None else find_episodes(self.root)
        if not self.episodes:
            raise DatasetError(f"no episodes (task folders with videos/, qpos/, instructions/) under {self.root}")
        self.keep_condition_frame = bool(keep_condition_frame)
        self.frame_cache = frame_cache
        if frame_cache is not None and tuple(frame_cache.image_hw) != self.image_hw:
            raise ValueError(f"frame cache holds {frame_cache.image_hw} images, the dataset makes {self.image_hw}")
        self.normalizer: MinMaxNormalizer | None = normalizer if normalize else None
        if normalize and normalizer is None:
            sf, key = _default_stats(self.root, stats_file, stats_key)
            if key is None:
                raise DatasetError(f"no stat.json in {self.root}: pass stats_file/stats_key or normalize=False")
            self.normalizer = load_stats(sf, key)
        self._frames: dict[EpisodeRef, int] = {}
        self._instructions = {}

    @property
    def action_chunk_size(self) -> int:
        return self.num_video_frames * self.video_action_freq_ratio

    def __len__(self) -> int:
        # Like the official loaders, the length is a multiplier: samples are drawn at random.
        return len(self.episodes) * self.samples_per_episode

    def _kw(self) -> dict:
        return dict(num_video_frames=self.num_video_frames, video_action_freq_ratio=self.video_action_freq_ratio,
                    global_downsample_rate=self.global_downsample_rate)

    def total_frames(self, ref: EpisodeRef) -> int:
        """Frames of an episode: the video's count (official), checked against the qpos length."""
        if ref not in self._frames:
            n_video = video_info(ref.video).frames
            n_qpos = len(load_qpos(ref.qpos))
            if n_video != n_qpos:
                log.warning("episode %s: %d video frames but %d qpos rows; using the shorter", ref.name, n_video, n_qpos)
            self._frames[ref] = min(n_video, n_qpos)
        return self._frames[ref]

    def _instruction(self, ref: EpisodeRef):
        if ref not in self._instructions:
            self._instructions[ref] = resolve_instruction(ref)
        return self._instructions[ref]

    def _rng(self, index: int):
        return random.Random(f"{self.seed}:{index}") if self.seed is not None else random

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        rng = self._rng(index % len(self))
        ref = self.episodes[rng.randrange(len(self.episodes))]
        cond = draw_condition_index(self.total_frames(ref), rng, **self._kw())
        return self.sample(ref, cond, rng=rng)

    def sample(self, ref: EpisodeRef | int, cond: int, rng=None) -> dict[str, Any]:
        """The sample of episode ``ref`` (or its index in ``episodes``) at condition frame ``cond``."""
        if isinstance(ref, int):
            ref = self.episodes[ref]
        rng = rng or random.Random(f"{self.seed}:{ref.name}:{cond}")
        total = self.total_frames(ref)
        if not 0 <= cond < total:
            raise IndexError(f"episode {ref.name}: condition frame {cond} outside [0, {total})")
        idx = sampling_indices(total, cond, **self._kw())
        wanted = [idx.cond, *idx.video]
        if self.frame_cache is not None and not self.keep_condition_frame:
            model_images = list(self.frame_cache.frames(ref)[wanted])  # same preprocessing, done once per episode
        else:
            frames = read_frames(ref.video, wanted)
            model_images = [resize_with_padding(f, self.image_hw) for f in frames]
        chw = np.stack([to_unit_chw(im) for im in model_images])
        qpos = load_qpos(ref.qpos)
        state = qpos[idx.cond]
        actions = load_targets(ref, qpos)[list(idx.actions)]
        if self.normalizer is not None:
            state = self.normalizer.normalize(state)
            actions = self.normalizer.normalize(actions)
        src = self._instruction(ref)
        out: dict[str, Any] = {
            "first_frame": torch.from_numpy(chw[0]),
            "video_frames": torch.from_numpy(chw[1:]),
            "initial_state": torch.as_tensor(state, dtype=torch.float32),
            "action_sequence": torch.as_tensor(actions, dtype=torch.float32),
            "instruction": src.texts[0],
            "episode": ref.name,
            "cond_index": int(cond),
            "frame_indices": (idx.cond, *idx.video),  # episode frame of first_frame and each video frame
            # the model-size uint8 image of the condition frame (what the policy node builds from a live observation)
            "condition_image": model_images[0],
        }
        if self.keep_condition_frame:  # the condition frame at its original resolution (official AC-One VLM input)
            out["condition_frame"] = frames[0]
        if src.embedding is not None:
            emb, which = load_embedding(src.embedding, rng if src.embedding_is_list else None)
            out["language_embedding"] = emb
            if src.embedding_is_list and which < len(src.texts):
                out["instruction"] = src.texts[which]
        return out

    def load_episode(self, ref: EpisodeRef | int) -> tuple[np.ndarray, np.ndarray, str]:
        """Whole episode: mosaic frames uint8 ``[T,H,W,3]`` at native size, qpos float32 ``[T,14]``, instruction."""
        if isinstance(ref, int):
            ref = self.episodes[ref]
        frames = read_video(ref.video)
        qpos = load_qpos(ref.qpos)
        n = min(len(frames), len(qpos))
        return frames[:n], qpos[:n].astype(np.float32), self._instruction(ref).texts[0]


class FrameCache:
    """Model-size frames of whole episodes, decoded and preprocessed once, memory-mapped by every worker.

    ``<directory>/<task>__<id>__<H>x<W>.npy`` (uint8 ``[T, H, W, 3]``, ``resize_with_padding`` of each
    decoded mosaic: the same bytes the reader would produce per sample). A file is rebuilt when its
    video changes (size and mtime are part of a side ``.json``). Random access then costs a page-cache
    read instead of decoding from the previous keyframe.
    """

    def __init__(self, directory: str | Path, image_hw: Sequence[int]):
        self.directory = Path(directory)
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self._open: dict[Path, np.ndarray] = {}

    def path(self, ref: EpisodeRef) -> Path:
        h, w = self.image_hw
        return self.directory / f"{ref.task}__{ref.episode_id}__{h}x{w}.npy"

    @staticmethod
    def _stamp(ref: EpisodeRef) -> dict:
        st = ref.video.stat()
        return {"video": str(ref.video), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def ensure(self, ref: EpisodeRef) -> Path:
        import json
        import os

        p = self.path(ref)
        side = p.with_suffix(".json")
        stamp = self._stamp(ref)
        if p.is_file() and side.is_file() and json.loads(side.read_text()) == stamp:
            return p
        self.directory.mkdir(parents=True, exist_ok=True)
        frames = np.stack([resize_with_padding(f, self.image_hw) for f in read_video(ref.video)])
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp.npy")
        np.save(tmp, frames)
        os.replace(tmp, p)
        side.write_text(json.dumps(stamp))
        return p

    def frames(self, ref: EpisodeRef) -> np.ndarray:
        p = self.path(ref)
        if p not in self._open:
            self._open[p] = np.load(p, mmap_mode="r")
        return self._open[p]

    def __getstate__(self):  # workers open their own memory maps
        return {"directory": self.directory, "image_hw": self.image_hw, "_open": {}}


def _pad_text(emb: torch.Tensor, text_len: int) -> torch.Tensor:
    if emb.shape[0] >= text_len:
        return emb[:text_len]
    return torch.cat([emb, emb.new_zeros(text_len - emb.shape[0], emb.shape[1])])


def collate(batch: Sequence[dict[str, Any] | None], text_len: int = T5_TEXT_LEN) -> dict[str, Any] | None:
    """Batch samples like the official ``collate_fn``: stack tensors, pad T5 to ``[B, 512, D]`` with zeros.

    ``None`` samples are dropped (official); the string/int fields become lists.
    """
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    out: dict[str, Any] = {
        "first_frame": torch.stack([b["first_frame"] for b in batch]),
        "video_frames": torch.stack([b["video_frames"] for b in batch]),
        "action_sequence": torch.stack([b["action_sequence"] for b in batch]),
    }
    if all(b.get("initial_state") is not None for b in batch):
        out["initial_state"] = torch.stack([b["initial_state"] for b in batch])
    embs = [b.get("language_embedding") for b in batch]
    out["language_embedding"] = torch.stack([_pad_text(e, text_len) for e in embs]) if all(e is not None for e in embs) else None
    for key in ("instruction", "episode", "cond_index"):
        if all(key in b for b in batch):
            out[key] = [b[key] for b in batch]
    return out


__all__ = ["FrameCache", "MotusDataset", "SampleIndices", "collate", "draw_condition_index", "max_condition_index", "sampling_indices", "T5_TEXT_LEN"]
