"""The deterministic batch order of the trainers (Motus Stage 3, MoLA stages), shared so that both resume the same way.

A step's batch depends only on (step, rank, world): resuming at step s continues with exactly the batches an
uninterrupted run would have drawn, and the ranks of a distributed run never overlap within a step.
"""
from __future__ import annotations

from torch.utils.data import Sampler


class StepBatchSampler(Sampler):
    """Batches of steps ``start .. total-1`` for one rank: indices ``((s * world + r) * B + j) % len``."""

    def __init__(self, length: int, batch_size: int, start: int, total: int, rank: int = 0, world: int = 1):
        self.length, self.batch_size, self.start, self.total, self.rank, self.world = length, batch_size, start, total, rank, world

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self):
        for s in range(self.start, self.total):
            base = (s * self.world + self.rank) * self.batch_size
            yield [(base + j) % self.length for j in range(self.batch_size)]
