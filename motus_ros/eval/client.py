"""The evaluation client: one rclpy node that resets the simulator, runs the policy through the
executor's RunTask action and watches what happens (success, executor counters, policy timing,
the high camera for failure videos, the liveliness of the other nodes).

It spins in a background thread on its own context; the public methods block the calling thread
with wall-clock timeouts, so a graph that does not answer becomes an error, never a hang.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import motus_ros  # noqa: F401  (DDS environment before rclpy)
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.action import ActionClient
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import Bool

from motus_core.images import image_msg_to_rgb
from motus_msgs.action import RunTask
from motus_msgs.msg import ExecutorStatus, PolicyStatus
from motus_msgs.srv import ResetSim
from motus_ros.conversions import duration_msg, time_to_sec

from .report import EpisodeResult

OUTCOMES = {RunTask.Result.OUTCOME_TIMEOUT: "timeout", RunTask.Result.OUTCOME_SUCCESS: "success",
            RunTask.Result.OUTCOME_CANCELED: "canceled", RunTask.Result.OUTCOME_ESTOP: "estop", RunTask.Result.OUTCOME_ERROR: "error"}


@dataclass
class _Counters:
    chunks_received: int = 0
    chunks_rejected: int = 0
    limit_hits: int = 0
    watchdog_stops: int = 0

    @classmethod
    def of(cls, msg: ExecutorStatus | None) -> "_Counters":
        if msg is None:
            return cls()
        return cls(int(msg.chunks_received), int(msg.chunks_rejected), int(msg.limit_hits), int(getattr(msg, "watchdog_stops", 0)))


class EvalClient:
    def __init__(self, sim_node: str = "sim", executor_node: str = "executor", policy_node: str = "policy",
                 camera_topic: str | None = None):
        self._ctx = Context()
        rclpy.init(context=self._ctx)
        self.node = rclpy.create_node("motus_eval", context=self._ctx,
                                      parameter_overrides=[Parameter("use_sim_time", Parameter.Type.BOOL, True)])
        n = self.node
        self._lock = threading.Lock()
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.reset_client = n.create_client(ResetSim, f"/{sim_node}/reset")
        self.run_client = ActionClient(n, RunTask, f"/{executor_node}/run_task")
        self.lifecycle_client = n.create_client(ChangeState, f"/{policy_node}/change_state")
        self.executor_status: ExecutorStatus | None = None
        self.executor_status_wall = 0.0
        self.policy_status: PolicyStatus | None = None
        self.policy_status_wall = 0.0
        self.clock_wall = 0.0
        self.sim_diag: dict[str, str] = {}
        self._success_at: float | None = None  # sim time of the first success report since arm_success()
        self._chunk_ms: list[float] = []
        self._last_chunk_count = -1
        self._frames: deque | None = None
        n.create_subscription(ExecutorStatus, f"/{executor_node}/status", self._on_executor_status, reliable)
        n.create_subscription(PolicyStatus, f"/{policy_node}/status", self._on_policy_status, best_effort)
        n.create_subscription(Bool, f"/{sim_node}/success", self._on_success, best_effort)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable)
        n.create_subscription(Clock, "/clock", self._on_clock, best_effort)
        self._sim_prefix = f"/{sim_node}:"
        if camera_topic:
            self._frames = deque(maxlen=30 * 600)  # at most 10 min of 30 Hz frames per episode
            n.create_subscription(Image, camera_topic, self._on_image, QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
        self._recording = False
        self._ex = SingleThreadedExecutor(context=self._ctx)
        self._ex.add_node(n)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="motus-eval-ros", daemon=True)
        self._thread.start()

    # -- callbacks (spin thread) --------------------------------------------------------------------
    def _spin(self) -> None:
        while not self._stop.is_set() and self._ctx.ok():
            try:
                self._ex.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                if self._stop.is_set() or not self._ctx.ok():
                    break
                raise

    def _on_executor_status(self, msg: ExecutorStatus) -> None:
        with self._lock:
            self.executor_status, self.executor_status_wall = msg, time.monotonic()

    def _on_policy_status(self, msg: PolicyStatus) -> None:
        with self._lock:
            self.policy_status, self.policy_status_wall = msg, time.monotonic()
            if msg.chunks_published != self._last_chunk_count:
                if self._last_chunk_count >= 0 and self._recording:
                    total = [t.seconds for t in msg.last_timing if t.name == "total"]
                    if total:
                        self._chunk_ms.append(1000.0 * float(total[0]))
                self._last_chunk_count = int(msg.chunks_published)

    def _on_success(self, msg: Bool) -> None:
        if msg.data:
            with self._lock:
                if self._recording and self._success_at is None:
                    self._success_at = self.now()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name.startswith(self._sim_prefix):
                with self._lock:
                    self.sim_diag = {kv.key: kv.value for kv in st.values}

    def _on_clock(self, msg: Clock) -> None:
        self.clock_wall = time.monotonic()

    def _on_image(self, msg: Image) -> None:
        if self._recording and self._frames is not None:
            self._frames.append(msg)

    # -- helpers --------------------------------------------------------------------------------------
    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _wait(self, cond: Callable[[], bool], timeout: float, period: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(period)
        return cond()

    def _wait_future(self, fut, timeout: float):
        return fut.result() if self._wait(fut.done, timeout) else None

    def wait_for_graph(self, timeout: float, need_policy_active: bool = True) -> str | None:
        """None when the sim, executor and policy answer; otherwise what is missing (a sentence)."""
        t0 = time.monotonic()
        checks = [
            ("the simulator's reset service /sim/reset", lambda: self.reset_client.service_is_ready()),
            ("the simulator's /clock", lambda: self.clock_wall > t0 - 1.0),
            ("the executor's RunTask action server", lambda: self.run_client.server_is_ready()),
            ("the executor's status", lambda: self.executor_status_wall > 0.0),
        ]
        if need_policy_active:
            checks.append(("an active policy node (/policy/status)", lambda: self.policy_status is not None
                           and self.policy_status.state in (PolicyStatus.STATE_ACTIVE, PolicyStatus.STATE_WAITING)))
        for what, cond in checks:
            if not self._wait(cond, max(0.0, timeout - (time.monotonic() - t0))):
                return f"{what} did not come up within {timeout:.0f} s"
        return None

    def wait_fresh_executor(self, timeout: float) -> str | None:
        """After an executor restart: its action server and a status from the new process."""
        t0 = time.monotonic()
        if not self._wait(lambda: self.run_client.server_is_ready() and self.executor_status_wall > t0, timeout):
            return f"the executor did not come back within {timeout:.0f} s"
        # the executor refuses to move without a fresh joint state (state_timeout): wait until it has one
        # (state_age < 0 means none yet) instead of failing the episode's RunTask goal
        if not self._wait(lambda: self.executor_status is not None and 0.0 <= self.executor_status.state_age < 0.5, timeout):
            return f"the restarted executor received no joint state within {timeout:.0f} s"
        return None

    def reset(self, task: str, seed: int, timeout: float = 60.0) -> str | None:
        """Reset the sim to ``task``/``seed``; None on success, else why not."""
        if not self.reset_client.wait_for_service(timeout_sec=min(timeout, 10.0)):
            return "the simulator's reset service is not available"
        res = self._wait_future(self.reset_client.call_async(ResetSim.Request(task=task, seed=int(seed))), timeout)
        if res is None:
            return f"the simulator did not answer the reset within {timeout:.0f} s"
        if not res.success:
            return f"the simulator refused the reset: {res.message}"
        return None

    def reset_policy(self, timeout: float = 120.0, attempts: int = 4) -> str | None:
        """Start the policy afresh for an episode: lifecycle deactivate + activate (the policy node
        calls ``policy.reset()`` and warms up on activate), as a robot's episode starts with a reset
        policy. None on success, else why not.

        A request sent right after a (re)started node was discovered can be lost by DDS before the
        server's reply writer matches this client; so each transition is tried with a fresh client a
        few times, and a refused deactivate of an already inactive node counts as done."""
        per_try = max(5.0, timeout / attempts)
        for tid, what in ((Transition.TRANSITION_DEACTIVATE, "deactivate"), (Transition.TRANSITION_ACTIVATE, "activate")):
            why = f"the policy node did not answer {what} within {timeout:.0f} s"
            for _ in range(attempts):
                res = self._call_fresh(ChangeState, self.lifecycle_client.srv_name, ChangeState.Request(transition=Transition(id=tid)), per_try)
                if res is None:
                    continue
                if res.success or (tid == Transition.TRANSITION_DEACTIVATE and self._policy_state() == "inactive"):
                    why = None
                else:
                    why = f"the policy node refused to {what}"
                break
            if why is not None:
                return why
        return None

    def _policy_state(self) -> str:
        from lifecycle_msgs.srv import GetState

        name = self.lifecycle_client.srv_name.rsplit("/", 1)[0] + "/get_state"
        res = self._call_fresh(GetState, name, GetState.Request(), 10.0)
        return res.current_state.label if res is not None else ""

    def _call_fresh(self, srv_type, name: str, request, timeout: float):
        """One call on a new client (no state from a server that has since restarted); None on timeout."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=min(timeout, 10.0)):
                return None
            return self._wait_future(client.call_async(request), timeout)
        finally:
            self.node.destroy_client(client)

    def policy_chunk_ms(self) -> list[float]:
        with self._lock:
            return list(self._chunk_ms)

    # -- one episode ----------------------------------------------------------------------------------
    def run_episode(self, seed: int, instruction: str, duration: float, wall_timeout: float,
                    fault: Callable[[], str | None], stall_timeout: float = 60.0) -> tuple[EpisodeResult, list]:
        """Run the policy for ``duration`` s of sim time (ends early on success). ``fault()`` returns a
        reason when a node died; the task is then canceled and the episode fails with that reason, as
        it does when sim time stops for ``stall_timeout`` wall seconds or the episode exceeds ``wall_timeout``.
        Returns the result and the high-camera frames (messages) of the episode (empty without video)."""
        t_wall = time.monotonic()
        ep = EpisodeResult(seed=seed, success=False)
        with self._lock:
            before = _Counters.of(self.executor_status)
            self._success_at = None
            if self._frames is not None:
                self._frames.clear()
            self._recording = True
        goal = RunTask.Goal(instruction=instruction, duration=duration_msg(duration), stop_on_success=True, enable=True)
        try:
            gh = self._wait_future(self.run_client.send_goal_async(goal), 30.0)
            if gh is None or not gh.accepted:
                ep.outcome = "error"
                ep.failure_reason = "the executor did not accept the RunTask goal" if gh is not None else "the executor did not answer the RunTask goal"
                return ep, []
            start = self.now()
            result_future = gh.get_result_async()
            deadline = time.monotonic() + wall_timeout
            reason = None
            sim_seen, sim_moved = start, time.monotonic()
            while not result_future.done():
                reason = fault()
                now_sim = self.now()
                if now_sim > sim_seen:
                    sim_seen, sim_moved = now_sim, time.monotonic()
                if reason is None and time.monotonic() - sim_moved > stall_timeout:
                    reason = f"sim time did not advance for {stall_timeout:.0f} s of wall time (the simulator stalled)"
                if reason is None and time.monotonic() > deadline:
                    reason = f"no RunTask result within {wall_timeout:.0f} s of wall time (the graph stalled)"
                if reason is not None:
                    gh.cancel_goal_async()
                    self._wait(result_future.done, 5.0)
                    break
                time.sleep(0.05)
            wrapped = result_future.result() if result_future.done() else None
            res = wrapped.result if wrapped is not None else None
            time.sleep(0.3)  # one more executor status (20 Hz) with the final counters
            with self._lock:
                self._recording = False
                after = _Counters.of(self.executor_status)
                success_at = self._success_at
                diag = dict(self.sim_diag)
                frames = list(self._frames) if self._frames is not None else []
            if res is not None:
                ep.outcome = OUTCOMES.get(res.outcome, str(res.outcome))
                ep.elapsed = float(res.elapsed)
                if res.outcome == RunTask.Result.OUTCOME_ERROR and reason is None:
                    reason = f"RunTask error: {res.message}"
            if after.chunks_received < before.chunks_received:  # a restarted executor: its counters start at 0
                before = _Counters()
            ep.chunks_received = max(after.chunks_received - before.chunks_received, int(res.chunks_executed) if res else 0)
            ep.chunks_rejected = max(after.chunks_rejected - before.chunks_rejected, int(getattr(res, "chunks_rejected", 0)) if res else 0)
            ep.limit_hits = max(after.limit_hits - before.limit_hits, int(getattr(res, "limit_hits", 0)) if res else 0)
            ep.watchdog_stops = after.watchdog_stops - before.watchdog_stops
            ok = (res is not None and res.outcome == RunTask.Result.OUTCOME_SUCCESS) or success_at is not None
            ep.success = bool(ok) and reason is None
            if ep.success:
                if success_at is not None:
                    ep.time_to_success = max(0.0, success_at - start)
                elif res is not None and getattr(res, "time_to_success", 0.0) > 0:
                    ep.time_to_success = float(res.time_to_success)
            if reason:
                ep.failure_reason = reason
            if diag.get("seed") == str(seed):
                try:
                    ep.max_stage = int(diag.get("max_stage", -1))
                    ep.max_lift_cm = float(diag.get("max_lift_cm", -1.0))
                except ValueError:
                    pass
            return ep, frames
        finally:
            with self._lock:
                self._recording = False
            ep.wall_s = round(time.monotonic() - t_wall, 1)

    def achieved_real_time_factor(self) -> float:
        with self._lock:
            try:
                return float(self.sim_diag.get("real_time_factor", 0.0))
            except ValueError:
                return 0.0

    def strategy(self) -> str:
        with self._lock:
            return self.executor_status.strategy if self.executor_status is not None else ""

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30.0)  # destroying the node under a spinning thread can crash rclpy
        if self._thread.is_alive():
            return  # leave the context to the interpreter's exit rather than tear it down under the thread
        try:
            self._ex.shutdown()
            self.run_client.destroy()
            self.node.destroy_node()
        finally:
            if self._ctx.ok():
                rclpy.shutdown(context=self._ctx)


def frames_to_rgb(msgs: list) -> list:
    return [image_msg_to_rgb(m) for m in msgs]


__all__ = ["EvalClient", "frames_to_rgb", "time_to_sec"]
