"""The inference loop without ROS (motus_core.runtime.inference): what the policy node wraps.

A real synchronizer fed with frames and joint states, the replay policy and a prefix-honouring test
policy; the loop infers once per executor plan, builds the RTC prefix from the plan, queues
instructions on its worker, times the stages and stops cleanly.
"""
import threading
import time

import numpy as np
import pytest

from motus_core.policy.base import ActionChunk, Policy
from motus_core.robot_profile import load_profile
from motus_core.runtime.executor import PlanRequest
from motus_core.runtime.inference import InferenceConfig, InferenceLoop, build_request
from motus_core.runtime.sync import ObservationSynchronizer, SyncConfig
from motus_core.policy.base import Observation

DT = 1 / 30


class EchoPrefix(Policy):
    """Returns the prefix it was given followed by zeros (so the test sees the request)."""

    name = "echo"
    dof = 14
    chunk_length = 12
    supports_prefix = True

    def __init__(self):
        self.instructions = []
        self.requests = []

    def set_instruction(self, instruction):
        self.instructions.append(instruction)
        return False

    def predict(self, request):
        self.check_request(request)
        self.requests.append(request)
        a = np.tile(request.observation.state, (self.chunk_length, 1))
        m = 0 if request.prefix is None else request.prefix.shape[0]
        a[:m] = request.prefix
        return ActionChunk(a, DT, request.observation.stamp, prefix_length=request.expected_delay, model=self.name,
                           timing={"preprocess": 0.001})


@pytest.fixture
def profile():
    return load_profile("sim_aloha")


def feed(sync, profile, t, q):
    for role in ("high", "left_wrist", "right_wrist"):
        sync.add_image(role, t, np.zeros((4, 6, 3), np.uint8))
    sync.add_joint_state(profile.state_sources[0].topic, t, list(profile.joint_names), q)


def test_build_request_resamples_the_plan_and_caps_the_delay():
    policy = EchoPrefix()
    plan = PlanRequest(1, stamp=0.0, step_period=DT, positions=np.arange(20)[:, None] * np.ones((20, 14)), expected_delay=30, strategy="rtc")
    obs = Observation(images={}, state=np.zeros(14), stamp=2 * DT)
    req = build_request(policy, obs, plan, instruction="x")
    # the chunk's step k targets obs + (k+1) DT = plan step k + 2: positions 2, 3, ...
    assert req.prefix.shape == (12, 14) and req.prefix[0, 0] == pytest.approx(2.0)
    assert req.expected_delay == 12  # capped at the prefix length
    assert build_request(policy, obs, None).prefix is None


def test_loop_infers_once_per_plan_and_queues_instructions(profile):
    sync = ObservationSynchronizer(profile, SyncConfig())
    policy = EchoPrefix()
    sent = []
    now = {"t": 1.0}
    loop = InferenceLoop(policy, sync, 14, InferenceConfig(trigger="request", sync_timeout=2.0), clock=lambda: now["t"],
                         publish=lambda out: sent.append(out) or True, instruction="first")
    loop.start()
    try:
        assert loop.activate()["instruction_cached"] is False
        assert policy.instructions == ["first"]
        q = np.linspace(-0.1, 0.1, 14)
        feed(sync, profile, 1.0, q)
        time.sleep(0.3)
        assert sent == []  # no plan, no chunk (trigger: request)
        plan = PlanRequest(1, stamp=1.0 - 3 * DT, step_period=DT, positions=np.tile(q, (10, 1)), expected_delay=4, strategy="rtc")
        loop.on_plan(plan)
        deadline = time.monotonic() + 10
        while not sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(sent) == 1 and sent[0].chunk_id == 1
        # plan steps at 1 + (j - 2) DT, j < 10, cover the chunk steps 1 + (k + 1) DT up to k = 6
        assert policy.requests[0].prefix.shape[0] == 7 and policy.requests[0].expected_delay == 4
        assert set(loop.last_timing) == {"sync_wait", "preprocess", "model", "postprocess", "total"}
        assert loop.state == "active" and loop.chunks_published == 1
        done, result = loop.queue_instruction("second")
        assert done.wait(5) and result["success"] and loop.instruction == "second"
        # a second plan without a fresh observation: the loop waits and says which stream
        now["t"] = 5.0
        loop.on_plan(plan)
        deadline = time.monotonic() + 10
        while loop.state != "waiting" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert loop.state == "waiting" and "observation" in loop.message
        loop.deactivate()
        assert loop.state == "inactive"
    finally:
        loop.close()
    assert loop._worker is None and not any(t.name == "policy-inference" and t.is_alive() for t in threading.enumerate())


def test_loop_refuses_an_unknown_trigger(profile):
    with pytest.raises(ValueError, match="trigger"):
        InferenceLoop(EchoPrefix(), None, 14, InferenceConfig(trigger="sometimes"), clock=time.monotonic, publish=lambda o: True)
