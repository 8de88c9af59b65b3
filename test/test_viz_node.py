"""The visualizer node and the MCAP recorder, as processes, against real rclpy.

One scenario (module fixture) starts ``visualizer_node`` and ``mcap_viz_recorder`` and drives them
from this process: live camera frames and joint states at 30 Hz, an action chunk, a predicted
future, garbage of every kind, then a second chunk. The tests check what came out: marker
structure and forward kinematics, the ghost, per-camera predicted views, the comparison, the
contact sheets, survival of the node, and the MCAP file (decoded with mcap_ros2).
"""
from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from motus_core.preprocessing import MOSAIC_ROLES
from motus_core.robot_profile import load_profile
from test.helpers import ROOT, node_process, stop_process, wait_until
from test.viz_data import camera_image, fixed_chunk, model_frame, regions

PROFILE = load_profile("sim_aloha")
URDF = PROFILE.resolve(PROFILE.urdf)
K = 48
DT = 1.0 / 30.0
needs_urdf = pytest.mark.skipif(not URDF.is_file(), reason=f"{URDF} not built yet (the simulator's URDF export)")


def _sec(t) -> float:
    return t.sec + t.nanosec * 1e-9


class Scenario:
    """Publishes the inputs, collects the outputs (in this test process)."""

    def __init__(self, ctx):
        import rclpy
        from builtin_interfaces.msg import Duration
        from motus_msgs.msg import ActionChunk, PredictedFuture
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, JointState, RegionOfInterest
        from visualization_msgs.msg import MarkerArray

        from motus_ros.conversions import image_msg as rgb_to_image_msg, time_msg as sec_to_stamp

        self.rclpy, self.Duration, self.ActionChunk, self.PredictedFuture = rclpy, Duration, ActionChunk, PredictedFuture
        self.Image, self.JointState, self.ROI = Image, JointState, RegionOfInterest
        self.rgb_to_image_msg, self.sec_to_stamp = rgb_to_image_msg, sec_to_stamp
        self.node = Node("viz_test_driver", context=ctx)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.node)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_chunk = self.node.create_publisher(ActionChunk, "/policy/action_chunk", 10)
        self.pub_pred = self.node.create_publisher(PredictedFuture, "/policy/predicted_future", 10)
        self.pub_cams = {r: self.node.create_publisher(Image, c.topic, 10) for r, c in PROFILE.cameras.items()}
        self.pub_js = self.node.create_publisher(JointState, "/joint_states", 10)
        from motus_msgs.msg import ExecutorStatus

        self.ExecutorStatus = ExecutorStatus
        self.pub_exec = self.node.create_publisher(ExecutorStatus, "/executor/status", 10)
        self.markers, self.ghost, self.sheets, self.sheets_actual, self.comparisons = [], [], [], [], []
        self.views = {r: [] for r in PROFILE.cameras}
        self.node.create_subscription(MarkerArray, "/motus/viz/trajectory", lambda m: self.markers.append((time.monotonic(), m)), latched)
        self.node.create_subscription(JointState, "/ghost/joint_states", self.ghost.append, 10)
        self.node.create_subscription(Image, "/motus/viz/contact_sheet", self.sheets.append, latched)
        self.node.create_subscription(Image, "/motus/viz/contact_sheet_vs_actual", self.sheets_actual.append, latched)
        self.node.create_subscription(Image, "/motus/viz/comparison", self.comparisons.append, 10)
        for r in PROFILE.cameras:
            self.node.create_subscription(Image, f"/motus/viz/predicted/{r}", lambda m, r=r: self.views[r].append(m), 10)
        self.live_index = 0
        self.live_on = True
        # pre-built frames: the driver must keep 30 Hz on a busy 2-core machine
        self.live_msgs = {r: [self.rgb_to_image_msg(camera_image(r, i), self.sec_to_stamp(0.0), c.frame_id) for i in range(30)]
                          for r, c in PROFILE.cameras.items()}
        self.node.create_timer(DT, self._publish_live)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _publish_live(self) -> None:
        t = self.now()
        js = self.JointState(name=list(PROFILE.joint_names), position=list(PROFILE.home))
        js.header.stamp = self.sec_to_stamp(t)
        self.pub_js.publish(js)
        if not self.live_on:
            return
        for r, pub in self.pub_cams.items():
            msg = self.live_msgs[r][self.live_index % 30]
            msg.header.stamp = self.sec_to_stamp(t)
            pub.publish(msg)
        self.live_index += 1

    def spin_until(self, predicate, timeout=15.0) -> bool:
        return wait_until(predicate, timeout=timeout, spin=lambda: self.executor.spin_once(timeout_sec=0.02))

    def pause(self, seconds: float) -> None:
        """Keep spinning (live frames go on) for ``seconds``: pacing of publications, not synchronisation."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def chunk_msg(self, q: np.ndarray, stamp: float, chunk_id: int):
        m = self.ActionChunk()
        m.header.stamp = self.sec_to_stamp(stamp)
        m.chunk_id = chunk_id
        m.joint_names = list(PROFILE.joint_names)
        m.step_period = self.Duration(sec=0, nanosec=int(DT * 1e9))
        m.num_steps = q.shape[0]
        m.positions = [float(v) for v in q.reshape(-1)]
        m.model, m.mode = "tiny_motus", "joint"
        return m

    def prediction_msg(self, stamp: float, n_frames: int, chunk_id: int):
        m = self.PredictedFuture()
        m.header.stamp = self.sec_to_stamp(stamp)
        m.chunk_id, m.model, m.mode, m.layout = chunk_id, "tiny_motus", "joint", "motus_t_mosaic"
        m.camera_names = list(MOSAIC_ROLES)
        m.camera_regions = [self.ROI(x_offset=r.x, y_offset=r.y, width=r.width, height=r.height) for r in regions()]
        m.frames = [self.rgb_to_image_msg(model_frame(j + 1), self.sec_to_stamp(stamp)) for j in range(n_frames)]
        m.frame_times = [self.sec_to_stamp(stamp + 0.2 * (j + 1)) for j in range(n_frames)]
        m.condition_frame = self.rgb_to_image_msg(model_frame(0), self.sec_to_stamp(stamp))
        return m

    def garbage(self) -> None:
        """Every kind of malformed input the node must survive."""
        q = fixed_chunk(PROFILE, 8)
        t = self.now()
        bad_chunks = []
        m = self.chunk_msg(q, t, 900)
        m.num_steps = 9  # positions do not fill num_steps x joints
        bad_chunks.append(m)
        m = self.chunk_msg(q, t, 901)
        m.positions = [math.nan] * len(m.positions)
        bad_chunks.append(m)
        m = self.chunk_msg(q, t, 902)
        m.num_steps = 0
        m.positions = []
        bad_chunks.append(m)
        m = self.chunk_msg(q, t, 903)
        m.joint_names = [f"j{i}" for i in range(14)]  # joints the robot does not have
        bad_chunks.append(m)
        m = self.chunk_msg(q, t, 904)
        m.step_period = self.Duration(sec=0, nanosec=0)
        bad_chunks.append(m)
        m = self.chunk_msg(q[:, :5], t, 905)
        m.joint_names = []
        bad_chunks.append(m)
        for m in bad_chunks:  # paced: the node keeps the last few messages per topic (KEEP_LAST), a burst could be cut
            self.pub_chunk.publish(m)
            self.pause(0.1)
        bad_preds = []
        p = self.prediction_msg(t, 2, 910)
        p.frames[0].height, p.frames[0].width, p.frames[0].step, p.frames[0].data = 0, 0, 0, b""  # zero-size image
        bad_preds.append(p)
        p = self.prediction_msg(t, 2, 911)
        p.frames[1].encoding = "32FC1"  # unsupported encoding
        bad_preds.append(p)
        p = self.prediction_msg(t, 2, 912)
        p.frames[0].data = bytes(100)  # truncated buffer
        bad_preds.append(p)
        p = self.prediction_msg(t, 2, 913)
        p.frame_times = p.frame_times[:1]  # lengths differ
        bad_preds.append(p)
        p = self.prediction_msg(t, 2, 914)
        p.layout = "hexagon"
        bad_preds.append(p)
        p = self.prediction_msg(t, 2, 915)
        p.camera_regions[0].width = 5000  # region outside the frame
        bad_preds.append(p)
        p = self.prediction_msg(t, 2, 916)
        p.frames = []
        p.frame_times = []
        bad_preds.append(p)
        for p in bad_preds:
            self.pub_pred.publish(p)
            self.pause(0.15)
        for role, img in [("high", self.Image(height=10, width=10, encoding="rgb8", step=30, data=bytes(299))),  # one byte short
                          ("high", self.Image(height=0, width=0, encoding="rgb8", step=0, data=b"")),
                          ("left_wrist", self.Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32)))]:
            self.pub_cams[role].publish(img)
            self.pause(0.1)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    import rclpy
    from rclpy.context import Context

    out = tmp_path_factory.mktemp("viz")
    mcap = out / "viz.mcap"
    # match_tolerance: live frames may come late or be dropped (best effort) when the machine is busy
    viz = node_process("motus_ros.nodes.visualizer_node", "-p", "log_period:=1.0", "-p", "match_tolerance:=0.1")
    rec = node_process("motus_ros.nodes.mcap_viz_recorder", args=("--output", str(mcap), "--png_dir", str(out / "png")))
    ctx = Context()
    rclpy.init(context=ctx)
    s = Scenario(ctx)
    result = {"dir": out, "mcap": mcap}
    try:
        assert s.spin_until(lambda: s.node.count_subscribers("/policy/action_chunk") >= 2
                            and s.node.count_subscribers("/policy/predicted_future") >= 2
                            and s.node.count_subscribers("/cam_high/image_raw") >= 2
                            and s.node.count_subscribers("/motus/viz/trajectory") >= 2, timeout=40), \
            "visualizer and recorder did not subscribe"
        # 1) an action chunk starting now (the node greys out what the clock has passed)
        q = fixed_chunk(PROFILE, K)
        t0 = s.now()
        s.pub_chunk.publish(s.chunk_msg(q, t0, 1))
        if URDF.is_file():
            assert s.spin_until(lambda: s.markers and s.ghost)
        # 2) a prediction made from an observation 0.3 s ago: its 1st frame time has passed already
        t_obs = s.now() - 0.3
        s.pub_pred.publish(s.prediction_msg(t_obs, 4, 1))
        assert s.spin_until(lambda: all(len(v) >= 4 for v in s.views.values()) and s.sheets_actual, timeout=20), \
            f"views {[len(v) for v in s.views.values()]}, sheets vs actual {len(s.sheets_actual)}"
        # let the first chunk run out: its markers must turn grey
        if s.markers:
            s.spin_until(lambda: time.monotonic() - s.markers[0][0] > K * DT + 0.3, timeout=5)
        # 3) garbage, then a valid chunk: the node must still answer
        s.garbage()
        n_before = len(s.markers)
        q2 = q[::-1].copy()
        s.pub_chunk.publish(s.chunk_msg(q2, s.now(), 2))
        if URDF.is_file():
            assert s.spin_until(lambda: len(s.markers) > n_before and _chunk_id(s.markers[-1][1]) == 2), "no markers after garbage"
        # 4) a sync-strategy executor re-anchors chunk 3 (observed 1 s ago) to its arrival: its status says
        # so, and the greying must follow the executor, not the chunk's own (already passed) times
        if URDF.is_file():
            assert s.spin_until(lambda: s.node.count_subscribers("/executor/status") >= 1, timeout=10)
            st = s.ExecutorStatus(active_chunk_id=3, active_chunk_time_offset=1.0)
            for _ in range(3):
                s.pub_exec.publish(st)
                s.pause(0.1)
            n_before = len(s.markers)
            s.pub_chunk.publish(s.chunk_msg(q, s.now() - 1.0, 3))
            assert s.spin_until(lambda: len(s.markers) > n_before and _chunk_id(s.markers[-1][1]) == 3), "no markers for chunk 3"
            s.pause(0.5)
        s.pause(1.5)  # the recorder's last messages
        result.update(scenario=s, q=q, q2=q2, t0=t0, t_obs=t_obs, viz_alive=viz.poll() is None)
    except AssertionError as exc:  # say what the nodes said
        raise AssertionError(f"{exc}\n--- visualizer ---\n{stop_process(viz)[-4000:]}\n--- recorder ---\n{stop_process(rec)[-2000:]}") from None
    finally:
        result["viz_out"] = stop_process(viz)
        result["rec_out"] = stop_process(rec)
        s.close()
        rclpy.shutdown(context=ctx)
    yield result


def _chunk_id(arr) -> int | None:
    for m in arr.markers:
        if m.ns == "chunk/label":
            return int(m.text.split()[1])
    return None


def _markers_by_ns(arr):
    return {m.ns: m for m in arr.markers if m.action != m.DELETEALL}


# ----------------------------------------------------------------------------------------- markers
@needs_urdf
def test_marker_structure(scenario):
    s = scenario["scenario"]
    _, first = s.markers[0]
    assert first.markers[0].action == first.markers[0].DELETEALL, "markers must replace the previous chunk's"
    ids = [(m.ns, m.id) for m in first.markers if m.action != m.DELETEALL]
    assert len(ids) == len(set(ids)), f"duplicated (ns, id): {ids}"
    for m in first.markers:
        if m.action == m.DELETEALL:
            continue
        assert m.header.frame_id == PROFILE.base_frame
        q = m.pose.orientation
        assert abs(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 - 1.0) < 1e-9
        assert m.color.a > 0
        pts = np.array([[p.x, p.y, p.z] for p in m.points]).reshape(-1, 3)
        assert np.all(np.isfinite(pts))
        if m.type in (m.LINE_STRIP, m.SPHERE_LIST):
            assert len(m.points) == K, f"{m.ns}: {len(m.points)} points for a chunk of {K}"
            assert len(m.colors) == K and all(c.a > 0 for c in m.colors)
            assert m.scale.x > 0
    by_ns = _markers_by_ns(first)
    assert {"left/path", "right/path", "left/gripper", "right/gripper"} <= set(by_ns)
    # gripper state along the path: open (green) early, closed (red) at the end of the chunk (the first
    # actions may already be greyed out: the clock ran while the node received the chunk)
    g = [c for c in by_ns["left/gripper"].colors if not (c.r == c.g == c.b)]
    assert len(g) > K // 2 and g[0].g > g[0].r and g[-1].r > g[-1].g
    # markers of later chunks use the same (ns, id): replaced, not accumulated
    last = s.markers[-1][1]
    assert {(m.ns, m.id) for m in last.markers} == {(m.ns, m.id) for m in first.markers}


@needs_urdf
def test_marker_points_are_the_sims_end_effector_positions(scenario):
    from motus_core.sim import ee_positions

    s = scenario["scenario"]
    by_ns = _markers_by_ns(s.markers[0][1])
    truth = ee_positions(scenario["q"], point="gripper_link")  # MuJoCo, (K, 2, 3) [left, right]
    for k, side in enumerate(("left", "right")):
        pts = np.array([[p.x, p.y, p.z] for p in by_ns[f"{side}/path"].points])
        err = np.abs(pts - truth[:, k]).max()
        assert err < 1e-6, f"{side}: marker points differ from MuJoCo by {err} m"


@needs_urdf
def test_executed_part_turns_grey_as_the_chunk_runs(scenario):
    s = scenario["scenario"]
    first_chunk = [(t, m) for t, m in s.markers if _chunk_id(m) == 1]
    grey_counts = []
    for _, arr in first_chunk:
        path = _markers_by_ns(arr)["left/path"]
        grey_counts.append(sum(1 for c in path.colors if abs(c.r - c.g) < 1e-6 and abs(c.g - c.b) < 1e-6))
    assert grey_counts == sorted(grey_counts), "the executed part must only grow"
    assert grey_counts[0] < K and grey_counts[-1] == K, grey_counts
    assert len(set(grey_counts)) >= 3, f"greying should advance in steps as time passes: {grey_counts}"


@needs_urdf
def test_greying_follows_the_executors_time_shift(scenario):
    """Chunk 3 was stamped 1 s in the past (30 actions by its own times) but the executor status said it
    runs 1 s later (sync re-anchoring): only what ran since it arrived may be grey."""
    s = scenario["scenario"]
    third = [m for _, m in s.markers if _chunk_id(m) == 3]
    assert third
    grey = [sum(1 for c in _markers_by_ns(m)["left/path"].colors if abs(c.r - c.g) < 1e-6 and abs(c.g - c.b) < 1e-6)
            for m in third]
    assert grey[0] <= 6, grey  # by its own times 30 actions would be grey at once
    assert grey == sorted(grey) and len(set(grey)) >= 3, grey  # then it advances as the executor runs it


@needs_urdf
def test_ghost_is_the_chunk_end(scenario):
    s = scenario["scenario"]
    first = [g for g in s.ghost if g.position and abs(g.position[list(g.name).index("left_gripper")] - scenario["q"][-1, 6]) < 1e-9]
    assert first, "no ghost joint state for the first chunk"
    g = first[0]
    got = dict(zip(g.name, g.position))
    for name, v in zip(PROFILE.joint_names, scenario["q"][-1]):
        assert got[name] == pytest.approx(v)


# ----------------------------------------------------------------------------------------- images
def test_predicted_views_per_camera_stamped_with_their_times(scenario):
    from motus_ros.conversions import image_msg_to_rgb

    s = scenario["scenario"]
    t_obs = scenario["t_obs"]
    for role, msgs in s.views.items():
        stamps = [_sec(m.header.stamp) for m in msgs]
        assert stamps[:4] == pytest.approx([t_obs + 0.2 * (j + 1) for j in range(4)], abs=1e-6)
        assert msgs[0].header.frame_id == PROFILE.cameras[role].frame_id
        img = image_msg_to_rgb(msgs[1])
        truth = camera_image(role, 2)  # predicted frame j=1 was built from camera_image(role, 2)
        if role != "high":
            truth = truth[::2, ::2]
        assert img.shape == truth.shape
        assert np.abs(img.astype(int) - truth.astype(int)).mean() < 20


def test_comparison_and_contact_sheets(scenario):
    from motus_ros.conversions import image_msg_to_rgb

    s = scenario["scenario"]
    assert s.comparisons, "no live | predicted comparison published"
    comp = image_msg_to_rgb(s.comparisons[0])
    assert comp.shape[0] > 3 * 180 and comp.shape[1] > 2 * 180 * 4 // 3
    assert s.sheets, "no contact sheet published"
    pred_sheet = image_msg_to_rgb(s.sheets[-1])
    vs = image_msg_to_rgb(s.sheets_actual[-1])
    assert vs.shape[1] == pred_sheet.shape[1] and vs.shape[0] > 1.7 * pred_sheet.shape[0]  # a live row under each camera


def test_node_survives_malformed_input(scenario):
    assert scenario["viz_alive"], scenario["viz_out"][-3000:]
    out = scenario["viz_out"]
    assert "Rejected" in out and "Traceback" not in out, out[-3000:]
    # predictions and chunks travel reliably: every one is counted; live frames are best effort
    assert "prediction_rejected 7" in out and "live_frame_rejected" in out, out[-3000:]
    if URDF.is_file():  # without a URDF the node does not use chunks at all
        assert "action_chunk_rejected 6" in out, out[-3000:]


# -------------------------------------------------------------------------------------------- mcap
def test_mcap_recording_decodes_with_expected_topics(scenario):
    from motus_core.viz.mcap_sheets import decoded_messages  # mcap + mcap_ros2's decoder

    path = scenario["mcap"]
    assert path.is_file() and path.stat().st_size > 0, scenario["rec_out"][-2000:]
    counts: dict[str, int] = {}
    first = {}
    for topic, msg in decoded_messages(path):
        counts[topic] = counts.get(topic, 0) + 1
        first.setdefault(topic, msg)
    expected = {"/policy/action_chunk", "/policy/predicted_future", "/motus/viz/comparison", "/motus/viz/contact_sheet",
                "/motus/viz/contact_sheet_vs_actual", "/motus/viz/predicted/high", "/cam_high/image_raw", "/joint_states"}
    if URDF.is_file():
        expected |= {"/motus/viz/trajectory", "/ghost/joint_states", "/tf", "/tf_static", "/robot_description"}
    assert expected <= set(counts), f"missing topics {expected - set(counts)}; recorded {counts}"
    assert first["/policy/predicted_future"].layout == "motus_t_mosaic"
    if URDF.is_file():
        arr = first["/motus/viz/trajectory"]
        assert any(len(mk.points) == K for mk in arr.markers)
        assert any(t.child_frame_id.startswith("ghost/") for t in first["/tf_static"].transforms)


def test_contact_sheets_from_the_recording(scenario, tmp_path):
    from motus_core.viz.render import load_png

    r = subprocess.run([sys.executable, "-m", "motus_ros.nodes.mcap_viz_recorder", "sheets", str(scenario["mcap"]), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    pngs = sorted(tmp_path.glob("chunk_*.png"))
    assert len(pngs) == 1, r.stdout + r.stderr  # one valid prediction in the recording
    sheet = load_png(pngs[0])
    assert sheet.shape[0] > 6 * 100 and sheet.shape[2] == 3  # 3 cameras x (predicted, actual) rows
    live_pngs = sorted(Path(scenario["dir"], "png").glob("sheet_*_vs_actual.png"))
    assert live_pngs, "the recorder's --png_dir did not save the live predicted-vs-actual sheets"
