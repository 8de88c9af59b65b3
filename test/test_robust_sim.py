"""The simulated robot's measured motion stays within the velocity limits the executor enforces
(issue 15, item 4). Cause, measured here: gym-aloha's servos are pure P controllers with large dry
friction and no damping; tracking a 3 rad/s command they stick, break free and overshoot to ~1.9 x
the commanded speed. The sim saturates arm joint speeds at the servos' no-load speed (the profile's limit)."""
import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from motus_core.sim.model import ARM_INDICES
from motus_core.sim.simulator import AlohaSim

TICK = 0.005  # the executor's 200 Hz command period


def _drive(sim: AlohaSim, peak_speed: float, seconds: float = 2.0):
    """Sinusoidal position commands at 200 Hz on every arm joint, peak speed ``peak_speed``; returns
    (max commanded speed, max |qvel| at any physics step, max finite-difference speed of positions per tick)."""
    sim.step(250)
    q0 = sim.positions().copy()
    arm = list(ARM_INDICES)
    amp = peak_speed / (2 * np.pi)
    prev_cmd, prev_q = q0.copy(), q0.copy()
    cmd_v = qvel = fd = 0.0
    for k in range(int(seconds / TICK)):
        t = k * TICK
        cmd = q0.copy()
        cmd[arm] += amp * np.sin(2 * np.pi * t) * min(1.0, t / 0.5)
        cmd_v = max(cmd_v, float(np.max(np.abs(cmd - prev_cmd))) / TICK)
        prev_cmd = cmd
        sim.command_positions(np.arange(14), cmd)
        for _ in range(int(round(TICK / sim.dt))):
            sim.step(1)
            qvel = max(qvel, float(np.max(np.abs(sim.velocities()[arm]))))
        q = sim.positions()
        fd = max(fd, float(np.max(np.abs(q[arm] - prev_q[arm]))) / TICK)
        prev_q = q.copy()
    return cmd_v, qvel, fd


def test_unlimited_servos_overshoot_the_commanded_speed():
    """The measurement behind the fix: without the limit, a 3 rad/s command is measured far faster."""
    cmd_v, qvel, _ = _drive(AlohaSim("transfer_cube", render_mesh_cell=0.0), 3.0)
    assert cmd_v <= 3.01 and qvel > 1.3 * cmd_v


def test_measured_speed_respects_the_profile_limit():
    limit = np.asarray(load_profile("sim_aloha").velocity_limit)
    sim = AlohaSim("transfer_cube", render_mesh_cell=0.0, speed_limit=limit)
    cmd_v, qvel, fd = _drive(sim, 3.0)
    arm_limit = float(np.min(limit[list(ARM_INDICES)]))
    assert cmd_v <= arm_limit
    assert qvel <= arm_limit + 1e-9 and fd <= arm_limit * 1.001
    assert sim.speed_limited_steps > 0  # it did bind


def test_speed_limit_validation():
    with pytest.raises(ValueError):
        AlohaSim("transfer_cube", render_mesh_cell=0.0, speed_limit=0.0)
