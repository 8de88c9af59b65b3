"""The proof's diagnostic benches (ROS-free): where they find the demonstrator's gripper events."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from test.helpers import ROOT


def _load(name):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_the_grasp_frame_is_the_first_close_after_the_right_gripper_opened():
    grasp = _load("grasp_precision")
    cmd = np.zeros((20, 14))
    cmd[3:9, 13] = 1.0  # closed at the start, opens at 3, shuts at 9
    assert grasp.grasp_frame(cmd) == 9
    cmd[:9, 13] = 1.0  # open from the start
    assert grasp.grasp_frame(cmd) == 9


def test_the_demonstrator_closes_the_right_gripper_at_the_cube():
    """The grasp bench measures a policy's close point against the demonstration's: that is where the cube is."""
    from motus_core.sim import AlohaSim, ee_positions
    from motus_core.sim.demonstrator import ScriptedDemonstrator, run_episode

    grasp = _load("grasp_precision")
    for seed in (2000, 2001):
        sim = AlohaSim("transfer_cube")
        cmds, cubes = [], []
        result = run_episode(sim, ScriptedDemonstrator("transfer_cube"), seed,
                             on_tick=lambda obs, cmd: (cmds.append(np.asarray(cmd, float)), cubes.append(obs.objects["box"].position.copy())))
        assert result.success
        g = grasp.grasp_frame(np.asarray(cmds))
        d = ee_positions(cmds[g], "tcp")[grasp.RIGHT] - cubes[g]
        assert np.all(np.abs(d[:2]) < 0.002) and 0.0 < d[2] < 0.02, d  # over the cube's centre (4 cm wide)


def test_the_demonstrator_told_the_cube_is_elsewhere_grasps_there():
    """grasp_tolerance's premise: the misled demonstrator succeeds when told the truth and misses a cube
    it is told is 3 cm off along the fingers' closing direction (y)."""
    tol = _load("grasp_tolerance")
    assert [r.success for r in tol.run(np.zeros(3), range(2000, 2002))] == [True, True]
    assert not any(r.success for r in tol.run(np.array([0.0, 0.03, 0.0]), range(2000, 2002)))


def test_the_in_process_closed_loop_replays_a_demonstration_on_its_own_timeline(tmp_path):
    """bench/closed_loop_sim.py: the executor, the policy and the simulator on one clock. The demonstration
    replayed through it must grasp where and when the demonstrator did (a loop whose physics ran at another
    rate than the executor's clock grasped 0.5 s early) and succeed."""
    import types

    from motus_core.policies import load_policy
    from motus_core.robot_profile import load_profile
    from motus_core.runtime.safety import JointLimits
    from motus_ros.demo import record_demonstration

    cls = _load("closed_loop_sim")
    path, _, info = record_demonstration("transfer_cube", 2001, tmp_path)
    assert info["episode_success"]
    profile = load_profile("sim_aloha")
    policy = load_policy(f"replay:{path}", profile=profile, options={"align": "time"})
    ns = types.SimpleNamespace(strategy="rtc", executor_param=[], delay=0.1, time_limit=14.5, command_rate=200.0)
    row = cls.episode(policy, 2001, ns, JointLimits.from_profile(profile, use_urdf=True), profile)
    demo = cls.demonstrated_grasp(2001)
    assert row["success"] and row["chunks_rejected"] == 0, row
    g = row["grasp"]
    assert abs(g["time"] - demo["time"]) < 0.1, (g, demo)
    assert abs(g["x_cm"] - demo["x_cm"]) < 1.0 and abs(g["y_cm"] - demo["y_cm"]) < 1.0, (g, demo)
    assert row["max_lift_cm"] > 10 and row["lost"] == [], row  # carried up and handed over, never dropped


def test_the_carry_probe_tells_a_knock_from_a_drop_and_a_release():
    cls = _load("closed_loop_sim")
    from motus_core.sim import DEFAULT_HOME

    q = np.asarray(DEFAULT_HOME, float)
    shut, opened = q.copy(), q.copy()
    shut[13], opened[13] = 0.0, 1.0
    probe = cls.CarryProbe()
    t = 0.0

    def run(stage_z_cmd):
        nonlocal t
        for stage, z, cmd in stage_z_cmd:
            t += 0.005
            probe.see(t, stage, z - 0.02, cmd, q, np.array([0.1, 0.5, z]))  # resting at 2 cm

    run([(1, 0.020, shut), (2, 0.024, shut), (1, 0.020, shut)])  # knocked 4 mm off the table
    assert probe.knocks == 1 and probe.lost == []
    from motus_core.sim import ee_positions

    tcp = ee_positions(q, "tcp")[cls.RIGHT]
    probe.see(t + 0.005, 2, tcp[2] - 0.02, shut, q, tcp)
    probe.see(t + 0.010, 1, tcp[2] - 0.01, shut, q, tcp + [0, 0, 0.01])  # a contact flicker with the cube in the hand: no loss
    assert probe.holding and probe.knocks == 1 and probe.lost == []
    probe.see(t + 0.015, 0, 0.0, shut, q, np.array([0.1, 0.5, 0.02]))  # then out of the hand: a loss
    assert not probe.holding and probe.knocks == 1 and len(probe.lost) == 1
    t += 0.02
    run([(2, 0.02 + 0.01 * k, shut) for k in range(15)] + [(0, 0.021, shut)] * 80)  # carried 14 cm, slipped out
    run([(2, 0.02 + 0.01 * k, shut) for k in range(15)] + [(2, 0.16, opened), (0, 0.10, opened)])  # opened
    assert [x["cause"] for x in probe.lost] == ["slipped", "slipped", "opened"] and probe.knocks == 1
    assert probe.lost[1]["lift_cm"] == pytest.approx(14.0, abs=0.1) and not probe.lost[1]["left_touched"]


def test_the_blind_baseline_is_the_error_of_the_other_demonstrations_mean():
    """early_chunks compares a chunk's error with a policy that cannot see the cube (leave-one-out mean target)."""
    early = _load("early_chunks")
    wants = np.array([[0.0, 0.0, 0.1], [0.0, 0.03, 0.1], [0.0, 0.06, 0.1]])
    blind, blind_y = early.blind_baseline_cm(wants)
    # each target against the mean of the other two: 4.5, 0, 4.5 cm (all along y)
    assert blind == pytest.approx(4.5) and blind_y == pytest.approx(4.5)
    assert early.blind_baseline_cm(np.array([[0.0, 0.1, 0.2], [0.0, 0.1, 0.2]])) == (0.0, 0.0)
    assert all(np.isnan(early.blind_baseline_cm(wants[:1])))


def test_the_position_split_places_each_episode_where_the_simulator_put_its_cube():
    """eval_by_position recomputes start positions from the seeds: they must be the simulator's own draws."""
    from motus_core.sim import AlohaSim

    split = _load("eval_by_position")
    sim = AlohaSim("transfer_cube")
    for seed in (1000, 1003):
        assert split.start_xy("transfer_cube", seed) == pytest.approx(sim.reset(seed=seed)["box"].position[:2])
    sim.placement_margin = 0.03
    assert split.start_xy("transfer_cube", 1000, 0.03) == pytest.approx(sim.reset(seed=1000)["box"].position[:2])

    seeds = list(range(1000, 1020))
    dist = {s: 100 * np.linalg.norm(split.start_xy("transfer_cube", s) - split.box_centre("transfer_cube")) for s in seeds}
    episodes = [{"seed": s, "success": dist[s] < 6.0} for s in seeds]
    near, mid, far = split.split_by_distance(episodes, "transfer_cube", [0.0, 6.0, 9.0])
    assert near["episodes"] == near["successes"] == sum(d < 6.0 for d in dist.values())
    assert mid["successes"] == far["successes"] == 0
    assert mid["episodes"] == sum(6.0 <= d < 9.0 for d in dist.values())
    assert near["episodes"] + mid["episodes"] + far["episodes"] == len(seeds) and far["to_cm"] == float("inf")
