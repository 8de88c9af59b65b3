"""The chunk contract in the closed loop on the simulated robot: a policy with MoLA's chunk length
(H = 15, the replay policy declaring it like MoLA does) runs with the executor's default settings.

Before the contract the executor's fixed execution horizon s = 16 > H = 15 ran every plan out and the
watchdog stopped the robot after each chunk. Now the policy node publishes H and its step period in
PolicyStatus, the executor derives s = H // 3 = 5 and reports the contract in ExecutorStatus, and a
setting that cannot fit (s = 16) is refused with the fix, before anything moves.
"""
import json

import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from motus_core.runtime.offline import synthetic_motion
from test.closed_loop_helpers import spawned_cleanup  # noqa: F401  (autouse: no node outlives its test)
from test.closed_loop_helpers import Monitor, check_limits, load_record, start_executor, start_policy, start_sim
from test.helpers import stop_process

H = 15


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    import rclpy
    from rclpy.context import Context

    tmp = tmp_path_factory.mktemp("contract")
    profile = load_profile("sim_aloha")
    np.save(tmp / "motion.npy", synthetic_motion(profile, duration=60.0))
    # half real time: a 0.5 s chunk then has a second of wall time to arrive, so the watchdog stops counted
    # below measure the contract (s + d_max <= H), not how busy the shared 2-core machine is
    sim = start_sim("real_time_factor:=0.5")
    policy = start_policy(f"replay:{tmp / 'motion.npy'}", f"options:=[align=time, loop=true, chunk_length={H}]")
    ctx = Context()
    rclpy.init(context=ctx)
    mon = Monitor(ctx, profile)
    try:
        mon.wait(lambda: mon.clock > 0.5 and len(mon.joint_states) > 10, 60, "the simulator", procs=[sim])
        mon.wait(lambda: mon.policy_status is not None and mon.policy_status.chunk_length == H, 60, "the policy's chunk contract",
                 procs=[policy])
        yield {"tmp": tmp, "monitor": mon}
    finally:
        mon.close()
        rclpy.shutdown(context=ctx)
        stop_process(policy)
        stop_process(sim)


def test_mola_chunk_length_runs_with_default_settings(graph):
    tmp, mon = graph["tmp"], graph["monitor"]
    assert mon.policy_status.step_period == pytest.approx(1 / 30)
    record = tmp / "h15.npz"
    ex = start_executor("run_time:=5.0", f"record_file:={record}", f"summary_file:={tmp / 'h15.json'}")
    try:
        mon.wait(lambda: mon.exec_status is not None and mon.exec_status.chunk_length == H, 60, "the executor's contract", procs=[ex])
        st = mon.exec_status
        assert (st.execution_horizon, st.max_delay) == (5, 10)
        assert st.step_period == pytest.approx(1 / 30)
        ex.wait(timeout=120)
    finally:
        out = stop_process(ex)
    assert ex.returncode == 0, out[-3000:]
    summary = json.loads((tmp / "h15.json").read_text())
    # Before the contract every chunk ended in a watchdog stop (stops == chunks). A 0.5 s chunk absorbs
    # answers up to ~0.2 s; on the shared 2-core machine the p99 answer reached 0.2 s, so some stops are
    # allowed here (offline, with a steady 0.2 s delay, there is none: test_runtime_contract.py).
    assert summary["watchdog_stops"] <= summary["chunks_received"] // 4, summary
    assert summary["chunks_rejected"] == 0, summary
    assert summary["chunks_received"] >= 15, summary  # a chunk every 5 actions, not one per stop
    check_limits(load_record(record))


def test_a_horizon_that_cannot_fit_is_refused_before_anything_moves(graph):
    mon = graph["monitor"]
    mon.forget()
    ex = start_executor("rtc.execution_horizon:=16")
    try:
        mon.wait(lambda: mon.exec_status is not None and "refusing to run" in mon.exec_status.message, 60,
                 "the executor to refuse the contract", procs=[ex])
        assert "rtc.execution_horizon 16" in mon.exec_status.message and "<= 11" in mon.exec_status.message
        t0 = mon.clock
        mon.wait(lambda: mon.clock > t0 + 1.0, 30, "a second of sim time")
        assert mon.exec_status.chunks_received == 0 and mon.exec_status.chunk_length == 0
    finally:
        stop_process(ex)
