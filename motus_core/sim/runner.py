"""The simulator's multi-rate scheduler with real-time pacing (ROS-free); ``sim_node`` is its transport.

One thread owns MuJoCo and the renderer (EGL contexts are per thread). Each iteration: let the owner
apply queued commands (``poll``), step physics to the next event (clock, joint state, camera, each on
its own period of sim time, kept as integer multiples: no drift), render a due camera frame before
sleeping, sleep until the wall time of that sim time (``real_time_factor``), then hand the events to
the transport. Falling behind: a frame whose wall deadline (stamp + one period) passed is *late*;
with ``skip_late_frames`` it is not rendered (*skipped*); more than ``max_lag`` behind lets sim time
slip (``time_slips``) instead of racing to catch up.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from motus_core.sim.simulator import SimulationError


@dataclass
class SimCounters:
    frames_rendered: int = 0
    frames_late: int = 0
    frames_skipped: int = 0
    time_slips: int = 0
    commands_received: int = 0
    commands_rejected: int = 0
    values_clamped: int = 0
    points_skipped: int = 0
    physics_errors: int = 0
    rejections: dict = field(default_factory=collections.Counter)

    @property
    def frames_dropped(self) -> int:
        # frames never published; a late frame was published (behind its wall-clock schedule) and is not dropped
        return self.frames_skipped


def _noop(*_args) -> None:
    return None


@dataclass
class SimOutputs:
    """What the runner hands to its transport (sim time in seconds)."""

    clock: Callable[[float], None] = _noop
    state: Callable[[float], None] = _noop  # joint states, object poses, success
    images: Callable[[dict, float], None] = _noop  # {camera role: HxWx3 uint8}, stamp
    status: Callable[[float], None] = _noop  # achieved real-time factor, every 1 / status_rate wall seconds
    physics_error: Callable[[Exception], None] = _noop  # the episode is reset after it


class SimRunner:
    """Runs ``sim`` (an ``AlohaSim``) until ``running()`` is False.

    ``renderer`` renders the camera ``roles``; ``poll()`` runs before every step (apply commands,
    resets; it may replace ``runner.renderer``); ``wake`` cuts a pacing sleep short (shutdown).
    """

    def __init__(self, sim, renderer, roles, cfg, outputs: SimOutputs, *, poll: Callable[[], None] = _noop,
                 running: Callable[[], bool] = lambda: True, wake: threading.Event | None = None,
                 counters: SimCounters | None = None):
        self.sim = sim
        self.renderer = renderer
        self.roles = tuple(roles)
        self.cfg = cfg
        self.out = outputs
        self.poll = poll
        self.running = running
        self.wake = wake or threading.Event()
        self.counters = counters or SimCounters()
        self.periods = {"clock": 1.0 / cfg.clock_rate, "state": 1.0 / cfg.joint_state_rate, "camera": 1.0 / cfg.camera_rate}

    def run(self) -> None:
        cfg, sim, periods = self.cfg, self.sim, self.periods
        # Event times are kept as integer multiples of each period (no drift); k counts events.
        t0 = sim.time
        k = {name: 0 for name in periods}
        wall0 = time.monotonic()
        sim0 = sim.time
        rtf = cfg.real_time_factor
        next_status = wall0
        status_mark = (wall0, sim.time)
        while self.running():
            self.poll()
            due_times = {name: t0 + k[name] * p for name, p in periods.items()}
            t_next = min(due_times.values())
            if t_next < sim.time - 1e-9:  # after a reset or a slip: re-base the schedule
                t0 = sim.time
                k = {name: 0 for name in periods}
                continue
            try:
                sim.step_until(t_next)
            except SimulationError as exc:
                self.counters.physics_errors += 1
                self.out.physics_error(exc)
                sim.reset(seed=sim.seed)
                continue
            now_sim = sim.time
            # an event is due at the physics step nearest to its time (steps are 2 ms, periods are not multiples)
            due = [name for name, t in due_times.items() if t <= now_sim + 0.5 * sim.dt]
            wall_target = wall0 + (now_sim - sim0) / rtf
            images = None
            if "camera" in due:
                deadline = wall_target + periods["camera"] / rtf
                if cfg.skip_late_frames and time.monotonic() > deadline:
                    self.counters.frames_skipped += 1
                else:
                    images = {r: self.renderer.render(sim.data, r) for r in self.roles}
                    self.counters.frames_rendered += 1
            if "state" in due:
                sim.update_task()
            # pace: wait for the wall time of this sim time, then publish
            lag = time.monotonic() - wall_target
            if lag < 0:
                self.wake.wait(-lag)
                self.wake.clear()
            elif lag > cfg.max_lag:
                wall0 += lag  # let sim time slip instead of racing to catch up
                self.counters.time_slips += 1
            if "clock" in due:
                self.out.clock(now_sim)
            if "state" in due:
                self.out.state(now_sim)
            if images is not None:
                self.out.images(images, now_sim)
                if time.monotonic() > wall_target + periods["camera"] / rtf:
                    self.counters.frames_late += 1
            for name in due:
                k[name] += 1
            wall_now = time.monotonic()
            if wall_now >= next_status:
                achieved = (sim.time - status_mark[1]) / max(wall_now - status_mark[0], 1e-9)
                status_mark = (wall_now, sim.time)
                next_status = wall_now + 1.0 / cfg.status_rate
                self.out.status(achieved)
