"""``demonstrator``: a scripted teleoperator that performs episodes on the simulated robot.

For each of ``episodes`` episodes it resets the sim (``/<sim_node>/reset`` with seed ``seed + i``),
then runs ``motus_core.sim.demonstrator.ScriptedDemonstrator`` closed loop: every 1/``control_rate``
s of sim time it reads the follower arms' joint states (the profile's state topics) and the object
poses (``/<sim_node>/objects/<name>/pose``), computes the leader arms' joint targets and publishes
them. With ``output:=leader`` (default) they go to the profile's *leader* topics, exactly what a
leader-follower teleop rig publishes; the sim (``follow_leader``) makes the followers track them and
a recorder records follower states + leader commands. ``output:=command`` sends them to the
profile's JointState command topics instead, as a policy's executor would.

An episode ends when the script is over and the task succeeded (``/<sim_node>/success``), or
``settle`` s after the script ends. At the end the node prints a summary (episodes, successes,
camera and joint-state rates measured by subscribing, in sim time and in wall time, and the dropped
frames the sim reports on /diagnostics: late ones were delivered, skipped ones were not) and exits 0;
it exits 1 if the simulator never answered or an episode could not be recorded. With ``recorder``
set, a recorder that dies (noticed through DDS liveliness on its status within ``recorder_lease``)
or does not answer within ``recorder_timeout`` costs the recording of that episode, said in the log
and the summary; the remaining episodes still run (and are recorded again if the recorder returns).
Control ticks are driven by the joint-state messages (sim time from their stamps), so the
demonstrator follows the simulator at any ``real_time_factor``.
"""
from __future__ import annotations

import motus_ros  # noqa: F401  (DDS environment before rclpy)
from motus_ros.node_main import run_node  # noqa: E402

import os
import time
from dataclasses import dataclass, field

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.qos import LivelinessPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks  # noqa: E402
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

from motus_core.robot_profile import JointSource, load_profile  # noqa: E402
from motus_core.sim.commands import ProfileAdapter  # noqa: E402
from motus_core.sim.demonstrator import DemoObservation, ScriptedDemonstrator  # noqa: E402
from motus_core.sim.kinematics import Kinematics  # noqa: E402
from motus_core.sim.model import build_model  # noqa: E402
from motus_core.sim.simulator import ObjectPose  # noqa: E402
from motus_core.sim.tasks import TASKS  # noqa: E402
from motus_msgs.msg import RecorderStatus  # noqa: E402
from motus_msgs.srv import ResetSim, StartEpisode, StopEpisode  # noqa: E402
from motus_ros.conversions import (  # noqa: E402
    ConversionError,
    JointVectorAssembler,
    canonical_to_joint_state,
    header_stamp_from_cdr,
    time_to_sec,
)
from motus_ros.params import declare_parameters  # noqa: E402


@dataclass
class DemonstratorConfig:
    robot: str = field(default="sim_aloha", metadata={"help": "robot profile (topics, joint names, units)"})
    task: str = field(default="transfer_cube", metadata={"help": "task to demonstrate: transfer_cube or insertion"})
    episodes: int = field(default=3, metadata={"help": "number of episodes to perform"})
    seed: int = field(default=0, metadata={"help": "seed of the first episode (episode i uses seed + i)"})
    control_rate: float = field(default=30.0, metadata={"help": "leader commands per second of sim time"})
    output: str = field(default="leader", metadata={"help": "leader: publish on the profile's leader topics; command: on its JointState command topics"})
    sim_node: str = field(default="sim", metadata={"help": "name of the simulator node (its reset service, objects and success topics)"})
    settle: float = field(default=1.0, metadata={"help": "sim seconds to wait for success after the script ends"})
    episode_timeout: float = field(default=180.0, metadata={"help": "wall seconds after which an episode is abandoned"})
    startup_timeout: float = field(default=60.0, metadata={"help": "wall seconds to wait for the simulator"})
    recorder: str = field(default="", metadata={"help": "name of a recorder node to drive: start_episode before and stop_episode (with the outcome) after each episode; '' = none"})
    recorder_timeout: float = field(default=20.0, metadata={"help": "wall seconds to wait for the recorder's answer to start/stop_episode"})
    recorder_lease: float = field(default=2.0, metadata={"help": "s, liveliness lease requested on the recorder's status (>= its liveliness_lease): a dead recorder is noticed within it"})


@dataclass
class EpisodeReport:
    index: int
    seed: int
    success: bool
    sim_duration: float
    wall_duration: float
    success_time: float = -1.0
    recorded: bool | None = None  # None: no recorder driven; False: the recorder failed or was gone


class _RateMeter:
    """Message counts with first/last sim stamps and wall arrival times."""

    def __init__(self):
        self.n = 0
        self.first_stamp = self.last_stamp = 0.0
        self.first_wall = self.last_wall = 0.0

    def add(self, stamp: float) -> None:
        now = time.monotonic()
        if self.n == 0:
            self.first_stamp, self.first_wall = stamp, now
        self.last_stamp, self.last_wall = stamp, now
        self.n += 1

    def rates(self) -> tuple[float, float]:
        """(per second of sim time, per wall second); 0 when fewer than 2 messages."""
        if self.n < 2:
            return 0.0, 0.0
        ds = self.last_stamp - self.first_stamp
        dw = self.last_wall - self.first_wall
        return ((self.n - 1) / ds if ds > 0 else 0.0), ((self.n - 1) / dw if dw > 0 else 0.0)


class DemonstratorNode(Node):
    def __init__(self, node_name: str = "demonstrator", **kwargs):
        super().__init__(node_name, **kwargs)
        self.cfg = cfg = declare_parameters(self, DemonstratorConfig)
        if cfg.task not in TASKS:
            raise ValueError(f"parameter task={cfg.task!r} must be one of {sorted(TASKS)}")
        if cfg.output not in ("leader", "command"):
            raise ValueError("parameter output must be leader or command")
        if cfg.episodes < 0 or cfg.control_rate <= 0:
            raise ValueError("episodes must be >= 0 and control_rate > 0")
        self.profile = load_profile(cfg.robot)
        self.adapter = ProfileAdapter(self.profile)
        self.task = TASKS[cfg.task]
        self.demo = ScriptedDemonstrator(cfg.task, kin=Kinematics(build_model(cfg.task, render_mesh_cell=0.0)))
        self.assembler = JointVectorAssembler(self.profile)
        self.objects: dict[str, tuple[float, ObjectPose]] = {}
        self.success = False
        self.sim_diag: dict[str, str] = {}
        self.reports: list[EpisodeReport] = []
        self.done = False
        self.exit_code = 0

        self.out_sources = self._output_sources()
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        best_effort = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)  # deep: a busy tick must not cost messages
        self.pubs = [(s, self.create_publisher(JointState, s.topic, reliable)) for s in self.out_sources]
        self.state_meter = _RateMeter()
        self.camera_meters = {role: _RateMeter() for role in self.profile.cameras}
        # Raw (serialized) subscriptions: rate meters read the stamp straight from the CDR bytes, and
        # joint states / object poses are deserialized only when a control tick needs them. The
        # IK runs in this process too; deserializing 100 Hz states and 3 x 30 Hz images for nothing
        # would steal the CPU that keeps the measured rates honest on a small machine.
        self._raw_states: dict[str, bytes] = {}
        self._raw_objects: dict[str, bytes] = {}
        for source in self.profile.state_sources:
            self.create_subscription(JointState, source.topic, lambda m, t=source.topic: self._on_state(t, m), best_effort, raw=True)
        for role, cam in self.profile.cameras.items():
            self.create_subscription(Image, cam.topic, lambda m, r=role: self.camera_meters[r].add(header_stamp_from_cdr(m)), best_effort, raw=True)
        for obj in self.task.objects:
            self.create_subscription(PoseStamped, f"/{cfg.sim_node}/objects/{obj.name}/pose",
                                     lambda m, n=obj.name: self._raw_objects.__setitem__(n, m), best_effort, raw=True)
        self.create_subscription(Bool, f"/{cfg.sim_node}/success", self._on_success, best_effort)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable)
        self.reset_client = self.create_client(ResetSim, f"/{cfg.sim_node}/reset")
        self.start_client = self.stop_client = None
        if cfg.recorder:
            self.start_client = self.create_client(StartEpisode, f"/{cfg.recorder}/start_episode")
            self.stop_client = self.create_client(StopEpisode, f"/{cfg.recorder}/stop_episode")
            # The recorder's status carries DDS liveliness: its death (even SIGKILL) is reported within the
            # lease, so a pending service call fails at once instead of waiting for an answer that never comes.
            self.create_subscription(RecorderStatus, f"/{cfg.recorder}/status", lambda _m: None, QoSProfile(
                depth=1, liveliness=LivelinessPolicy.AUTOMATIC, liveliness_lease_duration=Duration(seconds=cfg.recorder_lease)),
                event_callbacks=SubscriptionEventCallbacks(liveliness=self._on_recorder_liveliness))
        self.recorder_alive: bool | None = None  # None until the recorder's status was seen
        self.recorder_failures: list[str] = []
        self._recording_this_episode = False
        self._pending = None

        self.latest_stamp = -1.0  # newest complete joint state (s, sim time); -1: none yet
        self.episode = -1
        self.phase = "startup"  # startup -> resetting -> waiting -> running -> (next) ... -> finished
        self.phase_since = time.monotonic()
        self.start_stamp = 0.0
        self.fresh_after = 0.0
        self.next_tick = 0.0
        self.start_wall = 0.0
        self._reset_future = None
        self.create_timer(0.05, self._supervise, clock=rclpy.clock.Clock(clock_type=rclpy.clock.ClockType.STEADY_TIME))
        self.get_logger().info(
            f"scripted demonstrator: {cfg.episodes} episode(s) of {cfg.task} from seed {cfg.seed}, commands at "
            f"{cfg.control_rate:g} Hz on {[s.topic for s in self.out_sources]}"
        )

    def _output_sources(self) -> list[JointSource]:
        if self.cfg.output == "leader":
            if not self.profile.leader_sources:
                raise ValueError(f"profile {self.profile.name} has no leader topics; use output:=command")
            return list(self.profile.leader_sources)
        out = [JointSource(t.topic, "sensor_msgs/msg/JointState", {driver: canon for canon, driver in t.names.items()})
               for t in self.profile.commands if t.interface == "joint_state"]
        if not out:
            raise ValueError(f"profile {self.profile.name} has no JointState command topics")
        return out

    # -- inputs ------------------------------------------------------------------------------------
    def _decode_objects(self) -> None:
        for name, raw in self._raw_objects.items():
            msg = deserialize_message(raw, PoseStamped)
            p, q = msg.pose.position, msg.pose.orientation
            self.objects[name] = (time_to_sec(msg.header.stamp), ObjectPose(np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z])))

    def _on_success(self, msg: Bool) -> None:
        self.success = bool(msg.data)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name.startswith(f"/{self.cfg.sim_node}:"):
                self.sim_diag = {kv.key: kv.value for kv in st.values}

    def _on_recorder_liveliness(self, info) -> None:
        alive = info.alive_count > 0
        if alive != self.recorder_alive:
            if alive:  # (rclpy: one severity per call site)
                self.get_logger().info(f"recorder /{self.cfg.recorder} is alive")
            elif self.recorder_alive is not None:
                self.get_logger().error(f"recorder /{self.cfg.recorder} is gone (no liveliness within the lease)")
            self.recorder_alive = alive

    def _recorder_failed(self, why: str) -> None:
        """The recorder could not record this episode: say so, and go on with the next episode."""
        ep = self.episode + 1
        self.recorder_failures.append(f"episode {ep}: {why}")
        self.exit_code = 1  # data were lost: the run is not a success, but the remaining episodes still run
        self.get_logger().error(f"episode {ep} was not recorded: {why}; continuing with the next episode")
        self._recording_this_episode = False

    def _on_state(self, topic: str, raw: bytes) -> None:
        self._raw_states[topic] = raw
        if len(self._raw_states) < len(self.profile.state_sources):
            return
        stamp = min(header_stamp_from_cdr(r) for r in self._raw_states.values())
        self.latest_stamp = stamp
        self.state_meter.add(header_stamp_from_cdr(raw))
        if self.phase not in ("startup", "waiting", "recording", "running"):
            return
        if self.phase == "running" and stamp < self.next_tick - 1e-6:
            return  # not a control tick: nothing to decode
        try:
            for t, r in self._raw_states.items():
                self.assembler.update(t, deserialize_message(r, JointState))
        except ConversionError as exc:
            self.get_logger().warning(f"ignoring joint state: {exc}", throttle_duration_sec=2.0)
            return
        self._decode_objects()
        if self.phase == "waiting":
            fresh = stamp >= self.fresh_after and all(self.objects.get(o.name, (-1.0,))[0] >= self.fresh_after for o in self.task.objects)
            if fresh and self.start_client is not None and self.recorder_alive is not False and self.start_client.service_is_ready():
                self._pending = self.start_client.call_async(StartEpisode.Request(task=self.cfg.task, instruction=self.task.instruction))
                self._set_phase("recording")
            elif fresh:
                if self.start_client is not None:
                    self._recorder_failed(f"recorder /{self.cfg.recorder} is not available")
                self._begin(stamp)
        if self.phase == "recording" and self._pending.done():
            res = self._pending.result()
            if res is None or not res.success:
                self._recorder_failed(f"the recorder did not start it: {getattr(res, 'message', 'no response')}")
            else:
                self._recording_this_episode = True
            self._begin(stamp)
        if self.phase == "running" and stamp >= self.next_tick - 1e-6:
            self.next_tick += 1.0 / self.cfg.control_rate
            if self.next_tick < stamp:  # fell behind (slow machine): do not try to catch up
                self.next_tick = stamp + 1.0 / self.cfg.control_rate
            self._control(stamp)

    def _begin(self, stamp: float) -> None:
        self.start_stamp = stamp
        self.next_tick = stamp
        self.success = False
        self.demo.reset(self._observation(stamp))
        self._set_phase("running")

    def _abort(self) -> None:
        self.exit_code = 1
        self._set_phase("finished")
        self.done = True

    def _observation(self, stamp: float) -> DemoObservation:
        q = self.adapter.to_sim(self.assembler.position)
        return DemoObservation(stamp - self.start_stamp, q, {n: pose for n, (_, pose) in self.objects.items()})

    def _control(self, stamp: float) -> None:
        obs = self._observation(stamp)
        cmd = self.adapter.from_sim(self.demo.act(obs))
        for source, pub in self.pubs:
            pub.publish(canonical_to_joint_state(source, self.profile.joint_names, cmd, stamp))
        t = obs.t
        end = self.demo.duration + self.cfg.settle
        if (self.success and t > self.demo.duration) or t >= end:
            self._finish_episode(t)

    # -- episodes ----------------------------------------------------------------------------------
    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.phase_since = time.monotonic()

    def _finish_episode(self, t: float) -> None:
        seed = self.cfg.seed + self.episode
        rep = EpisodeReport(self.episode + 1, seed, self.success, t, time.monotonic() - self.start_wall,
                            recorded=None if self.stop_client is None else self._recording_this_episode)
        self.reports.append(rep)
        self.get_logger().info(
            f"episode {rep.index}/{self.cfg.episodes} ({self.cfg.task}, seed {seed}): "
            f"{'SUCCESS' if rep.success else 'failure'} after {rep.sim_duration:.1f} s sim time ({rep.wall_duration:.1f} s wall)"
        )
        if self.stop_client is not None and self._recording_this_episode:
            outcome = StopEpisode.Request.OUTCOME_SUCCESS if rep.success else StopEpisode.Request.OUTCOME_FAILURE
            self._pending = self.stop_client.call_async(StopEpisode.Request(outcome=outcome, notes=f"scripted demonstrator, seed {seed}"))
            self._set_phase("stopping")
        else:
            self._set_phase("next")

    def _supervise(self) -> None:
        cfg = self.cfg
        waited = time.monotonic() - self.phase_since
        if self.phase == "startup":
            recorder_ready = self.start_client is None or (self.start_client.service_is_ready() and self.stop_client.service_is_ready())
            if self.reset_client.service_is_ready() and self.latest_stamp >= 0 and recorder_ready:
                self._set_phase("next")
            elif waited > cfg.startup_timeout:
                self.get_logger().error(f"the simulator did not come up within {cfg.startup_timeout:.0f} s (no /{cfg.sim_node}/reset or joint states)")
                self._abort()
        elif self.phase == "next":
            self.episode += 1
            if self.episode >= cfg.episodes:
                self._summary()
                self._set_phase("finished")
                self.done = True
                return
            req = ResetSim.Request(task=cfg.task, seed=cfg.seed + self.episode)
            self.fresh_after = self.latest_stamp + 0.05
            self._reset_future = self.reset_client.call_async(req)
            self.start_wall = time.monotonic()
            self._set_phase("resetting")
        elif self.phase == "resetting":
            if self._reset_future.done():
                res = self._reset_future.result()
                if res is None or not res.success:
                    self.get_logger().error(f"reset failed: {getattr(res, 'message', 'no response')}")
                    self._abort()
                    return
                # the first state and object poses stamped after this moment show the new episode
                self.fresh_after = max(self.fresh_after, self.latest_stamp + 0.02)
                self._set_phase("waiting")
            elif waited > 30.0:
                self.get_logger().error("the simulator did not answer the reset within 30 s")
                self._abort()
        elif self.phase == "recording" and not self._pending.done() and (self.recorder_alive is False or waited > cfg.recorder_timeout):
            self._pending.cancel()
            why = "the recorder is gone" if self.recorder_alive is False else f"no answer to start_episode within {cfg.recorder_timeout:g} s"
            self._recorder_failed(why)
            self._begin(self.latest_stamp)
        elif self.phase == "stopping":
            rep = self.reports[-1]
            if self._pending.done():
                res = self._pending.result()
                if res is None or not res.success:
                    rep.recorded = False
                    self._recorder_failed(f"the recorder did not stop it: {getattr(res, 'message', 'no response')}")
                self._set_phase("next")
            elif self.recorder_alive is False or waited > cfg.recorder_timeout:
                self._pending.cancel()
                rep.recorded = False
                self._recorder_failed("the recorder died during the episode (its bag is unfinished: motus-convert --repair finishes it)"
                                      if self.recorder_alive is False else f"no answer to stop_episode within {cfg.recorder_timeout:g} s")
                self._set_phase("next")
        elif self.phase in ("waiting", "recording", "running") and time.monotonic() - self.start_wall > cfg.episode_timeout:
            self.get_logger().error(f"episode {self.episode + 1} took more than {cfg.episode_timeout:.0f} s of wall time; abandoned")
            self.reports.append(EpisodeReport(self.episode + 1, cfg.seed + self.episode, False, -1.0, cfg.episode_timeout))
            self._set_phase("next")

    def _summary(self) -> None:
        n = len(self.reports)
        ok = sum(r.success for r in self.reports)
        lines = [f"Scripted demonstrations on the simulated robot ({self.profile.name}, task {self.cfg.task}):"]
        lines.append(f"  episodes   {n}, successes {ok} ({100.0 * ok / max(n, 1):.0f} %)")
        for r in self.reports:
            rec = "" if r.recorded is None else (", recorded" if r.recorded else ", NOT RECORDED")
            lines.append(f"    #{r.index} seed {r.seed}: {'success' if r.success else 'failure'}, {r.sim_duration:.1f} s sim / {r.wall_duration:.1f} s wall{rec}")
        if self.recorder_failures:
            lines.append(f"  recorder   {len(self.recorder_failures)} episode(s) not recorded: " + "; ".join(self.recorder_failures))
        js_sim, js_wall = self.state_meter.rates()
        lines.append(f"  joint states  {js_sim:6.1f} Hz sim time, {js_wall:6.1f} Hz wall time")
        for role, meter in self.camera_meters.items():
            c_sim, c_wall = meter.rates()
            lines.append(f"  camera {role:<12} {c_sim:6.1f} Hz sim time, {c_wall:6.1f} Hz wall time ({meter.n} frames received)")
        d = self.sim_diag
        if d:
            lines.append(
                f"  simulator  camera frames: {d.get('frames_rendered', '?')} rendered and published, {d.get('frames_late', '?')} of them "
                f"behind their wall-clock schedule (delivered late, not lost), {d.get('frames_skipped', '?')} skipped (never rendered); "
                f"real-time factor {d.get('real_time_factor', '?')}; "
                f"commands received {d.get('commands_received', '?')}, rejected {d.get('commands_rejected', '?')}"
            )
        else:
            lines.append("  simulator  no diagnostics received")
        print("\n".join(lines), flush=True)


def main(args=None) -> int:
    def spin(node: DemonstratorNode) -> int:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
        return node.exit_code

    # Ctrl-C ends it like every node, exit code 0 (ros2 launch reports any other code as "process has died";
    # motus-launch reports the interruption itself with 130)
    return run_node(DemonstratorNode, args, spin=spin)


if __name__ == "__main__":
    import sys

    sys.exit(main())
