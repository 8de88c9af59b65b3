"""The closed loop on the simulated robot: sim_node + policy_node (replay) + executor_node, each strategy.

One simulator and one policy node serve the three strategies; each strategy gets its own executor
process for a few seconds of sim time (``run_time``), which records its command stream. Checks: the
robot moved, every command is within the limits, the chunk boundaries are smooth (thresholds in
docs/runtime.md), the streamed JointTrajectory messages carry velocities and accelerations and end at
rest.
"""
import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from motus_core.runtime.offline import synthetic_motion
from test.closed_loop_helpers import spawned_cleanup  # noqa: F401  (autouse: no node outlives its test)
from test.closed_loop_helpers import Monitor, check_boundaries, check_limits, load_record, start_executor, start_policy, start_sim
from test.helpers import stop_process

RUN_TIME = 5.0


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    import rclpy
    from rclpy.context import Context

    tmp = tmp_path_factory.mktemp("closed_loop")
    profile = load_profile("sim_aloha")
    np.save(tmp / "motion.npy", synthetic_motion(profile, duration=60.0))
    sim = start_sim()
    policy = start_policy(f"replay:{tmp / 'motion.npy'}", "options:=[align=time, loop=true]")
    ctx = Context()
    rclpy.init(context=ctx)
    mon = Monitor(ctx, profile)
    try:
        mon.wait(lambda: mon.clock > 0.5 and len(mon.joint_states) > 10, 60, "the simulator", procs=[sim])
        mon.wait(lambda: mon.policy_status is not None, 60, "the policy node", procs=[policy])
        yield {"tmp": tmp, "profile": profile, "monitor": mon, "sim": sim, "policy": policy}
    finally:
        mon.close()
        rclpy.shutdown(context=ctx)
        out_p = stop_process(policy)
        out_s = stop_process(sim)
        if policy.returncode not in (0, -2, 130):
            print(out_p[-3000:])
        if sim.returncode not in (0, -2, 130):
            print(out_s[-3000:])


@pytest.mark.parametrize("strategy", ["rtc", "temporal_ensemble", "sync"])
def test_strategy_drives_the_sim_smoothly_within_limits(graph, strategy):
    tmp, mon = graph["tmp"], graph["monitor"]
    record = tmp / f"{strategy}.npz"
    t_start = mon.clock
    n_traj = len(mon.trajectories)
    ex = start_executor(f"strategy:={strategy}", f"run_time:={RUN_TIME}", f"record_file:={record}",
                        f"summary_file:={tmp / (strategy + '.json')}")
    try:
        ex.wait(timeout=120)
    finally:
        out = stop_process(ex)
    assert ex.returncode == 0, out[-3000:]
    assert record.is_file(), out[-3000:]
    rec = load_record(record)
    status = __import__("json").loads(str(rec["status"]))
    # it ran the policy's chunks
    assert status["chunks_received"] >= (2 if strategy == "sync" else 4), out[-2000:]
    assert status["chunks_rejected"] == 0, status
    # every command within the limits, smooth hand-overs
    check_limits(rec)
    check_boundaries(rec)
    # and the simulated robot followed: its joints moved
    q = mon.joints_since(t_start)
    assert q.shape[0] > 50
    assert np.max(np.ptp(q[:, :6], axis=0)) > 0.05
    # the streamed trajectories: quintic-ready points, increasing times, ending at rest
    trajs = list(mon.trajectories)[n_traj:]
    assert len(trajs) > 20
    names = set(graph["profile"].joint_names)
    for m in trajs[-20:]:
        assert set(m.joint_names) == names
        times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in m.points]
        assert np.all(np.diff(times) > 0)
        for p in m.points:
            assert len(p.velocities) == len(p.positions) == len(p.accelerations) == 14
        assert np.all(np.asarray(m.points[-1].velocities) == 0.0)
