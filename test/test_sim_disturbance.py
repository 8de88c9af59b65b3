"""The push on the follower arms that recovery demonstrations are recorded with (ROS-free, plus the
launch argument that sets it)."""
from __future__ import annotations

import numpy as np
import pytest

from motus_core.sim.disturbance import DisturbanceConfig, TrackingDisturbance
from motus_core.sim.model import ARM_INDICES, GRIPPER_INDICES


def test_the_push_is_smooth_seeded_sized_and_confined_to_its_window():
    cfg = DisturbanceConfig(amplitude=0.05, until=3.0, fade=0.3)
    d = TrackingDisturbance(cfg, seed=7)
    t = np.arange(0.0, 4.0, 0.002)
    off = np.array([d.offset(x) for x in t])
    assert np.all(off[:, list(GRIPPER_INDICES)] == 0.0)  # grippers are never pushed
    assert np.all(off[0] == 0.0) and np.all(off[t >= 3.0] == 0.0)  # starts at the measured pose, ends before 'until'
    core = off[(t > 0.3) & (t < 2.7)][:, list(ARM_INDICES)]
    rms = float(np.sqrt((core ** 2).mean()))
    assert 0.5 * cfg.amplitude < rms < 1.6 * cfg.amplitude, rms
    # smooth: the setpoint never jumps (<= max_hz * 2 pi * peak per second, here well under 1 rad/s)
    assert np.abs(np.diff(off, axis=0)).max() / 0.002 < 1.0
    again = np.array([TrackingDisturbance(cfg, seed=7).offset(x) for x in t[::50]])
    other = np.array([TrackingDisturbance(cfg, seed=8).offset(x) for x in t[::50]])
    assert np.array_equal(again, off[::50]) and not np.allclose(other, off[::50])


@pytest.mark.parametrize("bad", [dict(amplitude=-0.1), dict(amplitude=0.5), dict(amplitude=0.05, min_hz=2.0, max_hz=1.0),
                                 dict(amplitude=0.05, until=0.4, fade=0.3)])
def test_bad_disturbance_settings_are_refused(bad):
    with pytest.raises(ValueError):
        DisturbanceConfig(**bad).validate()


def test_the_follower_is_pushed_off_a_held_command_and_comes_back():
    from motus_core.sim import AlohaSim

    sim = AlohaSim("transfer_cube", disturbance=DisturbanceConfig(amplitude=0.05, until=1.0, fade=0.2))
    sim.reset(seed=3)
    hold = sim.positions().copy()
    sim.set_targets(hold)
    dev = []
    while sim.episode_time < 2.0:
        sim.step(5)
        dev.append((sim.episode_time, np.abs(sim.positions() - hold)[list(ARM_INDICES)].max()))
    pushed = max(d for t, d in dev if t < 1.0)
    after = max(d for t, d in dev if t > 1.6)
    assert pushed > 0.02, pushed  # the arm really moved off the command
    assert after < 0.3 * pushed, (pushed, after)  # and is back on it once the push has faded
    # off (the default): the same hold barely moves
    sim.set_disturbance(None)
    sim.reset(seed=3)
    sim.set_targets(hold)
    sim.step(500)
    assert np.abs(sim.positions() - hold)[list(ARM_INDICES)].max() < 0.3 * pushed


def test_the_scripted_demonstrator_still_succeeds_when_pushed_during_the_approach():
    """The proof's recovery demonstrations (bench/learn_transfer_cube.py --disturbance 0.08): the push
    moves the right gripper centimetres off the clean run's path during the approach, the grasp after it
    still succeeds."""
    from motus_core.sim import AlohaSim, ee_positions
    from motus_core.sim.demonstrator import ScriptedDemonstrator, run_episode

    def run(cfg):
        sim = AlohaSim("transfer_cube", disturbance=cfg)
        tcp = []  # one per 30 Hz control tick
        res = run_episode(sim, ScriptedDemonstrator("transfer_cube"), 5, on_tick=lambda obs, cmd: tcp.append(ee_positions(obs.q, "tcp")[1]))
        return res, tcp

    clean, tcp0 = run(None)
    pushed, tcp1 = run(DisturbanceConfig(amplitude=0.08, until=1.4))
    assert clean.success and pushed.success
    off = max(np.linalg.norm(tcp1[k] - tcp0[k]) for k in range(10, 40))
    assert off > 0.015, off  # > 1.5 cm off the clean path at some point of the approach


def test_the_launch_arguments_set_the_sim_nodes_nested_parameters():
    from motus_ros.graph.hardware import sim_params

    base = {"task": "transfer_cube", "seed": "0"}
    assert "disturbance.amplitude" not in sim_params(base)  # not given: sim.yaml's (off)
    p = sim_params({**base, "disturbance": "0.08", "disturbance_until": "1.4"})
    assert p["disturbance.amplitude"] == 0.08 and p["disturbance.until"] == 1.4
    assert "placement_margin" not in p and sim_params({**base, "placement_margin": "0.03"})["placement_margin"] == 0.03
