"""Splines, blends and stops of the chunk executor: continuity and limits (motus_core.runtime.trajectory)."""
import numpy as np
import pytest

from motus_core.runtime.trajectory import (
    HoldTrajectory,
    StopTrajectory,
    TransitionTrajectory,
    WaypointSpline,
    blend_duration,
    offset_windows,
    sample,
    smoothstep,
)

DT = 1.0 / 30.0


def waypoints(n=20, dof=3, seed=0, t0=0.0):
    rng = np.random.default_rng(seed)
    t = t0 + DT * np.arange(1, n + 1)
    p = np.cumsum(rng.normal(0, 0.01, (n, dof)), axis=0) + np.sin(np.linspace(0, 3, n))[:, None]
    return t, p


def assert_consistent_derivatives(traj, t0, t1, h=1e-5, tol=(2e-4, 5e-3)):
    """Analytic v and a equal numerical derivatives of p and v (so the controller gets the truth)."""
    for t in np.linspace(t0 + 2 * h, t1 - 2 * h, 97):
        p0, v0, a0 = traj.evaluate(t - h)
        p1, v1, a1 = traj.evaluate(t + h)
        _, v, a = traj.evaluate(t)
        np.testing.assert_allclose((p1 - p0) / (2 * h), v, atol=tol[0] + 1e-3 * np.abs(v).max())
        np.testing.assert_allclose((v1 - v0) / (2 * h), a, atol=tol[1] + 1e-3 * np.abs(a).max())


def assert_continuous_at(traj, t, eps=1e-7, tol=1e-4):
    a = traj.evaluate(t - eps)
    b = traj.evaluate(t + eps)
    for x, y, name, scale in zip(a, b, ("position", "velocity", "acceleration"), (1, 10, 1000)):
        assert np.max(np.abs(x - y)) < tol * scale, f"{name} jumps at t={t}: {x} vs {y}"


def test_smoothstep_ends():
    assert smoothstep(0.0) == (0.0, 0.0, 0.0)
    assert smoothstep(1.0) == (1.0, 0.0, 0.0)
    s, ds, dds = smoothstep(0.5)
    assert s == pytest.approx(0.5) and ds == pytest.approx(1.875) and dds == pytest.approx(0.0)


def test_spline_interpolates_waypoints_and_is_c2():
    t, p = waypoints()
    spl = WaypointSpline(t, p)
    for k in range(len(t)):
        np.testing.assert_allclose(spl.evaluate(t[k])[0], p[k], atol=1e-12)
    for k in range(1, len(t) - 1):
        assert_continuous_at(spl, t[k])
    assert_consistent_derivatives(spl, t[0], t[-1])
    # rests at the last waypoint after the end
    pe, ve, ae = spl.evaluate(t[-1] + 1.0)
    np.testing.assert_allclose(pe, p[-1])
    assert np.all(ve == 0) and np.all(ae == 0)
    # bounded extrapolation before the start
    spl2 = WaypointSpline(t, p, max_extrapolation=DT)
    np.testing.assert_allclose(spl2.evaluate(t[0] - 5.0)[0], spl2.evaluate(t[0] - DT)[0])
    with pytest.raises(ValueError):
        WaypointSpline(t[::-1], p)


def test_transition_is_c2_at_both_ends_and_consistent():
    t, p = waypoints(seed=1)
    old = WaypointSpline(t, p)
    new = WaypointSpline(t, p + np.array([0.05, -0.03, 0.02]) + 0.2 * np.sin(t)[:, None])
    t0, T = t[5] + 0.0123, 0.2
    tr = TransitionTrajectory.from_state(new, t0, T, *old.evaluate(t0))
    for x, y in zip(tr.evaluate(t0), old.evaluate(t0)):  # starts exactly at the old command's state
        np.testing.assert_allclose(x, y, atol=1e-12)
    for x, y in zip(tr.evaluate(t0 + T), new.evaluate(t0 + T)):  # ends exactly on the new trajectory
        np.testing.assert_allclose(x, y, atol=1e-9)
    assert_continuous_at(tr, t0 + T)
    assert_consistent_derivatives(tr, t0, t0 + T + 0.05)
    # the offset decays monotonically in size here and the transition settles onto the new trajectory
    assert tr.settled(t0 + T + 0.01) is new and tr.settled(t0 + 0.5 * T) is tr


def test_transitions_do_not_nest():
    """Chunks faster than transitions: each new one starts from the command state; nothing accumulates."""
    t, p = waypoints(n=60, seed=2)
    plans = [WaypointSpline(t, p + 0.01 * k) for k in range(10)]
    traj = plans[0]
    now = t[3]
    for k in range(1, 10):
        state = traj.evaluate(now)
        traj = TransitionTrajectory.from_state(plans[k], now, 0.3, *state)
        assert traj.base is plans[k]
        now += 0.04
    assert_consistent_derivatives(traj, now, now + 0.3)


def test_a_transition_onto_a_transition_keeps_the_running_offsets():
    """A chunk arriving while a hand-over runs: the offsets already decaying go on on their own
    schedules. A new chunk that repeats the plan changes nothing; one that differs adds a piece, and the
    command is on the newest plan once the last piece has decayed. Restarting one offset at every
    switch instead decayed well under 1 % of it per switch while chunks came every 35 ms."""
    t, p = waypoints(n=90, seed=4)
    plan = WaypointSpline(t, p)
    t0, T = t[2], 1.0
    first = TransitionTrajectory.from_state(plan, t0, T, p[0] + 0.4, np.zeros(3), np.zeros(3))
    now = t0
    traj = first
    for _ in range(20):  # the same plan again every 35 ms: the command is that of the first transition
        now += 0.035
        traj = TransitionTrajectory.from_state(traj.carrying(plan, now), now, 0.2, *traj.evaluate(now))
        for x in (now, now + 0.1, t0 + T - 0.01):
            for got, want in zip(traj.evaluate(x), first.evaluate(x)):
                np.testing.assert_allclose(got, want, atol=1e-9)
    assert traj.settled(t0 + T + 1e-6) is plan  # on the plan when the first window ends
    # a different plan: one more piece; on the new plan by the end of both windows, C2 throughout
    other = WaypointSpline(t, p + 0.05)
    state = traj.evaluate(now)
    new = TransitionTrajectory.from_state(traj.carrying(other, now), now, 0.2, *state)
    for x, y in zip(new.evaluate(now), state):
        np.testing.assert_allclose(x, y, atol=1e-12)
    assert new.base is other and new.t1 == pytest.approx(max(t0 + T, now + 0.2))
    for x, y in zip(new.evaluate(new.t1 + 1e-6), other.evaluate(new.t1 + 1e-6)):
        np.testing.assert_allclose(x, y, atol=1e-9)
    assert_consistent_derivatives(new, now, new.t1 + 0.05)
    assert_continuous_at(new, now + 0.2)
    # decayed pieces are dropped: at most a window's worth of switches is kept
    assert traj.pieces <= int(np.ceil(T / 0.035)) + 1


def test_a_fade_in_stays_between_the_start_pose_and_the_plan():
    """From rest at a gripper's closed limit onto a plan that closes from half open: the fade-in is a
    convex blend of the pose and the plan, so it stays between them (within any limits both are
    within). An offset that decays while the plan moves ran through the plan's motion past the closed
    limit (the executor's windows for it, as before the change)."""
    t = np.arange(0, 3, DT)
    closing = (0.6 - 0.5 * np.clip(t / 0.5, 0, 1))[:, None]  # 0.6 -> 0.1 rad over 0.5 s, limits [0, 1]
    plan = WaypointSpline(t, closing)
    start, T = np.array([0.0]), 1.0
    fade = TransitionTrajectory.fade_in(plan, 0.0, T, start, np.zeros(1), np.zeros(1))
    windows = offset_windows(-plan.evaluate(0.0)[1], np.full(1, 30.0), T, 0.2)
    offset = TransitionTrajectory.from_state(plan, 0.0, T, start, np.zeros(1), np.zeros(1), *windows)
    for x, y in zip(fade.evaluate(0.0), (start, np.zeros(1), np.zeros(1))):  # starts at rest at the pose (C2)
        np.testing.assert_allclose(x, y, atol=1e-12)
    ts = np.linspace(0.0, T, 301)
    P = sample(fade, ts)[0][:, 0]
    plan_p = sample(plan, ts)[0][:, 0]
    assert np.all(P <= np.maximum(start[0], plan_p) + 1e-12) and np.all(P >= np.minimum(start[0], plan_p) - 1e-12)
    assert sample(offset, ts)[0][:, 0].min() < -0.1  # the additive offset leaves [0, 1]
    for x, y in zip(fade.evaluate(T), plan.evaluate(T)):  # ends exactly on the plan
        np.testing.assert_allclose(x, y, atol=1e-9)
    assert_consistent_derivatives(fade, 0.0, T + 0.05)
    assert_continuous_at(fade, T)
    # a chunk arriving during the fade-in re-targets it (the step is one more decaying piece)
    other = WaypointSpline(t, closing + 0.05)
    state = fade.evaluate(0.5)
    moved = TransitionTrajectory.from_state(fade.carrying(other, 0.5), 0.5, 0.2, *state)
    for x, y in zip(moved.evaluate(0.5), state):
        np.testing.assert_allclose(x, y, atol=1e-12)
    for x, y in zip(moved.evaluate(T + 1e-6), other.evaluate(T + 1e-6)):
        np.testing.assert_allclose(x, y, atol=1e-9)
    assert_consistent_derivatives(moved, 0.5, T + 0.05)


def test_blend_duration_respects_the_limits():
    v_max = np.array([1.0, 2.0])
    a_max = np.array([5.0, 5.0])
    dp = np.array([0.4, -0.1])
    T = blend_duration(dp, np.zeros(2), np.zeros(2), np.zeros(2), v_max, a_max, t_min=0.1, t_max=10.0, budget=0.8)
    b = TransitionTrajectory.from_state(HoldTrajectory(dp), 0.0, T, np.zeros(2), np.zeros(2), np.zeros(2))
    _, V, A = sample(b, np.linspace(0, T, 400))
    assert np.all(np.abs(V) <= 0.8 * v_max + 1e-9)
    assert np.all(np.abs(A) <= 0.8 * a_max + 1e-9)
    # and is not needlessly long: one of the two limits is almost reached
    assert np.max(np.abs(V) / v_max) > 0.75 or np.max(np.abs(A) / a_max) > 0.75
    # the minimum window applies to small offsets
    assert blend_duration(np.full(2, 1e-6), np.zeros(2), np.zeros(2), np.zeros(2), v_max, a_max, 0.1, 10.0) == 0.1


@pytest.mark.parametrize("a0", [0.0, 3.0, -20.0])
def test_stop_trajectory_stops_within_the_acceleration_limit(a0):
    p0 = np.array([0.1, -0.2, 0.3])
    v0 = np.array([1.2, -0.5, 0.0])
    a0v = np.array([a0, 0.0, -a0])
    a_max = np.array([8.0, 8.0, 8.0])
    stop = StopTrajectory(2.0, p0, v0, a0v, a_max)
    for x, y in zip(stop.evaluate(2.0), (p0, v0, a0v)):
        np.testing.assert_allclose(x, y, atol=1e-12)
    ts = np.linspace(2.0, stop.end_time, 500)
    _, V, A = sample(stop, ts)
    allowed = np.maximum(a_max, np.abs(a0v))
    assert np.all(np.abs(A) <= allowed * (1 + 1e-6))
    pe, ve, ae = stop.evaluate(stop.end_time + 0.5)
    assert np.all(ve == 0) and np.all(ae == 0)
    assert_continuous_at(stop, stop.end_time)
    assert_consistent_derivatives(stop, 2.0, stop.end_time)
    # the stop is about as short as the limit allows for the fastest joint (1.5 |v| / a without a0)
    if a0 == 0.0:
        assert stop.duration == pytest.approx(1.5 * 1.2 / 8.0, rel=0.01)


def test_a_long_transition_does_not_swing_out_with_an_acceleration_offset():
    """A fade-in of 3 s onto a plan that starts at 60 rad/s^2: with one window for every part of the
    offset the quintic that cancels the acceleration swings out by ~0.017 * 60 * 3^2 = 9 rad; with the
    acceleration and velocity parts on their own short windows it stays within a few centiradians."""
    t = np.arange(0, 4, 1 / 30)
    plan = WaypointSpline(t, (0.5 * 60 * np.minimum(t, 0.05) ** 2)[:, None] * np.ones((1, 2)))  # 60 rad/s^2 at t = 0
    _, vb, ab = plan.evaluate(0.0)
    assert abs(ab[0]) > 30
    single = TransitionTrajectory.from_state(plan, 0.0, 3.0, np.zeros(2), np.zeros(2), np.zeros(2))
    windows = offset_windows(-vb, np.full(2, 12.0), 3.0, 0.1)
    split = TransitionTrajectory.from_state(plan, 0.0, 3.0, np.zeros(2), np.zeros(2), np.zeros(2), *windows)
    ts = np.linspace(0, 3.0, 301)
    swing = lambda tr: max(abs(tr.evaluate(x)[0][0] - plan.evaluate(x)[0][0]) for x in ts)  # noqa: E731
    assert swing(single) > 1.0
    assert swing(split) < 0.05
    for x, y in zip(split.evaluate(0.0), (np.zeros(2),) * 3):  # still starts exactly at the commanded state
        np.testing.assert_allclose(x, y, atol=1e-12)
    assert_consistent_derivatives(split, 0.0, 3.2)


def test_before_its_first_waypoint_a_spline_is_extrapolated_linearly_then_rests():
    """A cubic extrapolated through a jittery chunk's first knots reached 5.7 rad/s and 25x the chunk's
    deviation within 23 ms; linear extrapolation keeps the first velocity and no acceleration."""
    from motus_core.runtime.trajectory import WaypointSpline

    rng = np.random.default_rng(0)
    t = 1.0 + np.arange(20) / 30.0
    p = 0.02 * rng.standard_normal((20, 3))
    s = WaypointSpline(t, p, max_extrapolation=1 / 30)
    _, v0, _ = s.evaluate(t[0])
    for dt in (0.005, 0.02, 1 / 30):
        pe, ve, ae = s.evaluate(t[0] - dt)
        np.testing.assert_allclose(pe, p[0] - v0 * dt, atol=1e-12)
        np.testing.assert_allclose(ve, v0)
        np.testing.assert_allclose(ae, 0.0)
    pe, ve, ae = s.evaluate(t[0] - 0.5)  # beyond the window: at rest where the extrapolation stopped
    np.testing.assert_allclose(pe, p[0] - v0 / 30, atol=1e-12)
    assert not ve.any() and not ae.any()
    many = np.array([t[0] - 0.5, t[0] - 0.02, t[0], t[5] + 0.01, t[-1] + 1.0])
    np.testing.assert_allclose(s.positions_at(many), np.array([s.evaluate(x)[0] for x in many]), atol=1e-12)


def test_smoothing_to_the_limits_leaves_a_feasible_chunk_and_tames_jitter():
    from motus_core.runtime.trajectory import smooth_to_limits

    t = np.arange(48) / 30.0
    smooth = np.stack([0.3 * np.sin(t), 0.1 * t], axis=1)  # accelerations <= 0.3 rad/s^2
    out, passes = smooth_to_limits(t, smooth, np.array([9.6, 9.6]))
    assert passes == 0 and np.array_equal(out, smooth)
    noisy = smooth + 0.02 * np.random.default_rng(1).standard_normal(smooth.shape)
    out, passes = smooth_to_limits(t, noisy, np.array([9.6, 9.6]))
    acc = np.diff(out, 2, axis=0) * 900.0
    assert passes > 0 and np.abs(acc).max() <= 9.6 + 1e-9
    np.testing.assert_array_equal(out[[0, -1]], noisy[[0, -1]])  # the ends are kept
    assert np.abs(out - smooth).max() < 0.05  # the slow part survives
