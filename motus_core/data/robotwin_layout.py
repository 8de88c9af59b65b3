"""The RoboTwin 2.0 layout Motus trains on (motus-spec §5.3)::

    <root>/<split>/<task>/videos/<i>.mp4     T-mosaic, 30 fps
    <root>/<split>/<task>/qpos/<i>.pt        torch float32 [T, 14], raw joint values (RoboTwin training does not normalise)
    <root>/<split>/<task>/metas/<i>.txt      one instruction per line
    <root>/<split>/<task>/umt5_wan/<i>.pt    list of umT5 embeddings [L_j, D], one per metas line (bf16 officially)

Episodes are numbered per task. The official converter renumbers 0..N-1; here a number, once given
to a recorded episode, stays (``episode_ids.json`` maps numbers to recorded ids), so re-running the
converter after recording more episodes never renames earlier files. The RoboTwin loader globs
``qpos/*.pt`` and does not need contiguous numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from motus_core.data.motus_layout import DatasetError, StreamingEpisode, atomic_torch_save, atomic_write_text
from motus_core.data.video import VideoOptions

INDEX_FILE = "episode_ids.json"


def load_index(task_dir: Path) -> dict[str, str]:
    p = task_dir / INDEX_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def save_index(task_dir: Path, index: dict[str, str]) -> None:
    if not index:  # no episode left: no index file (so an emptied task folder can go)
        (task_dir / INDEX_FILE).unlink(missing_ok=True)
        return
    task_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(task_dir / INDEX_FILE, json.dumps(dict(sorted(index.items(), key=lambda kv: int(kv[0]))), indent=2))


def number_for(task_dir: Path, episode_id: str) -> str:
    """The stable RoboTwin number of a recorded episode in ``task_dir`` (a new one if it has none)."""
    index = load_index(task_dir)
    for num, eid in index.items():
        if eid == episode_id:
            return num
    num = str(max((int(k) for k in index), default=-1) + 1)
    index[num] = episode_id
    save_index(task_dir, index)
    return num


def forget_number(task_dir: Path, num: str) -> None:
    """Drop ``num`` from the index (an episode that was never written, or was removed)."""
    index = load_index(task_dir)
    if index.pop(num, None) is not None:
        save_index(task_dir, index)


def remove_robotwin_episode(task_dir: Path, num: str) -> None:
    for rel in (f"qpos/{num}.pt", f"videos/{num}.mp4", f"metas/{num}.txt", f"umt5_wan/{num}.pt"):
        (task_dir / rel).unlink(missing_ok=True)
    forget_number(task_dir, num)


class RobotwinEpisodeWriter(StreamingEpisode):
    """One episode of the RoboTwin layout (``videos/``, ``qpos/``, ``metas/<n>.txt``, ``umt5_wan/<n>.pt``)."""

    SUBDIRS = ("videos", "qpos", "metas", "umt5_wan")

    def __init__(self, task_dir: str | Path, num: str, video_options: VideoOptions = VideoOptions()):
        self.num = num
        super().__init__(task_dir, num, video_options)

    def _check(self, instruction: str, embedding: torch.Tensor | None) -> None:
        if embedding is None:
            raise DatasetError("the RoboTwin layout needs umT5 embeddings (umt5_wan/): pass a text encoder")

    def _write_instruction(self, instruction: str, embedding: torch.Tensor | None) -> tuple[Path, Path | None]:
        metas = self.task_dir / "metas" / f"{self.num}.txt"
        atomic_write_text(metas, instruction + "\n")
        emb_path = self.task_dir / "umt5_wan" / f"{self.num}.pt"
        atomic_torch_save(emb_path, [embedding.detach().cpu().to(torch.bfloat16).contiguous()])
        return metas, emb_path

    def _remove(self) -> None:
        for rel in (f"qpos/{self.num}.pt", f"videos/{self.num}.mp4", f"metas/{self.num}.txt", f"umt5_wan/{self.num}.pt"):
            (self.task_dir / rel).unlink(missing_ok=True)
