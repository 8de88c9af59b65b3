"""Each sample's frozen-encoder outputs, computed once per run instead of at every step.

The VAE is frozen and its latent is the posterior mean: a sample (episode, condition frame) encodes to
the same latent every time it is drawn, and with the proof's small model the VAE took more than half of
each CPU step (docs/motus.md, "Encoder cache"). The same
holds for a frozen VLM's features of the condition image and instruction. This cache keeps both, up to
a memory budget; a full budget stops adding (nothing is evicted, so what a step sees does not depend
on eviction order).

Cached or not, a sample is encoded on its own (batch of one): conv kernels may round differently for
another batch composition, and a resumed run, which starts with an empty cache, must see bit for bit
the latents the uninterrupted run saw.
"""
from __future__ import annotations

from typing import Callable

import torch


class EncoderCache:
    def __init__(self, max_mb: float):
        self.max_bytes = int(max_mb * 2**20)
        self.used = 0
        self.latents: dict[tuple, torch.Tensor] = {}
        self.features: dict[tuple, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def _lookup(self, store: dict, key: tuple, compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
        value = store.get(key)
        if value is not None:
            return value, True
        value = compute()
        n = value.numel() * value.element_size()
        if self.used + n <= self.max_bytes:
            store[key] = value
            self.used += n
        return value, False

    @staticmethod
    def keys(batch: dict) -> list[tuple]:
        if "episode" not in batch or "cond_index" not in batch:
            raise KeyError("the encoder cache needs each sample's 'episode' and 'cond_index' (the reader's collate)")
        return list(zip(batch["episode"], batch["cond_index"]))

    def latent(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A sample's VAE latents: cached, or ``compute()`` (one sample's encode) and kept."""
        z, hit = self._lookup(self.latents, key, compute)
        self.hits += hit
        self.misses += not hit
        return z

    def feature(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A frozen VLM's features for a key that includes the instruction: cached, or ``compute()`` and kept."""
        return self._lookup(self.features, key, compute)[0]

    def describe(self) -> str:
        n = self.hits + self.misses
        return (f"{len(self.latents)} latents and {len(self.features)} VLM features cached, {self.used / 2**20:.0f} of "
                f"{self.max_bytes / 2**20:.0f} MB; {self.hits} of {n} VAE encodes saved")
