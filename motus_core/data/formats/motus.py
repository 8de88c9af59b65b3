"""``--format motus``: the Motus real-robot layout (:mod:`motus_core.data.motus_layout`) + ``stat.json``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from motus_core.data.formats import EpisodeSink, OutputFormat, prune_empty_dirs, register_format, safe_name
from motus_core.data.motus_layout import EpisodeWriter, StreamingEpisode, atomic_write_text, compute_stats, load_qpos, remove_episode
from motus_core.preprocessing import make_mosaic, write_stats


class MosaicEpisode(EpisodeSink):
    """An episode of a mosaic-video layout (Motus, RoboTwin): frames -> T-mosaic -> the layout's writer."""

    def __init__(self, fmt: OutputFormat, writer: StreamingEpisode, name: str):
        self.fmt = fmt
        self.writer = writer
        self.name = name

    def add_frame(self, images: Mapping[str, np.ndarray]) -> None:
        self.writer.add_frame(make_mosaic(images["high"], images["left_wrist"], images["right_wrist"]))

    def commit(self, ex, embedding: Any) -> dict:
        self.writer.commit(ex.qpos, ex.instruction, embedding)
        return {"task_dir": str(self.writer.task_dir.relative_to(self.fmt.root)), "name": self.name}

    def abort(self) -> None:
        self.writer.abort()
        prune_empty_dirs(self.writer.task_dir, self.fmt.root)


@register_format
class MotusFormat(OutputFormat):
    name = "motus"
    description = "Motus real-robot layout: <task>/{videos,qpos,instructions}/<episode> + stat.json"
    embeddings = "optional"

    def task_dir(self, ep) -> Path:
        return self.root / safe_name(self.cfg.task or ep.meta.task or "task")

    def open_episode(self, ep) -> EpisodeSink:
        eid = ep.meta.episode_id
        return MosaicEpisode(self, EpisodeWriter(self.task_dir(ep), eid, self.cfg.video), eid)

    def remove(self, entry: dict) -> None:
        task_dir = self.root / entry["task_dir"]
        remove_episode(task_dir, entry["name"])
        prune_empty_dirs(task_dir, self.root)

    def outputs_exist(self, entry: dict) -> bool:
        task_dir = self.root / entry["task_dir"]
        return (task_dir / "qpos" / f"{entry['name']}.pt").is_file() and (task_dir / "videos" / f"{entry['name']}.mp4").is_file()

    def finish(self, entries: dict[str, dict], manifest: dict) -> None:
        """Min/max per robot over every converted episode (official calc_stat), rewritten only if changed.

        A robot whose episodes are all gone loses its entry (only entries this converter wrote).
        """
        by_key: dict[str, list[np.ndarray]] = {}
        for e in entries.values():
            by_key.setdefault(e["stats_key"], []).append(load_qpos(self.root / e["task_dir"] / "qpos" / f"{e['name']}.pt"))
        path = self.root / "stat.json"
        current = json.loads(path.read_text()) if path.is_file() else {}
        for key, arrays in sorted(by_key.items()):
            norm, extra = compute_stats(arrays, name=key)
            old = current.get(key, {})
            if old.get("min") == norm.min.tolist() and old.get("max") == norm.max.tolist() and old.get("file_count") == len(arrays):
                continue
            write_stats(path, key, norm, **extra)
        stale = [k for k in manifest.get("stats_keys", []) if k not in by_key and k in current]
        if stale:
            current = json.loads(path.read_text())
            for k in stale:
                current.pop(k)
            if current:
                atomic_write_text(path, json.dumps(current, indent=4))
            else:
                path.unlink()
        manifest["stats_keys"] = sorted(by_key)
