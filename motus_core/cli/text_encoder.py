"""The ``--text-encoder`` / ``--tiny-text-encoder`` options of the dataset tools and the encoder they build.

The data layer takes any ``motus_core.data.text.TextEncoder``; here the tools choose the Motus umT5.
"""
from __future__ import annotations

import argparse


def add_text_encoder_args(p: argparse.ArgumentParser) -> None:
    """The instruction-embedding options shared by the dataset writers (read by :func:`text_encoder_from_args`)."""
    p.add_argument("--text-encoder", help="converted umT5 directory (motus-convert-checkpoint --umt5) for the instruction embeddings")
    p.add_argument("--tiny-text-encoder", action="store_true", help="tiny random umT5 (tests and demos only)")
    p.add_argument("--device", default="cpu", help="device of the text encoder")


def text_encoder_from_args(args: argparse.Namespace):
    """The umT5 encoder chosen by --text-encoder / --tiny-text-encoder (None: no embeddings)."""
    if args.tiny_text_encoder:
        from motus_core.models.motus.text_encoder import build_tiny_text_encoder

        return build_tiny_text_encoder(seed=0)
    if args.text_encoder:
        from motus_core.models.motus.text_encoder import load_text_encoder

        return load_text_encoder(args.text_encoder, device=args.device)
    return None
