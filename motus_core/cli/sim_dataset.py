"""``motus-sim-dataset``: scripted demonstrations of the simulated robot straight into the Motus layout.

    motus-sim-dataset OUTPUT_DIR [--task transfer_cube] [--episodes 10] [--ground-truth high] [--text-encoder DIR]

The library is :mod:`motus_core.sim.dataset` (``generate``; what is written and why is described there).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from motus_core.cli.text_encoder import add_text_encoder_args, text_encoder_from_args
from motus_core.sim.dataset import ROLES, SimDatasetOptions, generate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="motus-sim-dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("output_dir", type=Path, help="dataset root (episodes go to OUTPUT_DIR/<task>/)")
    p.add_argument("--task", default="transfer_cube", choices=("transfer_cube", "insertion"))
    p.add_argument("--episodes", type=int, default=10, help="number of seeded demonstrations (default 10)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--size", default="240x320", help="camera image size HxW (default 240x320)")
    p.add_argument("--ground-truth", default="", help="camera roles to store exact depth/segmentation/flow for, "
                   "comma separated (e.g. high or high,left_wrist,right_wrist); default none")
    p.add_argument("--keep-failures", action="store_true", help="also keep failed demonstrations")
    p.add_argument("--stats-key", default="sim_aloha", help="stat.json key (default sim_aloha)")
    add_text_encoder_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"motus-sim-dataset: --size must be HxW, got {args.size!r}", file=sys.stderr)
        return 2
    roles = tuple(r.strip() for r in args.ground_truth.split(",") if r.strip())
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        print(f"motus-sim-dataset: unknown camera roles {unknown}; choose from {ROLES}", file=sys.stderr)
        return 2
    encoder = text_encoder_from_args(args)
    opts = SimDatasetOptions(task=args.task, episodes=args.episodes, first_seed=args.first_seed, height=h, width=w,
                             ground_truth=roles, keep_failures=args.keep_failures, stats_key=args.stats_key)
    try:
        summary = generate(args.output_dir, opts, text_encoder=encoder, progress=not args.quiet)
    except (ValueError, OSError) as exc:
        print(f"motus-sim-dataset: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
