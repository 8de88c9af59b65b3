"""Messages <-> motus_core types for the closed loop (policy node, executor node, tests, benchmarks).

* ``motus_msgs/ActionChunk`` <-> :class:`motus_core.policy.base.ActionChunk` (row-major K x N positions,
  joint names in the robot profile's canonical order, stamp = the observation's);
* the executor's plan (``PlanRequest``) travels as an ``ActionChunk`` too, on ``/executor/plan``: it is
  the request for the next chunk *and* its RTC prefix (``model = "executor_plan"``,
  ``prefix_length`` = the expected delay d, ``chunk_id`` = the request id);
* command messages: ``trajectory_msgs/JointTrajectory`` with positions, velocities and
  accelerations, and ``sensor_msgs/JointState`` position commands, with the driver's joint names
  from the profile's ``commands``.

Stamps and durations use ``motus_ros.conversions`` (the suite's one cv_bridge/time replacement).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from motus_core.policy.base import ActionChunk
from motus_core.runtime.executor import PlanRequest
from motus_msgs.msg import ActionChunk as ActionChunkMsg
from motus_ros.conversions import duration_msg, duration_to_sec, time_msg, time_to_sec

PLAN_MODEL = "executor_plan"

__all__ = ["PLAN_MODEL", "ChunkMessageError", "chunk_to_msg", "msg_to_chunk", "plan_to_msg", "msg_to_plan", "trajectory_msg",
           "joint_state_command", "command_targets"]


class ChunkMessageError(ValueError):
    """A chunk message that cannot be turned into an ActionChunk (wrong sizes, unknown joints)."""


def chunk_to_msg(chunk: ActionChunk, chunk_id: int, joint_names: Sequence[str], latency: float = 0.0) -> ActionChunkMsg:
    a = np.ascontiguousarray(chunk.actions, dtype=np.float64)
    msg = ActionChunkMsg()
    msg.header.stamp = time_msg(chunk.stamp)
    msg.chunk_id = int(chunk_id)
    msg.joint_names = list(joint_names)
    msg.step_period = duration_msg(chunk.step_period)
    msg.num_steps = int(a.shape[0])
    msg.positions = a.reshape(-1).tolist()
    msg.prefix_length = int(chunk.prefix_length)
    msg.model = str(chunk.model)
    msg.mode = str(chunk.mode)
    msg.inference_latency = float(latency)
    return msg


def msg_to_chunk(msg: ActionChunkMsg, joint_names: Sequence[str]) -> ActionChunk:
    """Decode and reorder by name to ``joint_names``; raises ChunkMessageError with the reason."""
    k = int(msg.num_steps)
    names = list(msg.joint_names)
    n = len(names)
    pos = np.asarray(msg.positions, dtype=np.float64)
    if n == 0 or k == 0:
        raise ChunkMessageError(f"chunk {msg.chunk_id} is empty ({k} steps, {n} joint names)")
    if pos.size != k * n:
        raise ChunkMessageError(f"chunk {msg.chunk_id}: {pos.size} positions for {k} steps x {n} joints")
    a = pos.reshape(k, n)
    if names != list(joint_names):
        missing = [j for j in joint_names if j not in names]
        if missing:
            raise ChunkMessageError(f"chunk {msg.chunk_id} lacks joints {missing}")
        a = a[:, [names.index(j) for j in joint_names]]
    return ActionChunk(actions=a, step_period=duration_to_sec(msg.step_period), stamp=time_to_sec(msg.header.stamp),
                       prefix_length=int(msg.prefix_length), mode=msg.mode, model=msg.model,
                       info={"chunk_id": int(msg.chunk_id), "latency": float(msg.inference_latency)})


def plan_to_msg(req: PlanRequest, joint_names: Sequence[str]) -> ActionChunkMsg:
    msg = ActionChunkMsg()
    msg.header.stamp = time_msg(req.stamp)
    msg.chunk_id = int(req.request_id)
    msg.joint_names = list(joint_names)
    msg.step_period = duration_msg(req.step_period)
    msg.num_steps = int(req.positions.shape[0])
    msg.positions = np.ascontiguousarray(req.positions, dtype=np.float64).reshape(-1).tolist()
    msg.prefix_length = int(req.expected_delay)
    msg.model = PLAN_MODEL
    msg.mode = req.strategy
    return msg


def msg_to_plan(msg: ActionChunkMsg, joint_names: Sequence[str]) -> PlanRequest:
    k = int(msg.num_steps)
    positions = np.zeros((0, len(joint_names)))
    if k:
        positions = msg_to_chunk(msg, joint_names).actions
    return PlanRequest(request_id=int(msg.chunk_id), stamp=time_to_sec(msg.header.stamp), step_period=duration_to_sec(msg.step_period),
                       positions=positions, expected_delay=int(msg.prefix_length), strategy=msg.mode)


def trajectory_msg(stamp: float, times: np.ndarray, P: np.ndarray, V: np.ndarray, A: np.ndarray,
                   indices: Sequence[int], names: Sequence[str]) -> JointTrajectory:
    """Points at absolute ``times`` (from ``stamp`` on) for the joints ``indices`` named ``names``.

    A trajectory that holds still (every point the same, at rest) gets ``header.stamp`` 0, "start on
    arrival": its timing does not matter, and however late it arrives (a starved process sends with a
    stale clock) none of its points is in the past.
    """
    msg = JointTrajectory()
    P, V, A = np.asarray(P), np.asarray(V), np.asarray(A)
    still = not np.any(V) and not np.any(A) and bool(np.all(P == P[:1]))
    msg.header.stamp = time_msg(0.0 if still else stamp)
    msg.joint_names = list(names)
    idx = np.asarray(indices, dtype=np.int64)
    for t, p, v, a in zip(times, P, V, A):
        pt = JointTrajectoryPoint()
        pt.positions = p[idx].tolist()
        pt.velocities = v[idx].tolist()
        pt.accelerations = a[idx].tolist()
        pt.time_from_start = duration_msg(max(0.0, float(t) - stamp))
        msg.points.append(pt)
    return msg


def joint_state_command(stamp: float, position: np.ndarray, velocity: np.ndarray | None, indices: Sequence[int],
                        names: Sequence[str]) -> JointState:
    msg = JointState()
    msg.header.stamp = time_msg(stamp)
    msg.name = list(names)
    idx = np.asarray(indices, dtype=np.int64)
    msg.position = np.asarray(position)[idx].tolist()
    if velocity is not None:
        msg.velocity = np.asarray(velocity)[idx].tolist()
    return msg


def command_targets(profile, interface: str) -> list[tuple[str, list[int], list[str]]]:
    """(topic, canonical indices, driver joint names) of the profile's command targets of ``interface``."""
    out = []
    for target in profile.commands:
        if target.interface != interface:
            continue
        canon = list(target.names)
        out.append((target.topic, [profile.index_of(c) for c in canon], [target.names[c] for c in canon]))
    return out
