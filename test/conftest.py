"""Test environment of motus-ros, and the ``unit`` / ``ros`` / ``slow`` markers.

Markers (applied here, centrally, to every collected test; see README "Tests"):
* ``ros``: needs a ROS 2 graph (rclpy contexts, DDS discovery, node processes): the test uses the
  ``ros_context`` fixture or its module imports rclpy / starts nodes (read from the module's source);
* ``slow``: ROS-free but measured at several seconds or more on the 2-core CI machine (``SLOW``);
* ``unit``: everything else - ``pytest -m unit`` runs the quick ROS-free tests alone.
A test may also carry ``@pytest.mark.slow`` / ``@pytest.mark.ros`` itself.

Set before anything imports rclpy or mujoco:
* ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: DDS discovery never leaves loopback;
* a ROS_DOMAIN_ID reserved for this pytest session (lock file), so concurrent test runs on one
  machine do not see each other's topics;
* MUJOCO_GL=egl for offscreen rendering; HF/transformers offline.
"""
from __future__ import annotations

import os
import re
import sys
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


# ------------------------------------------------------------------------------------ markers

# A module is "ros" when its source does any of these (rclpy imported anywhere, node processes,
# the launcher, a colcon build).
_ROS_SOURCE = re.compile(r"\bimport rclpy\b|\bfrom rclpy\b|\bnode_process\(|motus_ros\.launcher|motus_ros\.nodes\.|\bcolcon\b")

# ROS-free tests measured at >= ~3 s each under the shared 2-core load (pytest --durations=0):
# module -> test names (without parameters), "*" for every test of the module.
SLOW: dict[str, set[str]] = {
    "test_data_convert": {"test_motus_layout_frames_qpos_instructions_stats", "test_robotwin_layout", "test_lerobot_v3_dataset",
                          "test_rerun_is_idempotent", "test_only_complete_episodes_and_removal_after_discard",
                          "test_cli_fails_when_no_episode_converts_and_leaves_no_empty_folders"},
    "test_data_reader": {"test_layout_files_and_stats", "test_seeded_determinism_and_sampling_coverage",
                         "test_samples_follow_official_rule"},
    "test_data_recorder_core": {"test_full_disk_stops_episode_keeps_earlier", "test_sigkill_mid_episode_bag_readable_and_incomplete"},
    "test_mola_policy": {"*"},  # a tiny SVD foundation per module: every test pays for it
    "test_mola_video": {"*"},  # a tiny SVD per module
    "test_mola_training": {"*"},
    "test_motus_policy": {"test_text_encoder_api_and_cache", "test_full_size_architecture_on_meta"},
    "test_motus_parity": {"*"},
    "test_mola_parity_head": {"*"},
    "test_mola_parity_idm": {"*"},
    "test_runtime_executor": {"test_rtc_and_te_hand_over_more_smoothly_than_sync"},
    "test_sim_ground_truth": {"*"},
    "test_sim_core": {"test_scripted_demonstrator_succeeds"},
    "test_motus_modes": {"*"},
    "test_viz_core": {"test_matcher_pairs_frames_of_the_same_time"},
}

_ros_modules: dict[str, bool] = {}


def _is_ros_module(path: Path) -> bool:
    key = str(path)
    if key not in _ros_modules:
        try:
            _ros_modules[key] = bool(_ROS_SOURCE.search(Path(path).read_text(encoding="utf-8")))
        except OSError:
            _ros_modules[key] = False
    return _ros_modules[key]


def pytest_sessionfinish(session, exitstatus):
    """Tests kill nodes on purpose (SIGKILL): remove the shared-memory files those processes left in
    /dev/shm (motus_ros.shm_cleanup), or repeated runs fill it."""
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller cleans once
    try:
        from motus_ros.shm_cleanup import clean_zombie_shm
    except ImportError:  # no ROS in this environment
        return
    clean_zombie_shm()


def pytest_collection_modifyitems(config, items):
    """Mark every test unit, ros or slow (registered in setup.cfg)."""
    seen: dict[str, set[str]] = {}
    for item in items:
        own = {m.name for m in item.iter_markers()}
        path = Path(str(item.path))
        module = path.stem
        if "ros" not in own and ("ros_context" in getattr(item, "fixturenames", ()) or _is_ros_module(path)):
            item.add_marker(pytest.mark.ros)
            own.add("ros")
        name = getattr(item, "originalname", None) or item.name.split("[")[0]
        seen.setdefault(module, set()).add(name)
        slow = SLOW.get(module, set())
        if "slow" not in own and "ros" not in own and ("*" in slow or name in slow):
            item.add_marker(pytest.mark.slow)
            own.add("slow")
        if not own & {"ros", "slow"}:
            item.add_marker(pytest.mark.unit)
    for module, names in seen.items():  # a renamed test must not fall out of the slow list unnoticed
        stale = SLOW.get(module, set()) - names - {"*"}
        if stale and not any("::" in str(a) for a in config.args):  # whole modules were collected
            import warnings

            warnings.warn(f"test/conftest.py SLOW names tests that {module} does not have: {sorted(stale)}")
