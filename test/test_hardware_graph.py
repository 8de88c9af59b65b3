"""The robot graphs on real hardware (hardware:=none): the ARX bridge for the AC one, and the profile's
RealSense cameras through realsense2_camera (where installed) or the pyrealsense2 node, on the profile's topics."""
from __future__ import annotations

import pytest
import yaml

from motus_core.robot_profile import load_profile
from motus_ros.graph import describe_graph, describe_launch_only, hardware
from motus_ros.executables import EXECUTABLES
from test.helpers import ROOT

SERIALS = {"high": "213522250729", "left_wrist": "213522251234", "right_wrist": "213522259876"}


@pytest.fixture
def agx_with_serials(tmp_path):
    raw = yaml.safe_load((ROOT / "config/robots/aloha_agilex_2.yaml").read_text())
    for role, serial in SERIALS.items():
        raw["cameras"][role]["serial"] = serial
    path = tmp_path / "agx.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _names(nodes):
    return {n.name: n for n in nodes}


def test_ac_one_graph_starts_the_arx_bridge():
    nodes = _names(describe_graph({"graph": "policy", "hardware": "none", "policy": "/path/to/checkpoint", "robot": "ac_one", "arx_driver_mode": "joint_control_v1"}))
    bridge = nodes["arx_bridge"]
    assert bridge.executable in EXECUTABLES
    assert {"driver_mode": "joint_control_v1"} in bridge.parameters and {"robot": "ac_one", "use_sim_time": False} in bridge.parameters
    # not with the simulator, and not for the Piper (its driver speaks JointState)
    assert "arx_bridge" not in _names(describe_graph({"graph": "policy", "hardware": "sim", "robot": "ac_one"}))
    assert "arx_bridge" not in _names(describe_graph({"graph": "policy", "hardware": "none", "policy": "/path/to/checkpoint", "robot": "aloha_agilex_2"}))


def test_pyrealsense2_cameras_per_profile_camera(agx_with_serials):
    nodes = _names(describe_graph({"graph": "record", "hardware": "none", "robot": agx_with_serials, "cameras": "pyrealsense2"}))
    cams = {name: n for name, n in nodes.items() if n.executable == "realsense_node"}
    assert sorted(cams) == ["camera_high", "camera_left_wrist", "camera_right_wrist"]
    assert {"role": "left_wrist"} in cams["camera_left_wrist"].parameters
    assert not [n for n in describe_launch_only({"graph": "record", "hardware": "none", "robot": agx_with_serials, "cameras": "pyrealsense2"})
                if n.package == "realsense2_camera"]


def test_realsense2_camera_nodes_on_the_profile_topics(agx_with_serials):
    profile = load_profile(agx_with_serials)
    nodes = [n for n in describe_launch_only({"graph": "policy", "hardware": "none", "policy": "/path/to/checkpoint", "robot": agx_with_serials, "cameras": "realsense2_camera"})
             if n.package == "realsense2_camera"]
    assert len(nodes) == 3
    for n in nodes:
        role = n.name.removeprefix("camera_")
        cam = profile.camera(role)
        params = {k: v for p in n.parameters if isinstance(p, dict) for k, v in p.items()}
        assert params["serial_no"] == SERIALS[role] and params["rgb_camera.color_profile"] == "640x480x30"
        assert params["enable_depth"] is False and params["rgb_camera.color_format"] == "RGB8"
        remaps = dict(n.remappings)
        # both the <= 4.54 (namespace-relative) and the >= 4.55 (node-private, /camera/camera/...) topic names
        assert remaps["color/image_raw"] == remaps["~/color/image_raw"] == cam.topic
        assert remaps["color/camera_info"] == remaps["~/color/camera_info"] == cam.info_topic
    # none of it in the pip-only graph
    assert not [n for n in describe_graph({"graph": "policy", "hardware": "none", "policy": "/path/to/checkpoint", "robot": agx_with_serials, "cameras": "realsense2_camera"})
                if n.name.startswith("camera_")]


def test_auto_picks_what_is_installed(agx_with_serials, monkeypatch):
    args = {"graph": "policy", "hardware": "none", "policy": "/path/to/checkpoint", "robot": agx_with_serials}
    monkeypatch.setattr(hardware, "realsense2_installed", lambda: False)
    assert len([n for n in describe_graph(args) if n.executable == "realsense_node"]) == 3
    monkeypatch.setattr(hardware, "realsense2_installed", lambda: True)
    assert not [n for n in describe_graph(args) if n.executable == "realsense_node"]
    assert len([n for n in describe_launch_only(args) if n.package == "realsense2_camera"]) == 3


def test_no_cameras_without_serials_in_the_sim_or_when_off(agx_with_serials):
    assert not [n for n in describe_graph({"graph": "policy", "hardware": "none", "policy": "/path/to/checkpoint", "robot": "aloha_agilex_2", "cameras": "pyrealsense2"})
                if n.executable == "realsense_node"]  # the shipped profile has no serials
    assert not [n for n in describe_graph({"graph": "policy", "hardware": "none", "policy": "/path/to/checkpoint", "robot": agx_with_serials, "cameras": "none"})
                if n.executable == "realsense_node"]
    assert not [n for n in describe_graph({"graph": "demo", "hardware": "sim"}) if n.executable == "realsense_node"]
