"""MoLA training samples from the suite's Motus-layout datasets (through the shared reader).

:class:`MolaDataset` wraps :class:`motus_core.data.reader.MotusDataset` with MoLA's clip geometry:
``num_video_frames = F - 1`` frames after the condition frame at ``frame_stride`` control steps, so the
imagined clip is ``[c, c+s, ..., c+(F-1)s]`` (ours: 16 frames at 3 steps = 1.6 s at 30 Hz), and the
action chunk is the first ``chunk_length`` of the reader's targets (``actions[c+1 ..]``, or ``qpos[c+1 ..]``
without ``actions/``). The reader is
asked for frames at the mosaic's native size (no resize), each frame is split into cameras and
letterboxed with :func:`motus_core.preprocessing.mosaic_camera_images` - the same function the policy
applies to live observations. State and actions are the reader's min-max normalised values in
[0, 1] mapped to the model's [-1, 1].
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from motus_core.preprocessing import from_unit_chw, mosaic_camera_images

from .config import MolaConfig, MolaConfigError


def to_model_space(x):
    """Min-max normalised [0, 1] -> the model's [-1, 1]."""
    return x * 2.0 - 1.0


def from_model_space(x):
    return (x + 1.0) / 2.0


class MolaDataset(Dataset):
    """``frames="clip"``: ``images`` (V, F, 3, S, S), the whole imagined clip (stages I, II);
    ``frames="current"``: ``images`` (V, 3, S, S), the condition frame only (stage III; the reader then
    decodes just enough frames to cover the action chunk).
    ``sim_ground_truth``: also return ``sim_targets``, the exact stage-II target maps of a simulated
    dataset (:mod:`.sim_targets`)."""

    def __init__(self, root, cfg: MolaConfig, *, stats_file=None, stats_key=None, seed: int | None = None,
                 samples_per_episode: int = 100, frames: str = "clip", sim_ground_truth: bool = False):
        from motus_core.data.reader import MotusDataset
        from motus_core.data.video import video_info
        from motus_core.data.motus_layout import find_episodes

        self.cfg = cfg
        if frames not in ("clip", "current"):
            raise ValueError(f"frames must be 'clip' or 'current', got {frames!r}")
        self.frames = frames
        frames_after = cfg.video.num_frames - 1
        if frames == "current":
            frames_after = -(-cfg.chunk_length // cfg.frame_stride)  # enough reader frames to cover the chunk
        if frames_after * cfg.frame_stride < cfg.chunk_length:
            raise MolaConfigError(f"a clip of {cfg.video.num_frames} frames at stride {cfg.frame_stride} covers "
                                  f"{frames_after * cfg.frame_stride} actions, fewer than chunk_length {cfg.chunk_length}")
        episodes = find_episodes(root)
        if not episodes:
            raise FileNotFoundError(f"no episodes under {root}")
        info = video_info(episodes[0].video)
        self.mosaic_hw = (info.height, info.width)
        self.reader = MotusDataset(root, stats_file=stats_file, stats_key=stats_key, num_video_frames=frames_after,
                                   video_action_freq_ratio=cfg.frame_stride, image_hw=self.mosaic_hw, seed=seed,
                                   samples_per_episode=samples_per_episode, episodes=episodes)
        self.normalizer = self.reader.normalizer
        self.stats_key = self.normalizer.name if self.normalizer is not None else None
        self.stats_file = Path(stats_file) if stats_file else Path(root) / "stat.json"
        self.sim_maps = None
        if sim_ground_truth:  # exact stage-II targets of a simulated dataset (see sim_targets)
            if frames != "clip":
                raise MolaConfigError("simulator ground truth is a stage-II target: it needs frames='clip'")
            from .sim_targets import SimGroundTruthMaps

            self.refs = {r.name: r for r in episodes}
            self.sim_maps = SimGroundTruthMaps(cfg.idm.cameras, tuple(cfg.idm.frames), cfg.video.image_size,
                                               want_flow="flow" in cfg.idm.names)

    def __len__(self) -> int:
        return len(self.reader)

    def convert(self, sample: dict[str, Any]) -> dict[str, Any]:
        if self.frames == "current":
            clip = sample["first_frame"][None].numpy()
        else:
            clip = torch.cat([sample["first_frame"][None], sample["video_frames"]]).numpy()  # (F, 3, h, w) in [0, 1]
        if clip.shape[-2:] != self.mosaic_hw:
            raise MolaConfigError(f"episode {sample['episode']}: mosaic {clip.shape[-2:]} differs from {self.mosaic_hw}")
        size = (self.cfg.video.image_size, self.cfg.video.image_size)
        cams = np.stack([mosaic_camera_images(from_unit_chw(f), self.cfg.cameras, size) for f in clip])  # (F, V, 3, S, S)
        out = {
            "images": torch.from_numpy(cams[0] if self.frames == "current" else cams.transpose(1, 0, 2, 3, 4).copy()),
            "state": to_model_space(sample["initial_state"].float()),
            "actions": to_model_space(sample["action_sequence"][: self.cfg.chunk_length].float()),
            "instruction": sample["instruction"],
            "episode": sample["episode"],
            "cond_index": sample["cond_index"],
        }
        if self.sim_maps is not None:
            ref = self.refs[sample["episode"]]
            out["sim_targets"] = self.sim_maps(ref.task_dir, ref.episode_id, sample["frame_indices"])
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.convert(self.reader[index])


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out = {k: torch.stack([b[k] for b in batch]) for k in ("images", "state", "actions")}
    if "sim_targets" in batch[0]:
        out["sim_targets"] = {k: torch.stack([b["sim_targets"][k] for b in batch]) for k in batch[0]["sim_targets"]}
    for k in ("instruction", "episode", "cond_index"):
        out[k] = [b[k] for b in batch]
    return out
