"""Episode recorder node: teleoperated demonstrations into one rosbag2 per episode.

Records, per episode, the robot profile's follower joint states (the robot's qpos), leader joint
states (what the operator commanded), cameras (+ camera info) and the instruction topic, into
``<output_dir>/<episode_id>/`` (``bag/`` + ``episode.json``, see ``motus_core.data.episode``).

* Subscriptions are ``raw=True``: the received CDR bytes go to the bag unchanged (re-serialising
  with ``rclpy.serialization.serialize_message`` can pad messages, and rosbags rejects those).
* Callbacks only timestamp and enqueue; ``motus_core.data.bag_writer.EpisodeRecorder`` writes on its
  own thread. A disk slower than the sensors shows as back-pressure in ``~/status`` (queued bytes,
  write MB/s, per-topic drops), never as silent loss.
* Services ``~/start_episode`` (StartEpisode), ``~/stop_episode`` (StopEpisode: success / failure),
  ``~/discard_episode`` (DiscardEpisode). Status ``~/status`` (RecorderStatus) at ``status_rate_hz``
  and on every change. Topics configured but never received are logged and returned at stop.
* SIGINT/SIGTERM during an episode: the bag is closed and the episode kept as ``incomplete``.
  SIGKILL: the bag is readable up to the last flush (``flush_period_s``) and the episode counts as
  incomplete because its recorder is gone (``motus-convert --repair`` finishes such bags).
"""
from __future__ import annotations

import importlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import motus_ros  # noqa: F401  (DDS environment before rclpy)
from motus_ros.node_main import run_node  # noqa: E402
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.duration import Duration as RclDuration
from rclpy.qos import HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from motus_core.data.bag_writer import EpisodeRecorder, RecorderError, TopicSpec, make_typestore, profile_snapshot, profile_topics
from motus_core.data.episode import COMPLETE, FAILURE, ROLE_EXTRA, SUCCESS, UNKNOWN, EpisodeMetadata
from motus_core.robot_profile import ProfileError, load_profile
from motus_msgs.msg import RecorderStatus, TopicStats
from motus_msgs.srv import DiscardEpisode, StartEpisode, StopEpisode
from motus_ros.params import declare_parameters

STATE_CODES = {"idle": RecorderStatus.STATE_IDLE, "recording": RecorderStatus.STATE_RECORDING,
               "finalizing": RecorderStatus.STATE_FINALIZING, "error": RecorderStatus.STATE_ERROR}
OUTCOME_NAMES = {StopEpisode.Request.OUTCOME_SUCCESS: SUCCESS, StopEpisode.Request.OUTCOME_FAILURE: FAILURE,
                 StopEpisode.Request.OUTCOME_UNKNOWN: UNKNOWN}


@dataclass
class RecorderParams:
    robot: str = field(default="sim_aloha", metadata={"help": "robot profile (config/robots/<robot>.yaml): topics, joints, cameras"})
    output_dir: str = field(default="episodes", metadata={"help": "directory of recorded episodes (one sub-directory each)"})
    storage: str = field(default="mcap", metadata={"help": "rosbag2 storage: mcap or sqlite3"})
    task: str = field(default="", metadata={"help": "task name used when StartEpisode leaves it empty"})
    instruction: str = field(default="", metadata={"help": "instruction used when StartEpisode leaves it empty and none was received"})
    operator: str = field(default="", metadata={"help": "operator name used when StartEpisode leaves it empty"})
    instruction_topic: str = field(default="/instruction", metadata={"help": "std_msgs/String topic with the current instruction ('' = none)"})
    record_camera_info: bool = field(default=True, metadata={"help": "also record each camera's CameraInfo topic"})
    extra_topics: list[str] = field(default_factory=list, metadata={"help": "more topics to record, as 'topic:pkg/msg/Type'"})
    qos_reliability: str = field(default="auto", metadata={"help": (
        "auto: RELIABLE for topics whose publishers are all reliable (no loss), else BEST_EFFORT (adapted while idle); "
        "reliable | best_effort: fixed")})
    qos_depth: int = field(default=100, metadata={"help": "subscription history depth of camera topics (~3 s at 30 Hz)"})
    qos_depth_small: int = field(default=2000, metadata={"help": (
        "history depth of the other topics (joint states: 10 s at 200 Hz): a recorder process starved of CPU for a "
        "moment takes them late instead of losing them")})
    max_queue_mb: float = field(default=512.0, metadata={"help": "write queue bound; beyond it messages are dropped and counted (back-pressure)"})
    flush_period_s: float = field(default=1.0, metadata={"help": "bag flush period: the most a SIGKILL can lose"})
    min_free_mb: float = field(default=256.0, metadata={"help": "refuse to start / stop an episode when free disk space falls below this"})
    fsync: bool = field(default=False, metadata={"help": "fsync the bag at every flush (survives power loss, costs I/O)"})
    status_rate_hz: float = field(default=2.0, metadata={"help": "rate of ~/status"})
    liveliness_lease: float = field(default=1.0, metadata={"help": (
        "s, DDS liveliness lease offered on ~/status: a client (the demonstrator) learns within it that this process is gone")})


class _Meter:
    """Live receive rate and age of one topic (whether or not an episode is recording)."""

    __slots__ = ("count", "last", "rate", "_n0", "_t0")

    def __init__(self):
        self.count = 0
        self.last = 0.0
        self.rate = 0.0
        self._n0 = 0
        self._t0 = time.monotonic()

    def tick(self, now: float) -> None:
        dt = now - self._t0
        if dt >= 1.0:
            self.rate = (self.count - self._n0) / dt
            self._n0, self._t0 = self.count, now


def _msg_class(msgtype: str):
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class RecorderNode(Node):
    def __init__(self):
        super().__init__("recorder")
        self.params = declare_parameters(self, RecorderParams)
        p = self.params
        try:
            self.profile = load_profile(p.robot)
        except ProfileError as exc:
            raise SystemExit(f"recorder: {exc}") from None
        if p.storage not in ("mcap", "sqlite3"):
            raise SystemExit(f"recorder: storage must be mcap or sqlite3, got {p.storage!r}")
        self.topics = profile_topics(self.profile, instruction_topic=p.instruction_topic, camera_info=p.record_camera_info)
        for item in p.extra_topics or []:
            topic, _, msgtype = item.rpartition(":")
            if not topic or msgtype.count("/") != 2:
                raise SystemExit(f"recorder: extra topic {item!r} must be 'topic:pkg/msg/Type'")
            self.topics.append(TopicSpec(topic, msgtype, ROLE_EXTRA))
        self.recorder = EpisodeRecorder(
            Path(p.output_dir).expanduser(), self.profile.name, storage=p.storage,
            max_queue_bytes=int(p.max_queue_mb * 2**20), flush_period_s=p.flush_period_s,
            min_free_bytes=int(p.min_free_mb * 2**20), fsync=p.fsync, typestore=make_typestore(_custom_msg_dirs()),
            profile_snapshot=profile_snapshot(self.profile), on_finished=self._on_finished,
        )
        self.meters = {t.topic: _Meter() for t in self.topics}
        self.latest_instruction = ""
        self._instruction_raw: bytes | None = None  # the last message as received, carried into each episode
        self._finished_note: EpisodeMetadata | None = None
        # status and QoS checks run on the steady clock: with use_sim_time they must not stop when /clock does
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        if p.qos_reliability not in ("auto", "reliable", "best_effort"):
            raise SystemExit(f"recorder: qos_reliability must be auto, reliable or best_effort, got {p.qos_reliability!r}")
        self._subs: dict[str, object] = {}
        self._sub_reliability: dict[str, ReliabilityPolicy] = {}
        self._classes = {}
        for spec in self.topics:
            try:
                self._classes[spec.topic] = _msg_class(spec.msgtype)
            except (ImportError, AttributeError, ValueError):
                raise SystemExit(f"recorder: message type {spec.msgtype} of {spec.topic} is not installed") from None
            start = ReliabilityPolicy.RELIABLE if p.qos_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
            self._subscribe(spec, start)
        if p.qos_reliability == "auto":
            self.create_timer(1.0, self._adapt_qos, clock=self._steady)
        # liveliness: the DDS layer tells subscribers that ask for it when this process dies (SIGKILL included)
        self.status_pub = self.create_publisher(RecorderStatus, "~/status", QoSProfile(
            depth=10, liveliness=LivelinessPolicy.AUTOMATIC, liveliness_lease_duration=RclDuration(seconds=p.liveliness_lease)))
        self.create_service(StartEpisode, "~/start_episode", self._start)
        self.create_service(StopEpisode, "~/stop_episode", self._stop)
        self.create_service(DiscardEpisode, "~/discard_episode", self._discard)
        self.create_timer(1.0 / max(p.status_rate_hz, 0.1), self._publish_status, clock=self._steady)
        self.get_logger().info(
            f"recording {len(self.topics)} topics of robot {self.profile.name} into {Path(p.output_dir).resolve()} "
            f"({p.storage}); services {self.get_fully_qualified_name()}/start_episode, stop_episode, discard_episode")

    # ------------------------------------------------------------------ subscriptions and QoS

    def _subscribe(self, spec: TopicSpec, reliability: ReliabilityPolicy) -> None:
        depth = self.params.qos_depth if spec.role == "camera" else self.params.qos_depth_small
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability)
        old = self._subs.pop(spec.topic, None)
        if old is not None:
            self.destroy_subscription(old)
        self._subs[spec.topic] = self.create_subscription(self._classes[spec.topic], spec.topic, self._callback(spec), qos, raw=True)
        self._sub_reliability[spec.topic] = reliability

    def _adapt_qos(self) -> None:
        """Like ``ros2 bag record``: match the publishers' reliability. A BEST_EFFORT subscription
        takes both kinds of publishers but loses messages a RELIABLE one would have retried; a
        RELIABLE subscription never matches BEST_EFFORT publishers. Switched only between episodes."""
        if self.recorder.recording:
            return
        for spec in self.topics:
            infos = self.get_publishers_info_by_topic(spec.topic)
            if not infos:
                continue
            want = ReliabilityPolicy.RELIABLE if all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos) \
                else ReliabilityPolicy.BEST_EFFORT
            if want != self._sub_reliability[spec.topic]:
                self._subscribe(spec, want)
                self.get_logger().info(f"{spec.topic}: subscription is now {want.name} to match its {len(infos)} publisher(s)")

    # ------------------------------------------------------------------ data path (callback thread)

    def _callback(self, spec: TopicSpec):
        meter = self.meters[spec.topic]
        offer = self.recorder.offer
        clock = self.get_clock()
        topic = spec.topic
        is_instruction = spec.topic == self.params.instruction_topic

        def cb(raw: bytes) -> None:
            meter.count += 1
            meter.last = time.monotonic()
            offer(topic, raw, clock.now().nanoseconds)
            if is_instruction:
                self._instruction_received(raw)

        return cb

    def _instruction_received(self, raw: bytes) -> None:
        from std_msgs.msg import String

        self._instruction_raw = bytes(raw)
        try:
            self.latest_instruction = deserialize_message(raw, String).data.strip()
        except Exception:  # noqa: BLE001 - a malformed message is recorded as is, just not used as the default
            pass

    # ------------------------------------------------------------------ services

    def _start(self, req: StartEpisode.Request, res: StartEpisode.Response) -> StartEpisode.Response:
        p = self.params
        task = req.task.strip() or p.task or "task"
        instruction = req.instruction.strip() or self.latest_instruction or p.instruction
        operator = req.operator_name.strip() or p.operator or os.environ.get("USER", "")
        if not instruction:
            res.success = False
            res.message = "no instruction: pass one, set the 'instruction' parameter or publish it on " + (p.instruction_topic or "an instruction topic")
            self.get_logger().warning(res.message)
            return res
        try:
            meta = self.recorder.start(self.topics, task=task, instruction=instruction, operator=operator,
                                       stamp_ns=self.get_clock().now().nanoseconds)
        except (RecorderError, OSError) as exc:
            res.success, res.message = False, str(exc)
            self.get_logger().error(f"cannot start an episode: {exc}")
            self._publish_status()
            return res
        # The instruction is state published slowly (or once): its current value belongs in the episode even when
        # it was received before the start, as a latched topic would be recorded.
        if self._instruction_raw is not None and p.instruction_topic:
            self.recorder.offer(p.instruction_topic, self._instruction_raw, self.get_clock().now().nanoseconds)
        silent = [t.topic for t in self.topics if self.meters[t.topic].count == 0]
        res.success, res.episode_id, res.path = True, meta.episode_id, str(self.recorder.root / meta.episode_id)
        res.message = f"recording {meta.episode_id}"
        if silent:
            res.message += f" (nothing received yet on: {', '.join(silent)})"
        self.get_logger().info(f"episode {meta.episode_id} started: task {task!r}, instruction {instruction!r}")
        self._publish_status()
        return res

    def _stop(self, req: StopEpisode.Request, res: StopEpisode.Response) -> StopEpisode.Response:
        outcome = OUTCOME_NAMES.get(req.outcome)
        if outcome is None:
            res.success, res.message = False, f"unknown outcome {req.outcome}"
            return res
        try:
            meta = self.recorder.stop(outcome, notes=req.notes, stamp_ns=self.get_clock().now().nanoseconds)
        except (RecorderError, OSError) as exc:
            res.success, res.message = False, str(exc)
            self.get_logger().error(f"cannot stop the episode: {exc}")
            return res
        res.episode_id, res.path = meta.episode_id, str(self.recorder.root / meta.episode_id)
        res.topics = [_topic_stats(t, r) for t, r in meta.topics.items()]
        res.missing_topics = list(meta.missing_topics)
        res.success = meta.state == COMPLETE
        if res.success:
            res.message = f"episode {meta.episode_id} kept ({outcome}, {meta.duration_s:.1f} s)"
        else:
            res.message = f"episode {meta.episode_id} is {meta.state}: {meta.error}"
        if meta.missing_topics:
            res.message += f"; never received: {', '.join(meta.missing_topics)}"
        dropped = {t: r.dropped for t, r in meta.topics.items() if r.dropped}
        if dropped:
            res.message += f"; dropped (back-pressure): {dropped}"
        log = self.get_logger().info if res.success and not meta.missing_topics and not dropped else self.get_logger().warning
        log(res.message)
        self._publish_status()
        return res

    def _discard(self, req: DiscardEpisode.Request, res: DiscardEpisode.Response) -> DiscardEpisode.Response:
        try:
            meta = self.recorder.discard(req.reason, discard_last=req.discard_last, stamp_ns=self.get_clock().now().nanoseconds)
        except (RecorderError, OSError) as exc:
            res.success, res.message = False, str(exc)
            return res
        res.success, res.episode_id = True, meta.episode_id
        res.message = f"episode {meta.episode_id} discarded"
        self.get_logger().info(res.message + (f" ({req.reason})" if req.reason else ""))
        self._publish_status()
        return res

    # ------------------------------------------------------------------ status

    def _on_finished(self, meta: EpisodeMetadata) -> None:
        # called on the writer thread when a write error ended the episode
        if meta.error and meta.state != COMPLETE:
            self._finished_note = meta

    def _publish_status(self) -> None:
        note, self._finished_note = self._finished_note, None
        if note is not None:
            self.get_logger().error(f"episode {note.episode_id} stopped: {note.error}")
        st = self.recorder.status()
        now = time.monotonic()
        msg = RecorderStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.state = STATE_CODES[st.state]
        msg.episode_id, msg.task, msg.instruction = st.episode_id, st.task, st.instruction
        msg.elapsed = float(st.elapsed)
        msg.episodes_recorded = st.episodes_recorded
        msg.queued_bytes = int(st.queued_bytes)
        msg.write_mb_s = float(st.write_mb_s)
        msg.message = st.message
        topics = []
        for spec in self.topics:
            meter = self.meters[spec.topic]
            meter.tick(now)
            ts = TopicStats(topic=spec.topic)
            rec = st.topics.get(spec.topic)
            if rec is not None and st.state in ("recording", "finalizing"):
                ts.received, ts.written, ts.dropped = rec.received, rec.written, rec.dropped
            ts.rate_hz = float(meter.rate)
            ts.age = float(now - meter.last) if meter.count else -1.0
            topics.append(ts)
        msg.topics = topics
        self.status_pub.publish(msg)


def _topic_stats(topic: str, rec) -> TopicStats:
    return TopicStats(topic=topic, received=rec.received, written=rec.written, dropped=rec.dropped, rate_hz=0.0, age=-1.0)


def _custom_msg_dirs() -> list[Path]:
    """motus_msgs' .msg files, so its topics can be recorded as extra topics."""
    try:
        from ament_index_python.packages import get_package_share_directory

        d = Path(get_package_share_directory("motus_msgs")) / "msg"
        if d.is_dir():
            return [d]
    except Exception:  # noqa: BLE001 - pip-only install without an ament index
        pass
    src = Path(__file__).resolve().parents[2] / "motus_msgs" / "msg"
    return [src] if src.is_dir() else []


def main(args=None) -> int:
    def close_episode(node: RecorderNode) -> None:
        meta = node.recorder.close("recorder shut down during the episode (SIGINT/SIGTERM)")
        if meta is not None:
            print(f"[recorder] episode {meta.episode_id} kept as {meta.state}: {meta.error}", file=sys.stderr, flush=True)

    # single-threaded: callbacks only enqueue (the experimental EventsExecutor misses services/timers)
    return run_node(RecorderNode, args, on_exit=close_episode)


if __name__ == "__main__":
    sys.exit(main())
