"""A seeded, smooth push on the follower arms: demonstrations that show how to get back on course.

A policy trained only on clean demonstrations has only ever seen the arm on the demonstrated path. Its
first chunks are a few centimetres off (the cube's position is uncertain from the first images), the
arm follows them, and from there it continues the offset instead of correcting it (the eighth proof
run: ``bench/closed_loop_sim.py``, docs/proof.md). DART (Laskey et al., 2017) injects noise into the
demonstrator's execution and records the demonstrator's own, corrective, actions. On a leader-follower
rig that is a push on the *follower*: the leader command (what the recorder stores as the action) stays
the demonstrator's, the follower (the recorded state and what the cameras see) is pushed off it.

:class:`TrackingDisturbance` adds a smooth offset to the arm joints' setpoints: per joint a sum of
``SINES`` sinusoids with random frequencies in ``[min_hz, max_hz]`` and phases, scaled to an RMS of
``amplitude`` rad, faded in over ``fade`` s from the episode start (the robot starts at its measured
pose) and out over the ``fade`` s before ``until`` (the task's precise part runs undisturbed). Grippers
are never pushed. The same seed gives the same push.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model import ARM_INDICES

SINES = 3


@dataclass
class DisturbanceConfig:
    amplitude: float = field(default=0.0, metadata={"help": "rad, RMS push on each arm joint's setpoint (0 = off)", "min": 0.0, "max": 0.3})
    until: float = field(default=0.0, metadata={"help": "episode s by which the push has faded out (0 = the whole episode)", "min": 0.0})
    fade: float = field(default=0.3, metadata={"help": "s of fade-in after the episode start and fade-out before 'until'", "min": 0.0})
    min_hz: float = field(default=0.3, metadata={"help": "lowest frequency of the push", "min": 0.01})
    max_hz: float = field(default=1.0, metadata={"help": "highest frequency of the push", "min": 0.01})

    def validate(self) -> None:
        if not 0.0 <= self.amplitude <= 0.3:
            raise ValueError(f"disturbance amplitude must be within 0..0.3 rad, got {self.amplitude}")
        if self.min_hz <= 0 or self.max_hz < self.min_hz:
            raise ValueError(f"disturbance frequencies need 0 < min_hz <= max_hz, got {self.min_hz}..{self.max_hz}")
        if self.fade < 0 or self.until < 0:
            raise ValueError("disturbance fade and until must be >= 0")
        if self.until and self.until < 2 * self.fade:
            raise ValueError(f"disturbance until ({self.until} s) must leave room to fade in and out (2 x fade = {2 * self.fade} s)")

    @property
    def active(self) -> bool:
        return self.amplitude > 0.0


def _smoothstep(x: np.ndarray | float) -> np.ndarray | float:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class TrackingDisturbance:
    """The push of one episode (see module doc); ``offset(t)`` at episode time ``t`` (14-dim, sim units)."""

    def __init__(self, cfg: DisturbanceConfig, seed: int):
        cfg.validate()
        self.cfg = cfg
        rng = np.random.default_rng([int(seed), 0x5D157])  # not the stream that places the objects
        n = len(ARM_INDICES)
        self.arm = np.asarray(ARM_INDICES)
        self.freq = rng.uniform(cfg.min_hz, cfg.max_hz, (n, SINES))
        self.phase = rng.uniform(0.0, 2.0 * np.pi, (n, SINES))
        # a sum of K independent unit sinusoids has RMS sqrt(K / 2)
        self.scale = cfg.amplitude * np.sqrt(2.0 / SINES)

    def over(self, t: float) -> bool:
        """True from ``until`` on: the push is zero for the rest of the episode."""
        return bool(self.cfg.until) and t >= self.cfg.until

    def envelope(self, t: float) -> float:
        c = self.cfg
        if t <= 0.0:
            return 0.0
        up = _smoothstep(t / c.fade) if c.fade > 0 else 1.0
        if not c.until:
            return float(up)
        down = _smoothstep((c.until - t) / c.fade) if c.fade > 0 else float(t < c.until)
        return float(up * down)

    def offset(self, t: float) -> np.ndarray:
        out = np.zeros(14)
        e = self.envelope(t)
        if e > 0.0:
            out[self.arm] = e * self.scale * np.sin(2.0 * np.pi * self.freq * t + self.phase).sum(axis=1)
        return out
