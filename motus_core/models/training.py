"""What the trainers (Motus Stage 3, MoLA stages) share: the process's place in a distributed run and the
deterministic batch order, so that both resume the same way.

A step's batch depends only on (step, rank, world): resuming at step s continues with exactly the batches an
uninterrupted run would have drawn, and the ranks of a distributed run never overlap within a step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Sampler


@dataclass
class DistInfo:
    """This process in a (torchrun) run: rank, world size, local rank and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


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
