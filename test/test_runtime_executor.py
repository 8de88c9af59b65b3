"""Chunk executor (motus_core.runtime.executor): strategies, RTC delay, watchdog, e-stop, safety.

Closed loops run on a simulated clock without ROS (motus_core.runtime.offline): an ideal robot, the
replay policy (or a prefix-honouring test policy), chunks delivered after an injected delay.
Thresholds (documented in docs/runtime.md): at a chunk boundary the commanded stream may deviate
from its own second-order extrapolation by at most 1e-3 rad in position, 0.05 rad/s in velocity and
a quarter of the joint's acceleration limit in acceleration per 5 ms tick.
"""
import numpy as np
import pytest

from motus_core.policy.base import ActionChunk, Observation, Policy, PolicyRequest
from motus_core.policies.replay import ReplayPolicy, create as create_replay, load_trajectory
from motus_core.robot_profile import load_profile
from motus_core.runtime import metrics
from motus_core.runtime.executor import ChunkExecutor, ExecState, ExecutorConfig
from motus_core.runtime.offline import run_closed_loop, synthetic_motion
from motus_core.runtime.prefix import prefix_for_observation
from motus_core.runtime.safety import ChunkValidator, CommandGuard, EStopLatch, JointLimits, urdf_joint_limits
from motus_core.runtime.strategies import DelayTracker, RTCConfig, RTCStrategy, TemporalEnsembleConfig, TemporalEnsembleStrategy, ChunkPlan
from motus_core.flow.guidance import prefix_weights

DELAY = 0.3  # s = 9 actions at 30 Hz = 60 command ticks at 200 Hz
BOUNDARY_LIMITS = {"position": 1e-3, "velocity": 0.05}


@pytest.fixture(scope="module")
def profile():
    return load_profile("sim_aloha")


@pytest.fixture(scope="module")
def limits(profile):
    return JointLimits.from_profile(profile, use_urdf=False)


@pytest.fixture(scope="module")
def motion(profile):
    return synthetic_motion(profile, duration=12.0)


def assert_within_limits(run, limits, slack=1.021):
    v = metrics.limit_violations(run.times, run.positions, limits.lower, limits.upper, limits.velocity, limits.acceleration)
    assert v["position_excess"] <= 1e-9
    assert v["velocity_ratio"] <= slack, v
    assert v["acceleration_ratio"] <= slack, v


def assert_smooth_boundaries(run, limits):
    worst = metrics.step_discontinuities(run.times, run.positions, run.velocities, run.accelerations, run.boundaries,
                                         acc_scale=limits.acceleration)
    assert worst["position"] < BOUNDARY_LIMITS["position"], worst
    assert worst["velocity"] < BOUNDARY_LIMITS["velocity"], worst
    assert worst["acceleration"] < 0.25, worst  # of each joint's acceleration limit


@pytest.mark.parametrize("strategy", ["sync", "temporal_ensemble", "rtc"])
def test_strategy_closed_loop_is_smooth_and_within_limits(strategy, limits, motion):
    policy = ReplayPolicy(motion, align="state", perturb=0.01, seed=3)
    ex = ChunkExecutor(ExecutorConfig(strategy=strategy), limits)
    run = run_closed_loop(policy, ex, duration=6.0, initial_state=motion[0], inference_delay=DELAY)
    assert ex.chunks_received >= {"sync": 3, "temporal_ensemble": 15, "rtc": 10}[strategy]
    assert ex.chunks_rejected == 0 and ex.watchdog_stops == 0
    assert_within_limits(run, limits)
    assert_smooth_boundaries(run, limits)
    # the robot followed the recording (it is not just standing still)
    assert np.ptp(run.positions[:, 0]) > 0.1
    if strategy == "sync":
        # synchronous: at rest whenever a chunk arrives (it waited for it)
        for b in run.boundaries[1:]:
            i = int(np.searchsorted(run.times, b)) - 1
            assert np.max(np.abs(run.velocities[i])) < 1e-9
    else:
        # the delay is measured in executed actions: 0.3 s = 9 actions, after the first chunk
        assert set(run.delays[1:]) == {9}


def test_rtc_and_te_hand_over_more_smoothly_than_sync(limits, motion):
    jumps = {}
    for strategy in ("sync", "temporal_ensemble", "rtc"):
        policy = ReplayPolicy(motion, align="state", perturb=0.01, seed=3)
        ex = ChunkExecutor(ExecutorConfig(strategy=strategy), limits)
        run = run_closed_loop(policy, ex, duration=10.0, initial_state=motion[0], inference_delay=DELAY)
        sw = [s for s in ex.switches if s[0] > 4.0]
        jumps[strategy] = metrics.switch_velocity_jumps(run.times, run.velocities, sw).max()
    assert jumps["rtc"] < 0.5 * jumps["sync"]
    assert jumps["temporal_ensemble"] < 0.5 * jumps["sync"]


class ContinuationPolicy(Policy):
    """Test policy that honours the RTC prefix exactly and continues the recording after it."""

    name = "continuation"
    supports_prefix = True
    dof = 14
    chunk_length = 48

    def __init__(self, recording):
        self.recording = recording
        self.requests = []

    def kept(self, request, m):
        """How many prefix actions are returned verbatim (all of them)."""
        return m

    def reported_prefix(self, request, m):
        return min(request.expected_delay, m)

    def disagree(self, actions, kept):
        return actions

    def predict(self, request):
        self.check_request(request)
        self.requests.append(request)
        i = int(round(request.observation.stamp * 30))
        idx = np.clip(i + 1 + np.arange(self.chunk_length), 0, len(self.recording) - 1)
        actions = self.recording[idx].copy()
        m = 0 if request.prefix is None else request.prefix.shape[0]
        n = self.kept(request, m)
        if n:
            # continue from the prefix: keep it, then the recording shifted to start where it ends
            actions[:n] = request.prefix[:n]
            actions[n:] += request.prefix[n - 1] - self.recording[idx[n - 1]]
        return ActionChunk(actions=self.disagree(actions, n), step_period=1 / 30, stamp=request.observation.stamp,
                           prefix_length=self.reported_prefix(request, m), model=self.name)


def test_rtc_prefix_is_what_executes_during_inference(limits, motion):
    policy = ContinuationPolicy(motion)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc", rtc=RTCConfig(execution_horizon=16)), limits)
    run = run_closed_loop(policy, ex, duration=5.0, initial_state=motion[0], inference_delay=DELAY)
    with_prefix = [r for r in policy.requests if r.prefix is not None]
    assert len(with_prefix) >= 5
    # expected delay: measured 9 (first measurement skipped as cold start) + 1 margin
    assert with_prefix[-1].expected_delay == 10
    for req in with_prefix[2:]:
        t_obs = req.observation.stamp
        # the committed actions (on the new chunk's grid) are what the robot was commanded at those times
        for k in range(9):
            t = t_obs + (k + 1) / 30
            executed = np.array([np.interp(t, run.times, run.positions[:, j]) for j in range(14)])
            np.testing.assert_allclose(req.prefix[k], executed, atol=2e-5)
    assert_within_limits(run, limits)
    assert_smooth_boundaries(run, limits)


class SeamPolicy(ContinuationPolicy):
    """Motus' RTC output: the first min(expected delay, prefix) actions are the prefix verbatim, the model's
    own actions then disagree with the committed plan by ``jump`` on joint 0 (alternating in sign),
    starting ``at`` actions after the verbatim ones (0: the seam where the two plans meet)."""

    def __init__(self, recording, jump, at=0):
        super().__init__(recording)
        self.jump, self.at, self.sign = jump, at, 1.0

    def kept(self, request, m):
        return min(request.expected_delay, m)

    def reported_prefix(self, request, m):
        return m  # Motus reports the guided overlap

    def disagree(self, actions, kept):
        if kept:
            actions[kept + self.at:, 0] += self.sign * self.jump
            self.sign = -self.sign
        return actions


def test_the_seam_between_the_verbatim_prefix_and_the_models_actions_is_blended_not_rejected(limits, motion):
    jump = 2.0 * limits.max_step[0]  # above the discontinuity check's 1.5 x max_step
    policy = SeamPolicy(motion, jump)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc", rtc=RTCConfig(execution_horizon=16)), limits)
    run = run_closed_loop(policy, ex, duration=6.0, initial_state=motion[0], inference_delay=DELAY)
    assert ex.chunks_rejected == 0 and ex.chunks_received >= 8, list(ex.rejections)
    assert sum(r.expected_delay > 0 for r in policy.requests) >= 5
    # the executor's transition takes the robot from the committed plan to the model's within the limits
    assert_within_limits(run, limits)
    assert_smooth_boundaries(run, limits)
    # the same jump between two of the model's own actions is a discontinuous chunk
    policy = SeamPolicy(motion, jump, at=2)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc", rtc=RTCConfig(execution_horizon=16)), limits)
    run_closed_loop(policy, ex, duration=3.0, initial_state=motion[0], inference_delay=DELAY)
    assert ex.chunks_rejected >= 1 and all("discontinuous" in r for r in ex.rejections), list(ex.rejections)


def test_prefix_resampling():
    plan = np.arange(10, dtype=float)[:, None] * np.ones((1, 2))  # value j at stamp + (j+1) * 0.1
    pre = prefix_for_observation(1.0, 0.1, plan, obs_stamp=1.25, step_period=0.1, chunk_length=20)
    # chunk step k targets 1.35 + 0.1 k; plan value j sits at 1.1 + 0.1 j  ->  j = 2.5 + k
    np.testing.assert_allclose(pre[:, 0], 2.5 + np.arange(pre.shape[0]))
    assert pre.shape[0] == 7  # up to the plan's end at 2.0 (1.35 + 0.1 * 6)
    assert prefix_for_observation(1.0, 0.1, plan, obs_stamp=0.5, step_period=0.1, chunk_length=20) is None
    assert prefix_for_observation(1.0, 0.1, np.zeros((0, 2)), 1.2, 0.1, 20) is None


def test_delay_tracker_skips_cold_start_and_uses_a_quantile():
    d = DelayTracker(window=5, quantile=0.95, margin=1, initial=3)
    assert d.expected() == 4
    d.add(30)  # cold start
    assert d.expected() == 31  # only the cold start seen so far: better than nothing
    for x in (5, 6, 5, 7, 6):
        d.add(x)
    assert d.expected() == 8
    for x in (4, 4, 4, 4, 4):
        d.add(x)
    assert d.expected() == 5  # the window forgot the older, longer delays


def test_measured_delay_ignores_time_spent_holding(limits, motion):
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits, chunk_length=48)
    ex.on_measured_state(0.0, motion[0])
    for i in range(40):
        ex.tick(i * 0.005)
    # holding (no plan): 0.2 s pass but nothing is executed
    assert ex.measured_delay(0.0, 0.195) == 0
    chunk = ActionChunk(actions=motion[1:49], step_period=1 / 30, stamp=0.19)
    assert ex.on_chunk(chunk, 0.2).accepted
    for i in range(41, 101):
        ex.tick(i * 0.005)
    assert ex.measured_delay(0.2, 0.5) == 9  # 0.3 s executed
    assert ex.measured_delay(0.1, 0.5) == 9  # the time before the chunk does not count


def test_watchdog_stops_before_the_committed_actions_run_out(limits, motion):
    policy = ReplayPolicy(motion, align="state")
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    # the policy answers three requests, then never again (a stalled model)
    run = run_closed_loop(policy, ex, duration=5.0, initial_state=motion[0],
                          inference_delay=lambda n: DELAY if n < 3 else 1e9)
    assert ex.state == ExecState.HOLDING and ex.watchdog_stops == 1
    last_plan_end = ex.switches[-1][0] + 0  # switch time of the last chunk
    rest = np.nonzero(np.all(np.abs(run.velocities) < 1e-12, axis=1) & (run.times > last_plan_end))[0]
    assert rest.size, "the robot never came to rest"
    t_rest = run.times[rest[0]]
    # at rest no later than the last committed action (its observation + 48 actions)
    last_obs = run.boundaries[-1] - DELAY
    assert t_rest <= last_obs + 48 / 30 + 1e-9
    assert np.all(run.positions[-1] == run.positions[-20])
    assert_within_limits(run, limits)


def nan_chunk(stamp):
    a = np.zeros((48, 14))
    a[5, 3] = np.nan
    return ActionChunk(actions=a, step_period=1 / 30, stamp=stamp)


def test_nan_chunk_is_rejected_and_the_robot_holds_then_resumes(limits, motion):
    policy = ReplayPolicy(motion, align="state")
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    events = {1.5: lambda e, now: e.on_chunk(nan_chunk(now - 0.05), now)}
    run = run_closed_loop(policy, ex, duration=2.4, initial_state=motion[0], inference_delay=DELAY, events=events)
    assert ex.chunks_rejected == 1
    assert "non-finite" in ex.rejections[-1]
    # it stopped at once, then a valid chunk brought it back with a fade-in
    i = int(np.searchsorted(run.times, 1.5))
    assert run.states[i] == ExecState.HOLDING
    assert ExecState.FADE_IN in set(run.states[i:].tolist())
    assert_within_limits(run, limits)


def test_policy_loss_stops_the_robot(limits, motion):
    policy = ReplayPolicy(motion, align="state")
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    events = {2.0: lambda e, now: e.policy_lost(now, "policy process gone")}
    run = run_closed_loop(policy, ex, duration=2.5, initial_state=motion[0],
                          inference_delay=lambda n: DELAY if n < 3 else 1e9, events=events)
    i = int(np.searchsorted(run.times, 2.0))
    assert np.max(np.abs(run.velocities[i - 1])) > 0.05  # it was moving
    assert all(s == ExecState.HOLDING for s in run.states[i:])
    stop_time = run.times[i + np.argmax(np.all(run.velocities[i:] == 0, axis=1))] - 2.0
    # stops as fast as the acceleration budget allows: v/a * 1.5 for the fastest joint, plus one tick
    v0 = np.abs(run.velocities[i - 1])
    assert stop_time <= float(np.max(1.5 * v0 / (0.8 * limits.acceleration))) * 1.2 + 0.01
    assert_within_limits(run, limits)


def test_estop_is_latched_until_reset(limits, motion):
    policy = ReplayPolicy(motion, align="state")
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    events = {1.5: lambda e, now: e.estop(now, "test"), 2.5: lambda e, now: e.reset_estop(now)}
    run = run_closed_loop(policy, ex, duration=3.5, initial_state=motion[0], inference_delay=DELAY, events=events)
    a, b = np.searchsorted(run.times, [1.5, 2.5])
    assert all(s == ExecState.ESTOP for s in run.states[a:b])
    # no chunk was accepted while latched; motion stopped and stayed stopped
    assert not any(1.5 <= t < 2.5 for t in run.boundaries)
    assert np.all(run.velocities[b - 5:b] == 0)
    assert ex.estop_latch.count == 1 and not ex.estop_latch.active
    # after the reset the policy takes over again with a fade-in
    assert ExecState.FADE_IN in set(run.states[b:].tolist())
    assert_within_limits(run, limits)


def test_fade_in_from_a_distant_measured_pose(limits, motion, profile):
    start = motion[0] + np.where(np.arange(14) % 7 == 6, 0.0, 0.4)  # 0.4 rad away on every arm joint
    policy = ReplayPolicy(motion, align="time")
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    run = run_closed_loop(policy, ex, duration=3.0, initial_state=start, inference_delay=0.1)
    np.testing.assert_allclose(run.positions[0], start)  # the first command is the measured pose
    assert run.states[0] == ExecState.IDLE
    assert ExecState.FADE_IN in set(run.states.tolist())
    assert_within_limits(run, limits)
    assert ex.guard.hits == 0  # the fade-in itself respects the limits (the guard never had to act)


def test_te_average_matches_act_weights():
    te = TemporalEnsembleStrategy(TemporalEnsembleConfig(decay=0.5, taper=0))
    times = 1.0 + np.arange(1, 11) / 30
    a = ChunkPlan(times=times, actions=np.zeros((10, 2)), stamp=1.0, step_period=1 / 30)
    b = ChunkPlan(times=times + 2 / 30, actions=np.ones((10, 2)), stamp=1 + 2 / 30, step_period=1 / 30)
    te.merge(a, 1.0, None, 0, np.zeros(2))
    t, p = te.merge(b, 1.0 + 2 / 30, None, 0, np.zeros(2))
    w_old, w_new = 1.0, np.exp(-0.5)  # ACT: the oldest prediction gets exp(-k*0)
    overlap = t <= times[-1] + 1e-9
    np.testing.assert_allclose(p[overlap], w_new / (w_old + w_new))
    np.testing.assert_allclose(p[~overlap], 1.0)


def test_rtc_fallback_applies_the_soft_mask(limits):
    from motus_core.runtime.trajectory import WaypointSpline

    old_times = np.arange(0, 60) / 30
    old = WaypointSpline(old_times, np.zeros((60, 2)))
    times = 0.5 + np.arange(1, 49) / 30
    chunk = ChunkPlan(times=times, actions=np.ones((48, 2)), stamp=0.5, step_period=1 / 30, prefix_length=0)
    t, p = RTCStrategy().merge(chunk, 0.5 + 3 / 30 + 1e-6, old, 3, np.zeros(2))
    overlap = int(np.count_nonzero(times <= old_times[-1] + 1e-9))
    w = prefix_weights(48, 3, overlap).numpy()
    expected = (1 - w)[times > 0.5 + 3 / 30 + 1e-6 - 1 / 30]
    np.testing.assert_allclose(p[:, 0], expected, atol=1e-12)


# ------------------------------------------------------------------------------------------ safety


def test_limits_take_the_tighter_of_profile_and_urdf(profile, tmp_path):
    urdf = tmp_path / "robot.urdf"
    urdf.write_text(
        """<robot name="r"><link name="a"/><link name="b"/><link name="c"/>
        <joint name="left_waist" type="revolute"><parent link="a"/><child link="b"/><axis xyz="0 0 1"/>
          <limit lower="-1.0" upper="5.0" velocity="1.5" effort="1"/></joint>
        <joint name="left_left_finger" type="prismatic"><parent link="b"/><child link="c"/><axis xyz="1 0 0"/>
          <limit lower="0.0" upper="0.04" velocity="0.5" effort="1"/></joint>
        </robot>"""
    )
    lim = JointLimits.from_profile(profile, urdf_path=urdf)
    i = profile.index_of("left_waist")
    assert lim.lower[i] == -1.0  # URDF tighter
    assert lim.upper[i] == pytest.approx(profile.position_upper[i])  # profile tighter
    assert lim.velocity[i] == 1.5
    assert lim.sources["left_waist"] == "urdf"
    g = profile.index_of("left_gripper")  # not in the URDF under that name: profile limits
    assert lim.upper[g] == profile.position_upper[g] and lim.sources["left_gripper"] == "profile"
    assert "left_left_finger" in urdf_joint_limits(urdf)


def test_chunk_validator(limits):
    v = ChunkValidator(limits, range_tolerance=0.05, step_tolerance=1.5)
    ok = np.tile(np.asarray(limits.lower) + 0.5 * (limits.upper - limits.lower), (48, 1))
    assert v.check(ActionChunk(ok, 1 / 30, 0.0)) is None
    assert "non-finite" in v.check(nan_chunk(0.0))
    inf = ok.copy()
    inf[0, 0] = np.inf
    assert "non-finite" in v.check(ActionChunk(inf, 1 / 30, 0.0))
    far = ok.copy()
    far[10, 2] = limits.upper[2] + 0.2
    assert "outside" in v.check(ActionChunk(far, 1 / 30, 0.0))
    near = ok.copy()
    near[:, 6] = limits.upper[6] + 0.01  # slightly out: accepted, then clamped
    assert v.check(ActionChunk(near, 1 / 30, 0.0)) is None
    clipped, n = v.clip(near)
    assert n == 48 and np.all(clipped[:, 6] == limits.upper[6])
    jump = ok.copy()
    jump[20:, 1] += 0.5  # a step far above max_step
    assert "per-step" in v.check(ActionChunk(jump, 1 / 30, 0.0))
    assert "shape" in v.check(ActionChunk(ok[:, :5], 1 / 30, 0.0))


def test_command_guard_limits_every_tick(limits):
    g = CommandGuard(limits, slack=1.0)
    p0 = np.asarray(limits.lower) + 0.5 * (limits.upper - limits.lower)
    g.reset(0.0, p0)
    target = p0 + 1.0  # a step of 1 rad: far beyond what one tick allows
    prev_p, prev_v = p0, np.zeros(14)
    hits = 0
    goal = np.clip(target, limits.lower, limits.upper)
    for i in range(1, 400):
        t = i * 0.005
        p, v, a, hit = g.apply(t, target, np.zeros(14), np.zeros(14))
        hits += hit
        v_fd = (p - prev_p) / 0.005
        assert np.all(np.abs(v_fd) <= g.v_max + 1e-9)
        assert np.all(np.abs(v_fd - prev_v) <= g.a_max * 0.005 + 1e-9)
        assert np.all(p <= limits.upper + 1e-12) and np.all(p >= limits.lower - 1e-12)
        # never beyond the (reachable) target: the guard brakes in time
        assert np.all(p <= goal + 1e-9)
        prev_p, prev_v = p, v_fd
    assert hits > 0 and g.hits == hits
    np.testing.assert_allclose(p, goal, atol=1e-9)  # and it gets there


@pytest.mark.parametrize("ticks", [(0.004, 0.006, 0.016, 0.024, 0.03), (0.002, 0.1), (0.001, 0.005, 0.05)])
def test_the_guard_stops_at_a_position_limit_under_uneven_ticks(ticks):
    """A plan running into a position limit (a gripper closing onto its stop) while the command loop
    ticks unevenly (a starved process: the e-stop test's record alternated 4-ms and 30-ms ticks). The
    stream stops at the limit within the acceleration limit. Before, the guard's braking curve assumed
    every later tick as long as the present one: up to 24x the acceleration limit (1.55x in that
    record, the right gripper after the e-stop's reset)."""
    lim = JointLimits(names=["gripper"], sources={}, lower=np.array([0.0]), upper=np.array([1.0]), velocity=np.array([4.0]),
                      acceleration=np.array([30.0]), max_step=np.array([1.0]), step_period=1 / 30)
    worst = 0.0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        guard = CommandGuard(lim, slack=1.02)
        guard.reset(0.0, np.array([0.5]))
        speed = -rng.uniform(0.3, 3.0)
        t, T, P = 0.0, [0.0], [0.5]
        for _ in range(200):
            t += rng.choice(ticks) if rng.random() < 0.5 else 0.005
            p, _, _, _ = guard.apply(t, np.array([0.5 + speed * t]), np.array([speed]), np.zeros(1))
            T.append(t); P.append(p[0])
        v = metrics.limit_violations(np.array(T), np.array(P)[:, None], lim.lower, lim.upper, lim.velocity, lim.acceleration)
        assert v["position_excess"] == 0.0 and min(P) == 0.0  # it does reach the limit
        worst = max(worst, v["acceleration_ratio"])
    assert worst <= 1.021, worst


def test_command_guard_repeats_the_last_command_while_the_clock_stands_still(limits):
    """Sim time advances in physics steps, so several command ticks can share a stamp: each must
    send exactly what the first one did (a pose reached at rest reads v = 0, not the last tick's
    finite difference)."""
    g = CommandGuard(limits, slack=1.0)
    p0 = np.asarray(limits.lower) + 0.5 * (limits.upper - limits.lower)
    g.reset(0.0, p0)
    g.apply(0.01, p0 + 1e-4, np.full(14, 0.01), np.zeros(14))
    first = g.apply(0.02, p0 + 1.2e-4, np.zeros(14), np.zeros(14))  # came to rest this tick
    assert not first[3] and np.all(first[1] == 0.0)
    for _ in range(3):
        again = g.apply(0.02, p0 + 5.0, np.ones(14), np.ones(14))  # the clock did not advance
        for x, y in zip(first[:3], again[:3]):
            np.testing.assert_array_equal(x, y)
        assert not again[3]


def test_estop_latch():
    e = EStopLatch()
    assert e.trigger("a") and not e.trigger("b")
    assert e.active and e.count == 1
    assert e.reset() and not e.active and not e.reset()


def test_preview_ends_at_rest(limits, motion):
    policy = ReplayPolicy(motion, align="state")
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    run_closed_loop(policy, ex, duration=2.0, initial_state=motion[0], inference_delay=DELAY)
    t, P, V, A = ex.preview(ex.last.stamp, horizon=0.1, spacing=0.01)
    assert t[0] == ex.last.stamp and np.all(np.diff(t) > 0)
    np.testing.assert_allclose(P[0], ex.last.position)
    assert np.max(np.abs(V[1])) > 0.01  # moving ...
    assert np.all(V[-1] == 0) and np.all(A[-1] == 0)  # ... and the message ends at rest
    assert np.all(np.abs(A) <= 0.8 * limits.acceleration * 1.001 + np.abs(A[:1]))


# ------------------------------------------------------------------------------------------ replay


def test_replay_policy_time_and_state_alignment(tmp_path, profile, motion):
    np.save(tmp_path / "traj.npy", motion)
    pol = create_replay(str(tmp_path / "traj.npy"), profile=profile, options={"chunk_length": 10})
    obs = Observation(images={}, state=motion[0], stamp=5.0)
    c0 = pol.predict(PolicyRequest(obs))
    np.testing.assert_allclose(c0.actions, motion[1:11])  # first observation: t0
    c1 = pol.predict(PolicyRequest(Observation({}, motion[0], 5.0 + 2.5 / 30)))
    np.testing.assert_allclose(c1.actions[0], 0.5 * (motion[3] + motion[4]))  # fractional index 2.5
    assert c1.stamp == pytest.approx(5.0 + 2.5 / 30) and c1.step_period == pytest.approx(1 / 30)
    # deterministic
    pol.reset()
    np.testing.assert_allclose(pol.predict(PolicyRequest(obs)).actions, c0.actions)
    # state alignment follows the robot
    st = ReplayPolicy(motion, chunk_length=5, align="state")
    c = st.predict(PolicyRequest(Observation({}, motion[100], 0.0)))
    np.testing.assert_allclose(c.actions, motion[101:106])
    # perturbation is deterministic per index
    pa = ReplayPolicy(motion, chunk_length=5, align="state", perturb=0.05, seed=1)
    pb = ReplayPolicy(motion, chunk_length=5, align="state", perturb=0.05, seed=1)
    ra = pa.predict(PolicyRequest(Observation({}, motion[50], 0.0))).actions
    np.testing.assert_allclose(ra, pb.predict(PolicyRequest(Observation({}, motion[50], 0.0))).actions)
    assert np.max(np.abs(ra - motion[51:56])) > 1e-3
    # past the end the last pose repeats
    end = ReplayPolicy(motion[:20], chunk_length=5, align="state").predict(PolicyRequest(Observation({}, motion[19], 0.0)))
    np.testing.assert_allclose(end.actions, np.tile(motion[19], (5, 1)))


def test_replay_sources(tmp_path, profile, motion):
    import torch

    from motus_core.policy.base import PolicyError

    torch.save(torch.from_numpy(motion).float(), tmp_path / "q.pt")
    assert load_trajectory(tmp_path / "q.pt").shape == motion.shape
    task = tmp_path / "ds" / "task_a"
    for d in ("videos", "qpos", "instructions"):
        (task / d).mkdir(parents=True)
    torch.save(torch.from_numpy(motion[:50]).float(), task / "qpos" / "0.pt")
    (task / "videos" / "0.mp4").write_bytes(b"")
    assert load_trajectory(f"{tmp_path / 'ds'}#0").shape == (50, 14)
    assert load_trajectory(f"{tmp_path / 'ds'}#task_a/0").shape == (50, 14)
    with pytest.raises(PolicyError):
        load_trajectory(f"{tmp_path / 'ds'}#7")
    with pytest.raises(PolicyError):
        create_replay(str(tmp_path / "missing.npy"), profile=profile)
    np.save(tmp_path / "bad.npy", np.zeros((10, 3)))
    with pytest.raises(PolicyError, match="joints"):
        create_replay(str(tmp_path / "bad.npy"), profile=profile)
    with pytest.raises(PolicyError, match="unknown options"):
        create_replay(str(tmp_path / "q.pt"), profile=profile, options={"speeed": 2})


def test_clock_jump_back_holds_at_a_fresh_pose_then_resumes(limits, motion):
    policy = ReplayPolicy(motion, align="state")
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    # the robot clock restarts at 0.2 s after 2.5 s (a simulator restart)
    clock = lambda i: i * 0.005 if i < 500 else 0.2 + (i - 500) * 0.005  # noqa: E731
    run = run_closed_loop(policy, ex, duration=5.0, initial_state=motion[0], inference_delay=DELAY, clock=clock)
    assert ex.clock_jumps == 1
    j = int(np.argmax(np.diff(run.times) < 0)) + 1  # first command after the jump
    assert run.states[j] == ExecState.HOLDING
    # the first command after the jump is the measured pose (here: the last command), at rest
    np.testing.assert_allclose(run.positions[j], run.positions[j - 1])
    assert np.all(run.velocities[j] == 0)
    # and the policy takes over again, with a fade-in, in the new time base
    assert ExecState.FADE_IN in set(run.states[j:].tolist())
    after = slice(j, None)
    v = metrics.limit_violations(run.times[after], run.positions[after], limits.lower, limits.upper, limits.velocity, limits.acceleration)
    assert v["velocity_ratio"] <= 1.021 and v["acceleration_ratio"] <= 1.021


def test_a_liveliness_lapse_only_slows_the_robot_down(limits, motion):
    """policy_lost followed quickly by policy_alive (an overloaded machine): the plan resumes, C2."""
    policy = ReplayPolicy(motion, align="time")
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    events = {2.0: lambda e, now: e.policy_lost(now, "lapse"), 2.04: lambda e, now: e.policy_alive(now)}
    run = run_closed_loop(policy, ex, duration=3.0, initial_state=motion[0], inference_delay=DELAY, events=events)
    a, b = np.searchsorted(run.times, [2.0, 2.04])
    assert all(s == ExecState.HOLDING for s in run.states[a:b])
    assert run.states[b] == ExecState.RUNNING  # no fade-in: straight back into the plan
    assert np.max(np.abs(run.velocities[b + 40])) > 0.05  # moving again
    assert_within_limits(run, limits)
    assert ex.guard.hits == 0


@pytest.mark.parametrize("strategy", ["sync", "temporal_ensemble", "rtc"])
def test_status_reports_the_running_chunk_and_its_time_shift(limits, motion, strategy):
    """The visualizer greys executed actions with this: TE and RTC run actions at their own times
    (shift 0), sync re-anchors a chunk to its arrival (shift = arrival - observation stamp)."""
    ex = ChunkExecutor(ExecutorConfig(strategy=strategy), limits, chunk_length=48)
    ex.on_measured_state(0.0, motion[0])
    for i in range(40):
        ex.tick(i * 0.005)
    assert ex.status()["active_chunk_id"] == 0
    chunk = ActionChunk(actions=motion[1:49], step_period=1 / 30, stamp=0.1, info={"chunk_id": 7})
    assert ex.on_chunk(chunk, 0.2).accepted
    st = ex.status()
    assert st["active_chunk_id"] == 7
    expected = 0.1 if strategy == "sync" else 0.0  # sync: the first action one step after arrival, not after the stamp
    assert st["active_chunk_time_offset"] == pytest.approx(expected, abs=1e-9)


def _burst_motion(profile, duration: float = 6.0) -> np.ndarray:
    """The robot's home pose with a roll/rotate flip as the scripted demonstrator makes one (forearm
    roll and wrist rotate swing 0.17 rad in opposite directions and back within 0.4 s): up to
    ~70 rad/s^2 at 30 Hz, six times the acceleration limit."""
    t = np.arange(int(duration * 30)) / 30.0
    q = np.tile(np.asarray(profile.home, float), (t.size, 1))
    pulse = 0.17 * np.sin(2 * np.pi * (t - 1.0) / 0.4) * ((t >= 1.0) & (t <= 1.4))
    for arm in (0, 7):
        q[:, arm + 3] += pulse
        q[:, arm + 5] -= pulse
    return q


@pytest.mark.parametrize("strategy", ["sync", "temporal_ensemble", "rtc"])
def test_a_chunk_faster_than_the_limits_is_followed_within_them_not_run_away_from(strategy, limits, profile):
    """A plan the robot cannot follow (accelerations over the limits) is tracked as closely as the limits
    allow and rejoined. Before the guard's recovery was rate-limited, re-planning on every clamped tick
    made the command coast away to the joint limits (the replayed demonstration reached -3.14 rad)."""
    q = _burst_motion(profile)
    policy = ReplayPolicy(q, align="time")
    ex = ChunkExecutor(ExecutorConfig(strategy=strategy), limits)
    run = run_closed_loop(policy, ex, duration=5.0, initial_state=q[0], inference_delay=0.04)
    assert ex.guard.hits > 0  # the plan really was beyond the limits
    assert_within_limits(run, limits)
    lo, hi = q.min(axis=0), q.max(axis=0)
    assert np.all(run.positions >= lo - 0.25) and np.all(run.positions <= hi + 0.25), (run.positions.min(0), run.positions.max(0))
    np.testing.assert_allclose(run.positions[-1], q[-1], atol=1e-3)  # and rejoined the plan once it slowed down


def test_recovery_after_a_clamp_does_not_replan_on_every_tick(limits, profile):
    """One re-plan per recovery window: the guard tracks the recovery transition in between."""
    q = _burst_motion(profile)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    replans = []
    original = ex._transition
    ex._transition = lambda *a, **k: (replans.append(a[1]), original(*a, **k))[1]
    run_closed_loop(ReplayPolicy(q, align="time"), ex, duration=3.0, initial_state=q[0], inference_delay=0.04)
    # (chunk switches plan transitions too; before, every clamped tick re-planned: replans > hits)
    assert ex.guard.hits > 10 and len(replans) < ex.guard.hits / 2, (len(replans), ex.guard.hits)


def test_the_streamed_preview_is_guarded_like_the_command(limits, profile):
    """The JointTrajectory points a controller executes between two messages pass the same guard: while
    a plan beyond the limits is tracked, the preview stays within the limits too."""
    q = _burst_motion(profile)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    checked = []

    def check(executor, now):
        times, P, V, A = executor.preview(now, 0.25, 0.02, lead=0.1)
        pts = np.vstack([executor.last.position, P])
        t = np.concatenate([[executor.last.stamp], times])
        v = np.diff(pts, axis=0) / np.diff(t)[:, None]
        assert np.all(np.abs(v) <= limits.velocity * 1.03), np.abs(v).max(axis=0) / limits.velocity
        a = np.diff(v, axis=0) / np.diff(0.5 * (t[1:] + t[:-1]))[:, None]
        even = (np.diff(t)[1:] > 0.01) & (np.diff(t)[:-1] > 0.01)  # the stop tail's last, shorter step is not sampled evenly
        assert np.all(np.abs(a[even]) <= limits.acceleration * 1.03), np.abs(a[even]).max(axis=0) / limits.acceleration
        assert np.all(np.abs(A) <= limits.acceleration * 1.03) and np.all(np.abs(V) <= limits.velocity * 1.03)
        checked.append(now)

    events = {float(t): check for t in np.arange(1.0, 1.8, 0.037)}
    run_closed_loop(ReplayPolicy(q, align="time"), ex, duration=2.0, initial_state=q[0], inference_delay=0.04, events=events)
    assert len(checked) == len(events) and ex.guard.hits > 0


def _noisy_motion(profile, duration: float = 4.0, sigma: float = 0.02, seed: int = 0) -> np.ndarray:
    """The home pose with white noise on every arm joint at 30 Hz: what a poorly trained policy sends
    (~40 rad/s^2 from one action to the next, beyond any profile's acceleration limit)."""
    rng = np.random.default_rng(seed)
    q = np.tile(np.asarray(profile.home, float), (int(duration * 30), 1))
    arms = [i for i in range(14) if i not in (6, 13)]
    q[:, arms] += sigma * rng.standard_normal((q.shape[0], len(arms)))
    return q


@pytest.mark.parametrize("strategy", ["sync", "temporal_ensemble", "rtc"])
def test_a_jittery_policy_does_not_make_the_command_drift(strategy, limits, profile):
    """Chunks of home +- 0.02 rad of white noise (an undertrained policy) keep the command within a few
    of those hundredths of home. Before, the plans through them had knot velocities of up to 5.7 rad/s
    and accelerations of 150 rad/s^2 (a cubic extrapolated through the first jittery knots), every
    hand-over started from those values, and the command drifted 2.0-2.8 rad (sync), 0.4-1.4 rad
    (temporal ensembling) and 0.6 rad (rtc) from home within seconds."""
    q = _noisy_motion(profile, duration=6.0)
    ex = ChunkExecutor(ExecutorConfig(strategy=strategy), limits)
    run = run_closed_loop(ReplayPolicy(q, align="time"), ex, duration=5.5, initial_state=q[0], inference_delay=0.04)
    assert ex.chunks_smoothed > 0  # the chunks really were beyond the acceleration limits
    deviation = np.abs(run.positions - np.asarray(profile.home)).max()
    assert deviation < 0.12, deviation
    assert_within_limits(run, limits)


def test_a_stop_brakes_from_what_was_commanded_not_from_the_plan(limits, profile):
    """A plan faster than the velocity limit (the guard holds the command at the limit) is stopped
    within the braking distance of the commanded velocity. Before, the stop started from the plan's
    own state (5 rad/s) and ran ~2.5x further."""
    t = np.arange(int(3.5 * 30)) / 30.0
    q = np.tile(np.asarray(profile.home, float), (t.size, 1))
    # left waist: 2 rad at 5 rad/s (limit 3.14), after the fade-in (which would blend it in slower)
    q[:, 0] += 5.0 * np.clip(t - 1.6, 0.0, 0.4)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    at_stop = {}

    def disable(executor, now):
        at_stop.update(t=now, p=executor.last.position.copy(), v=executor.last.velocity.copy())
        executor.set_enabled(now, False, "test: stop")

    run = run_closed_loop(ReplayPolicy(q, align="time"), ex, duration=3.0, initial_state=q[0], inference_delay=0.04,
                          events={1.85: disable})
    assert ex.guard.hits_by_kind.get("velocity", 0) > 0, ex.guard.hits_by_kind  # the plan really was too fast
    after = run.times >= at_stop["t"]
    travel = np.abs(run.positions[after] - at_stop["p"]).max(axis=0)
    # the braking distance at the planning deceleration, + the acceleration ramp of the C2 stop and a tick
    bound = at_stop["v"] ** 2 / (2 * limits.acceleration * ex.cfg.limit_budget) + np.abs(at_stop["v"]) * 0.1 + 1e-3
    assert np.all(travel <= bound), {"travel": travel.round(4).tolist(), "bound": bound.round(4).tolist()}
    assert_within_limits(run, limits)


def test_a_stalled_loop_does_not_invent_velocity(limits, profile):
    """The command loop stalls for 84 ms (a loaded machine) while a jittery plan runs, and the robot is
    stopped right after: the stop brakes from the velocity that was commanded. Before, the last
    command's acceleration (the plan's jitter, ~5 rad/s^2) was carried as constant over the stall, the
    stop started from 0.2-0.4 rad/s nobody had commanded, and the arms travelled up to 0.07 rad (0.45 rad
    in the MoLA closed-loop test that found it)."""
    q = _noisy_motion(profile, duration=4.0, sigma=0.004)
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    stall_at, stall = 1.5, 0.084
    dt = 1.0 / 200.0
    n_before = int(stall_at / dt)
    clock = lambda i: i * dt if i <= n_before else i * dt + stall  # noqa: E731
    seen = {}

    def disable(executor, now):
        seen.update(t=now, p=executor.last.position.copy(), v=executor.last.velocity.copy(), a=executor.last.acceleration.copy())
        executor.set_enabled(now, False, "test: stop after a stall")

    run = run_closed_loop(ReplayPolicy(q, align="time"), ex, duration=2.5, initial_state=q[0], inference_delay=0.04,
                          clock=clock, events={stall_at + stall + dt / 2: disable})
    after = run.times >= seen["t"]
    travel = np.abs(run.positions[after] - seen["p"]).max(axis=0)
    v_after = np.abs(run.velocities[after]).max(axis=0)
    arms = [i for i in range(14) if i not in (6, 13)]
    # the stall at the commanded velocity, + about two ticks' carry of its acceleration, then braking from there
    v = np.abs(seen["v"]) + np.abs(seen["a"]) * 2.5 * dt
    bound = v * (stall + 0.1) + v ** 2 / (2 * limits.acceleration * ex.cfg.limit_budget) + 1e-3
    assert np.all(travel[arms] <= bound[arms]), {"travel": travel[arms].round(4).tolist(), "bound": bound[arms].round(4).tolist()}
    assert np.all(v_after[arms] <= v[arms] + 1e-6), (v_after[arms].round(3).tolist(), v[arms].round(3).tolist())


def _gap_clock(at: float, gap: float, dt: float = 1.0 / 200.0):
    """Robot time of tick i that skips ``gap`` s at ``at`` (forward: a starved command loop or sim time
    in a burst; negative: a restarted simulator)."""
    return lambda i: i * dt + (gap if i * dt > at else 0.0)


@pytest.mark.parametrize("gap", [0.8, -2.0])
def test_a_stalled_loop_keeps_a_latched_estop_frozen(limits, motion, gap):
    """An e-stop latched at rest, then 0.8 s pass between two ticks: the command stays exactly where
    it was frozen. Before, every gap longer than ``clock_jump`` was a clock jump, which holds at the
    measured pose: under load the latched command moved by the tracking error (test_closed_loop_faults'
    e-stop test). A clock that goes back (a restarted simulator) still resets the executor."""
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    run = run_closed_loop(ReplayPolicy(motion, align="time"), ex, duration=4.0, initial_state=motion[0],
                          inference_delay=DELAY, clock=_gap_clock(2.5, gap), events={1.5: lambda e, now: e.estop(now, "test")},
                          measure=lambda q: q + 0.002)  # the robot lags its command a little
    assert (ex.stalls, ex.clock_jumps) == ((1, 0) if gap > 0 else (0, 1))
    after = np.arange(len(run.times)) >= int(np.argmax(run.times >= 2.4))
    assert np.all(run.states[after] == ExecState.ESTOP)
    assert np.all(run.velocities[after] == 0.0)
    frozen = run.positions[after] == run.positions[after][0]
    # a stall keeps the frozen command; a jump back re-holds at the measured pose (here 0.002 rad away)
    assert np.all(frozen) if gap > 0 else not np.all(frozen)


def _stall_while_running(limits, motion, robot_followed: bool):
    """The policy runs; at 2.5 s the executor sends a 0.6-s trajectory preview, then the loop stalls
    for 0.8 s. ``robot_followed``: the robot is measured at the end of that trajectory after the stall
    (it ran it), else where the last command put it (it never got the trajectory)."""
    ex = ChunkExecutor(ExecutorConfig(strategy="rtc"), limits)
    sent = {}

    def send(executor, now):
        sent["times"], sent["P"], _, _ = executor.preview(now, 0.6, 0.02)

    def measure(q):
        return sent["P"][-1].copy() if robot_followed and "P" in sent and ex.stalls == 0 else q

    run = run_closed_loop(ReplayPolicy(motion, align="time"), ex, duration=5.0, initial_state=motion[0],
                          inference_delay=DELAY, clock=_gap_clock(2.5, 0.8), events={2.5 - 0.004: send}, measure=measure)
    assert (ex.stalls, ex.clock_jumps) == (1, 0)
    j = int(np.argmax(run.times > 2.5 + 0.8))  # the first command after the stall
    assert sent["times"][-1] < run.times[j]  # the stall outlasted the trajectory sent
    assert run.states[j] == ExecState.HOLDING
    assert np.all(run.velocities[j] == 0.0)
    assert ExecState.FADE_IN in set(run.states[j:].tolist())
    after = slice(j, None)
    v = metrics.limit_violations(run.times[after], run.positions[after], limits.lower, limits.upper, limits.velocity, limits.acceleration)
    assert v["velocity_ratio"] <= 1.021 and v["acceleration_ratio"] <= 1.021, v
    return ex, run, j, sent


def test_a_stalled_loop_holds_where_the_last_trajectory_sent_ends(limits, motion):
    """A 0.8-s stall while the policy runs, and the robot ran the last streamed trajectory (which ends
    at rest): the executor holds exactly there, counts a stall (not a clock jump), and the policy fades
    in again; the command stream stays within the limits."""
    ex, run, j, sent = _stall_while_running(limits, motion, robot_followed=True)
    np.testing.assert_allclose(run.positions[j], sent["P"][-1], atol=1e-9)
    assert ex.resyncs == 0


def test_a_stall_holds_where_the_robot_is_when_it_is_far_from_the_command(limits, motion):
    """The same stall, but the robot is measured where the last command put it, further than
    ``resync_tolerance`` from the end of the trajectory sent: the executor holds at the measured pose,
    so the fade-in does not have to resync one tick later. Before, it held the trajectory's end and
    the fade-in's resync jumped the command back to the robot (acceleration 7.9x the limit in
    test_closed_loop_faults' time-jump test)."""
    ex, run, j, sent = _stall_while_running(limits, motion, robot_followed=False)
    arm = [i for i in range(14) if i not in (6, 13)]
    measured = run.positions[j - 1]  # the robot tracks the command perfectly here
    assert np.abs(sent["P"][-1] - measured)[arm].max() > ex.cfg.resync_tolerance  # the case under test
    np.testing.assert_allclose(run.positions[j][arm], measured[arm], atol=1e-9)
    assert ex.resyncs == 0


@pytest.mark.parametrize("strategy", ["temporal_ensemble", "rtc"])
def test_a_fade_in_converges_however_often_chunks_arrive(strategy, profile):
    """Enabled at home while the policy's plan is already moving (it started elsewhere), with a chunk
    every ~35 ms: the command is on the plan within the fade-in and stays within the limits
    without the guard. Before, every chunk restarted the fade-in's offset from a flat start and it
    hardly decayed: with temporal ensembling the command followed the plan's motion 0.2-0.7 rad
    away from it for seconds, into the gripper limits (a CI run of the closed-loop test under load)."""
    limits = JointLimits.from_profile(profile, use_urdf=True)
    motion = synthetic_motion(profile, duration=60.0)
    ex = ChunkExecutor(ExecutorConfig(strategy=strategy), limits)
    plans = []
    tick = ex.tick

    def recording_tick(now):
        cmd = tick(now)
        plans.append(ex.plan.evaluate(now)[0] if ex.plan is not None and ex.stop is None else np.full(ex.dof, np.nan))
        return cmd

    ex.tick = recording_tick
    policy = ReplayPolicy(motion, align="time", loop=True, start_index=700)  # 23 s into the recording: moving
    run = run_closed_loop(policy, ex, duration=4.0, initial_state=np.asarray(profile.home, float), inference_delay=0.03)
    first = ex.switches[0][0]
    assert ex.chunks_received > (100 if strategy == "temporal_ensemble" else 5)
    after = run.times > first + ex.cfg.fade_in_time + 0.05
    error = np.abs(run.positions - np.array(plans)[:len(run.times)])[after]
    assert np.nanmax(error) < 0.01, np.nanmax(error)
    assert ex.guard.hits == 0, ex.guard.hits_by_kind
    assert_within_limits(run, limits)
    assert_smooth_boundaries(run, limits)
