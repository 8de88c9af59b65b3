"""A released MoLA checkpoint -> our policy directory, strictly (the library behind
``mola-convert-checkpoint``, whose command line is :mod:`motus_core.cli.mola_convert_checkpoint`).

The release's ``{"model": state_dict}`` holds the trainable policy (IDMs, input projection, Video
Former, head) and the frozen SVD UNet / VAE and CLIP text encoder it was trained with. Keys are
mapped with :mod:`.checkpoint` (every key either maps or is in the documented ignore list; every
key of our model must be present). The UNet / VAE / text encoder found in the checkpoint are loaded
strictly into the architectures of the local ``--video`` / ``--text-encoder`` directories and saved
as ``<out>/video_model`` and ``<out>/text_encoder``; the policy directory is ``<out>/policy``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .checkpoint import load_release_checkpoint, load_strict, split_release_state_dict, write_policy_dir
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
