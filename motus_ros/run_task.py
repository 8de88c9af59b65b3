"""``motus_msgs/action/RunTask`` on the executor node: run the policy on a task for a given time.

Goal: optional instruction (sent to the policy node's ``SetInstruction`` service first), a duration
on the robot's clock, whether to end early when the robot reports task success (the simulator's
``/sim/success``), and ``enable``: enable the executor for this task (the explicit operator step on
real hardware; refused without fresh joint states). Without ``enable`` the executor must already be
enabled (``~/enable``), else the goal ends with ERROR. While it runs, feedback (elapsed, chunks
executed, last inference latency, executor state) is published every ``feedback_period`` s. At the
end the executor is disabled (it decelerates and holds) and the result says why it ended (TIMEOUT,
SUCCESS, CANCELED, ESTOP or ERROR) with the task's counts: chunks executed and rejected, limit hits,
and the time to the first success report (-1: none).

The executor's command loop serves this node's callbacks between ticks in one thread, so nothing here
may block: the execute callback is a coroutine that awaits futures resolved by timers and service
responses (the executor resumes it between ticks). One goal at a time; a second is rejected.
"""
from __future__ import annotations

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from std_msgs.msg import Bool

from motus_core.runtime.executor import ExecState
from motus_msgs.action import RunTask
from motus_msgs.srv import SetInstruction
from motus_ros.conversions import duration_to_sec


class RunTaskServer:
    def __init__(self, node, *, instruction_service: str, success_topic: str, feedback_period: float = 0.5,
                 service_timeout: float = 10.0):
        self.node = node
        self.feedback_period = feedback_period
        self.service_timeout = service_timeout
        self._instruction = node.create_client(SetInstruction, instruction_service)
        self._success = False
        self._success_at: float | None = None
        self._counts0 = (0, 0, 0)
        if success_topic:
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
            node.create_subscription(Bool, success_topic, self._on_success, qos)
        self._busy = False
        self.server = ActionServer(node, RunTask, "~/run_task", execute_callback=self._execute,
                                   goal_callback=self._on_goal, cancel_callback=lambda _goal: CancelResponse.ACCEPT)

    def _on_success(self, msg: Bool) -> None:
        if msg.data and not self._success:
            self._success_at = self.node.now()
        self._success = self._success or bool(msg.data)

    def _on_goal(self, goal: RunTask.Goal) -> GoalResponse:
        duration = duration_to_sec(goal.duration)
        if self._busy:
            self.node.get_logger().warn("RunTask rejected: a task is already running")
            return GoalResponse.REJECT
        if not duration > 0.0:
            self.node.get_logger().warn(f"RunTask rejected: duration must be positive, got {duration:.3f} s")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _sleep(self, seconds: float) -> Future:
        """A future resolved after ``seconds`` of the node clock (sim time with the simulator)."""
        fut = Future()
        timer = None

        def fire():
            timer.cancel()
            self.node.destroy_timer(timer)
            if not fut.done():
                fut.set_result(None)

        timer = self.node.create_timer(seconds, fire)
        return fut

    async def _call_with_timeout(self, request) -> SetInstruction.Response | None:
        call = self._instruction.call_async(request)
        timeout = self._sleep(self.service_timeout)
        either = Future()
        for f in (call, timeout):
            f.add_done_callback(lambda _f: either.done() or either.set_result(None))
        await either
        return call.result() if call.done() else None

    async def _execute(self, gh) -> RunTask.Result:
        self._busy = True
        try:
            return await self._run(gh)
        finally:
            self._busy = False

    def _counts(self) -> tuple[int, int, int]:
        core = self.node.core
        return core.chunks_received, core.chunks_rejected, core.guard.hits

    def _finish(self, gh, outcome: int, message: str, start: float, chunks0: int) -> RunTask.Result:
        node = self.node
        now = node.now()
        with node.lock:
            node.core.set_enabled(now, False, f"RunTask ended: {message}")
            received, rejected, hits = (max(0, a - b) for a, b in zip(self._counts(), self._counts0))
        success_at = self._success_at if self._success and self._success_at is not None else None
        result = RunTask.Result(outcome=outcome, message=message, elapsed=max(0.0, now - start), chunks_executed=received,
                                chunks_rejected=rejected, limit_hits=hits,
                                time_to_success=max(0.0, success_at - start) if success_at is not None else -1.0)
        if outcome == RunTask.Result.OUTCOME_CANCELED:
            gh.canceled()
        elif outcome in (RunTask.Result.OUTCOME_ESTOP, RunTask.Result.OUTCOME_ERROR):
            gh.abort()
        else:
            gh.succeed()
        node.get_logger().info(f"RunTask ended after {result.elapsed:.1f} s, {result.chunks_executed} chunks: {message}")
        return result

    async def _run(self, gh) -> RunTask.Result:
        node, goal = self.node, gh.request
        duration = duration_to_sec(goal.duration)
        start = node.now()
        with node.lock:
            chunks0 = node.core.chunks_received
            self._counts0 = self._counts()
        if not goal.enable and not node.core.enabled:
            return self._finish(gh, RunTask.Result.OUTCOME_ERROR, "the executor is disabled: set enable in the goal (or call ~/enable)",
                                start, chunks0)
        if goal.instruction:
            waited = 0.0
            while not self._instruction.service_is_ready() and waited < self.service_timeout:
                await self._sleep(0.1)  # just started: discovery of the policy node may still be under way
                waited += 0.1
            if not self._instruction.service_is_ready():
                return self._finish(gh, RunTask.Result.OUTCOME_ERROR,
                                    f"the policy's instruction service {self._instruction.srv_name} is not available", start, chunks0)
            resp = await self._call_with_timeout(SetInstruction.Request(instruction=goal.instruction))
            if resp is None or not resp.success:
                why = "no answer" if resp is None else resp.message
                return self._finish(gh, RunTask.Result.OUTCOME_ERROR, f"the policy refused the instruction: {why}", start, chunks0)
        self._success = False
        self._success_at = None
        start = node.now()
        with node.lock:
            self._counts0 = self._counts()
        if goal.enable:
            ok, why = node.set_enabled(True, "RunTask")
            if not ok:
                return self._finish(gh, RunTask.Result.OUTCOME_ERROR, why, start, chunks0)
        node.get_logger().info(f"RunTask: running the policy for {duration:.1f} s" + (f" on {goal.instruction!r}" if goal.instruction else ""))
        while True:
            await self._sleep(self.feedback_period)
            now = node.now()
            with node.lock:
                st = node.core.status()
            fb = RunTask.Feedback(elapsed=max(0.0, now - start), chunks_executed=max(0, st["chunks_received"] - chunks0),
                                  last_inference_latency=float(node.latencies[-1]) if node.latencies else 0.0,
                                  executor_state=int(st["state"]))
            gh.publish_feedback(fb)
            if gh.is_cancel_requested:
                return self._finish(gh, RunTask.Result.OUTCOME_CANCELED, "canceled", start, chunks0)
            if st["state"] == ExecState.ESTOP:
                return self._finish(gh, RunTask.Result.OUTCOME_ESTOP, "e-stop latched", start, chunks0)
            if goal.stop_on_success and self._success:
                return self._finish(gh, RunTask.Result.OUTCOME_SUCCESS, "the robot reported task success", start, chunks0)
            if now - start >= duration:
                seen = " (task success was reported)" if self._success else ""
                return self._finish(gh, RunTask.Result.OUTCOME_TIMEOUT, f"ran for the whole {duration:.1f} s{seen}", start, chunks0)
