"""``mola-convert-checkpoint``: a released MoLA checkpoint -> our policy directory, strictly.

    mola-convert-checkpoint --release MoLA-ckpt/calvin.pt --config official_calvin \\
        --video models/stable-video-diffusion-img2vid --text-encoder models/clip-vit-base-patch32 \\
        --stats stat.json --stats-key calvin --out runs/mola_release_calvin

The library is :mod:`motus_core.models.mola.convert` (what is converted and how).
"""
from __future__ import annotations

import argparse
import sys

from motus_core.models.mola.checkpoint import CheckpointError
from motus_core.models.mola.config import MolaConfig
from motus_core.models.mola.convert import convert_release


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Convert a released MoLA checkpoint into a motus-ros policy directory.")
    ap.add_argument("--release", required=True, help="release checkpoint (.pt/.ckpt with {'model': ...}, or .safetensors)")
    ap.add_argument("--config", default="official_calvin", help="official_calvin | aloha | <mola_config.yaml>")
    ap.add_argument("--video", required=True, help="local diffusers SVD directory (architecture of the UNet/VAE)")
    ap.add_argument("--text-encoder", required=True, help="local CLIP directory (tokenizer + text model)")
    ap.add_argument("--stats", default=None, help="stat.json with the normalisation statistics")
    ap.add_argument("--stats-key", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    cfg = getattr(MolaConfig, args.config)() if args.config in ("official_calvin", "aloha") else MolaConfig.load(args.config)
    cfg.video.pretrained, cfg.video.text_encoder = args.video, args.text_encoder
    try:
        policy = convert_release(args.release, cfg, args.out, stats_file=args.stats, stats_key=args.stats_key)
    except (CheckpointError, FileNotFoundError) as exc:
        print(f"mola-convert-checkpoint: {exc}", file=sys.stderr)
        return 1
    print(policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
