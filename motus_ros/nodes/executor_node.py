"""Chunk executor node: policy chunks in, a smooth and safe command stream out.

Wraps ``motus_core.runtime.executor.ChunkExecutor`` (strategies, C2 blending, watchdog, safety
layer; see docs/runtime.md). Everything robot-specific comes from the robot profile.

* Command loop at ``command_rate_hz`` (default: the profile's, 200 Hz) on absolute wall-clock
  deadlines (no drift), stamped with the node clock (sim time with the simulator). The loop thread
  also serves the node's callbacks between ticks (``run``), so no other Python thread competes for
  the GIL when a tick is due; ``realtime_priority`` gives it SCHED_FIFO (on a robot PC).
* Outputs (``command_interface``; ``auto`` = the interface of the profile's first command target):
  ``joint_trajectory``: ``trajectory_msgs/JointTrajectory`` streamed MPC-style at
  ``trajectory_rate_hz`` to every joint_trajectory target of the profile; each message holds the
  next ``trajectory_horizon`` s every ``trajectory_point_period`` s with positions, velocities and
  accelerations (so the controller interpolates quintically, not linearly), ``header.stamp`` = the
  time of the first point on the robot's clock, ``time_from_start`` relative to it, and a tail that
  decelerates to rest (the last point has zero velocity: accepted by a default JTC, and a controller
  left alone by a dead executor comes to a stop). Set ``interpolate_from_desired_state`` on the JTC.
  ``joint_state``: ``sensor_msgs/JointState`` position commands at the command rate (or the target's
  ``rate_hz``, step-bounded by its ``max_step``: motus_ros/command_output.py), one message
  per target (e.g. per arm for AgileX drivers), all joints named (Piper zeroes missing names) and no
  velocities unless ``joint_state_velocity`` (Piper reads ``velocity[6]`` as a speed percentage).
  ``follow_joint_trajectory``: ``control_msgs/FollowJointTrajectory`` goals with the same points,
  sent to ``<controller>/follow_joint_trajectory`` (each goal preempts the previous one). Needs
  ``control_msgs``, which is not on PyPI: with a pip-only install the node refuses this interface
  at start with a clear error.
* Inputs: the profile's joint-state topics (measured pose: fade-ins and resumes start there, the
  tracking monitor compares it with the command, no motion without one younger than
  ``state_timeout``), ``chunk_topic``, ``policy_status_topic`` (subscribed with DDS liveliness
  ``policy_lease``: reports whether the policy process is there; the watchdog, not the lease, stops
  the robot when the committed actions run out; ``stop_on_policy_lost`` also stops at once).
* Real hardware (``hardware`` real, or auto without sim time) starts disabled and publishes nothing
  until ``~/enable`` (or a RunTask goal with ``enable``); in the simulator ``enabled`` applies.
* ``/executor/plan``: the request for the next chunk, carrying the committed plan (RTC prefix) and
  the expected delay; ``~/status`` (``ExecutorStatus``); services ``~/estop`` and ``~/reset_estop``
  (``std_srvs/Trigger``; the e-stop is latched until reset); ``~/enable`` (``std_srvs/SetBool``);
  ``~/move_to_pose`` (``motus_msgs/MoveToPose``: to a profile pose or positions, jerk-limited);
  action ``~/run_task`` (``motus_msgs/RunTask``: run the policy for a given time, see motus_ros/run_task.py).
* ``run_time`` > 0: after that many seconds of the node clock since the closed loop could start (the
  executor enabled, a joint state and the policy's chunk contract known: a model that loads for minutes
  does not eat into it) the robot is stopped, a summary is printed (and written to ``summary_file``)
  and the node exits with 0, also when every chunk was rejected (the summary says so).
"""
from __future__ import annotations

import gc
import itertools
import json
import math
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import motus_ros  # noqa: F401  (DDS environment before rclpy)
from motus_ros.node_main import run_node  # noqa: E402
import numpy as np
from rclpy.duration import Duration
from motus_ros.compat import SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import LivelinessPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger

from motus_core.rejections import RejectionLog, cause_of
from motus_core.robot_profile import load_profile
from motus_core.runtime import metrics
from motus_core.runtime.executor import RENAMED_PARAMETERS, STATE_AHEAD, STATE_OLD, ChunkExecutor, ExecutorConfig
from motus_core.runtime.liveness import PolicyLiveness, PolicyProcess
from motus_core.runtime.motion import profile_poses, resolve_target
from motus_core.runtime.safety import JointLimits
from motus_msgs.msg import ActionChunk as ActionChunkMsg
from motus_msgs.msg import ExecutorStatus, PolicyStatus
from motus_msgs.srv import MoveToPose
from motus_ros.params import declare_parameters
from motus_ros.run_task import RunTaskServer
from motus_ros.conversions import ConversionError, JointVectorAssembler
from motus_ros.command_output import CommandOutput
from motus_ros.runtime_msgs import ChunkMessageError, msg_to_chunk, plan_to_msg

INTERFACES = ("auto", "joint_trajectory", "joint_state", "follow_joint_trajectory")
HARDWARE = ("auto", "sim", "real")


@dataclass
class ExecutorNodeParams(ExecutorConfig):
    robot: str = field(default="sim_aloha", metadata={"help": "robot profile (config/robots/<robot>.yaml): joints, limits, command topics"})
    command_interface: str = field(default="auto", metadata={"help": "auto | joint_trajectory | joint_state | follow_joint_trajectory"})
    command_rate_hz: float = field(default=0.0, metadata={"help": "command stream rate (0 = the profile's command_rate_hz)"})
    trajectory_rate_hz: float = field(default=50.0, metadata={"help": "JointTrajectory / FollowJointTrajectory messages per second"})
    trajectory_horizon: float = field(default=0.25, metadata={"help": "s of planned motion per trajectory message (then a stop to rest); covers late delivery"})
    trajectory_point_period: float = field(default=0.02, metadata={"help": "s between trajectory points"})
    trajectory_lead: float = field(default=0.1, metadata={"help": "s between a trajectory message's stamp and its first point: longer than the delivery, so no point is in the past on arrival"})
    joint_state_velocity: bool = field(default=False, metadata={"help": "also fill JointState.velocity (not for Piper drivers: velocity[6] = speed %)"})
    chunk_topic: str = field(default="/policy/action_chunk", metadata={"help": "motus_msgs/ActionChunk topic of the policy"})
    plan_topic: str = field(default="/executor/plan", metadata={"help": "where the plan (chunk request + RTC prefix) is published"})
    policy_status_topic: str = field(default="/policy/status", metadata={"help": "PolicyStatus topic, watched with DDS liveliness"})
    policy_lease: float = field(default=1.0, metadata={"help": "s, DDS liveliness lease requested on the policy status (>= the policy's liveliness_lease; 0 = do not watch): reports a gone policy process"})
    stop_on_policy_lost: bool = field(default=False, metadata={"help": "also stop as soon as the policy's liveliness is lost (default: the watchdog stops when the committed actions run out)"})
    status_rate_hz: float = field(default=20.0, metadata={"help": "rate of ~/status"})
    hardware: str = field(default="auto", metadata={"help": "auto | sim | real: real hardware starts disabled (auto: sim when use_sim_time is true, the simulator's /clock)"})
    enabled: bool = field(default=True, metadata={"help": "simulator only: follow the policy from the start (else wait for ~/enable); real hardware always starts disabled"})
    run_time: float = field(default=0.0, metadata={"help": "s of the node clock once the closed loop can start (enabled, joint state, policy contract), then stop, summarise and exit (0 = run until interrupted)"})
    summary_file: str = field(default="", metadata={"help": "write the run summary (JSON) here when the node stops"})
    record_file: str = field(default="", metadata={"help": "write the recent command stream (npz: t, position, velocity, acceleration, state, measured, switches, chunks, chunk_actions) here when the node stops"})
    instruction_service: str = field(default="/policy/set_instruction", metadata={"help": "RunTask: the policy's SetInstruction service"})
    success_topic: str = field(default="/sim/success", metadata={"help": "RunTask: std_msgs/Bool task success of the robot ('' = none)"})
    realtime_priority: int = field(default=0, metadata={
        "help": "SCHED_FIFO priority of the command loop thread (1-99, e.g. 50 as ros2_control's controller_manager, on a "
                "robot PC; 0 = normal scheduling). Needs CAP_SYS_NICE or an rtprio limit; without them the loop runs with "
                "normal scheduling and says so", "min": 0, "max": 99})
    gil_switch_interval: float = field(default=0.0005, metadata={"help": "s, Python's thread switch interval in this process (default 5 ms delays the command loop behind other threads)"})


class ExecutorNode(Node):
    def __init__(self, name: str = "executor", **kwargs):
        super().__init__(name, **kwargs)
        self.params = declare_parameters(self, ExecutorNodeParams, renamed=RENAMED_PARAMETERS)
        p = self.params
        if p.gil_switch_interval > 0:
            sys.setswitchinterval(p.gil_switch_interval)
        if p.command_interface not in INTERFACES:
            raise ValueError(f"command_interface must be one of {INTERFACES}, got {p.command_interface!r}")
        self.profile = load_profile(p.robot)
        core = ExecutorConfig(**{f: getattr(p, f) for f in ExecutorConfig.__dataclass_fields__})
        core.validate()
        self.limits = JointLimits.from_profile(self.profile, use_urdf=p.use_urdf)
        urdf_joints = [n for n, s in self.limits.sources.items() if s != "profile"]
        self.get_logger().info(
            f"Limits: robot profile {self.profile.name!r}" + (f", tightened by the URDF for {len(urdf_joints)} joints" if urdf_joints else ""))
        self.core = ChunkExecutor(core, self.limits)
        self.core.configure_for_profile(self.profile)
        self.poses = profile_poses(self.profile)
        if p.hardware not in HARDWARE:
            raise ValueError(f"hardware must be one of {HARDWARE}, got {p.hardware!r}")
        use_sim_time = bool(self.get_parameter("use_sim_time").value)
        self.real_hardware = p.hardware == "real" or (p.hardware == "auto" and not use_sim_time)
        if self.real_hardware:
            # nothing moves, nothing is even published, before an explicit enable (~/enable, RunTask enable)
            self.core.enabled = self.core.enabled_once = False
            self.get_logger().warning("Real hardware: the executor starts DISABLED and sends no command; "
                                      "call ~/enable (or a RunTask goal with enable) with the e-stop at hand.")
        else:
            self.core.enabled = p.enabled
        self.lock = threading.Lock()
        interface = p.command_interface
        if interface == "auto":
            if not self.profile.commands:
                raise ValueError(f"robot profile {self.profile.name!r} lists no command targets")
            interface = self.profile.commands[0].interface
        self.output = CommandOutput(self, interface)
        self.rate = p.command_rate_hz or self.profile.command_rate_hz
        self.get_logger().info(
            f"Strategy {p.strategy}; commands: {interface} to {[t for t, _, _ in self.output.targets]} at {self.rate:.0f} Hz")
        # inputs
        self._joints = JointVectorAssembler(self.profile)
        self._reported: set[str] = set()
        joints_qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.BEST_EFFORT)
        for src in self.profile.state_sources:
            self.create_subscription(JointState, src.topic, self._state_cb(src.topic), joints_qos)
        self.create_subscription(ActionChunkMsg, p.chunk_topic, self._on_chunk, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self._contract_reported = ""
        self.liveness = PolicyLiveness()
        if p.policy_lease > 0:
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, liveliness=LivelinessPolicy.AUTOMATIC,
                             liveliness_lease_duration=Duration(seconds=p.policy_lease))
            self.create_subscription(PolicyStatus, p.policy_status_topic, self._on_policy_status, qos,
                                     event_callbacks=SubscriptionEventCallbacks(liveliness=self._on_liveliness))
        else:  # not watched for liveliness, but the status still carries the chunk contract
            self.create_subscription(PolicyStatus, p.policy_status_topic, self._on_policy_status,
                                     QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        # outputs
        self.plan_pub = self.create_publisher(ActionChunkMsg, p.plan_topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.status_pub = self.create_publisher(ExecutorStatus, "~/status", 10)
        self.create_service(Trigger, "~/estop", self._on_estop)
        self.create_service(Trigger, "~/reset_estop", self._on_reset_estop)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_service(MoveToPose, "~/move_to_pose", self._on_move_to_pose)
        self.run_task = RunTaskServer(self, instruction_service=p.instruction_service, success_topic=p.success_topic)
        self.create_timer(1.0 / p.status_rate_hz, self._publish_status)
        # run bookkeeping
        self.started_at: float | None = None  # the closed loop could start (run_time counts from here)
        self.first_chunk_at: float | None = None
        self.finished = threading.Event()
        self.exit_code = 0
        self.period_errors: deque[float] = deque(maxlen=20000)
        self.ticks = 0
        self.tick_times: deque[float] = deque(maxlen=200)
        self._first_tick_wall: float | None = None  # wall clock of the first and last command sent
        self._last_tick_wall: float | None = None
        self.tick_compute: deque[float] = deque(maxlen=20000)
        # recent commands for the summary, in preallocated arrays: no per-tick Python objects that the
        # garbage collector would have to walk (gen-2 collections over a long history stall the loop)
        n_hist = int(self.rate * 300)
        self._hist_t = np.zeros(n_hist)
        self._hist_p = np.zeros((n_hist, self.profile.dof))
        self._hist_v = np.zeros((n_hist, self.profile.dof))
        self._hist_a = np.zeros((n_hist, self.profile.dof))
        self._hist_s = np.zeros(n_hist, dtype=np.int8)
        self._hist_e = np.zeros(n_hist)  # end of the committed plan (nan: none): the watchdog's bound
        self._hist_m = np.full((n_hist, self.profile.dof), np.nan)  # the measured joint positions the tick saw
        self._hist_n = 0
        self.chunk_log: deque[tuple[float, float, int, int, float]] = deque(maxlen=5000)  # (arrival, stamp, accepted, delay, latency)
        self.chunk_actions: deque[np.ndarray] = deque(maxlen=500)  # what the policy sent, beside chunk_log's last entries
        self.latencies: deque[float] = deque(maxlen=2000)
        self._last_chunk_log = 0.0
        self._stop = threading.Event()
        self.rejections = RejectionLog(lambda m: self.get_logger().warning(m))  # bad input, counted per cause

    # ------------------------------------------------------------------ inputs
    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _report_once(self, key: str, text: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self.get_logger().error(text)

    def _state_cb(self, topic: str):
        def cb(msg: JointState):
            try:
                self._joints.update(topic, msg)
            except ConversionError as exc:
                self._report_once(f"{topic}:{tuple(msg.name)}", f"joint states ignored: {exc}")
                self.rejections.reject(f"joint state on {topic}: {cause_of(exc)}", str(exc))
                return
            if not all(math.isfinite(v) for v in msg.position):
                self.rejections.reject(f"joint state on {topic}: NaN/inf positions")
            if self._joints.complete:
                with self.lock:
                    why = self.core.on_measured_state(self._joints.stamp, self._joints.position, self.now())
                if why is not None:
                    cause = STATE_AHEAD if why.startswith(STATE_AHEAD) else STATE_OLD
                    self.rejections.reject(f"joint state on {topic}: {cause}", f"joint state on {topic} ignored: {why}")

        return cb

    def _on_chunk(self, msg: ActionChunkMsg) -> None:
        now = self.now()
        try:
            chunk = msg_to_chunk(msg, self.profile.joint_names)
        except ChunkMessageError as exc:
            with self.lock:
                res = self.core.reject(now, str(exc))
            self.rejections.reject(f"chunk: {cause_of(res.reason)}", f"chunk {msg.chunk_id}: {res.reason}")
            return
        with self.lock:
            res = self.core.on_chunk(chunk, now)
        self.chunk_log.append((now, chunk.stamp, int(res.accepted), -1 if res.measured_delay is None else int(res.measured_delay), float(msg.inference_latency)))
        self.chunk_actions.append(chunk.actions)
        if res.accepted:
            self.latencies.append(float(msg.inference_latency))
            if self.first_chunk_at is None:
                self.first_chunk_at = now
                self.get_logger().info(f"First chunk: the policy takes over (fade-in), measured delay {res.measured_delay} actions")
        else:
            self.rejections.reject(f"chunk: {cause_of(res.reason)}", f"chunk {msg.chunk_id} from {msg.model or '?'}: {res.reason}")

    def _on_policy_status(self, msg: PolicyStatus) -> None:
        self.liveness.on_status(self.now())
        if msg.chunk_length > 0:
            self._set_contract(int(msg.chunk_length), float(msg.step_period))

    def _set_contract(self, chunk_length: int, step_period: float) -> None:
        with self.lock:
            error = self.core.set_contract(chunk_length, step_period, self.now())
            contract = self.core.contract
        text = error or (contract.describe() if contract else "")
        if text != self._contract_reported:  # once per change, not at the status rate
            self._contract_reported = text
            if error:
                self.get_logger().error(f"Policy chunks ({chunk_length} actions every {step_period:.4f} s): {error}")
            else:
                self.get_logger().info(f"Chunk contract: {text}")

    def _on_liveliness(self, info) -> None:
        now = self.now()
        if not self.liveness.on_liveliness(now, info.alive_count > 0):
            return
        lease = self.params.policy_lease
        if self.liveness.state == PolicyProcess.GONE:
            with self.lock:
                committed = self.core.status()["committed_actions"]
                if self.params.stop_on_policy_lost:
                    self.core.policy_lost(now, "the policy process is gone (no DDS liveliness)")
            then = "holding the robot now" if self.params.stop_on_policy_lost else \
                f"the watchdog holds the robot before its {committed} committed actions run out"
            self.get_logger().error(f"Policy process gone (no DDS liveliness within {lease:.2f} s): {then}.")
        else:
            resumed = False
            if self.params.stop_on_policy_lost:
                with self.lock:
                    resumed = self.core.policy_alive(now)
            self.get_logger().info("Policy process back" + (": resuming its plan." if resumed else "."))

    # ------------------------------------------------------------------ services
    def _on_estop(self, request, response):
        with self.lock:
            first = self.core.estop(self.now(), "~/estop service")
        self.get_logger().error("E-STOP latched: decelerating to a stop; call ~/reset_estop to resume.")
        response.success = True
        response.message = "e-stop latched" if first else "e-stop was already latched"
        return response

    def _on_reset_estop(self, request, response):
        with self.lock:
            was = self.core.reset_estop(self.now())
        response.success = was
        response.message = "e-stop reset: the policy takes over again with a fade-in" if was else "e-stop was not latched"
        if was:
            self.get_logger().info(response.message)
        return response

    def _on_enable(self, request, response):
        response.success, response.message = self.set_enabled(bool(request.data), "~/enable")
        return response

    def set_enabled(self, enabled: bool, who: str) -> tuple[bool, str]:
        """Enable (follow the policy, from the measured pose) or disable (decelerate and hold)."""
        now = self.now()
        with self.lock:
            if enabled and self.core.state_age(now) > self.core.cfg.state_timeout:
                age = self.core.state_age(now)
                return False, (f"not enabled: no joint state fresher than state_timeout ({self.core.cfg.state_timeout} s; newest: "
                               + ("none" if age == float("inf") else f"{age:.2f} s old") + ")")
            self.core.set_enabled(now, enabled, f"disabled by {who}")
        msg = "enabled: the policy takes over from the measured pose" if enabled else "disabled: stopping and holding"
        self.get_logger().info(f"{who}: {msg}")
        return True, msg

    def _on_move_to_pose(self, request, response):
        try:
            target, label = resolve_target(self.poses, self.limits, request.pose, request.positions)
        except ValueError as exc:
            response.success, response.message, response.duration = False, str(exc), 0.0
        else:
            with self.lock:
                ok, msg, duration = self.core.move_to(self.now(), target, label, float(request.velocity_scale))
            response.success, response.message, response.duration = ok, msg, float(duration)
        if response.success:
            self.get_logger().info(f"~/move_to_pose: {response.message}")
        else:
            self.get_logger().warning(f"~/move_to_pose refused: {response.message}")
        return response

    # ------------------------------------------------------------------ command loop
    def _set_priority(self) -> None:
        prio = int(self.params.realtime_priority)
        if prio <= 0:
            return
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(min(prio, 99)))
            self.get_logger().info(f"Command loop runs with SCHED_FIFO priority {prio}.")
        except (PermissionError, OSError, AttributeError) as exc:
            self.get_logger().warning(
                f"Could not give the command loop real-time priority {prio} ({exc}); running with normal scheduling, so a busy "
                "machine delays commands. Allow it with an rtprio limit (e.g. '@realtime - rtprio 98' in "
                "/etc/security/limits.conf and the user in group realtime) or CAP_SYS_NICE; realtime_priority:=0 turns it off.")

    def run(self, executor, until=None) -> None:
        """The command loop, in the calling thread, which also serves this node's ROS callbacks.

        One thread does everything: no other Python thread can hold the GIL when a tick is due (with a
        separate spin thread the tick waits for the GIL: p99 period errors of several ms were measured).
        Callbacks run in the slack between ticks; the last 2.5 ms before a deadline are slept in short
        steps. ``until()`` returning True ends the loop (as do shutdown and ``stop()``).
        """
        self._set_priority()
        period = 1.0 / self.rate
        traj_every = trajectory_divisor(self.rate, self.params.trajectory_rate_hz)
        if abs(self.rate / traj_every - self.params.trajectory_rate_hz) > 1e-6 * self.rate:
            self.get_logger().warning(
                f"trajectory_rate_hz {self.params.trajectory_rate_hz:g} does not divide the command rate {self.rate:g} Hz: "
                f"trajectory messages go out every {traj_every} ticks ({self.rate / traj_every:.2f} Hz)")
        next_t = time.monotonic() + period
        last_wall = None
        while not self._stop.is_set() and self.context.ok() and not (until is not None and until()):
            # Serve callbacks in waits of a constant 1 ms: rclpy rebuilds its ready-callback generator
            # whenever the timeout argument changes, and a fresh generator yields pending coroutine tasks
            # (e.g. the RunTask action) before anything else, which would starve subscriptions and timers.
            while next_t - time.monotonic() > 0.0025:
                executor.spin_once(timeout_sec=0.001)
            while time.monotonic() < next_t:
                time.sleep(0.0002)
            wall = time.monotonic()
            if last_wall is not None:
                self.period_errors.append(abs((wall - last_wall) - period))
            last_wall = wall
            if not self.context.ok():
                break  # shutting down (SIGINT/SIGTERM): nothing can be published any more
            try:
                self._tick(traj_every)
                self.tick_compute.append(time.monotonic() - wall)
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything; the guard holds the robot
                if not self.context.ok():
                    break
                self.get_logger().error(f"command tick failed: {exc}")
            next_t += period
            if next_t < time.monotonic():
                next_t = time.monotonic() + period  # fell behind (the machine stalled): do not burst

    def _tick(self, traj_every: int) -> None:
        now = self.now()
        if now <= 0.0:
            return  # sim time not received yet
        with self.lock:
            cmd = self.core.tick(now)
            idle = cmd is None or not self.core.enabled_once
            if not idle:
                preview = None
                if self.output.interface != "joint_state" and self.ticks % traj_every == 0:
                    preview = self.core.preview(now, self.params.trajectory_horizon, self.params.trajectory_point_period,
                                                lead=self.params.trajectory_lead)
                request = self.core.make_request(now) if self.core.wants_request(now) else None
                plan_end = self.core.plan.end_time if self.core.plan is not None and self.core.stop is None else np.nan
                measured = self.core.measured
        if idle:
            if cmd is not None:
                self.output.poll_driver_mode()  # refuse a read-mode driver before anyone enables (outside the lock)
            return  # no joint state yet, or real hardware never enabled: send nothing
        self.ticks += 1
        wall = time.monotonic()
        self.tick_times.append(wall)
        if self._first_tick_wall is None:
            self._first_tick_wall = wall
        self._last_tick_wall = wall
        self.output.publish(cmd, preview)
        i = self._hist_n % self._hist_t.shape[0]
        self._hist_t[i], self._hist_p[i], self._hist_v[i], self._hist_a[i], self._hist_s[i] = now, cmd.position, cmd.velocity, cmd.acceleration, int(cmd.state)
        self._hist_e[i] = plan_end
        self._hist_m[i] = np.nan if measured is None else measured
        self._hist_n += 1
        if request is not None:
            self.plan_pub.publish(plan_to_msg(request, self.profile.joint_names))
        if self.params.run_time > 0 and self.started_at is None and self.core.enabled and self.core.contract is not None:
            self.started_at = now
            self.get_logger().info(f"Closed loop ready: stopping after run_time {self.params.run_time:g} s")
        if self.params.run_time > 0 and self.started_at is not None and now - self.started_at >= self.params.run_time and not self.finished.is_set():
            with self.lock:
                self.core.set_enabled(now, False, f"run_time of {self.params.run_time:.0f} s elapsed")
            self.finished.set()

    def _publish_status(self) -> None:
        with self.lock:
            st = self.core.status()
        msg = ExecutorStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.state = st["state"]
        msg.strategy = st["strategy"]
        msg.chunks_received = st["chunks_received"]
        msg.chunks_rejected = st["chunks_rejected"]
        msg.limit_hits = st["limit_hits"]
        msg.committed_actions = st["committed_actions"]
        msg.measured_delay = st["measured_delay"]
        msg.active_chunk_id = int(st["active_chunk_id"])
        msg.active_chunk_time_offset = float(st["active_chunk_time_offset"])
        msg.command_rate_hz = float(self._command_rate())
        msg.chunk_length = int(st["chunk_length"])
        msg.execution_horizon = int(st["execution_horizon"])
        msg.max_delay = int(st["max_delay"])
        msg.step_period = float(st["step_period"])
        msg.enabled = bool(st["enabled"])
        msg.policy_process = int(self.liveness.state)
        msg.starved = bool(st["starved"])
        msg.watchdog_stops = int(st["watchdog_stops"])
        age = st["state_age"]
        msg.state_age = max(0.0, float(age)) if np.isfinite(age) else -1.0  # a stamp a tick ahead of our clock is fresh
        msg.tracking_error_max = float(st["tracking_error_max"])
        msg.tracking_error_joint = st["tracking_error_joint"]
        if self.output.refused:  # the driver-mode refusal outranks everything else: it is what the operator must fix
            msg.message = self.output.refused
        elif self.core.enabled_once:
            msg.message = st["message"]
        else:
            msg.message = "disabled (real hardware): nothing is sent until ~/enable or a RunTask goal with enable"
        self.status_pub.publish(msg)

    def _command_rate(self) -> float:
        h = self.tick_times
        if len(h) < 2:
            return 0.0
        span = h[-1] - h[0]
        return (len(h) - 1) / span if span > 0 else 0.0

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict:
        with self.lock:
            st = self.core.status()
            switches = list(self.core.switches)
        n = min(self._hist_n, self._hist_t.shape[0])
        order = (np.arange(n) + (self._hist_n - n)) % self._hist_t.shape[0]
        out = {"strategy": st["strategy"], "state": st["state_name"], "chunks_received": st["chunks_received"],
               "chunks_rejected": st["chunks_rejected"], "chunks_smoothed": st["chunks_smoothed"], "limit_hits": st["limit_hits"], "limit_hits_by_kind": st["limit_hits_by_kind"],
               "watchdog_stops": st["watchdog_stops"], "policy_lost_stops": st["policy_lost_stops"],
               "policy_process_lost": self.liveness.lost, "tracking_trips": st["tracking_trips"], "resyncs": st["resyncs"],
               "clock_jumps": st["clock_jumps"], "stalls": st["stalls"], "delay_actions": st["delay_stats"], "rejections": list(self.core.rejections)[-5:],
               "contract": {k: st[k] for k in ("chunk_length", "execution_horizon", "max_delay", "step_period")}, "late_chunks": st["late_chunks"]}
        if n > 10:
            t, P, V, A = self._hist_t[order], self._hist_p[order], self._hist_v[order], self._hist_a[order]
            keep = np.concatenate([[True], np.diff(t) > 1e-9])
            t, P, V, A = t[keep], P[keep], V[keep], A[keep]
            # Commands per wall-clock second (the loop's rate; on a robot, system time, every command has its
            # own stamp) and distinct stamps per second of the robot's clock: in simulation the executor's
            # time is the latest /clock message it has taken, so a loaded machine shows fewer stamps.
            span = (self._last_tick_wall or 0.0) - (self._first_tick_wall or 0.0)
            out["command_rate_hz"] = float((self.ticks - 1) / span) if span > 0 else 0.0
            out["command_stamps_per_s"] = float((len(t) - 1) / (t[-1] - t[0])) if t[-1] > t[0] else 0.0
            lv = metrics.limit_violations(t, P, self.limits.lower, self.limits.upper, self.limits.velocity, self.limits.acceleration)
            out["peak_velocity_ratio"] = lv["velocity_ratio"]
            out["peak_acceleration_ratio"] = lv["acceleration_ratio"]
            jumps = metrics.switch_velocity_jumps(t, V, [s for s in switches if s[0] >= t[0]])
            out["boundary_velocity_jump_max"] = float(jumps.max()) if jumps.size else 0.0
            out["boundary_velocity_jump_mean"] = float(jumps.mean()) if jumps.size else 0.0
            # the continuity of the commanded stream itself at each switch (what the tests bound)
            step = metrics.step_discontinuities(t, P, V, A, [s[0] for s in switches if s[0] > t[0]],
                                                acc_scale=self.limits.acceleration)
            out["boundary_step_position"] = step["position"]
            out["boundary_step_velocity"] = step["velocity"]
            out["boundary_step_acceleration_ratio"] = step["acceleration"]
            out["rms_jerk"] = metrics.rms_jerk(t, P)
        if self.latencies:
            lat = np.array(self.latencies)
            out["inference_latency_ms_p50"] = float(np.percentile(lat, 50) * 1000)
            out["inference_latency_ms_p99"] = float(np.percentile(lat, 99) * 1000)
        if self.tick_compute:
            tc = np.array(self.tick_compute)
            out["command_tick_ms_p50"] = float(np.percentile(tc, 50) * 1000)
            out["command_tick_ms_p99"] = float(np.percentile(tc, 99) * 1000)
        if self.period_errors:
            pe = np.array(self.period_errors)
            out["command_period_error_ms_p50"] = float(np.percentile(pe, 50) * 1000)
            out["command_period_error_ms_p99"] = float(np.percentile(pe, 99) * 1000)
        return out

    def stop(self) -> None:
        self._stop.set()

    def save_record(self, path: str) -> None:
        """The recent command stream and chunk events, for offline analysis (and the closed-loop tests)."""
        n = min(self._hist_n, self._hist_t.shape[0])
        order = (np.arange(n) + (self._hist_n - n)) % self._hist_t.shape[0]
        with self.lock:
            switches = np.array([(t, T) for t, _, T in self.core.switches]).reshape(-1, 2)
            jumps = np.array(list(self.core.clock_jump_times)).reshape(-1, 2)
            stalls = np.array(list(self.core.stall_times)).reshape(-1, 2)
            st = self.core.status()
        # the chunks sent since the contract's length was last changed (as many as chunk_log's last entries)
        same = list(itertools.takewhile(lambda a: a.shape == self.chunk_actions[-1].shape, reversed(self.chunk_actions))) \
            if self.chunk_actions else []
        np.savez(path, t=self._hist_t[order], position=self._hist_p[order], velocity=self._hist_v[order],
                 acceleration=self._hist_a[order], state=self._hist_s[order], plan_end=self._hist_e[order], switches=switches,
                 measured=self._hist_m[order], chunk_actions=np.array(same[::-1]) if same else np.zeros((0, 0, self.profile.dof)),
                 chunks=np.array(self.chunk_log).reshape(-1, 5), clock_jumps=jumps, stalls=stalls, lower=self.limits.lower, upper=self.limits.upper,
                 velocity_limit=self.limits.velocity, acceleration_limit=self.limits.acceleration,
                 status=json.dumps(st, default=str))


def trajectory_divisor(command_rate: float, trajectory_rate: float) -> int:
    """Command ticks per trajectory message: the nearest whole number (the node logs when it is not exact)."""
    return max(1, int(round(command_rate / max(trajectory_rate, 1e-3))))


def format_summary(s: dict) -> str:
    lines = [f"Closed-loop summary ({s['strategy']}): final state {s['state']}",
             f"  chunks: {s['chunks_received']} executed ({s.get('chunks_smoothed', 0)} low-passed to the acceleration limits), "
             f"{s['chunks_rejected']} rejected; watchdog stops {s['watchdog_stops']}",
             f"  measured delay (actions): {s['delay_actions']}; chunk contract {s.get('contract')}, {s.get('late_chunks', 0)} chunks later than max_delay"]
    if "command_rate_hz" in s:
        lines.append(f"  command stream: {s['command_rate_hz']:.1f} Hz of wall-clock time, period error p50 "
                     f"{s.get('command_period_error_ms_p50', 0):.2f} ms p99 {s.get('command_period_error_ms_p99', 0):.2f} ms; "
                     f"{s.get('command_stamps_per_s', 0):.1f} distinct stamps per second of the robot's clock")
        lines.append(f"  limits: {s['limit_hits']} clamped ticks {s['limit_hits_by_kind']}; peak velocity {s['peak_velocity_ratio'] * 100:.0f} % "
                     f"and acceleration {s['peak_acceleration_ratio'] * 100:.0f} % of the limits")
        lines.append(f"  chunk boundaries: largest step of the commanded stream at a switch (per 5 ms tick): position "
                     f"{s['boundary_step_position']:.2e}, velocity {s['boundary_step_velocity']:.4f} units/s, acceleration "
                     f"{100 * s['boundary_step_acceleration_ratio']:.1f} % of the limit; RMS jerk {s['rms_jerk']:.1f} units/s^3")
        lines.append(f"  hand-over: the new plan's velocity differs from the replaced plan's by at most "
                     f"{s['boundary_velocity_jump_max']:.3f} (mean {s['boundary_velocity_jump_mean']:.3f}) units/s during the blend")
    if "inference_latency_ms_p50" in s:
        lines.append(f"  inference latency: p50 {s['inference_latency_ms_p50']:.0f} ms, p99 {s['inference_latency_ms_p99']:.0f} ms")
    if s.get("rejections"):
        lines.append(f"  last rejections: {s['rejections']}")
    if s["chunks_received"] == 0 and s["chunks_rejected"] > 0:
        lines.append("  no chunk was executed: every chunk the policy sent was rejected (the robot held its pose)")
    return "\n".join(lines)


def main(args=None) -> int:
    executors: list[SingleThreadedExecutor] = []  # created in spin(): an executor needs the initialised context

    def spin(node: ExecutorNode) -> int:
        executor = SingleThreadedExecutor()
        executors.append(executor)
        executor.add_node(node)
        gc.freeze()  # start-up objects (modules, messages types, the profile) are never collected: shorter GC passes
        node.run(executor, until=node.finished.is_set)
        if node.finished.is_set():
            # let the stop finish (the loop keeps commanding) before summarising
            deadline = time.monotonic() + 3.0
            node.run(executor, until=lambda: time.monotonic() > deadline or node.core.stop is None or node.now() >= node.core.stop.end_time)
        return 0

    def on_exit(node: ExecutorNode) -> None:
        summary = node.summary()
        print(format_summary(summary), flush=True)
        if node.params.summary_file:
            Path(node.params.summary_file).write_text(json.dumps(summary, indent=2, default=float))
        if node.params.record_file:
            node.save_record(node.params.record_file)
        for executor in executors:
            executor.shutdown()

    return run_node(ExecutorNode, args, spin=spin, on_exit=on_exit)


if __name__ == "__main__":
    sys.exit(main())
