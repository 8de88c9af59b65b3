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

import torch

from ..vae import MotusVAE
from ..vlm import VLMFeatures


class EncoderCache:
    def __init__(self, max_mb: float):
        self.max_bytes = int(max_mb * 2**20)
        self.used = 0
        self.latents: dict[tuple, torch.Tensor] = {}
        self.features: dict[tuple, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def _keep(self, store: dict, key: tuple, value: torch.Tensor) -> None:
        n = value.numel() * value.element_size()
        if self.used + n <= self.max_bytes:
            store[key] = value
            self.used += n

    @staticmethod
    def keys(batch: dict) -> list[tuple]:
        if "episode" not in batch or "cond_index" not in batch:
            raise KeyError("the encoder cache needs each sample's 'episode' and 'cond_index' (the reader's collate)")
        return list(zip(batch["episode"], batch["cond_index"]))

    def vae_latents(self, vae: MotusVAE, pixels: torch.Tensor, keys: list[tuple]) -> torch.Tensor:
        """``pixels [B, 3, T, H, W]`` -> the normalised latents, one sample at a time, cached by key."""
        out = []
        for i, key in enumerate(keys):
            z = self.latents.get(key)
            if z is None:
                self.misses += 1
                with torch.no_grad():
                    z = vae.encode_pixels(pixels[i:i + 1])[0]
                self._keep(self.latents, key, z)
            else:
                self.hits += 1
            out.append(z)
        return torch.stack(out)

    def vlm_features(self, vlm: VLMFeatures, inputs: list[dict], keys: list[tuple], instructions: list[str]) -> list[torch.Tensor]:
        """A frozen VLM's last hidden state ``[L, D]`` per sample, cached by (key, instruction)."""
        from .step import vlm_hidden_one

        out = []
        for inp, key, text in zip(inputs, keys, instructions):
            k = (*key, text)
            h = self.features.get(k)
            if h is None:
                h = vlm_hidden_one(vlm, inp)
                self._keep(self.features, k, h)
            out.append(h)
        return out

    def describe(self) -> str:
        n = self.hits + self.misses
        return (f"{len(self.latents)} latents and {len(self.features)} VLM features cached, {self.used / 2**20:.0f} of "
                f"{self.max_bytes / 2**20:.0f} MB; {self.hits} of {n} VAE encodes saved")
