"""Recorded episodes (rosbag2 + episode.json) -> training datasets (the library behind ``motus-convert``).

The output formats live in :mod:`motus_core.data.formats` (one module each, behind one interface):

* ``motus`` (default): the Motus real-robot layout (``motus_layout``) + ``stat.json`` per robot;
* ``robotwin``: the RoboTwin 2.0 layout under ``OUTPUT_DIR/<split>/<task>`` (``robotwin_layout``);
  it needs instruction embeddings, so a text encoder (``motus_core.data.text.TextEncoder``) is required;
* ``lerobot``: a LeRobot v3.0 dataset in ``OUTPUT_DIR`` (``lerobot_v3``).

The text encoder is passed in (``ConvertConfig.text_encoder``): this module never imports a model.

Which episodes: only ``complete`` ones whose outcome is in ``--outcomes`` (default success and
unknown). ``recording`` (still running), ``incomplete`` (crashed, interrupted, disk full) and
``discarded`` episodes are never converted, and if an earlier run converted an episode that is now
discarded, its files are removed. A bag that cannot be read (corrupted, truncated) is skipped and
reported. An episode whose streams have gaps longer than the tolerance is reported and left out
unless ``--force``.

Beside the dataset: ``sync_reports/<episode>.json`` (offsets, ages, gaps, drops per stream) and
``conversion_report.json`` (what happened to every episode in this run).

A failed or excluded episode leaves nothing in the layout (no files, no empty folders).

Re-runs are idempotent: ``.motus-convert.json`` remembers each converted episode's source
fingerprint and the conversion options; unchanged episodes are not touched, so the dataset's
files stay byte-identical.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from motus_core.data.bag_reader import FINISHED, UNFINISHED, BagError, bag_state, repair_bag
from motus_core.data.episode import (
    COMPLETE,
    DISCARDED,
    INCOMPLETE,
    OUTCOMES,
    RECORDING,
    EpisodeDir,
    list_episodes,
    mark_incomplete,
)
from motus_core.data.extract import ExtractionError, Extracted, SyncOptions, extract_episode
from motus_core.data.formats import ACTION_SOURCES, OutputFormat, get_format
from motus_core.data.images import ImageError
from motus_core.data.motus_layout import DatasetError, atomic_write_text
from motus_core.data.sync import SyncError
from motus_core.data.text import EmbeddingCache, TextEncoder, check_text_encoder
from motus_core.data.video import VideoError, VideoOptions

log = logging.getLogger("motus_convert")

MANIFEST = ".motus-convert.json"
REPORTS_DIR = "sync_reports"
RUN_REPORT = "conversion_report.json"


@dataclass
class ConvertConfig:
    episodes_dir: Path
    output_dir: Path
    format: str = "motus"
    task: str | None = None  # task folder name (default: each episode's task)
    stats_key: str | None = None  # stat.json key (default: the robot profile's stats key)
    sync: SyncOptions = field(default_factory=SyncOptions)
    outcomes: tuple[str, ...] = ("success", "unknown")
    video: VideoOptions = field(default_factory=VideoOptions)
    text_encoder: TextEncoder | None = None  # motus_core.data.text.TextEncoder (identity, dim, encode)
    embedding_cache: Path | None = None
    embedding_dtype: torch.dtype = torch.bfloat16  # what the official pre-encoded umT5 files hold
    robotwin_split: str = "clean"
    episodes: tuple[str, ...] = ()  # only these episode ids (default: all)
    progress: bool = True
    actions: str = "auto"  # training targets: formats.ACTION_SOURCES

    def __post_init__(self):
        if self.actions not in ACTION_SOURCES:
            raise ValueError(f"actions must be one of {ACTION_SOURCES}, got {self.actions!r}")

    def options_key(self) -> str:
        """Everything that changes the converted bytes of an episode."""
        uses_text = get_format(self.format).embeddings != "none"
        enc = getattr(self.text_encoder, "identity", None) if uses_text else None
        blob = json.dumps({
            "format": self.format, "task": self.task, "sync": asdict(self.sync), "video": asdict(self.video),
            "text_encoder": enc, "embedding_dtype": str(self.embedding_dtype), "split": self.robotwin_split,
            "actions": self.actions,
        }, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class EpisodeOutcome:
    episode_id: str
    status: str  # converted | up_to_date | excluded | skipped | failed | removed
    reason: str = ""
    frames: int = 0


@dataclass
class ConversionSummary:
    format: str
    output_dir: str
    episodes: list[EpisodeOutcome]

    def count(self, status: str) -> int:
        return sum(1 for e in self.episodes if e.status == status)

    @property
    def in_dataset(self) -> int:
        """Episodes the dataset holds after this run (converted now or earlier)."""
        return self.count("converted") + self.count("up_to_date")

    def as_dict(self) -> dict:
        return {"format": self.format, "output_dir": self.output_dir,
                "counts": {s: self.count(s) for s in ("converted", "up_to_date", "excluded", "skipped", "failed", "removed")},
                "episodes": [asdict(e) for e in self.episodes]}


def source_fingerprint(ep: EpisodeDir) -> str:
    """Changes whenever the episode's metadata or any file of its bag changes."""
    h = hashlib.sha256((ep.path / "episode.json").read_bytes())
    if ep.bag.is_dir():
        for f in sorted(ep.bag.iterdir()):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def classify(ep: EpisodeDir, outcomes: Sequence[str]) -> str:
    """Empty string if the episode may be converted, else why not."""
    state = ep.effective_state
    if state == RECORDING:
        return "still recording"
    if state == INCOMPLETE:
        why = "recorder crashed or was killed" if ep.crashed else (ep.meta.error or "interrupted")
        return f"incomplete ({why})"
    if state == DISCARDED:
        return f"discarded{': ' + ep.meta.error if ep.meta.error else ''}"
    if state != COMPLETE:
        return f"state {state}"
    if ep.meta.outcome not in outcomes:
        return f"outcome {ep.meta.outcome} (converting {', '.join(outcomes)})"
    bs = bag_state(ep.bag)
    if bs != FINISHED:
        return f"bag {bs} although the episode is marked complete"
    return ""


class _Embeddings:
    def __init__(self, cfg: ConvertConfig, used: bool):
        self.encoder = cfg.text_encoder if used else None
        self.dtype = cfg.embedding_dtype
        self.cache = None
        self.memo: dict[str, torch.Tensor] = {}
        if self.encoder is not None:
            check_text_encoder(self.encoder)
            if cfg.embedding_cache is not None:
                self.cache = EmbeddingCache(cfg.embedding_cache)

    def get(self, text: str) -> torch.Tensor | None:
        if self.encoder is None:
            return None
        if text not in self.memo:
            if self.cache is not None:
                emb, _ = self.cache.get_or_compute(text, self.encoder)
            else:
                emb = self.encoder.encode([text])[0]
            if emb.ndim != 2 or emb.shape[1] != self.encoder.dim:
                raise DatasetError(f"text encoder returned {tuple(emb.shape)} for {text!r}, expected [L, {self.encoder.dim}]")
            self.memo[text] = emb.detach().cpu().to(self.dtype)
        return self.memo[text]


_EXPECTED_ERRORS = (BagError, ExtractionError, SyncError, ImageError, VideoError, DatasetError)


class Converter:
    """Runs one conversion of ``cfg.episodes_dir`` into ``cfg.output_dir`` in the format ``cfg.format``."""

    def __init__(self, cfg: ConvertConfig):
        self.format_cls = get_format(cfg.format)
        bad = [o for o in cfg.outcomes if o not in OUTCOMES]
        if bad:
            raise ValueError(f"unknown outcomes {bad}; known: {OUTCOMES}")
        if self.format_cls.embeddings == "required" and cfg.text_encoder is None:
            raise ValueError(f"the {cfg.format} format needs instruction embeddings: pass a text encoder "
                             "(motus-convert --text-encoder DIR, or --tiny-text-encoder for tests)")
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.embeddings = _Embeddings(cfg, used=self.format_cls.embeddings != "none")
        self.options_key = cfg.options_key()

    # ----------------------------------------------------------------------------- manifest

    def _load_manifest(self, root: Path) -> dict:
        p = root / MANIFEST
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except json.JSONDecodeError:
                log.warning("%s is unreadable: converting everything again", p)
        return {"format": self.cfg.format, "episodes": {}}

    def _save_manifest(self, root: Path, manifest: dict) -> None:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))

    def _report(self, root: Path, ex: Extracted | dict, included: bool) -> None:
        rep = dict(ex.report if isinstance(ex, Extracted) else ex)
        rep["included"] = included
        d = root / REPORTS_DIR
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / f"{rep['episode_id']}.json", json.dumps(rep, indent=2))

    # ----------------------------------------------------------------------------- run

    def run(self) -> ConversionSummary:
        episodes, unreadable = list_episodes(self.cfg.episodes_dir)
        if self.cfg.episodes:
            wanted = set(self.cfg.episodes)
            episodes = [e for e in episodes if e.meta.episode_id in wanted]
        outcomes: list[EpisodeOutcome] = [EpisodeOutcome(p.name, "skipped", f"unreadable metadata: {why}") for p, why in unreadable]
        if self.format_cls.rebuild:
            outcomes += self._run_rebuild(episodes)
        else:
            outcomes += self._run_per_episode(episodes)
        summary = ConversionSummary(self.cfg.format, str(self.out), outcomes)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / RUN_REPORT, json.dumps(summary.as_dict(), indent=2))
        return summary

    def _bar(self, total: int, desc: str, position: int = 0, leave: bool = True):
        return tqdm(total=total, desc=desc, unit="ep" if position == 0 else "frame", position=position, leave=leave,
                    disable=not self.cfg.progress, dynamic_ncols=True)

    def _expected_frames(self, ep: EpisodeDir) -> int:
        for rec in ep.meta.topics.values():
            if rec.role == "camera" and rec.camera_role == "high":
                return rec.written
        return 0

    def _convert(self, fmt: OutputFormat, ep: EpisodeDir) -> tuple[EpisodeOutcome, Extracted | dict, dict | None]:
        """Write one eligible episode with ``fmt``: (outcome, sync report, manifest entry or None)."""
        eid = ep.meta.episode_id
        sink = None
        try:
            sink = fmt.open_episode(ep)
            with self._bar(self._expected_frames(ep), f"  {eid}", position=1, leave=False) as bar:
                ex = extract_episode(ep, self.cfg.sync, on_frame=sink.add_frame, progress=bar.update)
        except Exception as exc:  # noqa: BLE001 - one bad episode never stops the conversion of the others
            if sink is not None:
                sink.abort()
            if not isinstance(exc, _EXPECTED_ERRORS):
                log.exception("episode %s: unexpected error while converting", eid)
            log.warning("episode %s failed: %s", eid, exc)
            return EpisodeOutcome(eid, "failed", f"{type(exc).__name__}: {exc}"), \
                {"episode_id": eid, "problems": [f"{type(exc).__name__}: {exc}"]}, None
        if not ex.ok and not self.cfg.sync.force:
            sink.abort()
            log.warning("episode %s left out (use --force to keep it): %s", eid, "; ".join(ex.problems))
            return EpisodeOutcome(eid, "excluded", "; ".join(ex.problems), ex.frames), ex, None
        try:
            entry = sink.commit(ex, self.embeddings.get(ex.instruction))
        except (ValueError, VideoError) as exc:  # DatasetError is a ValueError
            sink.abort()
            log.warning("episode %s failed: %s", eid, exc)
            return EpisodeOutcome(eid, "failed", str(exc), ex.frames), {"episode_id": eid, "problems": [str(exc)]}, None
        reason = "; ".join(ex.problems) + " (kept: --force)" if ex.problems else ""
        return EpisodeOutcome(eid, "converted", reason, ex.frames), ex, entry

    # -- episode-wise formats: episodes are added, replaced and removed in place

    def _run_per_episode(self, episodes: list[EpisodeDir]) -> list[EpisodeOutcome]:
        fmt = self.format_cls(self.cfg, self.out)
        manifest = self._load_manifest(self.out)
        entries: dict[str, dict] = manifest.setdefault("episodes", {})
        results: list[EpisodeOutcome] = []
        present = {e.meta.episode_id for e in episodes}
        if not self.cfg.episodes:
            for eid in sorted(set(entries) - present):  # source deleted: its data goes too
                fmt.remove(entries.pop(eid))
                results.append(EpisodeOutcome(eid, "removed", "source episode no longer exists"))
        with self._bar(len(episodes), f"converting to {self.cfg.format}") as bar:
            for ep in episodes:
                results.append(self._one(fmt, ep, entries))
                self._save_manifest(self.out, manifest)
                bar.update(1)
        fmt.finish(entries, manifest)
        self._save_manifest(self.out, manifest)
        return results

    def _one(self, fmt: OutputFormat, ep: EpisodeDir, entries: dict) -> EpisodeOutcome:
        eid = ep.meta.episode_id
        why_not = classify(ep, self.cfg.outcomes)
        old = entries.get(eid)
        if why_not:
            if old is not None:  # converted earlier, no longer eligible (e.g. discarded since): remove it
                fmt.remove(entries.pop(eid))
                return EpisodeOutcome(eid, "removed", why_not)
            return EpisodeOutcome(eid, "skipped", why_not)
        fp = source_fingerprint(ep)
        if old and old.get("fingerprint") == fp and old.get("options") == self.options_key and fmt.outputs_exist(old):
            return EpisodeOutcome(eid, "up_to_date", frames=old.get("frames", 0))
        if old is not None:
            fmt.remove(entries.pop(eid))
        outcome, report, entry = self._convert(fmt, ep)
        self._report(self.out, report, included=entry is not None)
        if entry is not None:
            entries[eid] = {**entry, "fingerprint": fp, "options": self.options_key, "frames": outcome.frames,
                            "robot": ep.meta.robot,
                            "stats_key": self.cfg.stats_key or ep.meta.profile.get("stats_key") or ep.meta.robot}
        return outcome

    # -- rebuilt formats: one dataset, written whole into a new directory when its inputs change

    def _run_rebuild(self, episodes: list[EpisodeDir]) -> list[EpisodeOutcome]:
        results: list[EpisodeOutcome] = []
        eligible = []
        for ep in episodes:
            why_not = classify(ep, self.cfg.outcomes)
            if why_not:
                results.append(EpisodeOutcome(ep.meta.episode_id, "skipped", why_not))
            else:
                eligible.append(ep)
        fingerprints = {ep.meta.episode_id: source_fingerprint(ep) for ep in eligible}
        manifest = self._load_manifest(self.out)
        if (manifest.get("inputs") == fingerprints and manifest.get("options") == self.options_key
                and self.format_cls(self.cfg, self.out).outputs_exist(manifest)):
            kept = set(manifest.get("included", []))
            for ep in eligible:
                eid = ep.meta.episode_id
                results.append(EpisodeOutcome(eid, "up_to_date" if eid in kept else "excluded",
                                              "" if eid in kept else manifest.get("excluded", {}).get(eid, "")))
            return results
        if not eligible:
            return results
        building = self.out.with_name(self.out.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        fmt = self.format_cls(self.cfg, building)
        entries: dict[str, dict] = {}
        excluded: dict[str, str] = {}
        reports: list[tuple[Any, bool]] = []
        with self._bar(len(eligible), f"converting to {self.cfg.format}") as bar:
            for ep in eligible:
                outcome, report, entry = self._convert(fmt, ep)
                bar.update(1)
                results.append(outcome)
                reports.append((report, entry is not None))
                if entry is not None:
                    entries[outcome.episode_id] = entry
                else:
                    excluded[outcome.episode_id] = outcome.reason
        new_manifest = {"format": self.cfg.format, "inputs": fingerprints, "options": self.options_key,
                        "included": list(entries), "excluded": excluded}
        fmt.finish(entries, new_manifest)
        for report, inc in reports:
            self._report(building, report, inc)
        self._save_manifest(building, new_manifest)
        # swap the finished dataset in; the previous one is removed only after the new one is complete
        old = self.out.with_name(self.out.name + ".previous")
        shutil.rmtree(old, ignore_errors=True)
        if self.out.exists():
            os.replace(self.out, old)
        os.replace(building, self.out)
        shutil.rmtree(old, ignore_errors=True)
        return results


def repair(episodes_dir: Path) -> list[tuple[str, str]]:
    """Finish the bags of crashed recordings and persist their ``incomplete`` state."""
    done = []
    episodes, _ = list_episodes(episodes_dir)
    for ep in episodes:
        if not ep.crashed and not (ep.meta.state == INCOMPLETE and bag_state(ep.bag) == UNFINISHED):
            continue
        if bag_state(ep.bag) == UNFINISHED:
            try:
                counts = repair_bag(ep.bag)
                msg = f"bag finished with {sum(counts.values())} messages"
            except BagError as exc:
                msg = f"bag could not be repaired: {exc}"
        else:
            msg = f"bag is {bag_state(ep.bag)}"
        if ep.crashed:
            mark_incomplete(ep, "recorder stopped without finishing the episode (crash or SIGKILL)")
        done.append((ep.meta.episode_id, msg))
    return done
