"""Is the policy process there? DDS liveliness of the policy's status topic (ROS-free bookkeeping).

Two different questions used to be one, and the answer flapped under load:

* **Is the policy process gone?** DDS liveliness (``AUTOMATIC``) of ``/policy/status``: the policy's
  DDS participant asserts it from its own thread, so a dead process is noticed within the lease.
  The lease must fit a loaded machine: a 60 ms lease was missed by live processes dozens of times
  a minute on 2 busy cores. With ``policy_lease`` = 1 s a lapse means the process is gone (or
  frozen for a second). This view is reported (``ExecutorStatus.policy_process``) and logged; it
  stops the robot early only with ``stop_on_policy_lost``.
* **Will the robot run out of actions?** The executor's watchdog (``ChunkExecutor._watchdog``):
  no fresh chunk before the committed actions run out -> decelerate within the limits and hold
  (``ExecutorStatus.starved``, ``watchdog_stops``). It works on the robot's clock from the plan
  itself, so it holds however the policy failed (killed, hung, starved of frames, network) and
  however loaded the machine is. This is what protects the robot.
"""
from __future__ import annotations

from enum import IntEnum


class PolicyProcess(IntEnum):
    """``motus_msgs/ExecutorStatus`` POLICY_* constants."""

    UNKNOWN = 0  # no policy status seen yet
    ALIVE = 1
    GONE = 2  # DDS liveliness lost: no assertion within the lease


class PolicyLiveness:
    """The policy process as DDS liveliness reports it; counts the transitions (a flapping lease shows here)."""

    def __init__(self) -> None:
        self.state = PolicyProcess.UNKNOWN
        self.since: float | None = None  # time of the last change
        self.lost = 0  # ALIVE -> GONE transitions
        self.returned = 0  # GONE -> ALIVE transitions

    def on_status(self, now: float) -> bool:
        """A status message arrived: the process exists. True when this changed the state."""
        if self.state == PolicyProcess.ALIVE:
            return False
        return self._set(now, PolicyProcess.ALIVE)

    def on_liveliness(self, now: float, alive: bool) -> bool:
        """DDS liveliness changed (``alive_count > 0``). True when this changed the state."""
        new = PolicyProcess.ALIVE if alive else PolicyProcess.GONE
        if new == self.state or (new == PolicyProcess.GONE and self.state == PolicyProcess.UNKNOWN):
            return False  # a writer that never was alive cannot be lost
        return self._set(now, new)

    def _set(self, now: float, new: PolicyProcess) -> bool:
        if new == PolicyProcess.GONE:
            self.lost += 1
        elif self.state == PolicyProcess.GONE:
            self.returned += 1
        self.state = new
        self.since = now
        return True
