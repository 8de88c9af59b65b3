"""Visualisation configuration: parameter file, rviz config, and the graph's viz part."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from motus_core.robot_profile import config_dir, load_profile
from motus_core.viz.config import VisualizerConfig, VizRecorderConfig
from motus_core.viz.rviz_config import rviz_config_for_profile
from motus_ros.graph import describe_graph, describe_launch_only

RVIZ = config_dir() / "motus.rviz"


def _displays(tree):
    for d in tree:
        yield d
        yield from _displays(d.get("Displays") or [])


def test_parameter_file_names_only_declared_parameters():
    values = yaml.safe_load((config_dir() / "visualizer.yaml").read_text())["/**"]["ros__parameters"]
    fields = {f.name: f for f in dataclasses.fields(VisualizerConfig)}
    assert set(values) <= set(fields), f"unknown parameters {set(values) - set(fields)}"
    for k, v in values.items():  # the file repeats the defaults: one place decides, the file documents
        assert v == fields[k].default, k


def test_rviz_config_shows_what_the_visualizer_publishes():
    cfg = yaml.safe_load(RVIZ.read_text())
    manager = cfg["Visualization Manager"]
    profile = load_profile("sim_aloha")
    assert manager["Global Options"]["Fixed Frame"] == profile.base_frame
    shown = {}
    for d in _displays(manager["Displays"]):
        topic = d.get("Topic") or d.get("Description Topic")
        if isinstance(topic, dict):
            shown[topic["Value"]] = d
    prefix = VisualizerConfig().output_prefix
    expected = [f"{prefix}/trajectory", f"{prefix}/comparison", f"{prefix}/contact_sheet", f"{prefix}/contact_sheet_vs_actual",
                "/robot_description", f"/{VisualizerConfig().ghost_prefix}/robot_description"]
    expected += [f"{prefix}/predicted/{r}" for r in profile.cameras] + [c.topic for c in profile.cameras.values()]
    missing = [t for t in expected if t not in shown]
    assert not missing, f"rviz config does not show {missing}"
    assert shown[f"{prefix}/trajectory"]["Class"] == "rviz_default_plugins/MarkerArray"
    ghost = shown["/ghost/robot_description"]
    assert ghost["Class"] == "rviz_default_plugins/RobotModel" and ghost["TF Prefix"] == "ghost" and ghost["Alpha"] < 1


def test_rviz_config_follows_another_robot_profile():
    profile = load_profile("aloha_agilex_2")
    out = yaml.safe_load(rviz_config_for_profile(RVIZ.read_text(), profile))
    manager = out["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == profile.base_frame
    live = {d["Name"][5:]: d["Topic"]["Value"] for d in _displays(manager["Displays"])
            if str(d.get("Name", "")).startswith("Live ") and "Topic" in d}
    assert live == {r: c.topic for r, c in profile.cameras.items()}


@pytest.mark.parametrize("graph,extra", [("viz", {}), ("policy", {}), ("demo", {"viz": "true"})])
def test_graph_viz_part(graph, extra):
    values = {"graph": graph, **extra}
    nodes = describe_graph(values)
    assert [n.executable for n in nodes].count("visualizer_node") == 1
    launch_only = describe_launch_only(values)
    assert all(n.package != "motus_ros" for n in launch_only)
    profile = load_profile("sim_aloha")
    if profile.resolve(profile.urdf).is_file():
        by = {(n.namespace, n.name): n for n in launch_only}
        ghost = by[("ghost", "robot_state_publisher")]
        assert ghost.parameters[-1]["frame_prefix"] == "ghost/" and "<robot" in ghost.parameters[-1]["robot_description"]
        assert ("", "robot_state_publisher") in by  # the simulated robot's own model
        anchor = by[("", "ghost_anchor")]
        assert anchor.arguments[anchor.arguments.index("--child-frame-id") + 1].startswith("ghost/")


def test_graph_rviz_and_mcap_options():
    values = {"graph": "viz", "rviz": "true", "viz_mcap": "/tmp/x.mcap", "robot_state_publisher": "false"}
    nodes = describe_graph(values)
    rec = [n for n in nodes if n.executable == "mcap_viz_recorder"]
    assert len(rec) == 1 and rec[0].parameters[-1]["output"] == "/tmp/x.mcap"
    assert {f.name for f in dataclasses.fields(VizRecorderConfig)} >= set(rec[0].parameters[-1])
    launch_only = describe_launch_only(values)
    rviz = [n for n in launch_only if n.executable == "rviz2"]
    assert len(rviz) == 1 and rviz[0].arguments[-2:] == ["-f", "world"]
    assert not [n for n in launch_only if n.name == "robot_state_publisher" and not n.namespace]
    # nothing viz-related without the visualizer or rviz
    assert describe_launch_only({"graph": "demo"}) == []
