"""Visualizer node: what the policy predicts, next to what happens.

Inputs (topics from the parameters and the robot profile):
  * ``motus_msgs/PredictedFuture``  predicted camera frames (model layout, usually the T mosaic)
  * ``motus_msgs/ActionChunk``      the joint-position chunk about to run
  * the profile's camera topics     live frames (Image or CompressedImage)
  * the profile's joint-state topics (template of the ghost's JointState)

Outputs (under ``output_prefix``, default ``/motus/viz``):
  * ``predicted/<role>``  sensor_msgs/Image per camera view, stamped with the time the frame predicts
                          (published when the clock reaches that time, or all at once: ``predicted_schedule``)
  * ``comparison``        sensor_msgs/Image: live | predicted for the same time, a row per camera
  * ``contact_sheet``     sensor_msgs/Image per prediction: all predicted frames, a row per camera
  * ``contact_sheet_vs_actual``  the same with the live frames of the same times below each row,
                          published once those times have passed (predicted vs actual)
  * ``trajectory``        visualization_msgs/MarkerArray: both end effectors' predicted paths (line strips
                          coloured by time), gripper state along them, the executed part greyed out
  * ``/<ghost_prefix>/joint_states``  sensor_msgs/JointState: the chunk's last target (ghost robot)

Everything ROS-free lives in ``motus_core.viz``; this node converts messages and schedules.
Malformed input is logged (throttled) and counted, never fatal.
"""
from __future__ import annotations

import motus_ros  # noqa: F401  (DDS environment before rclpy)
from motus_ros.node_main import log_summary, run_node  # noqa: E402

import math
import sys
import time
from collections import Counter

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from visualization_msgs.msg import MarkerArray

from motus_core.preprocessing import Rect
from motus_core.rejections import RejectionLog
from motus_core.robot_profile import load_profile
from motus_core.viz.compare import FrameMatcher
from motus_core.viz.config import VisualizerConfig
from motus_core.viz.frames import VizInputError, split_prediction
from motus_core.viz.kinematics import KinematicsError, chain_fk_for_profile, urdf_joint_names_for_profile
from motus_core.viz.markers import MarkerStyle, TrajectoryMarkers, ghost_positions
from motus_core.viz.render import chunk_contact_sheet, contact_sheet, side_by_side
from motus_msgs.msg import ActionChunk, ExecutorStatus, PredictedFuture
from motus_ros.params import declare_parameters
from motus_ros.conversions import image_msg, image_msg_to_rgb, time_msg, time_to_sec
from motus_ros.viz_msgs import marker_array_msg

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
REJECT_LOG_PERIOD = 5.0  # s between log lines about the same kind of bad input (all are counted)
MAX_SCHEDULED = 256  # predicted views waiting for their time
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


class VisualizerNode(Node):
    def __init__(self, **kwargs):
        super().__init__("visualizer", **kwargs)
        self.cfg: VisualizerConfig = declare_parameters(self, VisualizerConfig)
        cfg = self.cfg
        if cfg.predicted_schedule not in ("on_time", "immediate"):
            raise ValueError(f"predicted_schedule must be 'on_time' or 'immediate', got {cfg.predicted_schedule!r}")
        self.profile = load_profile(cfg.robot)
        self.counts: Counter[str] = Counter()
        self._last_summary = time.monotonic()
        self._summarized: tuple = ()
        self.rejections = RejectionLog(lambda m: self.get_logger().warning(m), REJECT_LOG_PERIOD)
        self._size_warned: set = set()
        prefix = "/" + cfg.output_prefix.strip("/")

        # forward kinematics: without a URDF the images still work, the markers do not
        self.trajectory: TrajectoryMarkers | None = None
        try:
            fk = chain_fk_for_profile(self.profile, cfg.urdf or None)
            style = MarkerStyle(line_width=cfg.line_width, sphere_diameter=cfg.sphere_diameter, gripper_offset=cfg.gripper_offset)
            self.trajectory = TrajectoryMarkers(self.profile, fk, style)
        except KinematicsError as exc:
            self.get_logger().warning(f"No trajectory markers or ghost for robot {self.profile.name!r}: {exc}")
        self._urdf_names = urdf_joint_names_for_profile(self.profile)
        self._state_names = {src.topic: dict(src.names) for src in self.profile.state_sources}  # topic -> {msg name: canonical}

        roles = list(self.profile.cameras)
        self.matcher = FrameMatcher(roles, tolerance=cfg.match_tolerance, horizon=cfg.live_history, max_wait=cfg.max_wait)
        self._live_hw: dict[str, tuple[int, int]] = {}
        self._joint_states: dict[str, JointState] = {}
        self._path = None
        self._executed = -1
        self._exec_offsets: dict[int, float] = {}  # chunk_id -> time shift the executor runs it with
        self._scheduled: list[tuple[float, str, np.ndarray, int]] = []  # (time, role, view, chunk_id)

        self.pub_views = {r: self.create_publisher(Image, f"{prefix}/predicted/{r}", RELIABLE) for r in roles}
        self.pub_comparison = self.create_publisher(Image, f"{prefix}/comparison", RELIABLE)
        self.pub_sheet = self.create_publisher(Image, f"{prefix}/contact_sheet", LATCHED)
        self.pub_sheet_actual = self.create_publisher(Image, f"{prefix}/contact_sheet_vs_actual", LATCHED)
        self.pub_markers = self.create_publisher(MarkerArray, f"{prefix}/trajectory", LATCHED)
        self.pub_ghost = self.create_publisher(JointState, f"/{cfg.ghost_prefix.strip('/')}/joint_states", RELIABLE)

        self.create_subscription(ActionChunk, cfg.action_chunk_topic, self._on_chunk, RELIABLE)
        self.create_subscription(PredictedFuture, cfg.predicted_future_topic, self._on_prediction, RELIABLE)
        if cfg.executor_status_topic:
            self.create_subscription(ExecutorStatus, cfg.executor_status_topic, self._on_executor_status, 10)
        for src in self.profile.state_sources:
            self.create_subscription(JointState, src.topic, lambda m, t=src.topic: self._on_joint_state(t, m), qos_profile_sensor_data)
        if cfg.subscribe_live:
            for role, cam in self.profile.cameras.items():
                kind = CompressedImage if cam.compressed else Image
                self.create_subscription(kind, cam.topic, lambda m, r=role: self._on_live(r, m), qos_profile_sensor_data)
        self.create_timer(1.0 / max(cfg.marker_rate_hz, 0.1), self._tick)
        self.get_logger().info(
            f"Visualizing robot {self.profile.name!r}: chunks from {cfg.action_chunk_topic}, predictions from "
            f"{cfg.predicted_future_topic}, live cameras {[c.topic for c in self.profile.cameras.values()] if cfg.subscribe_live else 'off'}; "
            f"publishing under {prefix} (markers in frame {self.profile.base_frame!r})")

    # ------------------------------------------------------------------------------------ helpers
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _reject(self, what: str, exc: Exception) -> None:
        self.counts[f"{what}_rejected"] += 1
        self.rejections.reject(what.replace("_", " "), str(exc))  # first at once, then rate-limited

    def _guard(self, what: str, fn, *args) -> None:
        """Run a callback body; malformed input (or any bug it triggers) is logged and counted."""
        try:
            fn(*args)
        except (VizInputError, KinematicsError, ValueError) as exc:
            self._reject(what, exc)
        except Exception as exc:  # noqa: BLE001 - a visualizer must never take the robot's graph down
            self._reject(what, RuntimeError(f"{type(exc).__name__}: {exc}"))

    # ---------------------------------------------------------------------------------- callbacks
    def _on_live(self, role: str, msg) -> None:
        self._guard("live_frame", self._handle_live, role, msg)

    def _handle_live(self, role: str, msg) -> None:
        img = image_msg_to_rgb(msg)
        self.counts["live_frames"] += 1
        self._live_hw[role] = img.shape[:2]
        cam = self.profile.cameras.get(role)
        if cam is not None and img.shape[:2] != (cam.height, cam.width) and (role, img.shape[:2]) not in self._size_warned:
            self._size_warned.add((role, img.shape[:2]))  # shown anyway (scaled in the sheets); said once
            self.get_logger().warning(f"{role}: {img.shape[1]}x{img.shape[0]} frames where the profile says {cam.width}x{cam.height}")
        self.matcher.add_live(role, time_to_sec(msg.header.stamp), img)

    def _on_joint_state(self, topic: str, msg: JointState) -> None:
        if len(msg.name) == len(msg.position):
            self._joint_states[topic] = msg
        else:
            self._reject("joint_state", VizInputError(f"{topic}: {len(msg.name)} names but {len(msg.position)} positions"))

    def _on_chunk(self, msg: ActionChunk) -> None:
        self._guard("action_chunk", self._handle_chunk, msg)

    def _handle_chunk(self, msg: ActionChunk) -> None:
        if self.trajectory is None:
            return
        k = int(msg.num_steps)
        n = len(msg.joint_names) or self.profile.dof
        pos = np.asarray(msg.positions, dtype=np.float64)
        if k <= 0 or pos.size != k * n:
            raise VizInputError(f"chunk {msg.chunk_id}: {pos.size} positions for num_steps={k} x {n} joints")
        path = self.trajectory.path(
            pos.reshape(k, n), joint_names=list(msg.joint_names), stamp=time_to_sec(msg.header.stamp),
            step_period=float(msg.step_period.sec) + msg.step_period.nanosec * 1e-9, chunk_id=msg.chunk_id,
            model=msg.model, mode=msg.mode, prefix_length=msg.prefix_length)
        self.counts["action_chunks"] += 1
        self._path = path
        self._executed = -1
        self._publish_markers()
        self._publish_ghost()

    def _on_prediction(self, msg: PredictedFuture) -> None:
        self._guard("prediction", self._handle_prediction, msg)

    def _on_executor_status(self, msg: ExecutorStatus) -> None:
        offset = float(msg.active_chunk_time_offset)
        if msg.active_chunk_id and math.isfinite(offset):
            self._exec_offsets[int(msg.active_chunk_id)] = offset
            while len(self._exec_offsets) > 16:
                self._exec_offsets.pop(next(iter(self._exec_offsets)))

    def _handle_prediction(self, msg: PredictedFuture) -> None:
        frames = [image_msg_to_rgb(f) for f in msg.frames]
        cond = image_msg_to_rgb(msg.condition_frame) if msg.condition_frame.height > 0 else None
        regions = [Rect(int(r.x_offset), int(r.y_offset), int(r.width), int(r.height)) for r in msg.camera_regions]
        high_hw = self._live_hw.get("high")
        if high_hw is None and "high" in self.profile.cameras:
            cam = self.profile.cameras["high"]
            high_hw = (cam.height, cam.width)
        views, warning = split_prediction(
            chunk_id=msg.chunk_id, stamp=time_to_sec(msg.header.stamp), layout=msg.layout, camera_names=list(msg.camera_names),
            regions=regions, frames=frames, frame_times=[time_to_sec(t) for t in msg.frame_times], high_hw=high_hw,
            condition_frame=cond, model=msg.model, mode=msg.mode)
        if warning:
            self.get_logger().warning(warning, throttle_duration_sec=30.0)
        self.counts["predictions"] += 1
        if self.cfg.subscribe_live:
            self.matcher.add_prediction(views)
        if self.pub_sheet.get_subscription_count() > 0:  # rendering costs tens of ms: only for someone watching
            self._publish_image(self.pub_sheet, contact_sheet(views, tile_width=self.cfg.contact_sheet_tile_width), self._now(), "")
        # a newer prediction supersedes what an older one said about the same times
        first = float(views.times[0])
        self._scheduled = [s for s in self._scheduled if s[0] < first]
        for t, frame in zip(views.times, views.views):
            for role, img in frame.items():
                self._scheduled.append((float(t), role, img, views.chunk_id))
        self._scheduled.sort(key=lambda s: s[0])
        del self._scheduled[:-MAX_SCHEDULED]  # a clock that stands still (no /clock yet) must not grow this
        if self.cfg.predicted_schedule == "immediate":
            self._publish_due(float("inf"))

    # ------------------------------------------------------------------------------------ outputs
    def _publish_image(self, pub, img: np.ndarray, t: float, frame_id: str) -> None:
        pub.publish(image_msg(img, time_msg(t), frame_id))

    def _publish_due(self, now: float) -> None:
        due = [s for s in self._scheduled if s[0] <= now]
        if not due:
            return
        self._scheduled = [s for s in self._scheduled if s[0] > now]
        for s in due:  # in time order; frames whose time passed before they arrived go out at once (recordings keep all)
            self._publish_view(*s)

    def _publish_view(self, t: float, role: str, img: np.ndarray, chunk_id: int) -> None:
        if role not in self.pub_views:
            return
        cam = self.profile.cameras.get(role)
        self._publish_image(self.pub_views[role], img, t, cam.frame_id if cam else "")
        self.counts["predicted_views"] += 1

    def _publish_markers(self) -> None:
        if self._path is None or self.trajectory is None:
            return
        executed = self._path.executed(self._now(), self._exec_offsets.get(int(self._path.chunk_id), 0.0))
        if executed == self._executed:
            return
        self._executed = executed
        markers = self.trajectory.markers(self._path, executed)
        self.pub_markers.publish(marker_array_msg(markers, time_msg(self._now())))

    def _publish_ghost(self) -> None:
        if self._path is None:
            return
        q = ghost_positions(self._path)
        value = {self._urdf_names[c]: float(v) for c, v in zip(self.profile.joint_names, q)}
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        names, positions = [], []
        # the joints the robot publishes besides the profile's (e.g. finger joints) keep their live value; the
        # profile's joints are renamed message name -> URDF name per topic (per-arm drivers name both arms alike)
        for topic, live in self._joint_states.items():
            mapped = self._state_names.get(topic, {})
            for n, p in zip(live.name, live.position):
                n = self._urdf_names[mapped[n]] if n in mapped else n
                if n not in names:
                    names.append(n)
                    positions.append(value.get(n, float(p)))
        for n, v in value.items():
            if n not in names:
                names.append(n)
                positions.append(v)
        msg.name, msg.position = names, positions
        self.pub_ghost.publish(msg)

    def _tick(self) -> None:
        self._guard("tick", self._handle_tick)

    def _handle_tick(self) -> None:
        now = self._now()
        self._publish_due(now)
        self._publish_markers()
        if self._path is not None:
            self._publish_ghost()  # robot_state_publisher only sends tf when joint states arrive
        if self.cfg.subscribe_live:
            settled, done = self.matcher.poll(now)
            matched = [c for c in settled if c.matched]
            if matched and self.pub_comparison.get_subscription_count() > 0:  # when catching up, show the newest only
                c = matched[-1]
                self._publish_image(self.pub_comparison, side_by_side(c, tile_height=self.cfg.comparison_tile_height), c.time, "")
                self.counts["comparisons"] += 1
            for cc in done if self.pub_sheet_actual.get_subscription_count() > 0 else ():
                self._publish_image(self.pub_sheet_actual, chunk_contact_sheet(cc, self.cfg.contact_sheet_tile_width), now, "")
                self.counts["contact_sheets"] += 1
        if time.monotonic() - self._last_summary > self.cfg.log_period:
            self.log_summary()

    def log_summary(self, force: bool = False) -> None:
        """Log what was received, published and rejected (when it changed, or ``force``)."""
        self._last_summary = time.monotonic()
        s = self.matcher.stats
        state = (tuple(sorted(self.counts.items())), s.frames_matched, s.frames_unmatched)
        if state == self._summarized and not force:
            return
        self._summarized = state
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "nothing received"
        text = f"Visualizer: {counts}; predicted frames matched {s.frames_matched}, unmatched {s.frames_unmatched}"
        log_summary(self, text)


def main(args=None) -> int:
    return run_node(VisualizerNode, args, on_exit=lambda node: node.log_summary(force=True))


if __name__ == "__main__":
    sys.exit(main())
