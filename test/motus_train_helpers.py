"""Tiny real Motus-layout datasets for the motus-train tests (H.264 videos, qpos, tiny-umT5 embeddings, stat.json).

Frames depend on the joint state (a bright square whose position follows two joints), so a model
can learn actions from images and state; episodes are written with the project's episode writer
(the one motus-convert uses) and the embeddings with the tiny umT5 motus-convert --tiny-text-encoder uses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from motus_core.data.motus_layout import write_dataset_stats, write_episode
from motus_core.preprocessing import make_mosaic

INSTRUCTION = "transfer the cube to the other arm"


def joint_trajectory(t: np.ndarray, phase: float, dof: int = 14) -> np.ndarray:
    j = np.arange(dof)[None]
    return (0.1 * j + 0.6 * np.sin(2 * np.pi * (t[:, None] / 4.0 + phase + 0.07 * j))).astype(np.float32)


def render(q: np.ndarray, hw=(240, 320)) -> np.ndarray:
    h, w = hw
    img = np.full((h, w, 3), 40, np.uint8)
    cy = int((0.5 + 0.35 * np.tanh(q[0])) * (h - 40)) + 20
    cx = int((0.5 + 0.35 * np.tanh(q[7])) * (w - 40)) + 20
    img[cy - 15:cy + 15, cx - 15:cx + 15] = (220, 60, 60)
    return img


def make_dataset(root: Path, *, episodes: int = 4, frames: int = 80, task: str = "transfer_cube", hw=(240, 320),
                 instruction: str = INSTRUCTION, text_dim: int = 32, stats_key: str = "sim_aloha",
                 embedding: bool = True) -> Path:
    from motus_core.models.motus.text_encoder import build_tiny_text_encoder

    enc = build_tiny_text_encoder(seed=0, dim=text_dim)
    emb = enc.encode([instruction])[0].to(torch.bfloat16) if embedding else None
    for e in range(episodes):
        t = np.arange(frames) / 30.0
        q = joint_trajectory(t, phase=0.13 * e)
        mosaics = [make_mosaic(render(qi, hw), render(qi[::-1].copy(), (hw[0], hw[1])), render(-qi, hw)) for qi in q]
        write_episode(root / task, f"{e:06d}", mosaics, q, instruction, emb)
    write_dataset_stats(root, stats_key)
    return root
