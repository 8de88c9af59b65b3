"""One inference step, ROS-free: the request built from the executor's plan and an observation, the
policy call, the chunk check and the stage timing.

:class:`InferenceLoop` adds the trigger (the executor's request or a fixed rate), the worker thread, the
instruction queue and the counters: the policy node (``motus_ros.nodes.policy_node``) is only its
transport. The offline closed loop (``motus_core.runtime.offline``) calls the same
:func:`build_request` / :func:`run_inference`, so offline equals ROS by construction, not by copied code.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from motus_core.policy.base import ActionChunk, Observation, Policy, PolicyError, PolicyRequest, check_chunk
from motus_core.runtime.executor import PlanRequest
from motus_core.runtime.prefix import prefix_for_observation


@dataclass
class InferenceResult:
    chunk: ActionChunk
    request: PolicyRequest
    timing: dict[str, float] = field(default_factory=dict)  # preprocess, model, postprocess (s)


def build_request(policy: Policy, observation: Observation, plan: PlanRequest | None, *, instruction: str = "", mode: str = "vla",
                  return_frames: bool = False, seed: int | None = None) -> PolicyRequest:
    """The request for ``observation``: the plan resampled onto the new chunk's grid (the RTC prefix)
    when the policy honours prefixes, the expected delay capped at the prefix length."""
    prefix = None
    expected = 0
    if plan is not None and policy.supports_prefix:
        prefix = prefix_for_observation(plan.stamp, plan.step_period, plan.positions, observation.stamp,
                                        policy.step_period, policy.chunk_length)
        if prefix is not None and prefix.shape[0] == 0:
            prefix = None
        if prefix is not None:
            expected = min(int(plan.expected_delay), prefix.shape[0])
    return PolicyRequest(observation=observation, instruction=instruction, mode=mode, prefix=prefix,
                         expected_delay=expected, return_frames=return_frames, seed=seed)


def run_inference(policy: Policy, request: PolicyRequest, dof: int) -> InferenceResult:
    """Call the policy; raise PolicyError for an unusable chunk; split the time into stages."""
    t0 = time.monotonic()
    chunk = policy.predict(request)
    model_time = time.monotonic() - t0
    why = check_chunk(chunk, dof)
    if why:
        raise PolicyError(f"the policy returned an unusable chunk: {why}")
    pre = float(chunk.timing.get("preprocess", 0.0))
    post = float(chunk.timing.get("postprocess", 0.0))
    timing = {"preprocess": pre, "model": max(0.0, model_time - pre - post), "postprocess": post}
    return InferenceResult(chunk, request, timing)


# ------------------------------------------------------------------------------------------ the loop
TRIGGERS = ("request", "rate")


@dataclass
class InferenceConfig:
    trigger: str = "request"  # request: one inference per plan from the executor; rate: at rate_hz
    rate_hz: float = 2.0
    sync_timeout: float = 1.0  # s an inference waits for a coherent observation
    seed: int = -1  # sampling seed per chunk = seed + chunk id (< 0: the policy's own generator)
    mode: str = "vla"
    return_frames: bool = False
    realtime_priority: int = 0  # SCHED_FIFO priority of the worker thread (0 = normal)


@dataclass
class Output:
    """What one inference produced, for the transport to send."""

    chunk: ActionChunk
    chunk_id: int
    latency: float  # s, observation complete -> now (wall clock)


class InferenceLoop:
    """The policy side of the closed loop without ROS: trigger, worker thread, instruction queue,
    one inference per trigger (request from the executor's plan and the synchronized observation),
    stage timing and counters. The policy node is its transport: it feeds plans, instructions and
    sensor messages (into ``sync``) and sends what ``publish`` is given.

    States: ``unconfigured``, ``inactive``, ``active``, ``waiting`` (no coherent observation),
    ``error`` (the last inference failed); ``message`` says why.
    """

    def __init__(self, policy: Policy, sync, dof: int, config: InferenceConfig, *, clock, publish, log=None,
                 instruction: str = ""):
        if config.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {config.trigger!r}")
        self.policy = policy
        self.sync = sync
        self.dof = int(dof)
        self.cfg = config
        self.clock = clock  # robot time (s)
        self.publish = publish  # Output -> bool (False: not sent, e.g. deactivated meanwhile)
        self.log = log or (lambda level, text: None)  # (level, text); the node throttles
        self.instruction = instruction
        self.state = "inactive"
        self.message = "configured"
        self.lock = threading.Lock()  # held around every policy call
        self._wake = threading.Condition()
        self._plan = None
        self._plan_new = False
        self._active = False
        self._closing = threading.Event()
        self._pending: tuple[str, threading.Event, dict] | None = None
        self._worker: threading.Thread | None = None
        self.chunk_id = 0
        self.chunks_published = 0
        self.chunks_failed = 0
        self.publish_times: deque[float] = deque(maxlen=20)
        self.last_timing: dict[str, float] = {}
        self.timings: deque[dict[str, float]] = deque(maxlen=2000)
        self.wait_reasons: dict[str, int] = {}
        self.obs_age = 0.0
        self.failures: deque[str] = deque(maxlen=5)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        self._closing.clear()
        self._worker = threading.Thread(target=self._work, name="policy-inference", daemon=True)
        self._worker.start()

    def activate(self) -> dict:
        """Warm up, reset, prepare the instruction; then infer on triggers. Returns timings for the log."""
        info = {}
        with self.lock:
            t0 = time.monotonic()
            self.policy.warmup()
            info["warmup"] = time.monotonic() - t0
            self.policy.reset()
            if self.instruction:
                info["instruction_cached"] = bool(self.policy.set_instruction(self.instruction))
        self.chunk_id = 0
        with self._wake:
            self._active = True
            self._wake.notify_all()
        self.state, self.message = "active", "active"
        return info

    def deactivate(self) -> None:
        with self._wake:
            self._active = False
            self._wake.notify_all()
        with self.lock:  # the running inference finishes first
            pass
        self.state, self.message = "inactive", "inactive"

    def close(self) -> None:
        """Stop the worker and release the policy (also one blocked inside predict)."""
        self._closing.set()
        with self._wake:
            self._active = False
            self._wake.notify_all()
        self.policy.close()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None
        self.state, self.message = "unconfigured", "unconfigured"

    @property
    def active(self) -> bool:
        return self._active

    @property
    def closing(self) -> threading.Event:
        return self._closing

    # ------------------------------------------------------------------ inputs
    def on_plan(self, plan: PlanRequest) -> None:
        """The executor's plan (its chunk request with the RTC prefix)."""
        with self._wake:
            self._plan = plan
            self._plan_new = True
            self._wake.notify_all()

    def queue_instruction(self, text: str) -> tuple[threading.Event, dict]:
        """Set the instruction on the worker (never in a transport callback); ``result`` gets
        ``success``, ``cached`` and ``message`` when the event is set."""
        done = threading.Event()
        result: dict = {}
        with self._wake:
            self._pending = (text, done, result)
            self._wake.notify_all()
        if self._worker is None:
            self._apply_instruction()
        return done, result

    def chunk_rate(self) -> float:
        ts = list(self.publish_times)
        if len(ts) >= 2 and time.monotonic() - ts[-1] < 5.0:
            return float((len(ts) - 1) / max(ts[-1] - ts[0], 1e-6))
        return 0.0

    # ------------------------------------------------------------------ worker
    def _apply_instruction(self) -> None:
        with self._wake:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        text, done, result = pending
        try:
            with self.lock:
                result["cached"] = bool(self.policy.set_instruction(text))
            self.instruction = text
            result["success"] = True
            self.log("info", f"Instruction set to {text!r} ({'cached embedding' if result['cached'] else 'new embedding, now cached'})")
        except Exception as exc:  # noqa: BLE001 - reported to the caller, the loop goes on
            result["success"] = False
            result["message"] = str(exc)
            self.log("error", f"Instruction {text!r} rejected: {exc}")
        done.set()

    def _wait_trigger(self) -> bool:
        """Block until an inference (or an instruction) is due; False when closing."""
        with self._wake:
            while not self._closing.is_set():
                if self._pending is not None:
                    return True
                if self._active:
                    if self.cfg.trigger == "request" and self._plan_new:
                        self._plan_new = False
                        return True
                    if self.cfg.trigger == "rate":
                        return True
                self._wake.wait(0.1)
        return False

    def _work(self) -> None:
        if self.cfg.realtime_priority > 0:
            try:
                os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(min(self.cfg.realtime_priority, 99)))
            except (PermissionError, OSError, AttributeError) as exc:
                self.log("warning", f"Could not give the inference thread real-time priority ({exc}).")
        next_rate = time.monotonic()
        while self._wait_trigger():
            if self._pending is not None:
                self._apply_instruction()
                continue
            if self.cfg.trigger == "rate":
                delay = next_rate - time.monotonic()
                if delay > 0 and self._closing.wait(delay):
                    return
                next_rate = max(next_rate + 1.0 / self.cfg.rate_hz, time.monotonic())
            try:
                self.infer_once()
            except Exception as exc:  # noqa: BLE001 - a failed chunk is counted, the loop keeps running
                if self._closing.is_set():
                    return
                self.chunks_failed += 1
                self.failures.append(str(exc))
                self.state, self.message = "error", f"inference failed: {exc}"
                self.log("error", f"inference failed ({self.chunks_failed} so far): {exc}")

    def infer_once(self) -> bool:
        """Wait for a coherent observation, infer, hand the chunk to ``publish``; True when sent."""
        cfg = self.cfg
        t_wait = time.monotonic()
        result = self.sync.wait_snapshot(self.clock, cfg.sync_timeout, self._closing)
        if result.observation is None:
            if not self._closing.is_set():
                self.state, self.message = "waiting", f"waiting for a coherent observation: {result.reason}"
                key = result.waiting_on or "?"
                self.wait_reasons[key] = self.wait_reasons.get(key, 0) + 1
                self.log("warning", self.message)
                if cfg.trigger == "request":
                    with self._wake:  # still owe the executor a chunk: try again
                        self._plan_new = True
            return False
        sync_wait = time.monotonic() - t_wait
        obs = result.observation
        with self._wake:
            plan = self._plan
        seed = None if cfg.seed < 0 else cfg.seed + self.chunk_id + 1
        with self.lock:
            if not self._active:
                return False
            request = build_request(self.policy, obs, plan, instruction=self.instruction, mode=cfg.mode,
                                    return_frames=cfg.return_frames, seed=seed)
            inference = run_inference(self.policy, request, self.dof)
        chunk = inference.chunk
        t_post = time.monotonic()
        self.chunk_id += 1
        sent = self._active and self.publish(Output(chunk, self.chunk_id, time.monotonic() - result.complete_wall))
        if not sent:
            return False
        stages = inference.timing
        self.last_timing = {
            "sync_wait": sync_wait,
            "preprocess": stages["preprocess"],
            "model": stages["model"],
            "postprocess": stages["postprocess"] + (time.monotonic() - t_post),
            "total": time.monotonic() - t_wait,
        }
        self.chunks_published += 1
        self.timings.append(dict(self.last_timing))
        self.publish_times.append(time.monotonic())
        self.obs_age = self.clock() - obs.stamp
        latency = time.monotonic() - result.complete_wall
        self.state = "active"
        self.message = f"chunk {self.chunk_id}: {chunk.num_steps} actions, prefix {chunk.prefix_length}, latency {latency * 1000:.0f} ms"
        return True
