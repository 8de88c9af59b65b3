"""One inference step, ROS-free: the request built from the executor's plan and an observation, the
policy call, the chunk check and the stage timing.

The policy node (``motus_ros.nodes.policy_node``) and the offline closed loop
(``motus_core.runtime.offline``) both call :func:`build_request` / :func:`run_inference`, so offline
equals ROS by construction, not by copied code.
"""
from __future__ import annotations

import time
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
