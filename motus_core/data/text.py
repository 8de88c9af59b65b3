"""Instruction embeddings as the data layer sees them: a text-encoder protocol and an on-disk cache.

The dataset writers need an instruction's embedding ``[L, D]`` (Motus: umT5, D = 4096) but must not
depend on a model package: whoever builds the encoder (the command-line tools, a training script)
passes an object that satisfies :class:`TextEncoder` (``motus_core.models.motus.text_encoder.TextEncoder``
does, and so does any test double with the same three members).

:class:`EmbeddingCache` stores one ``.pt`` file per (encoder identity, text); policies and converters
compute an instruction's embedding once and afterwards never load the encoder again for it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class TextEncoder(Protocol):
    """What a dataset writer needs from a text encoder."""

    @property
    def identity(self) -> str:
        """Names the weights and the tokenizer: embeddings of two encoders with one identity are equal."""

    @property
    def dim(self) -> int:
        """Width D of every embedding."""

    def encode(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One ``[L_i, D]`` tensor per text (L_i = its true token count)."""


def check_text_encoder(encoder) -> None:
    """Raise TypeError naming what is missing when ``encoder`` does not satisfy :class:`TextEncoder`."""
    missing = [m for m in ("identity", "dim", "encode") if not hasattr(encoder, m)]
    if missing or not callable(getattr(encoder, "encode", None)):
        raise TypeError(f"{type(encoder).__name__} is not a text encoder: needs identity, dim and encode(list[str]); "
                        f"missing {missing or ['a callable encode']}")


class EmbeddingCache:
    """On-disk cache of instruction embeddings: one ``.pt`` per (encoder identity, text).

    File name = sha256 of ``identity + "\\n" + text``; the file holds ``{"identity", "text",
    "embedding"}`` (the embedding ``[L, dim]`` on the CPU) and is written atomically.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, text: str, identity: str) -> Path:
        key = hashlib.sha256(f"{identity}\n{text}".encode("utf-8")).hexdigest()
        return self.directory / f"{key}.pt"

    def get(self, text: str, identity: str) -> torch.Tensor | None:
        p = self.path_for(text, identity)
        if not p.is_file():
            return None
        try:
            entry = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a truncated/corrupt file is a cache miss, recomputed and replaced
            return None
        if entry.get("identity") != identity or entry.get("text") != text:
            return None
        return entry["embedding"]

    def put(self, text: str, identity: str, embedding: torch.Tensor) -> Path:
        emb = embedding.detach().cpu()
        if emb.ndim != 2:
            raise ValueError(f"an instruction embedding is [L, dim], got {tuple(emb.shape)}")
        p = self.path_for(text, identity)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        os.close(fd)
        torch.save({"identity": identity, "text": text, "embedding": emb.clone()}, tmp)
        os.replace(tmp, p)
        return p

    def get_or_compute(self, text: str, encoder: TextEncoder) -> tuple[torch.Tensor, bool]:
        """(embedding, came_from_cache)."""
        hit = self.get(text, encoder.identity)
        if hit is not None:
            return hit, True
        emb = encoder.encode([text])[0]
        self.put(text, encoder.identity, emb)
        return emb, False
