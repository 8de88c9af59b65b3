"""``motus-convert``: recorded episodes (rosbag2 + episode.json) -> training datasets.

    motus-convert EPISODES_DIR OUTPUT_DIR [--format motus|robotwin|lerobot] [--text-encoder PATH | --tiny-text-encoder]

* ``motus`` (default): the Motus real-robot layout (``motus_layout``) + ``stat.json`` per robot;
* ``robotwin``: the RoboTwin 2.0 layout under ``OUTPUT_DIR/<split>/<task>`` (``robotwin_layout``);
* ``lerobot``: a LeRobot v3.0 dataset in ``OUTPUT_DIR`` (``lerobot_v3``).

Which episodes: only ``complete`` ones whose outcome is in ``--outcomes`` (default success and
unknown). ``recording`` (still running), ``incomplete`` (crashed, interrupted, disk full) and
``discarded`` episodes are never converted, and if an earlier run converted an episode that is now
discarded, its files are removed. A bag that cannot be read (corrupted, truncated) is skipped and
reported. An episode whose streams have gaps longer than the tolerance is reported and left out
unless ``--force``.

Beside the dataset: ``sync_reports/<episode>.json`` (offsets, ages, gaps, drops per stream) and
``conversion_report.json`` (what happened to every episode in this run).

Re-runs are idempotent: ``.motus-convert.json`` remembers each converted episode's source
fingerprint and the conversion options; unchanged episodes are not touched, so the dataset's
files stay byte-identical.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
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
from motus_core.data.images import ImageError
from motus_core.data.motus_layout import (
    DatasetError,
    EpisodeWriter,
    atomic_write_text,
    compute_stats,
    load_qpos,
    remove_episode,
)
from motus_core.data.sync import SyncError
from motus_core.data.video import VideoError, VideoOptions
from motus_core.preprocessing import make_mosaic, write_stats

log = logging.getLogger("motus_convert")

FORMATS = ("motus", "robotwin", "lerobot")
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
    text_encoder: Any = None  # object with .encode(list[str]) -> list[Tensor[L, D]], .dim, .identity
    embedding_cache: Path | None = None
    embedding_dtype: torch.dtype = torch.bfloat16  # what the official pre-encoded umT5 files hold
    robotwin_split: str = "clean"
    episodes: tuple[str, ...] = ()  # only these episode ids (default: all)
    progress: bool = True

    def options_key(self) -> str:
        """Everything that changes the converted bytes of an episode."""
        enc = getattr(self.text_encoder, "identity", None)
        blob = json.dumps({
            "format": self.format, "task": self.task, "sync": asdict(self.sync), "video": asdict(self.video),
            "text_encoder": enc, "embedding_dtype": str(self.embedding_dtype), "split": self.robotwin_split,
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


def _safe_name(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in text.strip()).strip("._")
    return out or "task"


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
    def __init__(self, cfg: ConvertConfig):
        self.encoder = cfg.text_encoder
        self.dtype = cfg.embedding_dtype
        self.cache = None
        self.memo: dict[str, torch.Tensor] = {}
        if self.encoder is not None and cfg.embedding_cache is not None:
            from motus_core.models.motus.text_encoder import EmbeddingCache

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


class Converter:
    def __init__(self, cfg: ConvertConfig):
        if cfg.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {cfg.format!r}")
        bad = [o for o in cfg.outcomes if o not in OUTCOMES]
        if bad:
            raise ValueError(f"unknown outcomes {bad}; known: {OUTCOMES}")
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.embeddings = _Embeddings(cfg)
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
        if self.cfg.format == "lerobot":
            outcomes += self._run_lerobot(episodes)
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

    def _extract(self, ep: EpisodeDir, on_frame) -> Extracted:
        with self._bar(self._expected_frames(ep), f"  {ep.meta.episode_id}", position=1, leave=False) as bar:
            return extract_episode(ep, self.cfg.sync, on_frame=on_frame, progress=bar.update)

    # -- motus / robotwin: one output per episode

    def _task_dir(self, ep: EpisodeDir) -> Path:
        task = _safe_name(self.cfg.task or ep.meta.task or "task")
        if self.cfg.format == "robotwin":
            return self.out / self.cfg.robotwin_split / task
        return self.out / task

    def _remove_outputs(self, entry: dict) -> None:
        task_dir = Path(self.out / entry["task_dir"])
        if self.cfg.format == "robotwin":
            from motus_core.data.robotwin_layout import remove_robotwin_episode

            remove_robotwin_episode(task_dir, entry["name"])
        else:
            remove_episode(task_dir, entry["name"])

    def _outputs_exist(self, entry: dict) -> bool:
        task_dir = self.out / entry["task_dir"]
        return (task_dir / "qpos" / f"{entry['name']}.pt").is_file() and (task_dir / "videos" / f"{entry['name']}.mp4").is_file()

    def _run_per_episode(self, episodes: list[EpisodeDir]) -> list[EpisodeOutcome]:
        manifest = self._load_manifest(self.out)
        entries: dict[str, dict] = manifest.setdefault("episodes", {})
        results: list[EpisodeOutcome] = []
        present = {e.meta.episode_id for e in episodes}
        if not self.cfg.episodes:
            for eid in sorted(set(entries) - present):  # source deleted: its data goes too
                self._remove_outputs(entries.pop(eid))
                results.append(EpisodeOutcome(eid, "removed", "source episode no longer exists"))
        with self._bar(len(episodes), f"converting to {self.cfg.format}") as bar:
            for ep in episodes:
                results.append(self._one(ep, entries))
                self._save_manifest(self.out, manifest)
                bar.update(1)
        self._write_stats(entries, manifest)
        self._save_manifest(self.out, manifest)
        return results

    def _one(self, ep: EpisodeDir, entries: dict) -> EpisodeOutcome:
        eid = ep.meta.episode_id
        why_not = classify(ep, self.cfg.outcomes)
        old = entries.get(eid)
        if why_not:
            if old is not None:  # converted earlier, no longer eligible (e.g. discarded since): remove it
                self._remove_outputs(entries.pop(eid))
                return EpisodeOutcome(eid, "removed", why_not)
            return EpisodeOutcome(eid, "skipped", why_not)
        fp = source_fingerprint(ep)
        if old and old.get("fingerprint") == fp and old.get("options") == self.options_key and self._outputs_exist(old):
            return EpisodeOutcome(eid, "up_to_date", frames=old.get("frames", 0))
        if old is not None:
            self._remove_outputs(entries.pop(eid))
        task_dir = self._task_dir(ep)
        if self.cfg.format == "robotwin":
            from motus_core.data.robotwin_layout import RobotwinEpisodeWriter, number_for

            name = number_for(task_dir, eid)
            writer = RobotwinEpisodeWriter(task_dir, name, self.cfg.video)
        else:
            name = eid
            writer = EpisodeWriter(task_dir, eid, self.cfg.video)

        def on_frame(images):
            writer.add_frame(make_mosaic(images["high"], images["left_wrist"], images["right_wrist"]))

        try:
            ex = self._extract(ep, on_frame)
        except Exception as exc:  # noqa: BLE001 - one bad episode never stops the conversion of the others
            writer.abort()
            if not isinstance(exc, (BagError, ExtractionError, SyncError, ImageError, VideoError, DatasetError)):
                log.exception("episode %s: unexpected error while converting", eid)
            self._report(self.out, {"episode_id": eid, "problems": [f"{type(exc).__name__}: {exc}"]}, included=False)
            log.warning("episode %s skipped: %s", eid, exc)
            return EpisodeOutcome(eid, "failed", str(exc))
        if not ex.ok and not self.cfg.sync.force:
            writer.abort()
            self._report(self.out, ex, included=False)
            log.warning("episode %s left out (use --force to keep it): %s", eid, "; ".join(ex.problems))
            return EpisodeOutcome(eid, "excluded", "; ".join(ex.problems), ex.frames)
        try:
            writer.commit(ex.qpos, ex.instruction, self.embeddings.get(ex.instruction))
        except (DatasetError, VideoError) as exc:
            self._report(self.out, {"episode_id": eid, "problems": [str(exc)]}, included=False)
            return EpisodeOutcome(eid, "failed", str(exc))
        self._report(self.out, ex, included=True)
        entries[eid] = {"fingerprint": fp, "options": self.options_key, "task_dir": str(task_dir.relative_to(self.out)),
                        "name": name, "frames": ex.frames, "robot": ep.meta.robot,
                        "stats_key": self.cfg.stats_key or ep.meta.profile.get("stats_key") or ep.meta.robot}
        reason = "; ".join(ex.problems) + " (kept: --force)" if ex.problems else ""
        return EpisodeOutcome(eid, "converted", reason, ex.frames)

    def _write_stats(self, entries: dict, manifest: dict) -> None:
        """Min/max per robot over every converted episode (official calc_stat), rewritten only if changed.

        A robot whose episodes are all gone loses its entry (only entries this converter wrote).
        """
        if self.cfg.format != "motus":
            return
        by_key: dict[str, list[np.ndarray]] = {}
        for e in entries.values():
            by_key.setdefault(e["stats_key"], []).append(load_qpos(self.out / e["task_dir"] / "qpos" / f"{e['name']}.pt"))
        path = self.out / "stat.json"
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

    # -- lerobot: one dataset, rebuilt when its inputs change

    def _run_lerobot(self, episodes: list[EpisodeDir]) -> list[EpisodeOutcome]:
        from motus_core.data.lerobot_v3 import LeRobotV3Writer

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
                and (self.out / "meta" / "info.json").is_file()):
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
        first = eligible[0].meta
        cams = first.profile.get("cameras", {})
        camera_hw = {r: (int(c["height"]), int(c["width"])) for r, c in cams.items() if r in ("high", "left_wrist", "right_wrist")}
        writer = None
        included: list[str] = []
        excluded: dict[str, str] = {}
        reports: list[tuple[Any, bool]] = []
        with self._bar(len(eligible), "converting to lerobot") as bar:
            for ep in eligible:
                eid = ep.meta.episode_id
                bar.update(1)
                state = {}

                def on_frame(images, ep_id=eid):
                    nonlocal writer
                    if writer is None:
                        hw = {r: images[r].shape[:2] for r in images}
                        writer = LeRobotV3Writer(building, fps=self.cfg.sync.fps, robot_type=first.robot,
                                                 joint_names=first.profile["joint_names"], camera_hw=hw or camera_hw,
                                                 video_options=self.cfg.video)
                    if "episode" not in state:
                        state["episode"] = writer.begin_episode(ep_id)
                    state["episode"].add_frame(images)

                try:
                    ex = self._extract(ep, on_frame)
                except Exception as exc:  # noqa: BLE001 - one bad episode never stops the others
                    if not isinstance(exc, (BagError, ExtractionError, SyncError, ImageError, VideoError, DatasetError)):
                        log.exception("episode %s: unexpected error while converting", eid)
                    if "episode" in state:
                        state["episode"].abort()
                    reports.append(({"episode_id": eid, "problems": [str(exc)]}, False))
                    results.append(EpisodeOutcome(eid, "failed", str(exc)))
                    excluded[eid] = str(exc)
                    continue
                if not ex.ok and not self.cfg.sync.force:
                    state["episode"].abort()
                    reports.append((ex, False))
                    results.append(EpisodeOutcome(eid, "excluded", "; ".join(ex.problems), ex.frames))
                    excluded[eid] = "; ".join(ex.problems)
                    continue
                # LeRobot "action" = what the teleoperator commanded (leader); without a leader, the
                # follower's next position (the Motus convention of future qpos as actions).
                action = ex.leader if ex.leader is not None else np.concatenate([ex.qpos[1:], ex.qpos[-1:]])
                state["episode"].commit(ex.qpos, action, ex.instruction)
                reports.append((ex, True))
                included.append(eid)
                results.append(EpisodeOutcome(eid, "converted", "; ".join(ex.problems), ex.frames))
        if writer is not None and writer.episodes:
            writer.finalize()
        else:
            building.mkdir(parents=True, exist_ok=True)
        for ex, inc in reports:
            self._report(building, ex, inc)
        self._save_manifest(building, {"format": "lerobot", "inputs": fingerprints, "options": self.options_key,
                                       "included": included, "excluded": excluded})
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


# ------------------------------------------------------------------------------------------ CLI


def add_text_encoder_args(p: argparse.ArgumentParser) -> None:
    """The instruction-embedding options shared by the dataset writers (read by text_encoder_from_args)."""
    p.add_argument("--text-encoder", help="converted umT5 directory (motus-convert-checkpoint --umt5) for the instruction embeddings")
    p.add_argument("--tiny-text-encoder", action="store_true", help="tiny random umT5 (tests and demos only)")
    p.add_argument("--device", default="cpu", help="device of the text encoder")


def text_encoder_from_args(args):
    """The umT5 encoder chosen by --text-encoder / --tiny-text-encoder (None: no embeddings)."""
    if args.tiny_text_encoder:
        from motus_core.models.motus.text_encoder import build_tiny_text_encoder

        return build_tiny_text_encoder(seed=0)
    if args.text_encoder:
        from motus_core.models.motus.text_encoder import load_text_encoder

        return load_text_encoder(args.text_encoder, device=args.device)
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="motus-convert", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Formats: motus (Motus real-robot layout + stat.json), robotwin (RoboTwin 2.0 layout), lerobot (LeRobot v3.0).")
    p.add_argument("episodes_dir", type=Path, help="directory of recorded episodes (the recorder's output_dir)")
    p.add_argument("output_dir", type=Path, nargs="?", help="dataset directory to create or update")
    p.add_argument("--format", choices=FORMATS, default="motus", help="dataset layout to write (default motus)")
    p.add_argument("--task", help="task folder name (default: the task recorded with each episode)")
    p.add_argument("--stats-key", help="stat.json key (default: the robot profile's stats key)")
    add_text_encoder_args(p)
    p.add_argument("--embedding-cache", type=Path, help="cache directory of instruction embeddings (default: OUTPUT_DIR/.embedding_cache)")
    p.add_argument("--max-age", type=float, default=0.1, help="seconds a stream may lag the high camera at a frame (default 0.1)")
    p.add_argument("--max-gap", type=float, default=0.1, help="longest hole between high-camera frames in seconds (default 0.1)")
    p.add_argument("--fps", type=int, default=30, help="dataset frame rate; the high camera must run at it (default 30)")
    p.add_argument("--force", action="store_true", help="keep episodes with gaps (they are still reported)")
    p.add_argument("--outcomes", default="success,unknown", help="outcomes to convert, comma separated (default success,unknown)")
    p.add_argument("--episodes", nargs="*", default=(), help="only these episode ids")
    p.add_argument("--crf", type=int, default=VideoOptions.crf, help="H.264 quality (lower = better, default %(default)s)")
    p.add_argument("--preset", default=VideoOptions.preset, help="x264 preset (default %(default)s)")
    p.add_argument("--robotwin-split", default="clean", help="robotwin format: split folder (clean or randomized)")
    p.add_argument("--repair", action="store_true", help="finish the bags of crashed recordings and mark them incomplete, then exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.repair:
        for eid, msg in repair(args.episodes_dir):
            print(f"{eid}: incomplete; {msg}")
        return 0
    if args.output_dir is None:
        print("motus-convert: OUTPUT_DIR is required (unless --repair)", file=sys.stderr)
        return 2
    encoder = text_encoder_from_args(args)
    if encoder is None and args.format != "lerobot":
        log.warning("no --text-encoder: instructions are written without umT5 embeddings (Motus training needs them)")
    cfg = ConvertConfig(
        episodes_dir=args.episodes_dir, output_dir=args.output_dir, format=args.format, task=args.task,
        stats_key=args.stats_key,
        sync=SyncOptions(max_age_s=args.max_age, max_gap_s=args.max_gap, fps=args.fps, force=args.force),
        outcomes=tuple(o.strip() for o in args.outcomes.split(",") if o.strip()),
        video=VideoOptions(fps=args.fps, crf=args.crf, preset=args.preset),
        text_encoder=encoder if args.format != "lerobot" else None,
        embedding_cache=args.embedding_cache or (args.output_dir / ".embedding_cache" if encoder and args.format != "lerobot" else None),
        robotwin_split=args.robotwin_split, episodes=tuple(args.episodes), progress=not args.quiet,
    )
    try:
        summary = Converter(cfg).run()
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"motus-convert: {exc}", file=sys.stderr)
        return 2
    counts = summary.as_dict()["counts"]
    print(f"{args.output_dir}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    for e in summary.episodes:
        if e.status in ("excluded", "failed", "skipped", "removed"):
            print(f"  {e.episode_id}: {e.status}: {e.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
