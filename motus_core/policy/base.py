"""The policy interface every model plugs into (Motus, MoLA, the tiny test model, replay).

The runtime (policy node, benchmarks, tests) only talks to :class:`Policy`. A policy receives one
coherent :class:`Observation` and returns an :class:`ActionChunk` in the robot's joint units (already
de-normalised), on the time grid ``stamp + (k + 1) * step_period``.

Real-time chunking: the executor knows which actions are already committed for execution while the
next chunk is being computed. It passes them as ``PolicyRequest.prefix`` (joint units, on the new
chunk's time grid: ``prefix[k]`` is the target for ``stamp + (k + 1) * step_period``) together with the
delay it expects (``expected_delay``, in actions). Flow-matching policies inpaint the rest of the chunk
so it continues the prefix smoothly (see ``motus_core.flow.guidance``); policies that cannot do so
report ``supports_prefix = False`` and the executor falls back to blending.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

MODES = ("vla", "joint", "world_model", "idm", "video")


class PolicyError(RuntimeError):
    """The policy could not produce a chunk (bad input, bad checkpoint, model failure)."""


@dataclass
class Observation:
    """One coherent snapshot of the robot."""

    images: Mapping[str, np.ndarray]  # camera role ("high", "left_wrist", "right_wrist") -> HxWx3 uint8 RGB
    state: np.ndarray  # (dof,) float64, joint units, the profile's canonical order
    stamp: float  # seconds, stamp of the reference stream (high camera), on the robot's clock
    stream_stamps: Mapping[str, float] = field(default_factory=dict)  # per stream, for diagnostics


@dataclass
class PolicyRequest:
    observation: Observation
    instruction: str = ""
    mode: str = "vla"
    prefix: np.ndarray | None = None  # (d, dof) committed actions, joint units, on this chunk's time grid
    expected_delay: int = 0  # actions that will execute before this chunk can take over
    return_frames: bool = False  # decode and return predicted future frames when the mode makes them
    seed: int | None = None  # for reproducible sampling


@dataclass
class ActionChunk:
    actions: np.ndarray  # (K, dof) float64, joint units
    step_period: float  # seconds between actions
    stamp: float  # observation stamp the chunk was computed from
    prefix_length: int = 0
    mode: str = "vla"
    model: str = ""
    frames: np.ndarray | None = None  # (F, H, W, 3) uint8 predicted frames (model layout), or None
    frame_offsets: Sequence[float] | None = None  # seconds after ``stamp`` each frame predicts
    condition_image: np.ndarray | None = None  # the model-size input image (uint8), for comparison
    timing: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    info: dict = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])

    def times(self) -> np.ndarray:
        """Absolute time of each action target."""
        return self.stamp + self.step_period * np.arange(1, self.num_steps + 1)


class Policy(abc.ABC):
    """Observation in, de-normalised action chunk out."""

    #: short model name reported in ActionChunk.model
    name: str = "policy"
    #: joint dimension of observations and actions
    dof: int = 14
    #: number of actions per chunk and their period
    chunk_length: int = 48
    step_period: float = 1.0 / 30.0
    #: modes this policy can run
    modes: Sequence[str] = ("vla",)
    #: whether ``PolicyRequest.prefix`` is honoured (flow-matching inpainting)
    supports_prefix: bool = False

    def warmup(self) -> None:
        """Run the model once on dummy input so the first real call has no one-off costs."""

    def set_instruction(self, instruction: str) -> bool:
        """Prepare the instruction (e.g. compute and cache its text embedding).

        Returns True when the preparation came from a cache (no model call).
        """
        return True

    @abc.abstractmethod
    def predict(self, request: PolicyRequest) -> ActionChunk:
        """Compute one chunk. Raises PolicyError on bad input; never returns non-finite actions."""

    def reset(self) -> None:
        """Forget per-episode state (e.g. replay position)."""

    def close(self) -> None:
        """Release the model (GPU memory, threads)."""

    # ------------------------------------------------------------------ helpers for implementations
    def check_request(self, request: PolicyRequest) -> None:
        obs = request.observation
        state = np.asarray(obs.state)
        if state.shape != (self.dof,):
            raise PolicyError(f"{self.name}: state must have shape ({self.dof},), got {state.shape}")
        if not np.all(np.isfinite(state)):
            raise PolicyError(f"{self.name}: state contains NaN or inf")
        if request.mode not in self.modes:
            raise PolicyError(f"{self.name}: mode {request.mode!r} not supported (supported: {list(self.modes)})")
        if request.prefix is not None:
            prefix = np.asarray(request.prefix)
            if prefix.ndim != 2 or prefix.shape[1] != self.dof or prefix.shape[0] > self.chunk_length:
                raise PolicyError(f"{self.name}: prefix must have shape (d<={self.chunk_length}, {self.dof}), got {prefix.shape}")
            if not np.all(np.isfinite(prefix)):
                raise PolicyError(f"{self.name}: prefix contains NaN or inf")


def check_chunk(chunk: ActionChunk, dof: int, lower: Sequence[float] | None = None, upper: Sequence[float] | None = None) -> str | None:
    """Return why a chunk is unusable (None if it is fine). Shared by the policy node and executor."""
    a = np.asarray(chunk.actions)
    if a.ndim != 2 or a.shape[1] != dof or a.shape[0] == 0:
        return f"actions have shape {a.shape}, expected (K>0, {dof})"
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        return f"non-finite action at step {bad[0]}, joint {bad[1]}"
    if not (np.isfinite(chunk.step_period) and chunk.step_period > 0):
        return f"step period {chunk.step_period} is not positive"
    if lower is not None and upper is not None:
        lo = np.asarray(lower)
        hi = np.asarray(upper)
        below = a < lo
        above = a > hi
        if below.any() or above.any():
            k, j = np.argwhere(below | above)[0]
            return f"action at step {k}, joint {j} = {a[k, j]:.4f} outside [{lo[j]:.4f}, {hi[j]:.4f}]"
    return None
