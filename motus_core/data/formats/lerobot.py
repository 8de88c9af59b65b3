"""``--format lerobot``: one LeRobot v3.0 dataset (:mod:`motus_core.data.lerobot_v3`), rebuilt when its inputs change."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from motus_core.data.formats import EpisodeSink, OutputFormat, commanded_actions, register_format

CAMERA_ROLES = ("high", "left_wrist", "right_wrist")


class _LeRobotEpisode(EpisodeSink):
    def __init__(self, fmt: "LeRobotFormat", ep):
        self.fmt = fmt
        self.ep = ep
        self.staged = None  # LeRobotEpisode, begun with the first frame (its sizes fix the dataset's features)

    def add_frame(self, images: Mapping[str, np.ndarray]) -> None:
        if self.staged is None:
            self.staged = self.fmt.writer_for(self.ep, images).begin_episode(self.ep.meta.episode_id)
        self.staged.add_frame(images)

    def commit(self, ex, embedding: Any) -> dict:
        if self.staged is None:
            raise ValueError(f"LeRobot episode {ex.episode_id}: no frames")
        # LeRobot "action" = what the teleoperator commanded (leader); without one (or with
        # --actions follower), the follower's next position (the Motus convention of future qpos).
        action = commanded_actions(ex, self.fmt.cfg.actions)
        if action is None:
            action = np.concatenate([ex.qpos[1:], ex.qpos[-1:]])
        self.staged.commit(ex.qpos, action, ex.instruction)
        return {"name": ex.episode_id}

    def abort(self) -> None:
        if self.staged is not None:
            self.staged.abort()


@register_format
class LeRobotFormat(OutputFormat):
    name = "lerobot"
    description = "LeRobot v3.0 dataset (parquet shards + one H.264 video per camera, state/action/task)"
    embeddings = "none"
    rebuild = True

    def __init__(self, cfg, root):
        super().__init__(cfg, root)
        self.writer = None

    def writer_for(self, ep, images: Mapping[str, np.ndarray]):
        """The dataset writer, created with the first frame of the first episode."""
        if self.writer is None:
            from motus_core.data.lerobot_v3 import LeRobotV3Writer

            meta = ep.meta
            hw = {r: images[r].shape[:2] for r in images}
            if not hw:
                cams = meta.profile.get("cameras", {})
                hw = {r: (int(c["height"]), int(c["width"])) for r, c in cams.items() if r in CAMERA_ROLES}
            self.writer = LeRobotV3Writer(self.root, fps=self.cfg.sync.fps, robot_type=meta.robot,
                                          joint_names=meta.profile["joint_names"], camera_hw=hw,
                                          video_options=self.cfg.video)
        return self.writer

    def open_episode(self, ep) -> EpisodeSink:
        return _LeRobotEpisode(self, ep)

    def outputs_exist(self, entry: dict) -> bool:
        return (self.root / "meta" / "info.json").is_file()  # rebuilt format: the entry is the dataset's manifest

    def finish(self, entries: dict[str, dict], manifest: dict) -> None:
        if self.writer is not None and self.writer.episodes:
            self.writer.finalize()
        else:
            self.root.mkdir(parents=True, exist_ok=True)
