"""Output formats of the converter behind one interface; each format is one module of this package.

A format module defines a subclass of :class:`OutputFormat` decorated with :func:`register_format`;
every module in this package is imported when the registry is first read, so a new format is one new
file here and nothing else (the converter and ``motus-convert --format`` list what is registered).

The converter drives a format like this::

    fmt = get_format(name)(cfg, root)
    sink = fmt.open_episode(ep)       # per eligible episode
    sink.add_frame(images)            # per aligned frame: {role: HxWx3 uint8}
    entry = sink.commit(ex, embedding)   # or sink.abort() (nothing of the episode stays, not even empty folders)
    ...
    fmt.finish(entries, manifest)     # dataset-level files (stat.json, LeRobot shards)

Two kinds (``rebuild``): episode-wise formats (Motus, RoboTwin) add and remove single episodes in
place (``remove`` / ``outputs_exist`` take the manifest entry that ``commit`` returned); rebuilt
formats (LeRobot v3: shards shared by all episodes) are written whole into a new directory that
replaces the previous dataset when it is complete.
"""
from __future__ import annotations

import abc
import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from motus_core.data.episode import EpisodeDir
    from motus_core.data.extract import Extracted

EMBEDDINGS = ("none", "optional", "required")
# Where the training targets come from (``motus-convert --actions``): the recorded leader / command
# stream, the follower's own future positions, or the leader when the episode recorded one.
ACTION_SOURCES = ("auto", "leader", "follower")
_REGISTRY: dict[str, type["OutputFormat"]] = {}
_LOADED = False


def commanded_actions(ex: "Extracted", source: str):
    """The episode's commanded joints ``[T, dof]`` for ``source``, or None for the follower's future qpos.

    ``leader`` without a recorded leader stream is an error (the episode would silently train on
    something else than asked).
    """
    if source not in ACTION_SOURCES:
        raise ValueError(f"action source {source!r} is not one of {ACTION_SOURCES}")
    if source == "follower":
        return None
    if ex.leader is None and source == "leader":
        from motus_core.data.motus_layout import DatasetError

        raise DatasetError(f"episode {ex.episode_id}: --actions leader, but no leader/command stream was recorded "
                           f"(--actions follower trains on the follower's future positions)")
    return ex.leader


class EpisodeSink(abc.ABC):
    """One episode being written: frames stream in, then ``commit`` or ``abort``."""

    @abc.abstractmethod
    def add_frame(self, images: Mapping[str, np.ndarray]) -> None:
        """One aligned frame: camera role -> HxWx3 uint8 RGB at the camera's size."""

    @abc.abstractmethod
    def commit(self, ex: "Extracted", embedding: Any) -> dict:
        """Finish the episode; return what the manifest must remember to find/remove it later."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop everything of this episode (files, index entries, folders left empty)."""


class OutputFormat(abc.ABC):
    """A dataset layout the converter can write."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    embeddings: ClassVar[str] = "none"  # instruction embeddings: none | optional | required
    rebuild: ClassVar[bool] = False  # True: written whole into a fresh directory on every change

    def __init__(self, cfg, root: Path):
        self.cfg = cfg  # motus_core.data.convert.ConvertConfig
        self.root = Path(root)

    @abc.abstractmethod
    def open_episode(self, ep: "EpisodeDir") -> EpisodeSink:
        """Start writing ``ep`` (its frames follow)."""

    def remove(self, entry: dict) -> None:
        """Delete an episode written by an earlier run (episode-wise formats)."""
        raise NotImplementedError(f"format {self.name} is rebuilt, not edited episode by episode")

    @abc.abstractmethod
    def outputs_exist(self, entry: dict) -> bool:
        """Whether the files of a manifest entry are still all there (rebuilt formats: ``entry`` is the
        dataset's manifest and the answer is whether the dataset is there)."""

    def finish(self, entries: dict[str, dict], manifest: dict) -> None:
        """Dataset-level files after all episodes (``entries``: the manifest's converted episodes)."""


def register_format(cls: type[OutputFormat]) -> type[OutputFormat]:
    """Class decorator: make ``cls`` available as ``--format cls.name``."""
    if cls.embeddings not in EMBEDDINGS:
        raise ValueError(f"format {cls.name}: embeddings must be one of {EMBEDDINGS}, got {cls.embeddings!r}")
    other = _REGISTRY.get(cls.name)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"format name {cls.name!r} is registered twice ({other.__module__}, {cls.__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    _LOADED = True


def format_names() -> tuple[str, ...]:
    """Registered formats, ``motus`` (the default) first."""
    _load_all()
    return tuple(sorted(_REGISTRY, key=lambda n: (n != "motus", n)))


def get_format(name: str) -> type[OutputFormat]:
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"format must be one of {format_names()}, got {name!r}")
    return _REGISTRY[name]


def safe_name(text: str) -> str:
    """A folder name from free text (task names)."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in text.strip()).strip("._")
    return out or "task"


def prune_empty_dirs(path: Path, stop: Path) -> None:
    """Remove ``path``'s empty sub-folders, then ``path`` and its parents while empty, never ``stop`` or above."""
    path, stop = Path(path), Path(stop)
    if not path.is_dir():
        return
    for sub in sorted(path.iterdir()):
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    while path != stop and stop in path.parents and path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        path = path.parent
