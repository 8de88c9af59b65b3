"""The Motus real-robot dataset layout (official ``data/ac_one``, ``data/aloha_agilex_2`` loaders).

::

    <root>/<task>/videos/<id>.mp4         T-shaped three-camera mosaic, 30 fps (H.264 here)
    <root>/<task>/qpos/<id>.pt            torch float32 [T, 14], row t = follower joints at video frame t
    <root>/<task>/actions/<id>.pt         optional, torch float32 [T, 14], row t = the commanded joints
                                          (leader arms / command stream) as of video frame t
    <root>/<task>/instructions/<id>.txt   the instruction (whole file)
    <root>/<task>/instructions/<id>.pt    its umT5 embedding, tensor [L, D] (D = 4096 for Wan2.2's umT5-XXL)
    <root>/stat.json                      min/max per robot (official structure, ``preprocessing.write_stats``)

The official loaders also accept one ``<name>.txt`` + ``<name>.pt`` for all episodes of a task, or
``<task_name>.txt/.pt``, or embeddings in ``umt5_wan/``; ``resolve_instruction`` follows the same
order, and the RoboTwin layout (``metas/`` + ``umt5_wan/`` lists) is read too.

``actions/`` is this project's addition. The official loaders train on future *measured* qpos
(``action_sequence = qpos[c+1 .. c+K]``). With ``actions/<id>.pt`` the reader takes the targets from
it instead (same indices), and the state stays the measured qpos. Why: a gripper closed on an object
is measured where the object stops it, not where it was commanded, so replaying measured joints holds
nothing (``bench/replay_targets.py``: 0/10 transfers against 10/10 for the commands); ALOHA/LeRobot
train on the leader arm, and the official RoboTwin converter stores the *commanded* joint vector as
qpos for the same reason. Loaders that do not know ``actions/`` ignore it.

Writes are atomic (temp file + rename) and the qpos file is renamed last, so an interrupted write
never leaves an episode that a loader would pick up half-written.
"""
from __future__ import annotations

import abc

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from motus_core.preprocessing import MinMaxNormalizer, write_stats
from motus_core.data.video import VideoOptions, VideoWriter, VideoError

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class DatasetError(ValueError):
    """A dataset directory or episode that does not have the expected layout or content."""


def check_episode_id(episode_id: str) -> str:
    if not isinstance(episode_id, str) or not _SAFE_ID.match(episode_id) or episode_id.endswith((".tmp", ".pt", ".mp4")):
        raise DatasetError(f"episode id {episode_id!r} is not a safe file stem (letters, digits, '_', '-', '.')")
    return episode_id


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = _tmp(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def atomic_torch_save(path: Path, obj) -> None:
    tmp = _tmp(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_qpos(qpos, dim: int | None = 14, what: str = "qpos") -> np.ndarray:
    q = qpos.detach().cpu().numpy() if isinstance(qpos, torch.Tensor) else np.asarray(qpos)
    if q.ndim != 2 or q.shape[0] < 1 or (dim is not None and q.shape[1] != dim):
        raise DatasetError(f"{what} must be [T, {dim or 'D'}] with T >= 1, got shape {q.shape}")
    if not np.all(np.isfinite(q)):
        bad = np.argwhere(~np.isfinite(q))[0].tolist()
        raise DatasetError(f"{what} contains NaN/inf (first at row {bad[0]}, column {bad[1]})")
    return q.astype(np.float32, copy=False)


@dataclass(frozen=True)
class EpisodeFiles:
    video: Path
    qpos: Path
    instruction: Path
    embedding: Path | None
    frames: int
    actions: Path | None = None


class StreamingEpisode(abc.ABC):
    """What every layout writer shares: stream mosaics into a temp video, then ``commit`` or ``abort``.

    The video is encoded while frames arrive (an episode is never held in memory). ``commit`` checks
    the frame count against ``qpos`` (and the layout's own rules), then renames everything into
    place with qpos last, so loaders (which look for qpos) never see a half-written episode.
    Subclasses name the folders (``SUBDIRS``), write the instruction files and remove an episode.
    """

    SUBDIRS: tuple[str, ...] = ("videos", "qpos")

    def __init__(self, task_dir: str | Path, stem: str, video_options: VideoOptions = VideoOptions()):
        self.task_dir = Path(task_dir)
        self.stem = stem
        for sub in self.SUBDIRS:
            (self.task_dir / sub).mkdir(parents=True, exist_ok=True)
        self.video = self.task_dir / "videos" / f"{stem}.mp4"
        self.qpos_path = self.task_dir / "qpos" / f"{stem}.pt"
        self.actions_path = self.task_dir / "actions" / f"{stem}.pt"
        # an older version of this episode disappears from loaders before anything is rewritten
        self.qpos_path.unlink(missing_ok=True)
        self._tmp_video = _tmp(self.video)
        self._writer = VideoWriter(self._tmp_video, video_options)

    @property
    def frames(self) -> int:
        return self._writer.frames_written

    def add_frame(self, mosaic: np.ndarray) -> None:
        self._writer.write(mosaic)

    def _check(self, instruction: str, embedding: torch.Tensor | None) -> None:
        """Layout-specific checks of the instruction and its embedding (raise DatasetError)."""

    @abc.abstractmethod
    def _write_instruction(self, instruction: str, embedding: torch.Tensor | None) -> tuple[Path, Path | None]:
        """Write the instruction (and embedding) files; return their paths."""

    @abc.abstractmethod
    def _remove(self) -> None:
        """Delete every file of this episode."""

    def commit(self, qpos, instruction: str, embedding: torch.Tensor | None = None, actions=None) -> EpisodeFiles:
        """``actions``: the commanded joints per frame (``[T, 14]`` like ``qpos``), or None for none."""
        try:
            q = check_qpos(qpos)
            a = None
            if actions is not None:
                a = check_qpos(actions, what=f"episode {self.stem} actions")
                if a.shape != q.shape:
                    raise DatasetError(f"episode {self.stem}: actions have shape {a.shape}, qpos {q.shape}")
            if not isinstance(instruction, str) or not instruction.strip():
                raise DatasetError(f"episode {self.stem}: empty instruction")
            self._check(instruction, embedding)
            if self.frames != len(q):
                raise DatasetError(f"episode {self.stem}: {self.frames} video frames but {len(q)} qpos rows")
            self._writer.close()
        except BaseException:
            self.abort()
            raise
        os.replace(self._tmp_video, self.video)
        text_path, emb_path = self._write_instruction(instruction.strip(), embedding)
        if a is not None:
            self.actions_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(self.actions_path, torch.from_numpy(np.ascontiguousarray(a)))
        else:  # a rewrite without actions must not leave an older episode's targets behind
            self.actions_path.unlink(missing_ok=True)
        atomic_torch_save(self.qpos_path, torch.from_numpy(np.ascontiguousarray(q)))
        return EpisodeFiles(video=self.video, qpos=self.qpos_path, instruction=text_path, embedding=emb_path, frames=len(q),
                            actions=self.actions_path if a is not None else None)

    def abort(self) -> None:
        self._writer.abort()
        self._remove()


class EpisodeWriter(StreamingEpisode):
    """One episode of the Motus real-robot layout (``videos/``, ``qpos/``, ``instructions/<id>.txt|.pt``)."""

    SUBDIRS = ("videos", "qpos", "instructions")

    def __init__(self, task_dir: str | Path, episode_id: str, video_options: VideoOptions = VideoOptions()):
        self.episode_id = check_episode_id(episode_id)
        super().__init__(task_dir, episode_id, video_options)
        self.text_path = self.task_dir / "instructions" / f"{episode_id}.txt"
        self.emb_path = self.task_dir / "instructions" / f"{episode_id}.pt"

    def _check(self, instruction: str, embedding: torch.Tensor | None) -> None:
        if embedding is not None and (not isinstance(embedding, torch.Tensor) or embedding.ndim != 2 or embedding.shape[0] < 1):
            raise DatasetError(f"episode {self.episode_id}: embedding must be a tensor [L, D], got {getattr(embedding, 'shape', type(embedding))}")

    def _write_instruction(self, instruction: str, embedding: torch.Tensor | None) -> tuple[Path, Path | None]:
        atomic_write_text(self.text_path, instruction + "\n")
        if embedding is None:
            self.emb_path.unlink(missing_ok=True)
            return self.text_path, None
        atomic_torch_save(self.emb_path, embedding.detach().cpu().contiguous())
        return self.text_path, self.emb_path

    def _remove(self) -> None:
        remove_episode(self.task_dir, self.episode_id)


def write_episode(
    task_dir: str | Path,
    episode_id: str,
    mosaic_frames: Iterable[np.ndarray],
    qpos,
    instruction: str,
    embedding: torch.Tensor | None = None,
    *,
    actions=None,
    video_options: VideoOptions = VideoOptions(),
) -> EpisodeFiles:
    """Write one episode into ``task_dir`` in the Motus real-robot layout.

    ``mosaic_frames``: uint8 RGB mosaics ``[T, H, W, 3]`` (array or iterable, streamed to the encoder);
    ``qpos``: ``[T, 14]`` follower joint positions aligned with the frames; ``embedding``: the
    instruction's umT5 embedding ``[L, D]`` (optional); ``actions``: ``[T, 14]`` commanded joints
    (optional, the training targets when present). Raises ``DatasetError`` if the frame count
    differs from ``len(qpos)``; nothing of the episode is left behind then.
    """
    check_episode_id(episode_id)
    q = check_qpos(qpos, what=f"episode {episode_id} qpos")
    writer = EpisodeWriter(task_dir, episode_id, video_options)
    try:
        for frame in mosaic_frames:
            if writer.frames >= len(q):
                raise DatasetError(f"episode {episode_id}: more video frames than qpos rows ({len(q)})")
            writer.add_frame(frame)
    except BaseException:
        writer.abort()
        raise
    return writer.commit(q, instruction, embedding, actions=actions)


def remove_episode(task_dir: str | Path, episode_id: str) -> None:
    """Delete an episode's files (qpos first, so it disappears from loaders at once)."""
    task_dir = Path(task_dir)
    for rel in (f"qpos/{episode_id}.pt", f"actions/{episode_id}.pt", f"videos/{episode_id}.mp4", f"instructions/{episode_id}.txt",
                f"instructions/{episode_id}.pt"):
        (task_dir / rel).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class EpisodeRef:
    """One episode of a dataset on disk."""

    task: str
    episode_id: str
    task_dir: Path
    video: Path
    qpos: Path
    actions: Path | None = None  # the commanded joints, when the dataset has them (training targets)

    @property
    def name(self) -> str:
        return f"{self.task}/{self.episode_id}"


def _numeric_first(stem: str):
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def _is_task_dir(d: Path) -> bool:
    if not ((d / "videos").is_dir() and (d / "qpos").is_dir()):
        return False
    return (d / "instructions").is_dir() or (d / "umt5_wan").is_dir()


def find_task_dirs(root: str | Path) -> list[Path]:
    """Task folders under ``root`` (recursive, ``*_bak`` skipped, as the official loaders do)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset directory not found: {root}")
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.endswith("_bak") and not d.startswith("."))
        d = Path(dirpath)
        if _is_task_dir(d):
            out.append(d)
            dirnames[:] = [x for x in dirnames if x not in ("videos", "qpos", "actions", "instructions", "umt5_wan", "metas")]
    return out


def find_episodes(root: str | Path) -> list[EpisodeRef]:
    """Every episode (qpos file with a matching video) of every task folder under ``root``."""
    refs = []
    for task_dir in find_task_dirs(root):
        for q in sorted((task_dir / "qpos").glob("*.pt"), key=lambda p: _numeric_first(p.stem)):
            video = task_dir / "videos" / f"{q.stem}.mp4"
            if video.is_file():
                actions = task_dir / "actions" / q.name
                refs.append(EpisodeRef(task=task_dir.name, episode_id=q.stem, task_dir=task_dir, video=video, qpos=q,
                                       actions=actions if actions.is_file() else None))
    return refs


def load_qpos(path: str | Path) -> np.ndarray:
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(data, torch.Tensor):
        return data.float().numpy()
    return np.asarray(data, dtype=np.float32)


def load_targets(ref: EpisodeRef, qpos: np.ndarray | None = None) -> np.ndarray:
    """An episode's action targets per frame: ``actions/`` when it has them, else its qpos (official).

    The actions must have exactly the qpos' shape (one row per video frame): anything else is a
    ``DatasetError``, never a silently shifted target.
    """
    q = load_qpos(ref.qpos) if qpos is None else qpos
    if ref.actions is None:
        return q
    a = load_qpos(ref.actions)
    if a.shape != q.shape:
        raise DatasetError(f"episode {ref.name}: actions have shape {a.shape}, qpos {q.shape}")
    return a


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def _single_pair(d: Path) -> tuple[Path | None, Path | None]:
    txts = sorted(d.glob("*.txt"))
    pts = sorted(d.glob("*.pt"))
    return (txts[0] if len(txts) == 1 else None), (pts[0] if len(pts) == 1 else None)


@dataclass(frozen=True)
class InstructionSource:
    """Where an episode's instruction text and umT5 embedding come from."""

    texts: tuple[str, ...]
    embedding: Path | None
    # RoboTwin stores a list of embeddings, one per ``metas`` line; the loader picks one at random
    # and uses the text line with the same index.
    embedding_is_list: bool = False


def resolve_instruction(ref: EpisodeRef) -> InstructionSource:
    """Instruction text(s) and embedding file of an episode, in the official loaders' order."""
    d = ref.task_dir / "instructions"
    eid, task = ref.episode_id, ref.task
    if d.is_dir():
        text = emb = None
        if (d / f"{eid}.txt").is_file():
            text = d / f"{eid}.txt"
        elif (d / f"{task}.txt").is_file():
            text = d / f"{task}.txt"
        if (d / f"{eid}.pt").is_file():
            emb = d / f"{eid}.pt"
        elif (d / f"{task}.pt").is_file():
            emb = d / f"{task}.pt"
        if text is None or emb is None:
            one_txt, one_pt = _single_pair(d)
            text = text or one_txt
            emb = emb or one_pt
        if emb is None and (ref.task_dir / "umt5_wan").is_dir():
            cand = ref.task_dir / "umt5_wan" / f"{eid}.pt"
            emb = cand if cand.is_file() else _single_pair(ref.task_dir / "umt5_wan")[1]
        if text is None:
            raise DatasetError(f"episode {ref.name}: no instruction text in {d}")
        return InstructionSource(texts=(_read_text(text),), embedding=emb)
    metas = ref.task_dir / "metas" / f"{eid}.txt"
    emb = ref.task_dir / "umt5_wan" / f"{eid}.pt"
    if metas.is_file():
        lines = tuple(x.strip() for x in metas.read_text(encoding="utf-8").splitlines() if x.strip())
        if not lines:
            raise DatasetError(f"episode {ref.name}: {metas} has no instruction")
        return InstructionSource(texts=lines, embedding=emb if emb.is_file() else None, embedding_is_list=True)
    raise DatasetError(f"episode {ref.name}: no instructions/ or metas/ entry")


def load_embedding(path: Path, rng=None) -> tuple[torch.Tensor, int]:
    """A ``[L, D]`` embedding from a .pt file (tensor ``[L, D]``, ``[1, L, D]``, or a list: random pick)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    index = 0
    if isinstance(data, (list, tuple)):
        if not data:
            raise DatasetError(f"{path}: empty embedding list")
        index = rng.randrange(len(data)) if rng is not None else 0
        data = data[index]
    if not isinstance(data, torch.Tensor):
        raise DatasetError(f"{path}: expected a tensor or a list of tensors, got {type(data).__name__}")
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise DatasetError(f"{path}: embedding must be [L, D], got {tuple(data.shape)}")
    return data, index


# ------------------------------------------------------------------------------------------- stats


def compute_stats(qpos_arrays: Sequence[np.ndarray], name: str = "", file_count: int | None = None) -> tuple[MinMaxNormalizer, dict]:
    """Per-dimension min/max over all rows of all arrays (official ``calc_stat.py``) + its extra fields.

    One normaliser serves the state (qpos) and the targets, so datasets with ``actions/`` pass both
    arrays of each episode (``file_count``: the episodes).
    """
    if not qpos_arrays:
        raise DatasetError("cannot compute statistics of zero episodes")
    t0 = time.perf_counter()
    mins = np.min([np.min(q, axis=0) for q in qpos_arrays], axis=0)
    maxs = np.max([np.max(q, axis=0) for q in qpos_arrays], axis=0)
    n = len(qpos_arrays) if file_count is None else int(file_count)
    extra = {
        "file_count": n,
        "total_files_scanned": n,
        "processing_time_seconds": time.perf_counter() - t0,
        "num_processes_used": 1,
    }
    return MinMaxNormalizer(mins.tolist(), maxs.tolist(), name=name), extra


def write_dataset_stats(root: str | Path, key: str, refs: Sequence[EpisodeRef] | None = None) -> Path:
    """Compute min/max over the qpos and actions of ``refs`` (default: all episodes under ``root``) into ``root/stat.json``."""
    root = Path(root)
    refs = list(refs) if refs is not None else find_episodes(root)
    arrays = [load_qpos(r.qpos) for r in refs] + [load_qpos(r.actions) for r in refs if r.actions is not None]
    norm, extra = compute_stats(arrays, name=key, file_count=len(refs))
    path = root / "stat.json"
    write_stats(path, key, norm, **extra)
    return path


def read_stat_file(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


__all__ = [
    "DatasetError", "EpisodeFiles", "EpisodeWriter", "EpisodeRef", "InstructionSource", "VideoError", "VideoOptions",
    "atomic_write_text", "atomic_torch_save", "check_episode_id", "check_qpos", "compute_stats",
    "find_episodes", "find_task_dirs", "load_embedding", "load_qpos", "load_targets", "read_stat_file",
    "remove_episode", "resolve_instruction", "write_dataset_stats", "write_episode",
]
