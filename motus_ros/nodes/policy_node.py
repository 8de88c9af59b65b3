"""Policy node (the GPU node): synchronized observations in, action chunks out.

A lifecycle node (``rclpy.lifecycle``), started configured and active by default (``autostart``):

* **configure** loads the robot profile and the policy (``policy``: ``tiny_motus``, ``replay:<file>``
  or a local checkpoint directory; nothing is downloaded), creates the observation synchronizer
  (``motus_core.runtime.sync``) and its subscriptions, the publishers and the services;
* **activate** warms the model up, sets the instruction and starts producing chunks;
* **deactivate** stops producing (the current inference finishes); **cleanup** releases the model.

Inference runs on its own worker thread, never in a subscription callback, so camera and joint
callbacks (which only store the message; images are decoded lazily) keep running during a
multi-second model call. It is triggered

* ``trigger: request`` (default) by the executor's plan (``/executor/plan``, an ``ActionChunk``
  carrying the committed actions and the expected delay: the RTC prefix), or
* ``trigger: rate`` at ``rate_hz`` (with the newest plan, if any, as prefix).

Outputs: ``~/action_chunk`` (``motus_msgs/ActionChunk``, stamped with the observation's stamp,
``prefix_length``, ``inference_latency`` = observation complete -> published), ``~/predicted_future``
(``PredictedFuture``, when the model makes frames and ``return_frames`` is set), ``~/status``
(``PolicyStatus`` with per-stage timing: sync_wait, preprocess, model, postprocess, total; published
with DDS liveliness so the executor notices a dead policy process within ``liveliness_lease``) and
``/diagnostics`` (per-stream rate, age, drops of the synchronizer).

Instruction: service ``~/set_instruction`` (``SetInstruction``) and the topic ``instruction_topic``
(``std_msgs/String``). ``policy.set_instruction`` caches text embeddings on disk; the service answers
within ``instruction_wait`` s (``cached`` = true when it came from the cache) and otherwise lets the
worker finish the embedding before the next chunk.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import motus_ros  # noqa: F401  (DDS environment before rclpy)
from motus_ros.node_main import run_node  # noqa: E402
import numpy as np
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState, RegionOfInterest
from std_msgs.msg import String

from motus_core.policy.base import PolicyError, PolicyRequest, check_chunk
from motus_core.policy.registry import load_policy
from motus_core.preprocessing import model_image_layout
from motus_core.robot_profile import load_profile
from motus_core.runtime.prefix import prefix_for_observation
from motus_core.runtime.sync import LazyImage, ObservationSynchronizer, SyncConfig
from motus_core.images import compressed_to_rgb, raw_to_rgb
from motus_msgs.msg import ActionChunk as ActionChunkMsg
from motus_msgs.msg import PolicyStatus, PredictedFuture, StageTiming
from motus_msgs.srv import SetInstruction
from motus_ros.params import declare_parameters
from motus_ros.conversions import image_msg, time_msg, time_to_sec
from motus_ros.runtime_msgs import PLAN_MODEL, chunk_to_msg, msg_to_plan


@dataclass
class PolicyNodeParams:
    robot: str = field(default="sim_aloha", metadata={"help": "robot profile (config/robots/<robot>.yaml): cameras, joints, topics"})
    policy: str = field(default="tiny_motus", metadata={"help": "tiny_motus | replay:<file.npy|file.pt|dataset#episode> | a local checkpoint directory"})
    options: list[str] = field(default_factory=list, metadata={"help": "policy options as key=value strings (values parsed as YAML), e.g. [align=state, perturb=0.01] for replay"})
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda, cuda:1"})
    instruction: str = field(default="", metadata={"help": "initial language instruction"})
    instruction_topic: str = field(default="/instruction", metadata={"help": "std_msgs/String topic that sets the instruction ('' = none)"})
    instruction_wait: float = field(default=0.2, metadata={"help": "s the set_instruction service waits for the embedding before answering"})
    mode: str = field(default="vla", metadata={"help": "model mode (vla, joint, ...)"})
    trigger: str = field(default="request", metadata={"help": "request: infer when the executor publishes its plan; rate: at rate_hz"})
    rate_hz: float = field(default=2.0, metadata={"help": "trigger=rate: inference rate"})
    match_timeout: float = field(default=2.0, metadata={"help": "s a requested chunk waits for the executor's subscription to be matched (discovery is per direction)"})
    plan_topic: str = field(default="/executor/plan", metadata={"help": "the executor's plan / chunk request (motus_msgs/ActionChunk)"})
    return_frames: bool = field(default=False, metadata={"help": "decode and publish predicted future frames when the mode makes them"})
    sync_timeout: float = field(default=1.0, metadata={"help": "s an inference waits for a coherent observation before reporting why not"})
    seed: int = field(default=-1, metadata={"help": "sampling seed per chunk = seed + chunk id (< 0: the policy's own generator)"})
    status_rate_hz: float = field(default=10.0, metadata={"help": "rate of ~/status (also the liveliness heartbeat)"})
    diagnostics_rate_hz: float = field(default=1.0, metadata={"help": "rate of /diagnostics"})
    liveliness_lease: float = field(default=1.0, metadata={"help": "s, DDS liveliness lease offered on ~/status (<= the executor's policy_lease); long enough for a loaded machine: the executor's watchdog, not the lease, protects the robot"})
    image_qos_depth: int = field(default=2, metadata={"help": "queue depth of camera subscriptions (best effort)"})
    realtime_priority: int = field(default=0, metadata={"help": "SCHED_FIFO priority of the inference thread (observation path + model call); "
                                                           "only where the model runs on a GPU, never on a CPU-only machine shared with the executor"})
    autostart: bool = field(default=True, metadata={"help": "configure and activate at start (no lifecycle manager needed)"})
    sync: SyncConfig = field(default_factory=SyncConfig)


def parse_options(items) -> dict:
    """["key=value", ...] -> {key: value}, values parsed as YAML scalars ("0.01" -> 0.01, "true" -> True)."""
    out = {}
    for item in items or []:
        if not item:
            continue
        if "=" not in item:
            raise PolicyError(f"policy option {item!r} is not key=value")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError:
            out[k.strip()] = v
    return out


def _stage_list(timing: dict[str, float]) -> list[StageTiming]:
    return [StageTiming(name=k, seconds=float(v)) for k, v in timing.items()]


class PolicyNode(LifecycleNode):
    def __init__(self, name: str = "policy", **kwargs):
        super().__init__(name, **kwargs)
        self.params = declare_parameters(self, PolicyNodeParams)
        self.profile = None
        self.policy = None
        self.sync: ObservationSynchronizer | None = None
        self._state = PolicyStatus.STATE_UNCONFIGURED
        self._message = "unconfigured"
        self._instruction = self.params.instruction
        self._pending_instruction: tuple[str, threading.Event, dict] | None = None
        self._policy_lock = threading.Lock()
        self._wake = threading.Condition()
        self._plan = None
        self._plan_new = False
        self._active = False
        self._closing = threading.Event()
        self._worker: threading.Thread | None = None
        self._chunk_id = 0
        self.chunks_published = 0
        self.chunks_failed = 0
        self._publish_times: deque[float] = deque(maxlen=20)
        self._last_timing: dict[str, float] = {}
        self._timings: deque[dict[str, float]] = deque(maxlen=2000)
        self._wait_reasons: dict[str, int] = {}
        self._obs_age = 0.0
        self._subs = []
        self._pubs = []
        self._timers = []
        self._srv = None
        self._failures: deque[str] = deque(maxlen=5)
        self._last_log = 0.0

    # ------------------------------------------------------------------ helpers
    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _log_throttled(self, text: str, level: str = "warn", period: float = 2.0) -> None:
        t = time.monotonic()
        if t - self._last_log >= period:
            self._last_log = t
            getattr(self.get_logger(), "warning" if level == "warn" else level)(text)

    def _options(self) -> dict:
        return parse_options(self.params.options)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        if p.trigger not in ("request", "rate"):
            self.get_logger().error(f"trigger must be 'request' or 'rate', got {p.trigger!r}")
            return TransitionCallbackReturn.FAILURE
        try:
            self.profile = load_profile(p.robot)
            self.get_logger().info(f"Loading policy {p.policy!r} on {p.device} for robot {self.profile.name!r} ...")
            t0 = time.monotonic()
            self.policy = load_policy(p.policy, device=p.device, profile=self.profile, options=self._options())
            self.sync = ObservationSynchronizer(self.profile, p.sync, on_problem=lambda m: self.get_logger().warning(m))
        except Exception as exc:  # noqa: BLE001 - any load failure is a configure failure, reported
            self.get_logger().error(f"configure failed: {exc}")
            self.policy = None
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"Policy {self.policy.name!r} ready in {time.monotonic() - t0:.1f} s "
                               f"({self.policy.chunk_length} actions at {1 / self.policy.step_period:.0f} Hz, "
                               f"RTC prefix {'supported' if self.policy.supports_prefix else 'not supported: the executor blends'})")
        self._create_interfaces()
        self._state = PolicyStatus.STATE_INACTIVE
        self._message = "configured"
        self._closing.clear()
        self._worker = threading.Thread(target=self._work, name="policy-inference", daemon=True)
        self._worker.start()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            with self._policy_lock:
                t0 = time.monotonic()
                self.policy.warmup()
                self.get_logger().info(f"Warm-up done in {time.monotonic() - t0:.2f} s")
                self.policy.reset()
                if self._instruction:
                    cached = self.policy.set_instruction(self._instruction)
                    self.get_logger().info(f"Instruction {self._instruction!r} ({'cached embedding' if cached else 'encoded'})")
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._chunk_id = 0
        self.sync.reset("policy activated")
        with self._wake:
            self._active = True
            self._wake.notify_all()
        self._state = PolicyStatus.STATE_ACTIVE
        self._message = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._wake:
            self._active = False
            self._wake.notify_all()
        with self._policy_lock:  # the running inference finishes first
            pass
        self._state = PolicyStatus.STATE_INACTIVE
        self._message = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = PolicyStatus.STATE_UNCONFIGURED
        self._message = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        self._closing.set()
        with self._wake:
            self._active = False
            self._wake.notify_all()
        if self.policy is not None:
            self.policy.close()  # also releases a policy blocked inside predict (replay stall)
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None
        for s in self._subs:
            self.destroy_subscription(s)
        for t in self._timers:
            self.destroy_timer(t)
        for pub in self._pubs:
            self.destroy_publisher(pub)
        if self._srv is not None:
            self.destroy_service(self._srv)
        self._subs, self._pubs, self._timers, self._srv = [], [], [], None
        with self._policy_lock:
            self.policy = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # ------------------------------------------------------------------ interfaces
    def _create_interfaces(self) -> None:
        p = self.params
        best_effort = QoSProfile(depth=max(1, p.image_qos_depth), reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
        joints_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
        reliable1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        for role, cam in self.profile.cameras.items():
            msg_type = CompressedImage if cam.compressed else Image
            topic = cam.topic if not cam.compressed or cam.topic.endswith("/compressed") else cam.topic + "/compressed"
            self._subs.append(self.create_subscription(msg_type, topic, self._image_cb(role), best_effort))
        for src in self.profile.state_sources:
            self._subs.append(self.create_subscription(JointState, src.topic, self._joint_cb(src.topic), joints_qos))
        self._subs.append(self.create_subscription(ActionChunkMsg, p.plan_topic, self._on_plan, reliable1))
        if p.instruction_topic:
            # best effort + volatile matches every publisher (reliable or not, latched or not)
            any_pub = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
            self._subs.append(self.create_subscription(String, p.instruction_topic, self._on_instruction_topic, any_pub))
        # Chunks: reliable, a little history (a LAN hiccup must not lose the one chunk of a request).
        self.chunk_pub = self.create_publisher(ActionChunkMsg, "~/action_chunk", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.future_pub = self.create_publisher(PredictedFuture, "~/predicted_future", QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        status_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, liveliness=LivelinessPolicy.AUTOMATIC,
                                liveliness_lease_duration=Duration(seconds=p.liveliness_lease))
        self.status_pub = self.create_publisher(PolicyStatus, "~/status", status_qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._pubs += [self.chunk_pub, self.future_pub, self.status_pub, self.diag_pub]
        self._srv = self.create_service(SetInstruction, "~/set_instruction", self._on_set_instruction)
        self._timers.append(self.create_timer(1.0 / p.status_rate_hz, self._publish_status))
        self._timers.append(self.create_timer(1.0 / p.diagnostics_rate_hz, self._publish_diagnostics))

    def _image_cb(self, role: str):
        sync = self.sync

        def cb(msg):
            stamp = time_to_sec(msg.header.stamp)
            if isinstance(msg, CompressedImage):
                fmt, data = msg.format, msg.data
                lazy = LazyImage(lambda: compressed_to_rgb(data, fmt))
            else:
                h, w, enc, step, data, be = msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian
                lazy = LazyImage(lambda: raw_to_rgb(h, w, enc, step, data, be))
            sync.add_image(role, stamp, lazy)

        return cb

    def _joint_cb(self, topic: str):
        sync = self.sync

        def cb(msg: JointState):
            sync.add_joint_state(topic, time_to_sec(msg.header.stamp), msg.name, msg.position)

        return cb

    def _on_plan(self, msg: ActionChunkMsg) -> None:
        if msg.model and msg.model != PLAN_MODEL:
            return
        try:
            plan = msg_to_plan(msg, self.profile.joint_names)
        except ValueError as exc:
            self._log_throttled(f"ignored a malformed plan: {exc}")
            return
        with self._wake:
            self._plan = plan
            self._plan_new = True
            self._wake.notify_all()

    # ------------------------------------------------------------------ instruction
    def _queue_instruction(self, text: str) -> tuple[threading.Event, dict]:
        done = threading.Event()
        result: dict = {}
        with self._wake:
            self._pending_instruction = (text, done, result)
            self._wake.notify_all()
        if self._worker is None:
            self._apply_instruction()
        return done, result

    def _apply_instruction(self) -> None:
        with self._wake:
            pending, self._pending_instruction = self._pending_instruction, None
        if pending is None:
            return
        text, done, result = pending
        try:
            with self._policy_lock:
                if self.policy is None:
                    raise PolicyError("no policy loaded")
                result["cached"] = bool(self.policy.set_instruction(text))
            self._instruction = text
            result["success"] = True
            self.get_logger().info(f"Instruction set to {text!r} ({'cached embedding' if result['cached'] else 'new embedding, now cached'})")
        except Exception as exc:  # noqa: BLE001
            result["success"] = False
            result["message"] = str(exc)
            self.get_logger().error(f"Instruction {text!r} rejected: {exc}")
        done.set()

    def _on_instruction_topic(self, msg: String) -> None:
        if msg.data and msg.data != self._instruction:
            self._queue_instruction(msg.data)

    def _on_set_instruction(self, request: SetInstruction.Request, response: SetInstruction.Response):
        done, result = self._queue_instruction(request.instruction)
        if done.wait(self.params.instruction_wait):
            response.success = bool(result.get("success"))
            response.cached = bool(result.get("cached", False))
            response.message = result.get("message", "instruction set")
        else:
            response.success = True
            response.cached = False
            response.message = "accepted: the embedding is being computed; chunks use it from the next inference on"
        return response

    # ------------------------------------------------------------------ inference worker
    def _wait_trigger(self) -> bool:
        """Block until an inference should start; False when closing."""
        p = self.params
        with self._wake:
            while not self._closing.is_set():
                if self._pending_instruction is not None:
                    return True
                if self._active:
                    if p.trigger == "request" and self._plan_new:
                        self._plan_new = False
                        return True
                    if p.trigger == "rate":
                        return True
                self._wake.wait(0.1)
        return False

    def _work(self) -> None:
        if self.params.realtime_priority > 0:
            try:
                os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(min(self.params.realtime_priority, 99)))
            except (PermissionError, OSError, AttributeError) as exc:
                self.get_logger().warning(f"Could not give the inference thread real-time priority ({exc}).")
        next_rate = time.monotonic()
        while self._wait_trigger():
            if self._pending_instruction is not None:
                self._apply_instruction()
                continue
            if self.params.trigger == "rate":
                delay = next_rate - time.monotonic()
                if delay > 0 and self._closing.wait(delay):
                    return
                next_rate = max(next_rate + 1.0 / self.params.rate_hz, time.monotonic())
            try:
                self._infer_once()
            except Exception as exc:  # noqa: BLE001 - a failed chunk is counted, the node keeps running
                if self._closing.is_set() or not self.context.ok():
                    return
                self.chunks_failed += 1
                self._failures.append(str(exc))
                self._state = PolicyStatus.STATE_ERROR
                self._message = f"inference failed: {exc}"
                self._log_throttled(f"inference failed ({self.chunks_failed} so far): {exc}", "error")

    def _infer_once(self) -> None:
        p = self.params
        t_wait = time.monotonic()
        result = self.sync.wait_snapshot(self.now, p.sync_timeout, self._closing)
        if result.observation is None:
            if not self._closing.is_set():
                self._state = PolicyStatus.STATE_WAITING
                self._message = f"waiting for a coherent observation: {result.reason}"
                key = result.waiting_on or "?"
                self._wait_reasons[key] = self._wait_reasons.get(key, 0) + 1
                self._log_throttled(self._message)
                if p.trigger == "request":
                    with self._wake:  # still owe the executor a chunk: try again
                        self._plan_new = True
            return
        sync_wait = time.monotonic() - t_wait
        obs = result.observation
        with self._wake:
            plan = self._plan
        prefix = None
        expected = 0
        if plan is not None and self.policy.supports_prefix:
            prefix = prefix_for_observation(plan.stamp, plan.step_period, plan.positions, obs.stamp,
                                            self.policy.step_period, self.policy.chunk_length)
            if prefix is not None and prefix.shape[0] == 0:
                prefix = None
            if prefix is not None:
                expected = min(int(plan.expected_delay), prefix.shape[0])
        seed = None if p.seed < 0 else p.seed + self._chunk_id + 1
        request = PolicyRequest(observation=obs, instruction=self._instruction, mode=p.mode, prefix=prefix,
                                expected_delay=expected, return_frames=p.return_frames, seed=seed)
        t_model = time.monotonic()
        with self._policy_lock:
            if self.policy is None or not self._active:
                return
            chunk = self.policy.predict(request)
        model_time = time.monotonic() - t_model
        why = check_chunk(chunk, self.profile.dof)
        if why:
            raise PolicyError(f"the policy returned an unusable chunk: {why}")
        t_post = time.monotonic()
        self._chunk_id += 1
        latency = time.monotonic() - result.complete_wall
        msg = chunk_to_msg(chunk, self._chunk_id, self.profile.joint_names, latency)
        if p.trigger == "request":
            # The executor that asked is on the graph, but its chunk subscription may not be matched to
            # this publisher yet (discovery runs per direction): a chunk published now would be lost.
            deadline = time.monotonic() + p.match_timeout
            while self.chunk_pub.get_subscription_count() == 0 and time.monotonic() < deadline and not self._closing.is_set():
                time.sleep(0.005)
        if not self._active:
            return
        self.chunk_pub.publish(msg)
        if chunk.frames is not None and p.return_frames:
            self.future_pub.publish(self._future_msg(chunk))
        pre = float(chunk.timing.get("preprocess", 0.0))
        post_model = float(chunk.timing.get("postprocess", 0.0))
        self._last_timing = {
            "sync_wait": sync_wait,
            "preprocess": pre,
            "model": max(0.0, model_time - pre - post_model),
            "postprocess": post_model + (time.monotonic() - t_post),
            "total": time.monotonic() - t_wait,
        }
        self.chunks_published += 1
        self._timings.append(dict(self._last_timing))
        self._publish_times.append(time.monotonic())
        self._obs_age = self.now() - obs.stamp
        self._state = PolicyStatus.STATE_ACTIVE
        self._message = f"chunk {self._chunk_id}: {chunk.num_steps} actions, prefix {chunk.prefix_length}, latency {latency * 1000:.0f} ms"

    def _future_msg(self, chunk) -> PredictedFuture:
        msg = PredictedFuture()
        msg.header.stamp = time_msg(chunk.stamp)
        msg.chunk_id = self._chunk_id
        msg.model = chunk.model
        msg.mode = chunk.mode
        msg.layout = "motus_t_mosaic"
        high = self.profile.cameras.get("high")
        layout = model_image_layout((high.height, high.width), chunk.frames.shape[1:3]) if high else None
        if layout is not None:
            for role, r in layout.regions.items():
                msg.camera_names.append(role)
                msg.camera_regions.append(RegionOfInterest(x_offset=r.x, y_offset=r.y, width=r.width, height=r.height))
        offsets = list(chunk.frame_offsets or [])
        for j, frame in enumerate(chunk.frames):
            t = chunk.stamp + (offsets[j] if j < len(offsets) else 0.0)
            msg.frames.append(image_msg(frame, t))
            msg.frame_times.append(time_msg(t))
        if chunk.condition_image is not None:
            msg.condition_frame = image_msg(chunk.condition_image, chunk.stamp)
        return msg

    # ------------------------------------------------------------------ status
    def _publish_status(self) -> None:
        msg = PolicyStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.state = self._state
        msg.model = self.policy.name if self.policy is not None else ""
        msg.mode = self.params.mode
        msg.instruction = self._instruction
        msg.device = self.params.device
        msg.chunks_published = self.chunks_published
        msg.chunks_failed = self.chunks_failed
        ts = list(self._publish_times)
        if len(ts) >= 2 and time.monotonic() - ts[-1] < 5.0:
            msg.chunk_rate_hz = float((len(ts) - 1) / max(ts[-1] - ts[0], 1e-6))
        msg.last_timing = _stage_list(self._last_timing)
        msg.observation_age = float(self._obs_age)
        msg.message = self._message
        self.status_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        if self.sync is None:
            return
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        levels = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}
        for d in self.sync.diagnostics(self.now()):
            st = DiagnosticStatus()
            st.level = levels[d.level]
            st.name = f"{self.get_name()}: sync {d.name}"
            st.hardware_id = self.profile.name
            st.message = d.message
            st.values = [KeyValue(key=k, value=v) for k, v in (
                ("kind", d.kind), ("rate_hz", f"{d.rate_hz:.2f}"), ("age_s", f"{d.age:.3f}"), ("received", str(d.received)),
                ("dropped", str(d.dropped)), ("rejected", str(d.rejected)))]
            arr.status.append(st)
        st = DiagnosticStatus(name=f"{self.get_name()}: inference", hardware_id=self.profile.name)
        st.level = DiagnosticStatus.OK if self._state in (PolicyStatus.STATE_ACTIVE, PolicyStatus.STATE_INACTIVE) else DiagnosticStatus.WARN
        st.message = self._message
        st.values = [KeyValue(key="chunks_published", value=str(self.chunks_published)),
                     KeyValue(key="chunks_failed", value=str(self.chunks_failed)),
                     KeyValue(key="sync_resets", value=str(self.sync.resets))]
        st.values += [KeyValue(key=f"{k}_s", value=f"{v:.4f}") for k, v in self._last_timing.items()]
        arr.status.append(st)
        self.diag_pub.publish(arr)


def format_summary(node: PolicyNode) -> str:
    lines = [f"Policy summary: {node.chunks_published} chunks published, {node.chunks_failed} failed"
             + (f" (last failure: {node._failures[-1]})" if node._failures else "")]
    if node._timings:
        keys = list(node._timings[0])
        parts = []
        for k in keys:
            vals = np.array([t.get(k, 0.0) for t in node._timings]) * 1000
            parts.append(f"{k} {np.percentile(vals, 50):.1f}/{np.percentile(vals, 95):.1f}")
        lines.append("  per-stage latency p50/p95 (ms): " + ", ".join(parts))
    if node._wait_reasons:
        lines.append(f"  inferences that waited for a coherent observation, by stream: {node._wait_reasons}")
    if node.sync is not None:
        for d in node.sync.diagnostics(node.now()):
            lines.append(f"  stream {d.name}: {d.rate_hz:.1f} Hz, {d.received} received, {d.dropped} missing, {d.rejected} rejected")
        if node.sync.resets:
            lines.append(f"  synchronizer resets (time jumps): {node.sync.resets}")
    return "\n".join(lines)


def main(args=None) -> int:
    executors: list[SingleThreadedExecutor] = []  # created in spin(): an executor needs the initialised context

    def spin(node: PolicyNode) -> int:
        executor = SingleThreadedExecutor()
        executors.append(executor)
        executor.add_node(node)
        if node.params.autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS or node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                return 1
        executor.spin()
        return 0

    def on_exit(node: PolicyNode) -> None:
        print(format_summary(node), flush=True)
        node._release()
        for executor in executors:
            executor.shutdown()

    return run_node(PolicyNode, args, spin=spin, on_exit=on_exit)


if __name__ == "__main__":
    sys.exit(main())
