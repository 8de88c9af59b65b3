"""Observation synchronizer (motus_core.runtime.sync): coherence, staleness, time jumps, joint mapping."""
import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from motus_core.runtime.sync import LazyImage, ObservationSynchronizer, SyncConfig

ROLES = ("high", "left_wrist", "right_wrist")


def img(value: int, h: int = 4, w: int = 6) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


@pytest.fixture
def sim_profile():
    return load_profile("sim_aloha")


def feed_cameras(sync, stamp, value=0, roles=ROLES, offsets=None):
    for r in roles:
        sync.add_image(r, stamp + (offsets or {}).get(r, 0.0), img(value))


def feed_joints(sync, profile, stamp, q):
    names = list(profile.joint_names)
    sync.add_joint_state(profile.state_sources[0].topic, stamp, names, q)


def test_coherent_snapshot_and_no_reuse(sim_profile):
    s = ObservationSynchronizer(sim_profile, SyncConfig())
    q = np.arange(14, dtype=float)
    for k in range(3):
        t = 1.0 + k / 30
        feed_cameras(s, t, value=k)
        feed_joints(s, sim_profile, t - 0.002, q + k)
        feed_joints(s, sim_profile, t + 0.003, q + k + 0.5)
    res = s.snapshot(1.0 + 2 / 30 + 0.01)
    obs = res.observation
    assert obs is not None, res.reason
    assert obs.stamp == pytest.approx(1.0 + 2 / 30)
    assert set(obs.images) == set(ROLES) and all(np.all(obs.images[r] == 2) for r in ROLES)
    np.testing.assert_allclose(obs.state, q + 2)  # nearest: 2 ms before beats 3 ms after
    # the same reference frame is never used twice
    again = s.snapshot(1.0 + 2 / 30 + 0.011)
    assert again.observation is None and "new reference frame" in again.reason


def test_last_before_policy(sim_profile):
    s = ObservationSynchronizer(sim_profile, SyncConfig(policy="last_before"))
    q = np.zeros(14)
    feed_cameras(s, 2.0)
    feed_joints(s, sim_profile, 1.995, q + 1)
    feed_joints(s, sim_profile, 2.001, q + 2)
    obs = s.snapshot(2.01).observation
    assert obs is not None
    np.testing.assert_allclose(obs.state, q + 1)


def test_waits_for_a_later_joint_sample_then_times_out(sim_profile):
    s = ObservationSynchronizer(sim_profile, SyncConfig(joint_tolerance=0.02))
    feed_cameras(s, 3.0)
    feed_joints(s, sim_profile, 2.995, np.zeros(14))
    # a closer joint state may still come: not final yet
    res = s.snapshot(3.005)
    assert res.observation is None and "waiting" in res.reason
    # ... one arrives
    feed_joints(s, sim_profile, 3.001, np.ones(14))
    obs = s.snapshot(3.006).observation
    assert obs is not None and np.all(obs.state == 1)
    # without a later sample the best within tolerance is taken once the tolerance has passed
    feed_cameras(s, 3.1)
    feed_joints(s, sim_profile, 3.09, np.full(14, 7.0))
    assert s.snapshot(3.105).observation is None
    obs = s.snapshot(3.125).observation
    assert obs is not None and np.all(obs.state == 7)


def test_camera_stops_and_comes_back(sim_profile):
    s = ObservationSynchronizer(sim_profile, SyncConfig(max_age=0.25))
    t = 0.0
    for k in range(10):
        t = k / 30
        roles = ROLES if k < 3 else ("high", "right_wrist")  # left wrist stops after 3 frames
        feed_cameras(s, t, roles=roles)
        feed_joints(s, sim_profile, t, np.zeros(14))
    res = s.snapshot(t + 0.03)
    assert res.observation is None
    assert "left_wrist" in res.reason and "old" in res.reason
    assert res.waiting_on == "left_wrist"
    diag = {d.name: d for d in s.diagnostics(t + 0.03)}
    assert diag["left_wrist"].level == "error" and diag["left_wrist"].age > 0.2
    assert diag["high"].level == "ok"
    # it comes back
    t2 = t + 1 / 30
    feed_cameras(s, t2)
    feed_joints(s, sim_profile, t2, np.zeros(14))
    assert s.snapshot(t2 + 0.005).observation is not None


def test_stale_reference_is_never_used(sim_profile):
    s = ObservationSynchronizer(sim_profile, SyncConfig(max_age=0.2))
    feed_cameras(s, 5.0)
    feed_joints(s, sim_profile, 5.0, np.zeros(14))
    res = s.snapshot(5.5)
    assert res.observation is None
    assert "high" in res.reason and "0.50 s old" in res.reason


def test_time_jump_back_clears_buffers(sim_profile):
    s = ObservationSynchronizer(sim_profile)
    for k in range(5):
        feed_cameras(s, 10 + k / 30)
        feed_joints(s, sim_profile, 10 + k / 30, np.zeros(14))
    assert s.snapshot(10 + 4 / 30 + 0.001).observation is not None
    # sim time reset: stamps restart near 0
    feed_cameras(s, 0.1, value=9)
    assert s.resets == 1
    feed_joints(s, sim_profile, 0.1, np.ones(14))
    obs = s.snapshot(0.101).observation
    assert obs is not None and obs.stamp == pytest.approx(0.1) and np.all(obs.images["high"] == 9)
    # a clock going back without new samples also resets
    s.snapshot(50.0)
    s.snapshot(1.0)
    assert s.resets == 2


def test_joint_reordering_two_topics_and_reporting_once():
    prof = load_profile("aloha_agilex_2")
    problems = []
    s = ObservationSynchronizer(prof, on_problem=problems.append)
    left, right = prof.state_sources
    # driver order differs from the mapping order: reversed names
    lnames = list(left.names)[::-1]
    lvals = [float(i) for i in range(len(lnames))]
    s.add_joint_state(left.topic, 1.0, lnames, lvals)
    rnames = list(right.names)
    s.add_joint_state(right.topic, 1.0, rnames, [100.0 + i for i in range(7)])
    feed_cameras(s, 1.0)
    obs = s.snapshot(1.001).observation
    assert obs is not None
    expected = np.empty(14)
    for msg_name, v in zip(lnames, lvals):
        expected[prof.index_of(left.names[msg_name])] = v
    for i, msg_name in enumerate(rnames):
        expected[prof.index_of(right.names[msg_name])] = 100.0 + i
    np.testing.assert_allclose(obs.state, expected)
    # a missing joint: rejected and reported once, however many messages come
    for k in range(5):
        assert not s.add_joint_state(left.topic, 2.0 + k, list(left.names)[:-1], [0.0] * 6)
    assert len([p for p in problems if "lack" in p]) == 1
    # extra joints: reported once, ignored
    for k in range(3):
        assert s.add_joint_state(right.topic, 3.0 + k, rnames + ["joint7"], [0.0] * 8)
    assert len([p for p in problems if "does not list" in p]) == 1
    # ... or rejected when configured so
    strict = ObservationSynchronizer(prof, SyncConfig(extra_joints="reject"))
    assert not strict.add_joint_state(right.topic, 1.0, rnames + ["joint7"], [0.0] * 8)


def test_nan_joint_state_rejected(sim_profile):
    s = ObservationSynchronizer(sim_profile)
    q = np.zeros(14)
    q[3] = np.nan
    assert not s.add_joint_state(sim_profile.state_sources[0].topic, 1.0, list(sim_profile.joint_names), q)
    assert s.streams[sim_profile.state_sources[0].topic].rejected == 1


def test_lazy_images_decode_only_when_used(sim_profile):
    s = ObservationSynchronizer(sim_profile)
    decoded = []

    def lazy(v):
        return LazyImage(lambda: decoded.append(v) or img(v))

    for k in range(5):
        t = k / 30
        for r in ROLES:
            s.add_image(r, t, lazy(k))
        feed_joints(s, sim_profile, t, np.zeros(14))
    obs = s.snapshot(4 / 30 + 0.001).observation
    assert obs is not None and np.all(obs.images["high"] == 4)
    assert decoded == [4, 4, 4]


def test_diagnostics_rate_and_drops(sim_profile):
    s = ObservationSynchronizer(sim_profile)
    wall = 100.0
    k_values = [k for k in range(40) if k not in (20, 21, 22)]  # 3 frames lost
    for k in k_values:
        s.add_image("high", k / 30, img(0), received=wall + k / 30)
    d = {x.name: x for x in s.diagnostics(39 / 30)}["high"]
    assert d.received == len(k_values)
    assert d.dropped == 3
    assert d.level == "warn"


def test_config_validation(sim_profile):
    with pytest.raises(ValueError):
        ObservationSynchronizer(sim_profile, SyncConfig(policy="closest"))
    with pytest.raises(ValueError):
        ObservationSynchronizer(sim_profile, SyncConfig(reference="wrist"))
