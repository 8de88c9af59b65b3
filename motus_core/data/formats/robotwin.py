"""``--format robotwin``: the RoboTwin 2.0 layout (:mod:`motus_core.data.robotwin_layout`); needs embeddings."""
from __future__ import annotations

from pathlib import Path

from motus_core.data.formats import EpisodeSink, OutputFormat, prune_empty_dirs, register_format, safe_name
from motus_core.data.formats.motus import MosaicEpisode
from motus_core.data.robotwin_layout import RobotwinEpisodeWriter, forget_number, number_for, remove_robotwin_episode


class _RobotwinEpisode(MosaicEpisode):
    def abort(self) -> None:
        self.writer.abort()
        forget_number(self.writer.task_dir, self.name)  # a failed episode keeps no number
        prune_empty_dirs(self.writer.task_dir, self.fmt.root)


@register_format
class RobotwinFormat(OutputFormat):
    name = "robotwin"
    description = "RoboTwin 2.0 layout: <split>/<task>/{videos,qpos,metas,umt5_wan}/<n> (umT5 embeddings required)"
    embeddings = "required"

    def task_dir(self, ep) -> Path:
        return self.root / self.cfg.robotwin_split / safe_name(self.cfg.task or ep.meta.task or "task")

    def open_episode(self, ep) -> EpisodeSink:
        task_dir = self.task_dir(ep)
        num = number_for(task_dir, ep.meta.episode_id)
        try:
            writer = RobotwinEpisodeWriter(task_dir, num, self.cfg.video)
        except BaseException:
            forget_number(task_dir, num)
            prune_empty_dirs(task_dir, self.root)
            raise
        return _RobotwinEpisode(self, writer, num)

    def remove(self, entry: dict) -> None:
        task_dir = self.root / entry["task_dir"]
        remove_robotwin_episode(task_dir, entry["name"])
        prune_empty_dirs(task_dir, self.root)

    def outputs_exist(self, entry: dict) -> bool:
        task_dir = self.root / entry["task_dir"]
        return (task_dir / "qpos" / f"{entry['name']}.pt").is_file() and (task_dir / "videos" / f"{entry['name']}.mp4").is_file()
