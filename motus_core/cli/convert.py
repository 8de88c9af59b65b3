"""``motus-convert``: recorded episodes (rosbag2 + episode.json) -> training datasets.

    motus-convert EPISODES_DIR OUTPUT_DIR [--format motus|robotwin|lerobot] [--text-encoder PATH | --tiny-text-encoder]

Exit status: 0 when the dataset holds at least one episode after the run (every episode that was
left out is listed with its reason), 1 when no episode could be converted, 2 for bad arguments
(e.g. ``--format robotwin`` without a text encoder). The library is :mod:`motus_core.data.convert`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from motus_core.cli.text_encoder import add_text_encoder_args, text_encoder_from_args
from motus_core.data.convert import ConvertConfig, Converter, repair
from motus_core.data.extract import SyncOptions
from motus_core.data.formats import ACTION_SOURCES, format_names, get_format
from motus_core.data.video import VideoOptions

log = logging.getLogger("motus_convert")


def build_parser() -> argparse.ArgumentParser:
    formats = format_names()
    p = argparse.ArgumentParser(prog="motus-convert", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Formats: " + "; ".join(f"{n}: {get_format(n).description}" for n in formats))
    p.add_argument("episodes_dir", type=Path, help="directory of recorded episodes (the recorder's output_dir)")
    p.add_argument("output_dir", type=Path, nargs="?", help="dataset directory to create or update")
    p.add_argument("--format", choices=formats, default="motus", help="dataset layout to write (default motus)")
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
    p.add_argument("--actions", choices=ACTION_SOURCES, default="auto",
                   help="training targets: 'leader' = the recorded leader/command stream (actions/ beside qpos/; LeRobot's "
                        "action), 'follower' = the follower's future positions (the official Motus loaders), 'auto' "
                        "(default) = leader when the episode recorded one")
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
    uses_text = get_format(args.format).embeddings
    encoder = text_encoder_from_args(args) if uses_text != "none" else None
    if encoder is None and uses_text == "optional":
        log.warning("no --text-encoder: instructions are written without umT5 embeddings (Motus training needs them)")
    cfg = ConvertConfig(
        episodes_dir=args.episodes_dir, output_dir=args.output_dir, format=args.format, task=args.task,
        stats_key=args.stats_key,
        sync=SyncOptions(max_age_s=args.max_age, max_gap_s=args.max_gap, fps=args.fps, force=args.force),
        outcomes=tuple(o.strip() for o in args.outcomes.split(",") if o.strip()),
        video=VideoOptions(fps=args.fps, crf=args.crf, preset=args.preset),
        text_encoder=encoder,
        embedding_cache=args.embedding_cache or (args.output_dir / ".embedding_cache" if encoder is not None else None),
        robotwin_split=args.robotwin_split, episodes=tuple(args.episodes), progress=not args.quiet, actions=args.actions,
    )
    try:
        summary = Converter(cfg).run()
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"motus-convert: {exc}", file=sys.stderr)
        return 2
    counts = summary.as_dict()["counts"]
    print(f"{args.output_dir}: " + (", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no episodes found"))
    for e in summary.episodes:
        if e.status in ("excluded", "failed", "skipped", "removed"):
            print(f"  {e.episode_id}: {e.status}: {e.reason}")
    if summary.in_dataset == 0:
        left_out = {s: counts[s] for s in ("failed", "excluded", "skipped") if counts[s]}
        detail = ", ".join(f"{v} {k}" for k, v in left_out.items()) or f"no episodes in {args.episodes_dir}"
        print(f"motus-convert: no episode converted ({detail}); the reasons are listed above and in "
              f"{args.output_dir / 'conversion_report.json'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
