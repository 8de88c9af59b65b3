"""A LeRobot v3.0 dataset written with pyarrow + PyAV (no ``lerobot`` dependency).

Layout (facts from huggingface/lerobot ``datasets/utils.py`` and ``docs/source/lerobot-dataset-v3.mdx``)::

    meta/info.json                                   codebase_version "v3.0", fps, features, path templates
    meta/stats.json                                  per feature: min, max, mean, std, count (+ q01..q99)
    meta/tasks.parquet                               task_index, indexed by the task string ("task")
    meta/episodes/chunk-000/file-000.parquet         per episode: length, tasks, data/video offsets, stats/*
    data/chunk-{c:03d}/file-{f:03d}.parquet          one row per frame, many episodes per file
    videos/{video_key}/chunk-{c:03d}/file-{f:03d}.mp4  many episodes per file, located by from/to_timestamp

Features: ``observation.state`` (follower qpos), ``action`` (leader arms = what the teleoperator
commanded; the follower's next qpos when no leader was recorded), one ``observation.images.cam_*``
video per camera at its native size, and the standard ``timestamp`` (``frame_index / fps``),
``frame_index``, ``episode_index``, ``index``, ``task_index``.

Each episode is encoded to per-camera staging files while it is converted; ``finalize`` remuxes them
(no re-encoding) into the shards, so an episode that turns out to be unusable is simply dropped.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from motus_core.data.video import VideoOptions, VideoWriter

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILE_SIZE_MB = 100
VIDEO_FILE_SIZE_MB = 500
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CAMERA_KEYS = {"high": "observation.images.cam_high", "left_wrist": "observation.images.cam_left_wrist",
               "right_wrist": "observation.images.cam_right_wrist"}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_STATS_EVERY = 10  # every n-th frame (downsampled 4x) enters the image statistics


def _next_index(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def _vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for q in QUANTILES:
        out[f"q{int(round(q * 100)):02d}"] = np.quantile(x, q, axis=0)
    return out


class _ImageStats:
    """Per-channel statistics of sampled frames, in [0, 1], shaped [3, 1, 1] as LeRobot stores them."""

    def __init__(self):
        self.samples: list[np.ndarray] = []

    def add(self, img: np.ndarray) -> None:
        self.samples.append(img[::4, ::4].reshape(-1, 3).astype(np.float32) / 255.0)

    def stats(self) -> dict[str, np.ndarray]:
        px = np.concatenate(self.samples) if self.samples else np.zeros((1, 3), np.float32)
        out = {"min": px.min(0), "max": px.max(0), "mean": px.mean(0, dtype=np.float64), "std": px.std(0, dtype=np.float64),
               "count": np.array([len(self.samples)])}
        for q in QUANTILES:
            out[f"q{int(round(q * 100)):02d}"] = np.quantile(px, q, axis=0)
        return {k: (v.reshape(3, 1, 1) if k != "count" else v) for k, v in out.items()}


def _aggregate(per_episode: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Dataset statistics from episode statistics (exact for min/max/mean/std, count-weighted quantiles)."""
    counts = np.array([float(s["count"][0]) for s in per_episode])
    w = counts / counts.sum()
    means = np.stack([s["mean"] for s in per_episode])
    mean = np.tensordot(w, means, axes=1)
    var = np.tensordot(w, np.stack([s["std"] ** 2 for s in per_episode]) + (means - mean) ** 2, axes=1)
    out = {"min": np.min(np.stack([s["min"] for s in per_episode]), 0), "max": np.max(np.stack([s["max"] for s in per_episode]), 0),
           "mean": mean, "std": np.sqrt(var), "count": np.array([int(counts.sum())])}
    for key in per_episode[0]:
        if key.startswith("q"):
            out[key] = np.tensordot(w, np.stack([s[key] for s in per_episode]), axes=1)
    return out


def _jsonable(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


@dataclass
class _StagedEpisode:
    task: str
    length: int
    state: np.ndarray
    action: np.ndarray
    videos: dict[str, Path]  # video key -> staging mp4
    image_stats: dict[str, dict[str, np.ndarray]]


class LeRobotEpisode:
    """One episode being staged: ``add_frame`` per frame, then ``commit`` or ``abort``."""

    def __init__(self, writer: "LeRobotV3Writer", name: str):
        self.writer = writer
        self.name = name
        self.paths = {key: writer.staging / f"{name}.{key}.mp4" for key in writer.camera_keys.values()}
        self.videos = {key: VideoWriter(p, writer.video_options) for key, p in self.paths.items()}
        self.image_stats = {key: _ImageStats() for key in writer.camera_keys.values()}
        self.frames = 0

    def add_frame(self, images: Mapping[str, np.ndarray]) -> None:
        for role, key in self.writer.camera_keys.items():
            self.videos[key].write(images[role])
            if self.frames % IMAGE_STATS_EVERY == 0:
                self.image_stats[key].add(images[role])
        self.frames += 1

    def commit(self, state: np.ndarray, action: np.ndarray, task: str) -> None:
        state = np.asarray(state, dtype=np.float32)
        action = np.asarray(action, dtype=np.float32)
        if state.shape != (self.frames, self.writer.dof) or action.shape != state.shape:
            self.abort()
            raise ValueError(f"LeRobot episode {self.name}: {self.frames} frames but state {state.shape} / action {action.shape}")
        for v in self.videos.values():
            v.close()
        self.writer._staged.append(_StagedEpisode(task, self.frames, state, action, dict(self.paths),
                                                  {k: s.stats() for k, s in self.image_stats.items()}))

    def abort(self) -> None:
        for v in self.videos.values():
            v.abort()


class LeRobotV3Writer:
    """Builds a LeRobot v3.0 dataset in ``root`` (which must not exist or be empty)."""

    def __init__(self, root: str | Path, *, fps: int, robot_type: str, joint_names: Sequence[str],
                 camera_hw: Mapping[str, tuple[int, int]], video_options: VideoOptions = VideoOptions()):
        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()):
            raise FileExistsError(f"{self.root} is not empty")
        self.fps = int(fps)
        self.robot_type = robot_type
        self.joint_names = list(joint_names)
        self.dof = len(self.joint_names)
        self.camera_keys = {role: CAMERA_KEYS[role] for role in camera_hw}
        self.camera_hw = {CAMERA_KEYS[r]: tuple(hw) for r, hw in camera_hw.items()}
        self.video_options = VideoOptions(fps=self.fps, crf=video_options.crf, preset=video_options.preset,
                                          gop=video_options.gop, threads=video_options.threads)
        self.staging = self.root / ".staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        self._staged: list[_StagedEpisode] = []

    def begin_episode(self, name: str) -> LeRobotEpisode:
        return LeRobotEpisode(self, name)

    @property
    def episodes(self) -> int:
        return len(self._staged)

    # ----------------------------------------------------------------------------- finalize

    def features(self) -> dict:
        feats: dict[str, dict] = {
            "observation.state": {"dtype": "float32", "shape": [self.dof], "names": self.joint_names},
            "action": {"dtype": "float32", "shape": [self.dof], "names": self.joint_names},
        }
        for key, (h, w) in self.camera_hw.items():
            feats[key] = {
                "dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                "info": {"video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": "yuv420p",
                         "video.is_depth_map": False, "video.fps": self.fps, "video.channels": 3, "has_audio": False},
            }
        feats["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        for k in ("frame_index", "episode_index", "index", "task_index"):
            feats[k] = {"dtype": "int64", "shape": [1], "names": None}
        return feats

    def finalize(self) -> dict:
        """Write shards and metadata; returns ``info.json``'s content."""
        if not self._staged:
            raise ValueError("no episodes to write")
        tasks: dict[str, int] = {}
        for ep in self._staged:
            tasks.setdefault(ep.task, len(tasks))
        video_locs = self._write_videos()
        data_locs = self._write_data(tasks)
        ep_stats = self._write_episodes(tasks, data_locs, video_locs)
        self._write_tasks(tasks)
        stats = {k: _aggregate([s[k] for s in ep_stats]) for k in ep_stats[0]}
        (self.root / "meta" / "stats.json").write_text(json.dumps(_jsonable(stats), indent=4))
        total = sum(ep.length for ep in self._staged)
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
            "total_episodes": len(self._staged), "total_frames": total, "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_SIZE_MB,
            "video_files_size_in_mb": VIDEO_FILE_SIZE_MB, "fps": self.fps,
            "splits": {"train": f"0:{len(self._staged)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
            "features": self.features(),
        }
        (self.root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
        shutil.rmtree(self.staging, ignore_errors=True)
        return info

    def _write_videos(self) -> list[dict[str, tuple[int, int, float, float]]]:
        """Remux staged episodes into shards; per episode and key: (chunk, file, from_ts, to_ts)."""
        locs: list[dict] = [dict() for _ in self._staged]
        for key in self.camera_hw:
            chunk = file = 0
            out = ost = None
            offset_s = 0.0
            size = 0
            for i, ep in enumerate(self._staged):
                src = ep.videos[key]
                if out is not None and size + src.stat().st_size > VIDEO_FILE_SIZE_MB * 2**20:
                    out.close()
                    out = None
                    chunk, file = _next_index(chunk, file)
                if out is None:
                    path = self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    out, ost, offset_s, size = av.open(str(path), "w", format="mp4"), None, 0.0, 0
                with av.open(str(src)) as inp:
                    ist = inp.streams.video[0]
                    if ost is None:
                        ost = out.add_stream_from_template(ist)
                    shift = int(round(offset_s / float(ist.time_base)))
                    for pkt in inp.demux(ist):
                        if pkt.dts is None:
                            continue
                        pkt.pts += shift
                        pkt.dts += shift
                        pkt.stream = ost
                        out.mux(pkt)
                duration = ep.length / self.fps
                locs[i][key] = (chunk, file, offset_s, offset_s + duration)
                offset_s += duration
                size += src.stat().st_size
            if out is not None:
                out.close()
        return locs

    def _write_data(self, tasks: Mapping[str, int]) -> list[tuple[int, int, int, int]]:
        """Frame rows; per episode (chunk, file, dataset_from_index, dataset_to_index)."""
        locs = []
        chunk = file = 0
        pending: list[pa.Table] = []
        pending_bytes = 0
        index = 0

        def flush():
            nonlocal pending, pending_bytes
            if pending:
                path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.concat_tables(pending), path)
                pending, pending_bytes = [], 0

        vec = pa.list_(pa.float32(), self.dof)
        for e, ep in enumerate(self._staged):
            n = ep.length
            table = pa.table({
                "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(ep.state.reshape(-1)), self.dof),
                "action": pa.FixedSizeListArray.from_arrays(pa.array(ep.action.reshape(-1)), self.dof),
                "timestamp": pa.array((np.arange(n) / self.fps).astype(np.float32)),
                "frame_index": pa.array(np.arange(n, dtype=np.int64)),
                "episode_index": pa.array(np.full(n, e, dtype=np.int64)),
                "index": pa.array(np.arange(index, index + n, dtype=np.int64)),
                "task_index": pa.array(np.full(n, tasks[ep.task], dtype=np.int64)),
            })
            assert table.schema.field("observation.state").type == vec
            if pending and pending_bytes + table.nbytes > DATA_FILE_SIZE_MB * 2**20:
                flush()
                chunk, file = _next_index(chunk, file)
            pending.append(table)
            pending_bytes += table.nbytes
            locs.append((chunk, file, index, index + n))
            index += n
        flush()
        return locs

    def _episode_stats(self, e: int, ep: _StagedEpisode, task_index: int, first_index: int) -> dict[str, dict]:
        n = ep.length
        stats = {
            "observation.state": _vector_stats(ep.state),
            "action": _vector_stats(ep.action),
            "timestamp": _vector_stats(np.arange(n) / self.fps),
            "frame_index": _vector_stats(np.arange(n)),
            "episode_index": _vector_stats(np.full(n, e)),
            "index": _vector_stats(np.arange(first_index, first_index + n)),
            "task_index": _vector_stats(np.full(n, task_index)),
        }
        stats.update(ep.image_stats)
        return stats

    def _write_episodes(self, tasks, data_locs, video_locs) -> list[dict]:
        rows: dict[str, list] = {}
        all_stats = []
        for e, ep in enumerate(self._staged):
            dchunk, dfile, start, end = data_locs[e]
            row = {"episode_index": e, "tasks": [ep.task], "length": ep.length,
                   "data/chunk_index": dchunk, "data/file_index": dfile,
                   "dataset_from_index": start, "dataset_to_index": end}
            for key, (vc, vf, t0, t1) in video_locs[e].items():
                row[f"videos/{key}/chunk_index"] = vc
                row[f"videos/{key}/file_index"] = vf
                row[f"videos/{key}/from_timestamp"] = t0
                row[f"videos/{key}/to_timestamp"] = t1
            stats = self._episode_stats(e, ep, tasks[ep.task], start)
            all_stats.append(stats)
            for feat, d in stats.items():
                for s, v in d.items():
                    row[f"stats/{feat}/{s}"] = np.asarray(v).tolist()
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            for k, v in row.items():
                rows.setdefault(k, []).append(v)
        path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(rows), path)
        return all_stats

    def _write_tasks(self, tasks: Mapping[str, int]) -> None:
        # pandas reads this back with "task" as the index (lerobot: DataFrame({"task_index": ...}, index=tasks))
        names = list(tasks)
        table = pa.table({"task_index": pa.array([tasks[t] for t in names], pa.int64()), "task": pa.array(names, pa.string())})
        pandas_meta = {
            "index_columns": ["task"],
            "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                                "metadata": {"encoding": "UTF-8"}}],
            "columns": [
                {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
            ],
            "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0",
        }
        table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
        path = self.root / "meta" / "tasks.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)


def read_lerobot_episode(root: str | Path, episode_index: int) -> dict:
    """Read one episode back (state, action, timestamps, per-camera frames): used by tests and checks."""
    from motus_core.data.video import read_frames

    root = Path(root)
    info = json.loads((root / "meta" / "info.json").read_text())
    eps = pq.read_table(root / EPISODES_PATH.format(chunk_index=0, file_index=0)).to_pylist()
    ep = next(r for r in eps if r["episode_index"] == episode_index)
    data = pq.read_table(root / DATA_PATH.format(chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"]))
    rows = data.filter(pc.equal(data["episode_index"], episode_index))
    out = {
        "state": np.asarray(rows["observation.state"].to_pylist(), np.float32),
        "action": np.asarray(rows["action"].to_pylist(), np.float32),
        "timestamp": np.asarray(rows["timestamp"].to_pylist(), np.float32),
        "task": ep["tasks"][0],
        "length": ep["length"],
        "images": {},
    }
    fps = info["fps"]
    for key, ft in info["features"].items():
        if ft["dtype"] != "video":
            continue
        path = root / info["video_path"].format(video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"], file_index=ep[f"videos/{key}/file_index"])
        first = int(round(ep[f"videos/{key}/from_timestamp"] * fps))
        out["images"][key] = read_frames(path, list(range(first, first + ep["length"])))
    return out
