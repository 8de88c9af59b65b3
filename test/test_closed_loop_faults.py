"""Faults on the simulated closed loop: each leaves the robot holding still and every node alive.

* the policy process is killed (SIGKILL), with one core kept busy by another process: the watchdog
  holds the robot before the committed actions run out (a bound on the robot's clock: a tick later
  than the margin it keeps in hand delays it by the excess; a loop given no tick for longer than
  clock_jump is a stall, which holds the robot itself), and DDS liveliness (1 s lease) reports the process gone, once, with no spurious
  "gone" before the kill;
* while the executor holds, the simulated joint_trajectory_controller never sees a trajectory point
  in the past (none skipped, none rejected);
* the policy stalls (the model hangs, the node lives): the watchdog stops before the committed
  actions run out;
* a NaN chunk (a rogue publisher): rejected, counted, the robot stops;
* a camera stops: the synchronizer never feeds a stale snapshot, the policy says which camera, the
  executor runs out of chunks and holds; the camera comes back and the policy resumes;
* a time jump (the simulator restarts, /clock starts again from 0): buffers are cleared, the executor
  holds at the fresh measured pose and takes over again with a fade-in.
"""
import json
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from motus_core.runtime.executor import ExecState
from motus_core.runtime.offline import synthetic_motion
from test.closed_loop_helpers import spawned_cleanup  # noqa: F401  (autouse: no node outlives its test)
from test.closed_loop_helpers import Monitor, check_limits, kill_hard, load_record, start_executor, start_policy, start_sim
from test.helpers import stop_process


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import rclpy
    from rclpy.context import Context

    tmp = tmp_path_factory.mktemp("faults")
    profile = load_profile("sim_aloha")
    np.save(tmp / "motion.npy", synthetic_motion(profile, duration=60.0))
    state = {"tmp": tmp, "profile": profile, "sim": start_sim(), "motion": f"replay:{tmp / 'motion.npy'}"}
    ctx = Context()
    rclpy.init(context=ctx)
    mon = Monitor(ctx, profile)
    state["monitor"] = mon
    try:
        mon.wait(lambda: mon.clock > 0.5 and len(mon.joint_states) > 10, 60, "the simulator", procs=[state["sim"]])
        yield state
    finally:
        mon.close()
        rclpy.shutdown(context=ctx)
        stop_process(state["sim"])


def running(mon, n_chunks):
    return lambda: mon.exec_status is not None and mon.exec_status.state == ExecState.RUNNING and mon.exec_status.chunks_received >= n_chunks


def holding(mon):
    return lambda: mon.executor_state() == ExecState.HOLDING


def finish(ex, record):
    alive = ex.poll() is None
    out = stop_process(ex)
    assert alive, f"the executor died:\n{out[-3000:]}"
    assert ex.returncode == 0, out[-3000:]
    return load_record(record)


def assert_still_at_the_end(rec, seconds=0.3):
    t = rec["t"]
    last = t >= t[-1] - seconds
    assert np.all(rec["velocity"][last] == 0.0)
    assert np.all(rec["position"][last] == rec["position"][last][0])
    assert np.all(rec["state"][last] == ExecState.HOLDING)


@contextmanager
def busy_core():
    """Another process keeps one core busy (the timing bounds must hold on a loaded machine)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


def test_killed_policy_holds_before_the_committed_actions_run_out(env):
    from motus_msgs.msg import ExecutorStatus

    mon, tmp = env["monitor"], env["tmp"]
    mon.forget()
    record, summary_file = tmp / "killed.npz", tmp / "killed.json"
    with busy_core():
        policy = start_policy(env["motion"], "options:=[align=time, loop=true]")
        ex = start_executor("strategy:=rtc", f"record_file:={record}", f"summary_file:={summary_file}")
        try:
            mon.wait(running(mon, 3), 90, "the executor to run the policy", procs=[policy, ex])
            mon.wait(lambda: mon.exec_status.policy_process == ExecutorStatus.POLICY_ALIVE, 10, "the policy process reported alive")
            t_run = mon.clock  # the recording starts at rest: let the motion get going
            mon.wait(lambda: mon.clock > t_run + 2.5, 90, "the motion to get going", procs=[policy, ex])  # sim time crawls on a loaded machine
            t_kill = mon.clock  # sim time just before the kill (the monitor's clock can only lag)
            kill_hard(policy)
            wall_kill = time.monotonic()
            mon.wait(holding(mon), 60, "the executor to hold", procs=[ex])  # ~1.5 s of sim time, slower on a loaded machine
            t0 = mon.clock
            mon.wait(lambda: mon.exec_status.policy_process == ExecutorStatus.POLICY_GONE, 30, "the policy process reported gone", procs=[ex])
            print(f"policy process reported gone {1000 * (time.monotonic() - wall_kill):.0f} ms (wall) after the kill")
            mon.wait(lambda: mon.clock > t0 + 1.0, 60, "one second of sim time")
            mon.wait_held(procs=[ex])
            starved = bool(mon.exec_status.starved and mon.exec_status.watchdog_stops >= 1)
        finally:
            if policy.poll() is None:
                stop_process(policy)
        rec = finish(ex, record)
    t, states, plan_end = rec["t"], rec["state"], rec["plan_end"]
    after = t >= t_kill
    # the watchdog's bound: the end of the committed plan (a chunk still in flight at the kill may extend it)
    bound = np.nanmax(plan_end[after])
    hold = np.nonzero(after & (states == ExecState.HOLDING))[0]
    assert hold.size
    i = int(hold[0])
    t_hold = t[i]
    summary = json.loads(summary_file.read_text())
    print(f"kill -> hold {1000 * (t_hold - t_kill):.0f} ms (sim time); committed plan ended "
          f"{1000 * (bound - t_kill):.0f} ms after the kill; hold began {1000 * (bound - t_hold):.0f} ms before that")
    stalls = [(a, b) for a, b in rec["stalls"] if t_kill - 1e-9 <= b <= t_hold + 1e-9]
    if stalls:
        # The loop got no tick for more than clock_jump after the kill (the CI machine under this test's
        # busy core: 0.65 s once): the watchdog had no tick to act on; the robot ran out the trajectory it
        # was last sent (which ends at rest) and the first tick after the stall held it.
        print(f"the command loop stalled after the kill ({', '.join(f'{b - a:.2f} s' for a, b in stalls)}): the stall held the robot")
        assert summary["stalls"] >= 1, summary
        at_rest_after = max(bound, stalls[-1][1])
    else:
        # The watchdog decides on ticks and keeps the largest recent tick gap (at most watchdog_late_tick,
        # 0.1 s) in hand: a tick later than that can delay the hold by the excess, nothing else can.
        gaps = np.diff(t[:i])
        gaps = gaps[gaps > 0][-200:]
        in_hand = min(float(gaps.max()), 0.1) if gaps.size else 0.0
        excess = max(0.0, float(t[i] - t[i - 1]) - in_hand)
        assert t_hold <= bound + excess + 1e-9, (
            f"holding only {1000 * (t_hold - bound):.0f} ms after the committed actions ran out "
            f"(the tick before the hold came {1000 * excess:.0f} ms later than the watchdog kept in hand)")
        assert starved and summary["watchdog_stops"] >= 1, summary
        at_rest_after = bound
    # at rest soon after: a stop from the motion here takes < 0.2 s, and when a starved executor ticks late
    # (sim time runs on while it waits for a core) the controller follows the stop in its last trajectory
    assert np.all(rec["velocity"][t >= at_rest_after + 0.2] == 0.0), "still moving 0.2 s after the committed actions ran out"
    # the last 0.2 s of commands before the kill, by count (40 ticks at 200 Hz): on a loaded machine the loop can
    # stall just before the kill and leave no tick in the last 0.2 s of sim time (CI once, beside a training)
    before = rec["velocity"][t < t_kill][-40:]
    assert before.size and np.any(np.abs(before) > 0.01), "it was not moving before the kill"
    assert_still_at_the_end(rec)
    check_limits(rec)
    # one "gone": the kill; none before it although a core was busy (a 60 ms lease flapped here)
    assert summary["policy_process_lost"] == 1, summary
    assert summary["policy_lost_stops"] == 0, summary


def _sim_counters(diag) -> dict:
    for st in diag.status:
        if st.name.endswith("simulator"):
            return {kv.key: kv.value for kv in st.values}
    return {}


def test_a_holding_executor_sends_no_trajectory_point_in_the_past(env):
    from diagnostic_msgs.msg import DiagnosticArray

    mon = env["monitor"]
    mon.forget()
    seen = []
    sub = mon.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: seen.append(_sim_counters(m)) if _sim_counters(m) else None, 10)
    ex = start_executor("strategy:=rtc")  # no policy: it holds the measured pose
    try:
        mon.wait(lambda: mon.executor_state() == ExecState.IDLE and len(mon.trajectories) > 10, 60, "the hold stream", procs=[ex])
        n = len(seen)
        mon.wait(lambda: len(seen) > n, 10, "the simulator's diagnostics")
        first = seen[-1]
        t0 = mon.clock
        mon.wait(lambda: mon.clock > t0 + 3.0, 60, "three seconds of sim time", procs=[ex])
        n = len(seen)
        mon.wait(lambda: len(seen) > n, 10, "the simulator's diagnostics")
        last = seen[-1]
    finally:
        mon.node.destroy_subscription(sub)
        out = stop_process(ex)
    # the hold stream flowed (50 Hz for 3 s of sim time: 150; fewer when the loaded machine starves the executor)
    assert int(last["commands_received"]) - int(first["commands_received"]) >= 50, (first, last, out[-2000:])
    assert int(last["points_skipped"]) == int(first["points_skipped"]), (first, last)
    assert int(last["commands_rejected"]) == int(first["commands_rejected"]), (first, last)


def test_stalled_policy_holds_and_the_nodes_live(env):
    mon, tmp = env["monitor"], env["tmp"]
    mon.forget()
    record = tmp / "stalled.npz"
    policy = start_policy(env["motion"], "options:=[align=time, loop=true, stall_after=4]")
    ex = start_executor("strategy:=rtc", f"record_file:={record}")
    try:
        mon.wait(lambda: mon.exec_status is not None and mon.exec_status.chunks_received >= 4, 90, "four chunks", procs=[policy, ex])
        mon.wait(holding(mon), 20, "the watchdog to hold the robot", procs=[policy, ex])
        mon.wait_held(procs=[ex])
        assert policy.poll() is None, "the stalled policy node died"
        seen = time.monotonic()
        stamp = mon.policy_status.header.stamp
        mon.wait(lambda: mon.policy_status.header.stamp != stamp, 5, "a fresh policy status (the node is alive)")
        assert time.monotonic() - seen < 5
    finally:
        stop_process(policy)
    rec = finish(ex, record)
    status = json.loads(str(rec["status"]))
    assert status["watchdog_stops"] >= 1
    assert status["chunks_received"] == 4
    assert_still_at_the_end(rec)
    check_limits(rec)


def test_nan_chunk_is_rejected_and_the_robot_holds(env):
    from motus_msgs.msg import ActionChunk
    from motus_ros.conversions import duration_msg, time_msg

    mon, tmp, profile = env["monitor"], env["tmp"], env["profile"]
    mon.forget()
    record = tmp / "nan.npz"
    ex = start_executor("strategy:=rtc", f"record_file:={record}", "stop_on_rejected_chunk:=true")
    stop_status = mon.declare_policy(48, 1 / 30)  # the chunk contract of the chunks below

    def chunk(values, chunk_id):
        msg = ActionChunk()
        msg.header.stamp = time_msg(mon.clock)
        msg.chunk_id = chunk_id
        msg.joint_names = list(profile.joint_names)
        msg.step_period = duration_msg(1 / 30)
        msg.num_steps = values.shape[0]
        msg.positions = values.reshape(-1).tolist()
        msg.model = "test"
        return msg

    try:
        mon.wait(lambda: mon.exec_status is not None and mon.exec_status.chunk_length == 48 and mon.chunk_pub.get_subscription_count() > 0, 60,
                 "the executor (and its chunk contract)", procs=[ex])
        q = mon.joint_states[-1][1][:14]
        ramp = q + np.linspace(0.0, 0.05, 48)[:, None] * np.where(np.arange(14) % 7 == 6, 0.0, 1.0)
        # a chunk published while discovery is still settling can be lost: keep sending until three arrived
        sent = 0
        while mon.exec_status.chunks_received < 3 and sent < 20:
            mon.chunk_pub.publish(chunk(ramp + 0.01 * (sent % 3), sent + 1))
            sent += 1
            time.sleep(0.3)
        mon.wait(lambda: mon.exec_status.chunks_received >= 3, 10, "three valid chunks", procs=[ex])
        received_valid = mon.exec_status.chunks_received
        bad = ramp.copy()
        bad[10, 3] = np.nan
        nan_msg = chunk(bad, 99)
        nan_stamp = nan_msg.header.stamp.sec + nan_msg.header.stamp.nanosec * 1e-9
        mon.chunk_pub.publish(nan_msg)
        mon.wait(lambda: mon.exec_status.chunks_rejected >= 1, 10, "the NaN chunk to be rejected", procs=[ex])
        mon.wait(holding(mon), 10, "the executor to hold", procs=[ex])
        mon.wait_held(procs=[ex])
    finally:
        rec = finish(ex, record)
        stop_status()
    status = json.loads(str(rec["status"]))
    assert status["chunks_rejected"] == 1 and status["chunks_received"] >= received_valid
    # no chunk was taken after the NaN one (a valid chunk still in flight when the count was read may
    # arrive before it: the record's chunk log says what came when)
    log = rec["chunks"]  # (arrival, stamp, accepted, delay, latency)
    # the NaN chunk by its stamp: on a loaded machine a valid chunk can also be refused (it came too late
    # for its actions to run), which is not a rejection
    (t_nan,) = log[(log[:, 2] == 0) & (np.abs(log[:, 1] - nan_stamp) < 1e-6), 0]
    assert np.all(log[log[:, 2] == 1, 0] < t_nan)
    assert_still_at_the_end(rec)
    check_limits(rec)


def test_camera_that_stops_holds_the_robot_and_its_return_resumes(env):
    mon, tmp, profile = env["monitor"], env["tmp"], env["profile"]
    mon.forget()
    record = tmp / "camera.npz"
    cam = profile.cameras["left_wrist"].topic
    relay = "/test_relay/left_wrist"
    mon.relay_camera("left_wrist", cam, relay)
    policy = start_policy(env["motion"], "options:=[align=time, loop=true]", remaps=(f"{cam}:={relay}",))
    ex = start_executor("strategy:=rtc", f"record_file:={record}")
    try:
        mon.wait(running(mon, 3), 90, "the executor to run the policy", procs=[policy, ex])
        mon.relay_enabled["left_wrist"] = False
        mon.wait(holding(mon), 20, "the executor to hold without the camera", procs=[policy, ex])
        mon.wait(lambda: "left_wrist" in mon.policy_status.message, 10, "the policy to name the silent camera", procs=[policy])
        n = mon.exec_status.chunks_received
        t0 = mon.clock
        mon.wait(lambda: mon.clock > t0 + 0.5, 30, "half a second of sim time")
        assert mon.exec_status.chunks_received == n  # no chunk from a stale observation
        mon.relay_enabled["left_wrist"] = True
        mon.wait(lambda: mon.exec_status.chunks_received > n + 1, 30, "chunks again once the camera is back", procs=[policy, ex])
    finally:
        stop_process(policy)
    rec = finish(ex, record)
    check_limits(rec)
    states = rec["state"]
    i_hold = np.nonzero(states == ExecState.HOLDING)[0]
    assert i_hold.size and np.any(states[i_hold[0]:] == ExecState.FADE_IN)  # it took over again after holding


def test_time_jump_holds_then_resumes(env):
    mon, tmp = env["monitor"], env["tmp"]
    mon.forget()
    record = tmp / "jump.npz"
    policy = start_policy(env["motion"], "options:=[align=time, loop=true]")
    ex = start_executor("strategy:=rtc", f"record_file:={record}")
    try:
        mon.wait(running(mon, 3), 90, "the executor to run the policy", procs=[policy, ex])
        t_before = mon.clock
        wall_restart = time.monotonic()
        stop_process(env["sim"])  # the simulator restarts: /clock starts again from 0
        env["sim"] = start_sim()
        mon.wait(lambda: 0 < mon.clock < t_before - 1.0, 60, "the restarted simulator's clock", procs=[env["sim"]])

        def since_restart():
            return [(w - wall_restart, s, m) for w, s, _, _, m in list(mon.exec_history) if w >= wall_restart]

        # every status since the restart, not only the latest: the hold and the fade-in can pass between
        # two polls of a loaded machine
        try:
            mon.wait(lambda: any("clock jumped" in m or s == ExecState.FADE_IN for _, s, m in since_restart()), 60,
                     "the executor to notice the time jump", procs=[ex, policy])
        except AssertionError as exc:
            seen = since_restart()
            raise AssertionError(f"{exc}; {len(seen)} executor statuses since the restart, the last: "
                                 f"{[(round(w, 2), int(s), m) for w, s, m in seen[-4:]]}") from None
        mon.wait(lambda: mon.exec_status.state in (ExecState.FADE_IN, ExecState.RUNNING), 60, "the policy to take over again",
                 procs=[ex, policy, env["sim"]])
    finally:
        stop_process(policy)
    rec = finish(ex, record)
    status = json.loads(str(rec["status"]))
    assert status["clock_jumps"] >= 1
    t = rec["t"]
    j = int(np.argmax(np.diff(t) < -1.0)) + 1
    assert t[j] < t[j - 1]
    # right after the jump: holding still at the fresh measured pose
    assert rec["state"][j] == ExecState.HOLDING
    assert np.all(rec["velocity"][j] == 0.0)
    check_limits(rec)  # on each side of the jump


def test_estop_service_is_latched_until_reset(env):
    from std_srvs.srv import Trigger

    mon, tmp = env["monitor"], env["tmp"]
    mon.forget()
    record = tmp / "estop.npz"
    policy = start_policy(env["motion"], "options:=[align=time, loop=true]")
    ex = start_executor("strategy:=rtc", f"record_file:={record}")

    def call(name):
        cli = mon.node.create_client(Trigger, f"/executor/{name}")
        assert cli.wait_for_service(timeout_sec=10)
        fut = cli.call_async(Trigger.Request())
        mon.wait(fut.done, 10, f"/executor/{name}")
        return fut.result()

    try:
        mon.wait(running(mon, 3), 90, "the executor to run the policy", procs=[policy, ex])
        assert call("estop").success
        mon.wait(lambda: mon.executor_state() == ExecState.ESTOP, 5, "the e-stop state", procs=[ex])
        n = mon.exec_status.chunks_received
        t0 = mon.clock
        mon.wait(lambda: mon.clock > t0 + 1.0, 30, "one second of sim time")
        mon.wait_held(messages=30, procs=[ex])  # 0.6 s of the executor's own ticks at rest (it may be starved)
        assert mon.executor_state() == ExecState.ESTOP and mon.exec_status.chunks_received == n  # latched: chunks ignored
        t_reset = mon.clock
        assert call("reset_estop").success
        mon.wait(lambda: mon.exec_status.chunks_received > n and mon.executor_state() in (ExecState.FADE_IN, ExecState.RUNNING), 30,
                 "the policy to take over after the reset", procs=[policy, ex])
    finally:
        stop_process(policy)
    rec = finish(ex, record)
    t, states, vel, pos = rec["t"], rec["state"], rec["velocity"], rec["position"]
    # ESTOP starts with a bounded deceleration (the monitor may see the state while it runs); once
    # at rest the command must stay frozen, chunks or not, until the reset.
    estop = np.nonzero((states == ExecState.ESTOP) & (t < t_reset))[0]
    assert estop.size
    at_rest = estop[np.all(vel[estop] == 0.0, axis=1)]
    assert at_rest.size, "the e-stop never brought the command to rest"
    t_stopped = t[at_rest[0]]
    assert t_stopped - t[estop[0]] < 1.0, f"the e-stop took {t_stopped - t[estop[0]]:.2f} s to stop"
    frozen = estop[t[estop] >= t_stopped]
    assert t[frozen[-1]] - t_stopped > 0.5  # latched for most of the second of sim time
    assert np.all(vel[frozen] == 0.0) and np.all(pos[frozen] == pos[frozen[0]])
    check_limits(rec)
