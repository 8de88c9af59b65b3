"""The simulator under another robot profile (aloha_agilex_2): it speaks that robot's topics, joint
names and units (AgileX Cobot Magic: /puppet/joint_*, gripper opening in metres, /master/joint_*
commands). Own module: only one simulator (one /clock) may run at a time."""
from __future__ import annotations

import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from test.helpers import stop_process
from test.test_sim_node import Probe, _joint_state, start_sim


def test_sim_speaks_another_profiles_topics():
    import rclpy
    from rclpy.context import Context

    agx = load_profile("aloha_agilex_2")
    proc = start_sim("robot:=aloha_agilex_2", "image_width:=64", "image_height:=48", "status_rate:=5.0")
    ctx = Context()
    rclpy.init(context=ctx)
    probe = Probe(ctx, agx)
    try:
        probe.wait(lambda: len(probe.states) > 20 and all(probe.images.values()), 90, "the simulator as aloha_agilex_2", proc)
        left = probe.raw_states["/puppet/joint_left"]
        assert list(left.name) == [f"joint{i}" for i in range(7)]
        assert 0.0 <= left.position[6] <= 0.1  # gripper opening in metres
        assert probe.images["high"][-1][1:3] == (64, 48)
        pub = probe.js_pubs["/master/joint_left"]
        probe.wait(lambda: pub.get_subscription_count() > 0, 20, "the sim to subscribe /master/joint_left", proc)
        q = probe.latest()
        cmd = q[:7].copy()
        cmd[0] += 0.3
        cmd[6] = 0.08
        t = probe.clock
        pub.publish(_joint_state([f"joint{i}" for i in range(7)], cmd))
        probe.wait_sim_time(t + 1.5, proc)
        moved = probe.latest()
        assert moved[0] == pytest.approx(cmd[0], abs=0.07)  # the waist may stop within friction / kp = 50 / 800 rad
        assert moved[6] == pytest.approx(0.08, abs=0.01)
        np.testing.assert_allclose(moved[7:13], q[7:13], atol=0.05)  # the right arm holds its pose
    finally:
        probe.close()
        rclpy.shutdown(context=ctx)
        out = stop_process(proc)
    assert "Traceback" not in out, out[-3000:]


def test_skip_late_frames_keeps_the_clock_and_counts_dropped_frames():
    """Asked to run 50x faster than real time, the sim cannot render every frame in time: with
    skip_late_frames it skips them (counted as dropped) instead of slowing down to render them."""
    import rclpy
    from rclpy.context import Context

    prof = load_profile("sim_aloha")
    proc = start_sim("real_time_factor:=50.0", "skip_late_frames:=true", "status_rate:=5.0", "image_width:=64", "image_height:=48")
    ctx = Context()
    rclpy.init(context=ctx)
    probe = Probe(ctx, prof)
    try:
        probe.wait(lambda: probe.clock > 5.0 and probe.counter("frames_skipped") > 0, 120, "skipped frames", proc)
        assert probe.counter("frames_dropped") >= probe.counter("frames_skipped") > 0
        assert proc.poll() is None
    finally:
        probe.close()
        rclpy.shutdown(context=ctx)
        out = stop_process(proc)
    assert "Traceback" not in out, out[-3000:]
