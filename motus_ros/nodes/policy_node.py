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

import sys
import time
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

from motus_core.policy.base import PolicyError
from motus_core.policies import load_policy
from motus_core.preprocessing import model_image_layout
from motus_core.robot_profile import load_profile
from motus_core.runtime.inference import TRIGGERS, InferenceConfig, InferenceLoop
from motus_core.runtime.sync import LazyImage, ObservationSynchronizer, SyncConfig
from motus_core.images import compressed_to_rgb, raw_image_problem, raw_to_rgb
from motus_core.rejections import RejectionLog
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
    trigger: str = field(default="request", metadata={"help": "request: infer when the executor publishes its plan; rate: at rate_hz", "choices": TRIGGERS})
    rate_hz: float = field(default=2.0, metadata={"help": "trigger=rate: inference rate", "min": 1e-3})
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


_STATES = {"unconfigured": PolicyStatus.STATE_UNCONFIGURED, "inactive": PolicyStatus.STATE_INACTIVE, "active": PolicyStatus.STATE_ACTIVE,
           "waiting": PolicyStatus.STATE_WAITING, "error": PolicyStatus.STATE_ERROR}


def _stage_list(timing: dict[str, float]) -> list[StageTiming]:
    return [StageTiming(name=k, seconds=float(v)) for k, v in timing.items()]


class PolicyNode(LifecycleNode):
    def __init__(self, name: str = "policy", **kwargs):
        super().__init__(name, **kwargs)
        self.params = declare_parameters(self, PolicyNodeParams)
        self.profile = None
        self.policy = None
        self.sync: ObservationSynchronizer | None = None
        self.loop: InferenceLoop | None = None  # the inference (motus_core.runtime.inference); this node is its transport
        self.rejections: RejectionLog | None = None
        self._instruction = self.params.instruction
        self._subs = []
        self._pubs = []
        self._timers = []
        self._srv = None
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
        try:
            self.profile = load_profile(p.robot)
            self.get_logger().info(f"Loading policy {p.policy!r} on {p.device} for robot {self.profile.name!r} ...")
            t0 = time.monotonic()
            self.policy = load_policy(p.policy, device=p.device, profile=self.profile, options=self._options())
            self.rejections = RejectionLog(lambda m: self.get_logger().warning(m), p.sync.reject_log_period, prefix="Policy rejected")
            self.sync = ObservationSynchronizer(self.profile, p.sync, on_problem=lambda m: self.get_logger().warning(m),
                                                rejections=self.rejections)
        except Exception as exc:  # noqa: BLE001 - any load failure is a configure failure, reported
            self.get_logger().error(f"configure failed: {exc}")
            self.policy = None
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"Policy {self.policy.name!r} ready in {time.monotonic() - t0:.1f} s "
                               f"({self.policy.chunk_length} actions at {1 / self.policy.step_period:.0f} Hz, "
                               f"RTC prefix {'supported' if self.policy.supports_prefix else 'not supported: the executor blends'})")
        cfg = InferenceConfig(trigger=p.trigger, rate_hz=p.rate_hz, sync_timeout=p.sync_timeout, seed=p.seed, mode=p.mode,
                              return_frames=p.return_frames, realtime_priority=p.realtime_priority)
        self.loop = InferenceLoop(self.policy, self.sync, self.profile.dof, cfg, clock=self.now, publish=self._publish_chunk,
                                  log=self._log, instruction=self._instruction)
        self._create_interfaces()
        self.loop.start()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            info = self.loop.activate()
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"Warm-up done in {info['warmup']:.2f} s")
        if "instruction_cached" in info:
            self.get_logger().info(f"Instruction {self.loop.instruction!r} ({'cached embedding' if info['instruction_cached'] else 'encoded'})")
        self.sync.reset("policy activated")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.loop.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        if self.loop is not None:
            self.loop.close()  # stops the worker, releases the policy (also one blocked inside predict)
        for s in self._subs:
            self.destroy_subscription(s)
        for t in self._timers:
            self.destroy_timer(t)
        for pub in self._pubs:
            self.destroy_publisher(pub)
        if self._srv is not None:
            self.destroy_service(self._srv)
        self._subs, self._pubs, self._timers, self._srv = [], [], [], None
        self.policy = None
        # Only a torch that finished importing: Ctrl-C during the model load can interrupt `import torch`,
        # and importing it again then fails half-way (a traceback at exit).
        torch = sys.modules.get("torch")
        cuda = getattr(torch, "cuda", None)
        try:
            if cuda is not None and cuda.is_initialized():
                cuda.empty_cache()
        except Exception as exc:  # noqa: BLE001 - freeing a cache at exit must not fail the exit
            self.get_logger().debug(f"torch.cuda.empty_cache at exit: {exc}")

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
            size = None
            if isinstance(msg, CompressedImage):
                fmt, data = msg.format, msg.data
                if len(data) == 0:  # undecodable payloads are rejected at decode time (inference fails, logged)
                    sync.streams[role].rejected += 1
                    self.rejections.reject(f"{role}: empty compressed image")
                    return
                lazy = LazyImage(lambda: compressed_to_rgb(data, fmt))
            else:
                h, w, enc, step, data, be = msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian
                problem = raw_image_problem(h, w, enc, step, len(data))
                if problem is not None:  # rejected now, not when a snapshot decodes it (that would fail an inference)
                    sync.streams[role].rejected += 1
                    self.rejections.reject(f"{role}: {problem[0]}", problem[1])
                    return
                size = (h, w)
                lazy = LazyImage(lambda: raw_to_rgb(h, w, enc, step, data, be))
            sync.add_image(role, stamp, lazy, now=self.now(), size=size)

        return cb

    def _joint_cb(self, topic: str):
        sync = self.sync

        def cb(msg: JointState):
            sync.add_joint_state(topic, time_to_sec(msg.header.stamp), msg.name, msg.position, now=self.now())

        return cb

    def _on_plan(self, msg: ActionChunkMsg) -> None:
        if msg.model and msg.model != PLAN_MODEL:
            return
        try:
            plan = msg_to_plan(msg, self.profile.joint_names)
        except ValueError as exc:
            self._log_throttled(f"ignored a malformed plan: {exc}")
            return
        self.loop.on_plan(plan)

    # ------------------------------------------------------------------ instruction
    def _on_instruction_topic(self, msg: String) -> None:
        if msg.data and msg.data != self.loop.instruction:
            self.loop.queue_instruction(msg.data)

    def _on_set_instruction(self, request: SetInstruction.Request, response: SetInstruction.Response):
        if self.loop is None:
            response.success, response.message = False, "no policy loaded"
            return response
        done, result = self.loop.queue_instruction(request.instruction)
        if done.wait(self.params.instruction_wait):
            response.success = bool(result.get("success"))
            response.cached = bool(result.get("cached", False))
            response.message = result.get("message", "instruction set")
        else:
            response.success = True
            response.cached = False
            response.message = "accepted: the embedding is being computed; chunks use it from the next inference on"
        return response

    # ------------------------------------------------------------------ transport of the inference loop
    def _log(self, level: str, text: str) -> None:
        if level in ("warning", "error"):
            self._log_throttled(text, "warn" if level == "warning" else "error")
        else:
            self.get_logger().info(text)

    def _publish_chunk(self, out) -> bool:
        p = self.params
        chunk = out.chunk
        msg = chunk_to_msg(chunk, out.chunk_id, self.profile.joint_names, out.latency)
        if p.trigger == "request":
            # The executor that asked is on the graph, but its chunk subscription may not be matched to
            # this publisher yet (discovery runs per direction): a chunk published now would be lost.
            deadline = time.monotonic() + p.match_timeout
            while self.chunk_pub.get_subscription_count() == 0 and time.monotonic() < deadline and not self.loop.closing.is_set():
                time.sleep(0.005)
        if not self.loop.active:
            return False
        self.chunk_pub.publish(msg)
        if chunk.frames is not None and p.return_frames:
            self.future_pub.publish(self._future_msg(chunk, out.chunk_id))
        return True

    def _future_msg(self, chunk, chunk_id: int) -> PredictedFuture:
        msg = PredictedFuture()
        msg.header.stamp = time_msg(chunk.stamp)
        msg.chunk_id = chunk_id
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
        loop = self.loop
        msg.state = _STATES[loop.state] if loop is not None else PolicyStatus.STATE_UNCONFIGURED
        policy = self.policy
        msg.model = policy.name if policy is not None else ""
        if policy is not None:  # the chunk contract: the executor checks its settings against it
            msg.chunk_length = int(policy.chunk_length)
            msg.step_period = float(policy.step_period)
        msg.mode = self.params.mode
        msg.instruction = loop.instruction if loop is not None else self._instruction
        msg.device = self.params.device
        msg.message = "unconfigured"
        if loop is not None:
            msg.chunks_published = loop.chunks_published
            msg.chunks_failed = loop.chunks_failed
            msg.chunk_rate_hz = loop.chunk_rate()
            msg.last_timing = _stage_list(loop.last_timing)
            msg.observation_age = float(loop.obs_age)
            msg.message = loop.message
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
        loop = self.loop
        if loop is None:
            return
        st.level = DiagnosticStatus.OK if loop.state in ("active", "inactive") else DiagnosticStatus.WARN
        st.message = loop.message
        st.values = [KeyValue(key="chunks_published", value=str(loop.chunks_published)),
                     KeyValue(key="chunks_failed", value=str(loop.chunks_failed)),
                     KeyValue(key="sync_resets", value=str(self.sync.resets))]
        st.values += [KeyValue(key=f"{k}_s", value=f"{v:.4f}") for k, v in loop.last_timing.items()]
        arr.status.append(st)
        self.diag_pub.publish(arr)


def format_summary(node: PolicyNode) -> str:
    loop = node.loop
    if loop is None:
        return "Policy summary: no policy was loaded"
    lines = [f"Policy summary: {loop.chunks_published} chunks published, {loop.chunks_failed} failed"
             + (f" (last failure: {loop.failures[-1]})" if loop.failures else "")]
    if loop.timings:
        keys = list(loop.timings[0])
        parts = []
        for k in keys:
            vals = np.array([t.get(k, 0.0) for t in loop.timings]) * 1000
            parts.append(f"{k} {np.percentile(vals, 50):.1f}/{np.percentile(vals, 95):.1f}")
        lines.append("  per-stage latency p50/p95 (ms): " + ", ".join(parts))
    if loop.wait_reasons:
        lines.append(f"  inferences that waited for a coherent observation, by stream: {loop.wait_reasons}")
    if node.sync is not None:
        for d in node.sync.diagnostics(node.now()):
            lines.append(f"  stream {d.name}: {d.rate_hz:.1f} Hz, {d.received} received, {d.dropped} missing, {d.rejected} rejected")
        if node.sync.resets:
            lines.append(f"  synchronizer resets (time jumps): {node.sync.resets}")
    if node.rejections is not None and node.rejections.total:
        lines.append(f"  rejected input by cause: {node.rejections.summary()}")
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
