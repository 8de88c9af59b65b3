"""``sim_node``: the simulated dual-arm robot (MuJoCo), speaking ROS 2 like a real one.

The robot profile (parameter ``robot``, default ``sim_aloha``) decides every topic, joint name and
unit, so ``robot:=aloha_agilex_2`` makes the sim publish ``/puppet/joint_left`` etc. with the
AgileX driver's names and a gripper in metres. Physics: ``motus_core.sim.AlohaSim`` (2 ms steps).

Published (names for ``sim_aloha``)
  <camera topics of the profile>  sensor_msgs/Image rgb8, the three cameras at ``camera_rate`` (sim
                                  time), stamped with the sim time of the rendered state. QoS: keep
                                  last 5, volatile, best effort (sensor data; ``image_reliability``
                                  :=reliable for reliable subscribers).
  <camera>/camera_info            sensor_msgs/CameraInfo (pinhole intrinsics from the camera's fovy)
  <state topics of the profile>   sensor_msgs/JointState at ``joint_state_rate``: position, velocity,
                                  effort in the profile's names and units (reliable, depth 10)
  /clock                          rosgraph_msgs/Clock at ``clock_rate``
  ~/success                       std_msgs/Bool, at ``joint_state_rate``: the episode succeeded (see
                                  motus_core/sim/tasks.py for the definitions; latched per episode)
  ~/objects/<name>/pose           geometry_msgs/PoseStamped of each task object (frame ``world``)
  /diagnostics                    diagnostic_msgs/DiagnosticArray at ``status_rate`` (wall): task,
                                  episode, seed, stage, success, frames rendered / late / skipped,
                                  commands received / rejected / clamped, achieved real-time factor
Subscribed
  <joint_trajectory commands>     trajectory_msgs/JointTrajectory, joint_trajectory_controller
                                  semantics (motus_core/sim/trajectory.py)
  <joint_state commands>          sensor_msgs/JointState position commands (AgileX driver style)
  <leader topics>                 with ``follow_leader`` the followers track the leader arms
                                  (sensor_msgs/JointState positions), as a leader-follower rig does
Service
  ~/reset                         motus_msgs/srv/ResetSim: new episode (task, seed; seed < 0 = next)

Bad commands never stop the node. Each is rejected (or clamped) with a throttled warning and
counted in /diagnostics:

* unknown / duplicated joint names, wrong array lengths, NaN or inf, non-increasing or negative
  ``time_from_start``, fields given for some points only: rejected;
* a partial goal (not every joint of the topic): rejected unless ``allow_partial_goals``;
* positions outside the profile's limits: clamped (``out_of_limits:=reject`` rejects instead);
* a trajectory stamped in the past: its past points are skipped; entirely in the past: rejected;
* an empty trajectory cancels the motion (hold).

Timing: one thread owns MuJoCo and the EGL renderer (EGL contexts are per thread); the executor
thread only validates and queues commands. The sim thread steps physics to the next event, renders
before sleeping, sleeps until the wall time that corresponds to the sim time (``real_time_factor``)
and then publishes, so messages leave on schedule. When it falls behind (slow machine) a frame whose
wall deadline (its stamp + one period) passed is counted as *late*; with ``skip_late_frames`` it is
not rendered at all (*skipped*). Both count as dropped frames. Falling further than ``max_lag`` behind
lets sim time slip (the sim slows down rather than jump), counted as ``time_slips``.
"""
from __future__ import annotations

import motus_ros  # noqa: F401  (DDS environment before rclpy)
from motus_ros.node_main import run_node  # noqa: E402

import collections
import os
import threading
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from motus_core.robot_profile import CAMERA_ROLES, load_profile  # noqa: E402
from motus_core.sim.commands import OUT_OF_LIMITS, CommandInterpreter  # noqa: E402
from motus_core.sim.config import SimConfig  # noqa: E402
from motus_core.sim.render import CameraRenderer  # noqa: E402
from motus_core.sim.runner import SimCounters, SimOutputs, SimRunner  # noqa: E402
from motus_core.sim.simulator import AlohaSim, SimulationError  # noqa: E402
from motus_core.sim.tasks import TASKS  # noqa: E402
from motus_core.sim.trajectory import CommandRejected  # noqa: E402
from motus_msgs.srv import ResetSim  # noqa: E402
from motus_ros.conversions import camera_info_msg, canonical_to_joint_state, duration_to_sec, image_msg, time_msg, time_to_sec  # noqa: E402
from motus_ros.params import declare_parameters  # noqa: E402
from motus_core.rejections import RejectionLog, cause_of  # noqa: E402

LOG_EVERY = 2.0  # s: at most one warning per kind of rejection in this interval


class _Throttle:
    """Logs a kind of message at most once per ``period`` s, saying how many were suppressed."""

    def __init__(self, logger, period: float = LOG_EVERY):
        self.logger = logger
        self.period = period
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def warn(self, kind: str, text: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -1e9) < self.period:
                self._suppressed[kind] += 1
                return
            n = self._suppressed.pop(kind, 0)
            self._last[kind] = now
        self.logger.warning(text + (f" ({n} more like this since the last report)" if n else ""))


class SimNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = "sim", **kwargs):
        super().__init__(node_name, **kwargs)
        self.cfg = cfg = declare_parameters(self, SimConfig)
        self._check_config(cfg)
        self.profile = load_profile(cfg.robot)
        self.interp = CommandInterpreter(self.profile, allow_partial=cfg.allow_partial_goals, out_of_limits=cfg.out_of_limits)
        self.adapter = self.interp.adapter
        self.counters = SimCounters()
        self._throttle = _Throttle(self.get_logger())
        self.rejections = RejectionLog(lambda m: self.get_logger().warning(m), LOG_EVERY)  # per cause, counted
        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._running = True
        self._ready = threading.Event()
        self._thread_error: BaseException | None = None
        self._next_seed = cfg.seed + 1
        self._episode_info = {"task": cfg.task, "seed": cfg.seed, "episode": 0}

        roles = [r for r in CAMERA_ROLES if r in self.profile.cameras]
        self.cameras = {r: self.profile.camera(r) for r in roles}
        self.width = cfg.image_width or max(c.width for c in self.cameras.values())
        self.height = cfg.image_height or max(c.height for c in self.cameras.values())

        # -- publishers -------------------------------------------------------------------------
        image_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=5, durability=DurabilityPolicy.VOLATILE,
            reliability=ReliabilityPolicy.RELIABLE if cfg.image_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        )
        state_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._image_pubs = {r: self.create_publisher(Image, c.topic, image_qos) for r, c in self.cameras.items()}
        self._info_pubs = {r: self.create_publisher(CameraInfo, c.info_topic, image_qos) for r, c in self.cameras.items()}
        self._state_pubs = [(s, self.create_publisher(JointState, s.topic, state_qos)) for s in self.profile.state_sources]
        self._clock_pub = self.create_publisher(Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self._success_pub = self.create_publisher(Bool, "~/success", state_qos)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self._object_pubs: dict[str, object] = {}

        # -- subscriptions ----------------------------------------------------------------------
        cmd_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        subscribed = set()
        for target in self.profile.commands:
            mapping = {driver: canon for canon, driver in target.names.items()}
            if target.interface == "joint_trajectory":
                self.create_subscription(JointTrajectory, target.topic, lambda m, mp=mapping, t=target.topic: self._on_trajectory(m, mp, t), cmd_qos)
            else:
                self.create_subscription(JointState, target.topic, lambda m, mp=mapping, t=target.topic: self._on_positions(m, mp, t), cmd_qos)
            subscribed.add(target.topic)
        if cfg.follow_leader:
            for source in self.profile.leader_sources:
                if source.topic in subscribed:
                    continue  # the leader topic is also a command topic (AgileX): one subscription
                self.create_subscription(JointState, source.topic, lambda m, mp=dict(source.names), t=source.topic: self._on_positions(m, mp, t), cmd_qos)
                subscribed.add(source.topic)
        self.create_service(ResetSim, "~/reset", self._on_reset)

        # -- the sim thread (owns MuJoCo and the EGL context) -----------------------------------
        self._thread = threading.Thread(target=self._sim_thread, name="sim", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._thread_error is not None:
            raise RuntimeError(f"the simulator could not start: {self._thread_error}") from self._thread_error
        self.get_logger().info(
            f"simulated robot up: profile {self.profile.name}, task {cfg.task}, seed {cfg.seed}, {len(self.cameras)} cameras "
            f"{self.width}x{self.height} at {cfg.camera_rate:g} Hz, joint states at {cfg.joint_state_rate:g} Hz, "
            f"real-time factor {cfg.real_time_factor:g}; commands on {sorted(subscribed)}"
        )
        if cfg.disturbance.active:
            d = cfg.disturbance
            self.get_logger().info(
                f"disturbance on: the follower arms are pushed {d.amplitude:g} rad RMS off their setpoints "
                + (f"until {d.until:g} s into each episode" if d.until else "for the whole episode")
                + " (recovery demonstrations; not for evaluation)")
        if cfg.placement_margin > 0:
            self.get_logger().info(
                f"placement widened: objects are placed up to {100 * cfg.placement_margin:g} cm beyond the task's box "
                "(demonstrations; not for evaluation)")

    @staticmethod
    def _check_config(cfg: SimConfig) -> None:
        if cfg.task not in TASKS:
            raise ValueError(f"parameter task={cfg.task!r} must be one of {sorted(TASKS)}")
        for name in ("camera_rate", "joint_state_rate", "clock_rate", "real_time_factor", "physics_dt", "status_rate"):
            if not getattr(cfg, name) > 0:
                raise ValueError(f"parameter {name} must be > 0, got {getattr(cfg, name)}")
        if cfg.out_of_limits not in OUT_OF_LIMITS:
            raise ValueError(f"parameter out_of_limits must be one of {OUT_OF_LIMITS}")
        if cfg.image_reliability not in ("best_effort", "reliable"):
            raise ValueError("parameter image_reliability must be best_effort or reliable")
        if cfg.image_width < 0 or cfg.image_height < 0:
            raise ValueError("image size must be >= 0 (0: the profile's)")
        cfg.disturbance.validate()

    # -- command callbacks (executor thread): validate, count, queue ------------------------------
    def _reject(self, topic: str, exc: Exception) -> None:
        with self._lock:
            self.counters.commands_rejected += 1
            self.counters.rejections[type(exc).__name__] += 1
        self.rejections.reject(f"command on {topic}: {cause_of(exc)}", str(exc))

    def _clamped(self, topic: str, n: int) -> None:
        if n:
            with self._lock:
                self.counters.values_clamped += n
            self._throttle.warn(f"clamp:{topic}", f"clamped {n} position(s) on {topic} to the joint limits")

    def _on_trajectory(self, msg: JointTrajectory, mapping: dict, topic: str) -> None:
        with self._lock:
            self.counters.commands_received += 1
        try:
            points = [(duration_to_sec(p.time_from_start), p.positions, p.velocities, p.accelerations) for p in msg.points]
            stamp = time_to_sec(msg.header.stamp)
            goal = self.interp.trajectory(mapping, list(msg.joint_names), points, start=stamp)
        except CommandRejected as exc:
            self._reject(topic, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the node
            self._reject(topic, CommandRejected(f"malformed trajectory: {exc}"))
            return
        if goal is not None:
            self._clamped(topic, goal.clamped)
        self._post(("trajectory", goal, stamp == 0.0, topic))

    def _on_positions(self, msg: JointState, mapping: dict, topic: str) -> None:
        with self._lock:
            self.counters.commands_received += 1
        try:
            cmd = self.interp.positions(mapping, list(msg.name), msg.position)
        except CommandRejected as exc:
            self._reject(topic, exc)
            return
        except Exception as exc:  # noqa: BLE001
            self._reject(topic, CommandRejected(f"malformed joint command: {exc}"))
            return
        self._clamped(topic, cmd.clamped)
        self._post(("positions", cmd, False, topic))

    def _post(self, item) -> None:
        with self._lock:
            self._queue.append(item)

    def _on_reset(self, request: ResetSim.Request, response: ResetSim.Response) -> ResetSim.Response:
        task = request.task or self._episode_info["task"]
        if task not in TASKS:
            response.success = False
            response.message = f"unknown task {task!r}; tasks: {sorted(TASKS)}"
            response.task, response.seed = task, int(request.seed)
            return response
        with self._lock:
            seed = int(request.seed) if request.seed >= 0 else self._next_seed
            self._next_seed = seed + 1
        done = threading.Event()
        result: dict = {}
        self._post(("reset", (task, seed, done, result), False, "~/reset"))
        self._wake.set()
        if not done.wait(timeout=30.0):
            response.success = False
            response.message = "the simulator did not complete the reset within 30 s"
        else:
            response.success = result.get("ok", False)
            response.message = result.get("message", "")
        response.task, response.seed = task, seed
        return response

    def _speed_limit(self):
        """The profile's velocity limits in sim units x ``speed_limit_scale`` (None: off)."""
        if self.cfg.speed_limit_scale <= 0:
            return None
        v = np.asarray(self.profile.velocity_limit, float)
        return np.abs(self.adapter.rate_to_sim(v)) * self.cfg.speed_limit_scale

    # -- the sim thread --------------------------------------------------------------------------
    def _sim_thread(self) -> None:
        cfg = self.cfg
        try:
            # The arms start at the ViperX's own rest pose whatever the profile: another robot's home
            # (e.g. Piper's all-zero pose) means something else on this arm (straight out, arms colliding).
            sim = AlohaSim(cfg.task, seed=cfg.seed, timestep=cfg.physics_dt, render_mesh_cell=cfg.render_mesh_cell,
                           success_hold=cfg.success_hold, offscreen_size=(self.width, self.height),
                           speed_limit=self._speed_limit(), disturbance=cfg.disturbance,
                           placement_margin=cfg.placement_margin)
            renderer = CameraRenderer(sim.model, self.width, self.height, tuple(self.cameras))
        except BaseException as exc:  # noqa: BLE001 - reported to the constructor
            self._thread_error = exc
            self._ready.set()
            return
        self.sim = sim
        self._episode_info.update(episode=sim.episode)
        self._make_object_publishers(sim)
        self._ready.set()
        try:
            self._loop(sim, renderer)
        except BaseException as exc:  # noqa: BLE001 - a silent dead thread is worse: stop the node
            if not self._running or not self.context.ok():
                return  # shutting down (Ctrl-C): publishers may already be gone
            self._thread_error = exc
            self.get_logger().error(f"the simulator thread stopped: {exc!r}; shutting the node down")
            rclpy.try_shutdown(context=self.context)
        finally:
            runner = getattr(self, "_runner", None)  # a reset to another task replaced the renderer
            (runner.renderer if runner is not None else renderer).close()

    def _make_object_publishers(self, sim: AlohaSim) -> None:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for obj in sim.task.objects:
            if obj.name not in self._object_pubs:
                self._object_pubs[obj.name] = self.create_publisher(PoseStamped, f"~/objects/{obj.name}/pose", qos)

    def _apply_queue(self, sim: AlohaSim, renderer: CameraRenderer) -> CameraRenderer:
        while True:
            with self._lock:
                if not self._queue:
                    return renderer
                kind, payload, start_now, topic = self._queue.popleft()
            try:
                if kind == "positions":
                    sim.command_positions(payload.indices, payload.values)
                elif kind == "trajectory":
                    if payload is None:
                        sim.cancel_motion()
                    else:
                        skipped = sim.command_trajectory(payload, start_now=start_now)
                        if skipped:
                            with self._lock:
                                self.counters.points_skipped += skipped
                            self._throttle.warn(f"past:{topic}", f"skipped {skipped} trajectory point(s) on {topic} that were already in the past")
                elif kind == "reset":
                    renderer = self._reset(sim, renderer, *payload)
            except CommandRejected as exc:
                self._reject(topic, exc)

    def _reset(self, sim: AlohaSim, renderer: CameraRenderer, task: str, seed: int, done: threading.Event, result: dict) -> CameraRenderer:
        try:
            generation = sim.model_generation
            sim.reset(seed=seed, task=task)
            if sim.model_generation != generation:  # new task, new model: new renderer, object topics
                renderer.close()
                renderer = CameraRenderer(sim.model, self.width, self.height, tuple(self.cameras))
                self._make_object_publishers(sim)
            self._episode_info.update(task=task, seed=seed, episode=sim.episode)
            result.update(ok=True, message=f"episode {sim.episode}: {task} with seed {seed}")
            self.get_logger().info(f"reset: episode {sim.episode}, task {task}, seed {seed}")
        except Exception as exc:  # noqa: BLE001
            result.update(ok=False, message=f"reset failed: {exc}")
        finally:
            done.set()
        return renderer

    def _loop(self, sim: AlohaSim, renderer: CameraRenderer) -> None:
        """The scheduler and pacing are ``motus_core.sim.runner.SimRunner``; this node publishes its events."""
        def physics_error(exc: Exception) -> None:
            self.get_logger().error(f"{exc}; resetting the episode (seed {sim.seed})")

        outputs = SimOutputs(
            clock=lambda t: self._clock_pub.publish(Clock(clock=time_msg(t))),
            state=lambda t: self._publish_state(sim, time_msg(t)),
            images=lambda images, t: self._publish_images(images, runner.renderer, time_msg(t)),
            status=lambda achieved: self._publish_diagnostics(sim, achieved),
            physics_error=physics_error,
        )

        def poll() -> None:
            runner.renderer = self._apply_queue(sim, runner.renderer)

        runner = SimRunner(sim, renderer, tuple(self.cameras), self.cfg, outputs, poll=poll,
                           running=lambda: self._running and self.context.ok(), wake=self._wake, counters=self.counters)
        self._runner = runner
        runner.run()

    def _publish_state(self, sim: AlohaSim, stamp) -> None:
        names = self.profile.joint_names
        pos = self.adapter.from_sim(sim.positions())
        vel = self.adapter.rate_from_sim(sim.velocities())
        eff = sim.efforts()
        for source, pub in self._state_pubs:
            pub.publish(canonical_to_joint_state(source, names, pos, stamp, vel, eff))
        self._success_pub.publish(Bool(data=bool(sim.success)))
        for name, pose in sim.object_poses().items():
            pub = self._object_pubs.get(name)
            if pub is None:
                continue
            msg = PoseStamped()
            msg.header.stamp = stamp
            msg.header.frame_id = "world"
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in pose.position)
            q = pose.quaternion
            msg.pose.orientation.w, msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z = (float(v) for v in q)
            pub.publish(msg)

    def _publish_images(self, images: dict, renderer: CameraRenderer, stamp) -> None:
        for role, img in images.items():
            cam = self.cameras[role]
            self._image_pubs[role].publish(image_msg(img, stamp, cam.frame_id))
            k = renderer.intrinsics(role)
            self._info_pubs[role].publish(camera_info_msg(k.width, k.height, k.fx, k.fy, k.cx, k.cy, stamp, cam.frame_id))

    def _publish_diagnostics(self, sim: AlohaSim, achieved_rtf: float) -> None:
        c = self.counters
        with self._lock:
            values = {
                "task": sim.task.name, "episode": sim.episode, "seed": sim.seed, "episode_time": f"{sim.episode_time:.3f}",
                "sim_time": f"{sim.time:.3f}", "stage": sim.tracker.stage, "max_stage": sim.tracker.max_stage,
                "max_lift_cm": f"{100 * sim.tracker.max_lift:.1f}",
                "success": sim.success, "frames_rendered": c.frames_rendered, "frames_late": c.frames_late,
                "frames_skipped": c.frames_skipped, "frames_dropped": c.frames_dropped, "time_slips": c.time_slips,
                "real_time_factor": f"{achieved_rtf:.3f}", "commands_received": c.commands_received,
                "commands_rejected": c.commands_rejected, "values_clamped": c.values_clamped, "points_skipped": c.points_skipped,
                "physics_errors": c.physics_errors, "speed_limited_steps": sim.speed_limited_steps,
            }
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if c.frames_dropped == 0 and c.physics_errors == 0 else DiagnosticStatus.WARN,
            name=f"{self.get_fully_qualified_name()}: simulator", hardware_id=f"mujoco:{self.profile.name}",
            message=f"episode {sim.episode} ({sim.task.name}, seed {sim.seed}), stage {sim.tracker.stage}, "
                    f"{'success' if sim.success else 'running'}; {c.frames_dropped} frames skipped, {c.frames_late} published late",
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        msg = DiagnosticArray()
        msg.header.stamp = time_msg(sim.time)
        msg.status = [status]
        self._diag_pub.publish(msg)

    def shutdown(self) -> None:
        """Stop the sim thread (it closes its renderer) and wait for it."""
        self._running = False
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)


def main(args=None) -> int:
    def spin(node: SimNode) -> int:
        rclpy.spin(node)
        return 1 if node._thread_error is not None else 0

    return run_node(SimNode, args, spin=spin, on_exit=SimNode.shutdown)


if __name__ == "__main__":
    import sys

    sys.exit(main())
