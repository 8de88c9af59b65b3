"""Scripted demonstrations of the simulated robot straight into the Motus layout (the library behind
``motus-sim-dataset``, whose command line is :mod:`motus_core.cli.sim_dataset`).

The ROS route (sim node + demonstrator + recorder + ``motus-convert``) is what a real robot uses and
is tested end to end. This command is its ROS-free shortcut for building training sets in
simulation: it runs the same physics and scripted demonstrator in-process (:func:`run_episode`),
renders the three cameras at the dataset rate, builds the mosaic with the shared preprocessing
module and writes episodes with the same writer as the converter (qpos in the ``sim_aloha`` profile's
units, which are the simulator's; ``actions/`` = the demonstrator's commands, aligned as the converter
aligns the recorded leader stream: row ``k`` = the command in effect at frame ``k``, i.e. the one
computed from frame ``k - 1``). With ``--ground-truth`` it also stores, per frame, the exact
depth, segmentation and the poses needed for exact optical flow (:mod:`.ground_truth`), which
MoLA's stage II can use instead of learned targets (``stage2.targets: sim``).

Failed demonstrations are left out (``--keep-failures`` keeps them); ``stat.json`` is written over
the kept episodes; a re-run skips episodes that exist (same task, seed and options).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("motus_sim_dataset")

ROLES = ("high", "left_wrist", "right_wrist")


def commands_in_effect(commands) -> np.ndarray:
    """Per-tick commands (row ``k`` computed from observation ``k``) -> the command in effect at each frame.

    Through ROS, the command computed from frame ``k`` is published a few ms after it, so the
    converter's as-of alignment of the leader stream puts it at frame ``k + 1``; before the first
    command the first one is held. This gives the ROS-free datasets the same targets.
    """
    c = np.asarray(commands, np.float32)
    return np.concatenate([c[:1], c[:-1]]) if len(c) else c


@dataclass
class RenderedDemonstration:
    """One scripted demonstration held in memory: per control tick the three cameras' images, the measured
    joints and the command in effect (the training targets, aligned as :func:`commands_in_effect`)."""

    seed: int
    success: bool
    frames: list[dict[str, np.ndarray]]
    q: np.ndarray
    targets: np.ndarray


def render_demonstration(task: str, seed: int, width: int, height: int) -> RenderedDemonstration:
    """The scripted demonstrator on ``seed`` with every camera rendered (what the benches and the proof's
    guard question a policy with; the dataset writer streams the same ticks to disk instead)."""
    from .demonstrator import ScriptedDemonstrator, run_episode
    from .render import CameraRenderer
    from .simulator import AlohaSim

    sim = AlohaSim(task)
    renderer = CameraRenderer(sim.model, width, height, ROLES)
    frames, q, cmds = [], [], []

    def tick(obs, cmd):
        frames.append({role: renderer.render(sim.data, role).copy() for role in ROLES})
        q.append(np.asarray(obs.q, np.float64))
        cmds.append(np.asarray(cmd, np.float64))

    try:
        success = run_episode(sim, ScriptedDemonstrator(task), seed, on_tick=tick).success
    finally:
        renderer.close()
    return RenderedDemonstration(seed, bool(success), frames, np.asarray(q), commands_in_effect(cmds).astype(np.float64))


@dataclass(frozen=True)
class SimDatasetOptions:
    task: str = "transfer_cube"
    episodes: int = 10
    first_seed: int = 0
    height: int = 240
    width: int = 320
    fps: int = 30
    ground_truth: tuple[str, ...] = ()  # camera roles to store ground truth for
    keep_failures: bool = False
    stats_key: str = "sim_aloha"
    crf: int = 18
    preset: str = "ultrafast"


def _done_marker(task_dir: Path) -> Path:
    return task_dir / ".sim_dataset.json"


def generate(out_dir: str | Path, opts: SimDatasetOptions, *, text_encoder=None, progress: bool = True) -> dict:
    """Write ``opts.episodes`` seeded demonstrations under ``out_dir/<task>/``; return a summary dict.

    ``text_encoder``: a ``motus_core.data.text.TextEncoder`` for the instruction embedding (None: none).
    """
    from tqdm import tqdm

    from motus_core.data.motus_layout import EpisodeWriter, find_episodes, write_dataset_stats
    from motus_core.data.video import VideoOptions
    from motus_core.preprocessing import make_mosaic_from_roles

    from . import AlohaSim
    from .demonstrator import ScriptedDemonstrator, run_episode
    from .ground_truth import GroundTruthRecorder, ground_truth_path, mosaic_sizes
    from .render import CameraRenderer
    from .tasks import get_task

    out_dir = Path(out_dir)
    task_dir = out_dir / opts.task
    task_dir.mkdir(parents=True, exist_ok=True)
    marker = _done_marker(task_dir)
    settings = {k: v for k, v in asdict(opts).items() if k not in ("episodes", "first_seed")}
    settings["ground_truth"] = list(opts.ground_truth)
    settings["actions"] = "commands"  # earlier datasets trained on future qpos only: not to be mixed
    done: dict = {}
    if marker.is_file():
        prev = json.loads(marker.read_text())
        if prev.get("settings") != settings:
            raise ValueError(f"{task_dir} was generated with other settings {prev.get('settings')}; use another output directory")
        done = prev.get("seeds", {})

    instruction = get_task(opts.task).instruction
    embedding = text_encoder.encode([instruction])[0].detach().cpu() if text_encoder is not None else None
    sim = AlohaSim(opts.task, offscreen_size=(max(640, opts.width), max(480, opts.height)))
    demo = ScriptedDemonstrator(opts.task)
    renderer = CameraRenderer(sim.model, opts.width, opts.height, ROLES)
    gt = GroundTruthRecorder(sim.model, mosaic_sizes((opts.height, opts.width), opts.ground_truth)) if opts.ground_truth else None
    video = VideoOptions(fps=opts.fps, crf=opts.crf, preset=opts.preset)
    images = {r: np.empty((opts.height, opts.width, 3), np.uint8) for r in ROLES}
    t0 = time.perf_counter()
    seeds = range(opts.first_seed, opts.first_seed + opts.episodes)
    bar = tqdm(seeds, desc=f"sim {opts.task}", unit="episode", disable=not progress, file=sys.stderr)
    try:
        for seed in bar:
            eid = f"seed{seed:05d}"
            if str(seed) in done:
                continue
            writer = EpisodeWriter(task_dir, eid, video)
            qpos: list[np.ndarray] = []
            commands: list[np.ndarray] = []
            if gt is not None:
                gt.reset()

            def on_tick(obs, cmd):
                for role in ROLES:
                    renderer.render(sim.data, role, out=images[role])
                writer.add_frame(make_mosaic_from_roles(images))
                qpos.append(np.asarray(obs.q, np.float32))
                commands.append(np.asarray(cmd, np.float32))
                if gt is not None:
                    gt.add(sim.data)

            try:
                result = run_episode(sim, demo, seed, control_rate=opts.fps, on_tick=on_tick)
                if not result.success and not opts.keep_failures:
                    writer.abort()
                    done[str(seed)] = {"episode": None, "success": False}
                    log.info("seed %d: demonstration failed (stage %d), left out", seed, result.max_stage)
                else:
                    if gt is not None:
                        gt.save(ground_truth_path(task_dir, eid))
                    writer.commit(np.stack(qpos), instruction, embedding, actions=commands_in_effect(commands))
                    done[str(seed)] = {"episode": eid, "success": bool(result.success), "frames": len(qpos)}
            except BaseException:
                writer.abort()
                ground_truth_path(task_dir, eid).unlink(missing_ok=True)
                raise
            marker.write_text(json.dumps({"settings": settings, "seeds": done}, indent=1))
            bar.set_postfix(kept=sum(1 for d in done.values() if d["episode"]))
    finally:
        renderer.close()
        if gt is not None:
            gt.close()
    kept = [d["episode"] for d in done.values() if d["episode"]]
    if kept:
        refs = [r for r in find_episodes(out_dir) if r.task_dir == task_dir and r.episode_id in kept]
        write_dataset_stats(out_dir, opts.stats_key, refs)
    return {"task": opts.task, "episodes": len(kept), "failed": sum(1 for d in done.values() if not d["success"]),
            "frames": sum(d.get("frames", 0) for d in done.values()), "seconds": round(time.perf_counter() - t0, 1),
            "ground_truth": list(opts.ground_truth)}
