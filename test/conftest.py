"""Test environment of motus-ros.

Set before anything imports rclpy or mujoco:
* ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: DDS discovery never leaves loopback;
* a ROS_DOMAIN_ID reserved for this pytest session (lock file), so concurrent test runs on one
  machine do not see each other's topics;
* MUJOCO_GL=egl for offscreen rendering; HF/transformers offline.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from test.helpers import FIXTURES, reserve_domain_id  # noqa: E402

if "ROS_DOMAIN_ID" not in os.environ:
    os.environ["ROS_DOMAIN_ID"] = str(reserve_domain_id())

import motus_ros  # noqa: E402,F401  (DDS profile defaults for this process and its children)


def pytest_report_header(config):
    return f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']}"


@pytest.fixture
def ros_context():
    """A fresh rclpy context per test (init + shutdown)."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def wait_until(predicate, timeout: float = 10.0, period: float = 0.01, spin=None) -> bool:
    """Poll ``predicate`` (spinning ``spin()`` between polls if given) until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if spin is not None:
            spin()
        if predicate():
            return True
        if spin is None:
            time.sleep(period)
    return bool(predicate())
