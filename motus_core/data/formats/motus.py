"""``--format motus``: the Motus real-robot layout (:mod:`motus_core.data.motus_layout`) + ``stat.json``."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from motus_core.data.formats import EpisodeSink, OutputFormat, commanded_actions, prune_empty_dirs, register_format, safe_name
from motus_core.data.motus_layout import EpisodeWriter, StreamingEpisode, atomic_write_text, compute_stats, load_qpos, remove_episode
from motus_core.preprocessing import make_mosaic, write_stats

log = logging.getLogger("motus_convert")


class MosaicEpisode(EpisodeSink):
    """An episode of a mosaic-video layout (Motus, RoboTwin): frames -> T-mosaic -> the layout's writer."""

    def __init__(self, fmt: OutputFormat, writer: StreamingEpisode, name: str, with_actions: bool = False):
        self.fmt = fmt
        self.writer = writer
        self.name = name
        self.with_actions = with_actions  # the layout stores the commanded joints beside qpos

    def add_frame(self, images: Mapping[str, np.ndarray]) -> None:
        self.writer.add_frame(make_mosaic(images["high"], images["left_wrist"], images["right_wrist"]))

    def commit(self, ex, embedding: Any) -> dict:
        actions = commanded_actions(ex, self.fmt.cfg.actions) if self.with_actions else None
        self.writer.commit(ex.qpos, ex.instruction, embedding, actions=actions)
        return {"task_dir": str(self.writer.task_dir.relative_to(self.fmt.root)), "name": self.name,
                "actions": "leader" if actions is not None else "follower"}

    def abort(self) -> None:
        self.writer.abort()
        prune_empty_dirs(self.writer.task_dir, self.fmt.root)


@register_format
class MotusFormat(OutputFormat):
    name = "motus"
    description = "Motus real-robot layout: <task>/{videos,qpos,actions,instructions}/<episode> + stat.json"
    embeddings = "optional"

    def task_dir(self, ep) -> Path:
        return self.root / safe_name(self.cfg.task or ep.meta.task or "task")

    def open_episode(self, ep) -> EpisodeSink:
        eid = ep.meta.episode_id
        return MosaicEpisode(self, EpisodeWriter(self.task_dir(ep), eid, self.cfg.video), eid, with_actions=True)

    def remove(self, entry: dict) -> None:
        task_dir = self.root / entry["task_dir"]
        remove_episode(task_dir, entry["name"])
        prune_empty_dirs(task_dir, self.root)

    def outputs_exist(self, entry: dict) -> bool:
        task_dir = self.root / entry["task_dir"]
        files = [task_dir / "qpos" / f"{entry['name']}.pt", task_dir / "videos" / f"{entry['name']}.mp4"]
        if entry.get("actions") == "leader":
            files.append(task_dir / "actions" / f"{entry['name']}.pt")
        return all(f.is_file() for f in files)

    def finish(self, entries: dict[str, dict], manifest: dict) -> None:
        """Min/max per robot over every converted episode's qpos and actions (official calc_stat), rewritten only if changed.

        A robot whose episodes are all gone loses its entry (only entries this converter wrote).
        """
        by_key: dict[str, list[np.ndarray]] = {}
        episodes: dict[str, int] = {}
        sources: dict[str, set[str]] = {}
        for e in entries.values():
            task_dir = self.root / e["task_dir"]
            arrays = by_key.setdefault(e["stats_key"], [])
            arrays.append(load_qpos(task_dir / "qpos" / f"{e['name']}.pt"))
            if e.get("actions") == "leader":
                arrays.append(load_qpos(task_dir / "actions" / f"{e['name']}.pt"))
            episodes[e["stats_key"]] = episodes.get(e["stats_key"], 0) + 1
            sources.setdefault(e["stats_key"], set()).add(e.get("actions", "follower"))
        for key, used in sorted(sources.items()):
            if len(used) > 1:
                log.warning("robot %r: some episodes train on recorded commands (actions/), others on future follower "
                            "positions (no leader stream recorded): one dataset should use one kind of target", key)
        path = self.root / "stat.json"
        current = json.loads(path.read_text()) if path.is_file() else {}
        for key, arrays in sorted(by_key.items()):
            norm, extra = compute_stats(arrays, name=key, file_count=episodes[key])
            old = current.get(key, {})
            if old.get("min") == norm.min.tolist() and old.get("max") == norm.max.tolist() and old.get("file_count") == episodes[key]:
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
