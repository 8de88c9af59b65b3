"""``motus-convert-checkpoint``: official Motus files -> one converted checkpoint directory.

Reads (all local paths, offline): ``--motus`` (DeepSpeed checkpoint), ``--wan`` (Wan2.2-TI2V-5B:
config, VAE, umT5 + tokenizer, each also given separately), ``--vlm`` (Qwen3-VL-2B-Instruct) and
optionally ``--config`` (the official yaml). Writes ``--out`` with a ``motus_policy.yaml`` that
``load_policy(<out>)`` and the policy node read. ``--encode TEXT`` (repeatable) pre-computes
instruction embeddings into the directory's cache. The library is
:mod:`motus_core.models.motus.convert_checkpoint` (details of every input there).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from motus_core.models.motus.convert import CheckpointError
from motus_core.models.motus.convert_checkpoint import DTYPES, load_mapping, convert_checkpoint

log = logging.getLogger("motus-convert-checkpoint")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="motus-convert-checkpoint", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--motus", required=True, help="directory with mp_rank_00_model_states.pt (or the file)")
    ap.add_argument("--wan", help="Wan2.2-TI2V-5B directory (config.json, Wan2.2_VAE.pth, umT5 file + tokenizer)")
    ap.add_argument("--wan-config", help="Wan config.json (default: <wan>/config.json)")
    ap.add_argument("--vae", help="Wan2.2_VAE.pth (default: <wan>/Wan2.2_VAE.pth)")
    ap.add_argument("--vae-config", help="json of WanVAE_ arguments + latents_mean/latents_std (default: Wan2.2 VAE)")
    ap.add_argument("--vlm", required=True, help="Qwen3-VL directory (config.json + processor/tokenizer files)")
    ap.add_argument("--vlm-config-only", action="store_true", help="do not copy processor files (tiny VLMs)")
    ap.add_argument("--config", help="official training/inference yaml (or json/yaml of MotusConfig fields)")
    ap.add_argument("--umt5", help="models_t5_umt5-xxl-enc-bf16.pth (default: <wan>/models_t5_umt5-xxl-enc-bf16.pth)")
    ap.add_argument("--umt5-config", help="json of Wan T5 encoder arguments (default: umT5-XXL)")
    ap.add_argument("--umt5-tokenizer", help="umT5 tokenizer directory, or 'bytes' (default: <wan>/google/umt5-xxl)")
    ap.add_argument("--no-text-encoder", action="store_true", help="do not convert umT5 (instructions must be pre-encoded)")
    ap.add_argument("--encode", action="append", default=[], help="instruction to pre-encode into the cache (repeatable)")
    ap.add_argument("--stats", help="stat.json to copy into the directory")
    ap.add_argument("--stats-key", help="robot key inside --stats")
    ap.add_argument("--dtype", default="keep", choices=sorted(DTYPES), help="dtype of the written weights")
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    wan = Path(args.wan).expanduser() if args.wan else None

    def pick(value, default_name):
        if value:
            return Path(value).expanduser()
        if wan is not None and (wan / default_name).exists():
            return wan / default_name
        return None

    wan_cfg_path = pick(args.wan_config, "config.json")
    vae_path = pick(args.vae, "Wan2.2_VAE.pth")
    if wan_cfg_path is None or vae_path is None:
        ap.error("give --wan (the Wan2.2-TI2V-5B directory) or both --wan-config and --vae")
    umt5 = tok = None
    if not args.no_text_encoder:
        umt5 = pick(args.umt5, "models_t5_umt5-xxl-enc-bf16.pth")
        tok = args.umt5_tokenizer or (str(wan / "google" / "umt5-xxl") if wan is not None else None)
        if umt5 is None or tok is None:
            ap.error("umT5 not found: give --umt5 and --umt5-tokenizer, or --no-text-encoder")
    vlm_dir = Path(args.vlm).expanduser()
    try:
        out = convert_checkpoint(
            args.out, motus=args.motus, wan_config=json.loads(wan_cfg_path.read_text()), vae=vae_path,
            vlm_config=json.loads((vlm_dir / "config.json").read_text()),
            motus_config=load_mapping(args.config), vae_config=load_mapping(args.vae_config),
            vlm_processor=None if args.vlm_config_only else vlm_dir, umt5=umt5,
            umt5_config=load_mapping(args.umt5_config), umt5_tokenizer=tok, dtype=DTYPES[args.dtype],
            stats=args.stats, stats_key=args.stats_key, encode=tuple(args.encode),
        )
    except CheckpointError as exc:
        log.error("%s", exc)
        return 1
    log.info("Wrote %s. Load it with load_policy(%r, profile=...).", out, str(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
