"""Robustness of the observation path (ROS-free): the driver-clock guard, per-cause rejection logs,
raw image header checks and frames of the wrong size (issue 15, item 1)."""
import numpy as np
import pytest

from motus_core.images import ImageError, raw_image_problem, raw_to_rgb
from motus_core.rejections import RejectionLog
from motus_core.robot_profile import load_profile
from motus_core.runtime.sync import ObservationSynchronizer, SyncConfig

ROLES = ("high", "left_wrist", "right_wrist")


@pytest.fixture
def prof():
    return load_profile("sim_aloha")


def frame(prof, role="high", value=0):
    cam = prof.cameras[role]
    return np.full((cam.height, cam.width, 3), value, dtype=np.uint8)


def test_rejection_log_first_at_once_then_rate_limited_per_cause():
    lines, t = [], [0.0]
    log = RejectionLog(lines.append, period=5.0, clock=lambda: t[0])
    assert log.reject("high: wrong size", "640x480")
    assert not log.reject("high: wrong size", "640x480")  # same cause within the period: counted only
    assert log.reject("high: short data", "10 bytes")  # another cause: logged at once
    t[0] = 6.0
    assert log.reject("high: wrong size", "640x480")
    assert len(lines) == 3 and "high: wrong size: 640x480" in lines[0]
    assert "2 since the last report, 3 in all" in lines[2]
    assert log.counts == {"high: wrong size": 3, "high: short data": 1} and log.total == 4
    assert "high: short data: 1" in log.summary()


def test_future_stamped_frame_is_dropped_and_does_not_poison_the_order(prof):
    """A driver whose clock runs 0.3 s ahead sends one frame; the real frames that follow are kept."""
    lines = []
    s = ObservationSynchronizer(prof, SyncConfig(), on_problem=lines.append)
    q = np.zeros(prof.dof)
    topic = prof.state_sources[0].topic
    accepted = 0
    for k in range(30):
        now = 10.0 + k / 30
        if k == 5:
            s.add_image("high", now + 0.3, frame(prof, "high", 99), now=now)
            # while it is the newest frame, it is never used as the reference (it lies about the time)
            res = s.snapshot(now + 0.005)
            assert res.observation is None or res.observation.stamp < now + 0.2
        accepted += s.add_image("high", now, frame(prof, "high", k), now=now)
        for r in ROLES[1:]:
            s.add_image(r, now, frame(prof, r, k), now=now)
        s.add_joint_state(topic, now, list(prof.joint_names), q, now=now)
    assert accepted == 30  # without the guard, the frames stamped before 10.47 s were "out of order"
    assert s.streams["high"].rejected == 1 and s.streams["high"].dropped == 0
    obs = s.snapshot(10.0 + 29 / 30 + 0.005).observation
    assert obs is not None and obs.stamp == pytest.approx(10.0 + 29 / 30) and np.all(obs.images["high"] == 29)
    text = [m for m in lines if "future" in m]
    assert len(text) == 1 and "high" in text[0] and "0.300 s ahead" in text[0], lines
    assert s.rejections.counts["high: stamped in the future"] == 1


def test_a_lagging_receiver_clock_does_not_reject_good_frames(prof):
    """Sim time on a loaded machine: /clock arrives late, so correct stamps look 0.1-0.2 s ahead."""
    s = ObservationSynchronizer(prof, SyncConfig())
    topic = prof.state_sources[0].topic
    for k in range(20):
        t = 5.0 + k / 30
        lagging_now = t - 0.15
        for r in ROLES:
            assert s.add_image(r, t, frame(prof, r), now=lagging_now)
        assert s.add_joint_state(topic, t, list(prof.joint_names), np.zeros(prof.dof), now=lagging_now)
    assert s.rejections.total == 0
    assert s.snapshot(5.0 + 19 / 30 + 0.005).observation is not None  # usable once the clock has caught up


def test_future_joint_state_is_dropped_when_real_ones_follow(prof):
    s = ObservationSynchronizer(prof, SyncConfig())
    topic = prof.state_sources[0].topic
    names = list(prof.joint_names)
    s.add_joint_state(topic, 7.0, names, np.ones(prof.dof), now=5.0)  # 2 s ahead: no reset, no poisoning
    assert s.add_joint_state(topic, 5.0, names, np.zeros(prof.dof), now=5.0)
    assert s.add_joint_state(topic, 5.01, names, np.zeros(prof.dof), now=5.01)
    assert s.resets == 0 and s.rejections.counts[f"{topic}: stamped in the future"] == 1


def test_out_of_order_and_bad_joint_states_are_logged_per_cause(prof):
    lines = []
    s = ObservationSynchronizer(prof, SyncConfig(), on_problem=lines.append)
    topic = prof.state_sources[0].topic
    names = list(prof.joint_names)
    assert s.add_joint_state(topic, 1.0, names, np.zeros(prof.dof))
    assert not s.add_joint_state(topic, 0.99, names, np.zeros(prof.dof))  # out of order
    assert not s.add_joint_state(topic, 1.1, names, np.zeros(prof.dof - 1))  # wrong length
    bad = np.zeros(prof.dof)
    bad[3] = np.inf
    assert not s.add_joint_state(topic, 1.2, names, bad)
    assert not s.add_joint_state(topic, 1.3, names + [names[0]], np.zeros(prof.dof + 1))  # duplicated name
    counts = s.rejections.counts
    assert counts[f"{topic}: out of order"] == 1 and counts[f"{topic}: wrong number of positions"] == 1
    assert counts[f"{topic}: NaN/inf positions"] == 1 and counts[f"{topic}: joint names do not match the profile"] == 1
    assert any("more than once" in m for m in lines)
    assert s.streams[topic].rejected == 4


def test_wrong_size_frames_warn_once_or_are_rejected(prof):
    lines = []
    big = np.zeros((480, 640, 3), np.uint8)
    s = ObservationSynchronizer(prof, SyncConfig(), on_problem=lines.append)
    assert s.add_image("high", 1.0, big) and s.add_image("high", 1.1, big)
    msgs = [m for m in lines if "640x480" in m]
    assert len(msgs) == 1 and "320x240" in msgs[0]
    r = ObservationSynchronizer(prof, SyncConfig(size_mismatch="reject"), on_problem=lines.append)
    assert not r.add_image("high", 1.0, big)
    assert r.add_image("high", 1.1, frame(prof))
    assert r.rejections.counts["high: wrong size"] == 1


@pytest.mark.parametrize("h,w,enc,step,n,cause", [
    (240, 320, "mono16", 640, 240 * 640, "unsupported encoding"),
    (240, 320, "rgb8", 960, 100, "short data"),
    (0, 0, "rgb8", 0, 0, "empty image"),
    (240, 320, "rgb8", 320, 240 * 960, "wrong step"),
])
def test_raw_image_header_checks(h, w, enc, step, n, cause):
    assert raw_image_problem(h, w, enc, step, n)[0] == cause
    with pytest.raises(ImageError):
        raw_to_rgb(h, w, enc, step, bytes(n))


def test_raw_image_header_ok():
    assert raw_image_problem(240, 320, "bgr8", 0, 240 * 960) is None
    assert raw_to_rgb(2, 2, "bgr8", 6, bytes(range(12))).shape == (2, 2, 3)
