"""What the trainers (Motus Stage 3, MoLA stages) share: the process's place in a distributed run and the
deterministic batch order, so that both resume the same way.

A step's batch depends only on (step, rank, world): resuming at step s continues with exactly the batches an
uninterrupted run would have drawn, and the ranks of a distributed run never overlap within a step.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


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


def setup_distributed(device: str = "auto") -> DistInfo:
    """This process's place in the run: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK (then the process group
    is joined: NCCL on CUDA, gloo on the CPU); without them this is a single process.

    ``kill -USR1 <pid>`` of a training process prints every thread's Python stack to stderr (a hung
    rank shows where it waits)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def leave_process_group(timeout: float = 60.0) -> bool:
    """Every rank meets at a barrier, then the process group is destroyed, both bounded by ``timeout``.

    False when that did not finish in time (a peer gone, or ``destroy_process_group`` hanging, which
    it does now and then even after a barrier: pytorch/pytorch#75097; once it held a 3-step CPU run
    for 20 minutes). ``end_distributed_rank`` then ends the process at once either way.
    """
    if not dist.is_initialized():
        return True

    def leave():
        try:
            if dist.get_world_size() > 1:
                dist.barrier()
        except (RuntimeError, ValueError) as exc:  # a peer already gone: leave anyway
            log.warning("leaving the process group without the other ranks: %s", exc)
        dist.destroy_process_group()

    t = threading.Thread(target=leave, name="leave_process_group", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        log.warning("the process group was not left within %.0f s (a peer or the backend hangs): exiting without it", timeout)
        return False
    return True


def end_distributed_rank(code: int) -> None:
    """End a torchrun rank whose work is written: leave the process group (bounded), then exit at once
    with ``code``, never through the interpreter's teardown.

    That teardown frees the DDP reducer, whose last reference to the gloo process group runs
    ``~ProcessGroupGloo`` while holding the GIL and waits for gloo's worker thread; that thread, still
    freeing the leave barrier's work, waits for the GIL to drop a tensor's Python object: a deadlock
    (py-spy of a CI rank stuck 18 min after a 3-step run: main thread in
    ``~ProcessGroupGloo -> pthread_mutex_lock`` under ``Reducer`` dealloc, the worker in
    ``~AsyncBarrierWork -> gil_scoped_acquire``). Both trainers end their ranks here."""
    leave_process_group()
    exit_now(code)


def exit_now(code: int) -> None:
    """End the process at once with ``code`` (after flushing the logs), skipping the interpreter's
    shutdown, which would wait on a process group that never finished leaving."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


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
