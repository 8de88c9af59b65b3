"""The simulator's scheduler without ROS (motus_core.sim.runner): event rates, stamps on the period
grid, real-time pacing and the lag accounting that sim_node publishes."""
import os
import time

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from motus_core.sim.config import SimConfig  # noqa: E402
from motus_core.sim.runner import SimOutputs, SimRunner  # noqa: E402


@pytest.fixture(scope="module")
def sim_and_renderer():
    from motus_core.sim.render import CameraRenderer
    from motus_core.sim.simulator import AlohaSim

    sim = AlohaSim("transfer_cube", seed=0, offscreen_size=(64, 48))
    renderer = CameraRenderer(sim.model, 64, 48, ("high",))
    yield sim, renderer
    renderer.close()


def run_for(sim, renderer, cfg, sim_seconds):
    events = {"clock": [], "state": [], "images": [], "status": []}
    out = SimOutputs(clock=events["clock"].append, state=events["state"].append,
                     images=lambda imgs, t: events["images"].append((t, set(imgs), next(iter(imgs.values())).shape)),
                     status=events["status"].append)
    start = sim.time
    polls = []
    runner = SimRunner(sim, renderer, ("high",), cfg, out, poll=lambda: polls.append(1), running=lambda: sim.time < start + sim_seconds)
    wall = time.monotonic()
    runner.run()
    return events, time.monotonic() - wall, runner, len(polls), start


def test_events_at_their_rates_on_the_period_grid(sim_and_renderer):
    sim, renderer = sim_and_renderer
    cfg = SimConfig(camera_rate=30.0, joint_state_rate=100.0, clock_rate=200.0, real_time_factor=50.0)
    events, _, runner, polls, start = run_for(sim, renderer, cfg, 0.5)
    for name, rate in (("clock", 200), ("state", 100)):
        t = np.asarray(events[name]) - start
        assert abs(len(t) - 0.5 * rate) <= 2, (name, len(t))
        # each event at the physics step nearest its time on the rate's grid (2 ms steps)
        assert np.all(np.abs(t - np.round(t * rate) / rate) <= sim.dt / 2 + 1e-9), name
    frames = events["images"]
    assert abs(len(frames) - 15) <= 1 and all(roles == {"high"} and shape == (48, 64, 3) for _, roles, shape in frames)
    assert runner.counters.frames_rendered == len(frames)
    assert polls >= len(events["clock"])  # commands are applied before every step


def test_pacing_follows_the_real_time_factor(sim_and_renderer):
    sim, renderer = sim_and_renderer
    cfg = SimConfig(real_time_factor=2.0)
    _, wall, runner, _, _ = run_for(sim, renderer, cfg, 0.4)
    # 0.4 s of sim time at twice real time takes at least 0.2 s of wall time (never faster)
    assert wall >= 0.2 - 0.01
    # a runner that cannot keep up counts slips instead of racing: max_lag 0 with an impossible factor
    cfg = SimConfig(real_time_factor=1000.0, max_lag=0.0, camera_rate=30.0)
    _, _, runner, _, _ = run_for(sim, renderer, cfg, 0.2)
    assert runner.counters.time_slips > 0
