"""Shared fixtures for the MoLA tests: a tiny Motus-layout dataset and tiny foundation models on disk."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from motus_core.data.motus_layout import write_dataset_stats, write_episode
from motus_core.preprocessing import make_mosaic

INSTRUCTION = "pick up the cube"
STATS_KEY = "sim_aloha"


def write_tiny_dataset(root: Path, episodes: int = 2, frames: int = 36, high_hw=(24, 32)) -> Path:
    """Episodes of a red square sliding across the high camera, a growing bar in the left wrist, and
    smooth joint trajectories tied to time: enough structure for a loss to fall in a few steps."""
    h, w = high_hw
    for e in range(episodes):
        mosaics, qpos = [], []
        for t in range(frames):
            high = np.full((h, w, 3), 40, np.uint8)
            x = (2 * t + 5 * e) % (w - 4)
            high[h // 3: h // 3 + 6, x: x + 4] = (255, 0, 0)
            left = np.full((h, w, 3), 80, np.uint8)
            left[:, : int(t / frames * w)] = (0, 200, 0)
            right = np.full((h, w, 3), 120, np.uint8)
            mosaics.append(make_mosaic(high, left, right))
            qpos.append(0.5 * np.sin(np.arange(14) * 0.3 + t * 0.15 + e))
        write_episode(root / "cube", str(e), np.stack(mosaics), np.stack(qpos).astype(np.float32), INSTRUCTION)
    write_dataset_stats(root, STATS_KEY)
    return root
