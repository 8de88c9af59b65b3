"""``mola-convert-checkpoint``: a released MoLA checkpoint -> our policy directory, strictly.

    mola-convert-checkpoint --release MoLA-ckpt/calvin.pt --config official_calvin \\
        --video models/stable-video-diffusion-img2vid --text-encoder models/clip-vit-base-patch32 \\
        --stats stat.json --stats-key calvin --out runs/mola_release_calvin

The release's ``{"model": state_dict}`` holds the trainable policy (IDMs, input projection, Video
Former, head) and the frozen SVD UNet / VAE and CLIP text encoder it was trained with. Keys are
mapped with :mod:`.checkpoint` (every key either maps or is in the documented ignore list; every
key of our model must be present). The UNet / VAE / text encoder found in the checkpoint are loaded
strictly into the architectures of the local ``--video`` / ``--text-encoder`` directories and saved
as ``<out>/video_model`` and ``<out>/text_encoder``; the policy directory is ``<out>/policy``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .checkpoint import CheckpointError, load_release_checkpoint, load_strict, split_release_state_dict, write_policy_dir
from .config import MolaConfig
from .model import MolaNet
from .video import VideoModel


def convert_release(release: str | Path, cfg: MolaConfig, out: str | Path, *, stats_file: str | Path | None,
                    stats_key: str | None) -> Path:
    out = Path(out)
    net_state, video_state, _ignored = split_release_state_dict(load_release_checkpoint(release))
    net = MolaNet(cfg)
    load_strict(net, net_state, f"release checkpoint {release}")
    video = VideoModel.build(cfg.video)
    data = cfg.to_dict()
    for part, module in (("unet", video.unet), ("vae", video.vae), ("text_encoder", video.text_encoder)):
        if video_state[part]:
            load_strict(module, video_state[part], f"release checkpoint {release} ({part})")
    if video_state["unet"] or video_state["vae"]:
        video.unet.save_pretrained(out / "video_model" / "unet")
        video.vae.save_pretrained(out / "video_model" / "vae")
        data["video"]["pretrained"] = str((out / "video_model").resolve())
    if video_state["text_encoder"]:
        video.text_encoder.save_pretrained(out / "text_encoder")
        video.tokenizer.save_pretrained(out / "text_encoder")
        data["video"]["text_encoder"] = str((out / "text_encoder").resolve())
    policy = out / "policy"
    policy.mkdir(parents=True, exist_ok=True)
    stats_name = None
    if stats_file:
        shutil.copyfile(stats_file, policy / "stat.json")
        stats_name = "stat.json"
    return write_policy_dir(policy, MolaConfig.from_dict(data), net.state_dict(), stats_file=stats_name, stats_key=stats_key)


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
