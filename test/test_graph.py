"""The node graph is described once: the launch files and `motus-launch` start the same nodes.

The launch file runs on the real launch / launch_ros (built from the upstream sources by
tools/build_ros2_upstream.sh): its OpaqueFunction is executed in a real ``LaunchContext`` and the
launch_ros ``Node`` actions it creates (names, executables, parameter files and values, remappings,
the shutdown handlers of required nodes) must equal what the pip-only launcher starts. The launch
files under ``ros2 launch`` as processes: test_launch_real.py.
"""
from __future__ import annotations

import importlib.util
import os
import runpy
import sys
from pathlib import Path

import pytest

from motus_ros import graph as graph_mod
from motus_ros.executables import EXECUTABLES
from motus_ros.launcher import command_line

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ament_prefix(tmp_path, monkeypatch):
    """A real ament prefix in which motus_ros's share dir is this source tree."""
    index = tmp_path / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "motus_ros").write_text("")
    (tmp_path / "share" / "motus_ros").symlink_to(ROOT)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    return tmp_path


needs_launch = pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                                  reason="launch / launch_ros are not built (tools/build_ros2_upstream.sh, part of make setup)")


def _run_launch_file(values):
    """Execute motus.launch.py's OpaqueFunction in a real LaunchContext: the launch_ros Nodes it creates,
    the declared arguments, and the nodes whose exit shuts the launch down."""
    import yaml
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
    from launch_ros.actions import Node

    ld = runpy.run_path(str(ROOT / "launch" / "motus.launch.py"))["generate_launch_description"]()
    declared = {a.name: a.default_value for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    context = LaunchContext()
    for a in ld.entities:
        if isinstance(a, DeclareLaunchArgument):
            context.launch_configurations[a.name] = "".join(s.perform(context) for s in a.default_value)
    context.launch_configurations.update(values)
    (opaque,) = [a for a in ld.entities if isinstance(a, OpaqueFunction)]
    actions = opaque.execute(context)
    nodes = []
    for a in actions:
        if isinstance(a, Node):
            a._perform_substitutions(context)
            params = []
            for arg, is_file in a._Node__expanded_parameter_arguments or []:
                assert is_file
                if os.path.basename(arg).startswith("launch_params_"):  # a dict, written by launch_ros
                    (content,) = yaml.safe_load(Path(arg).read_text()).values()
                    params.append(content["ros__parameters"])
                else:
                    params.append(arg)
            nodes.append({"package": a.node_package, "executable": a.node_executable, "name": a.node_name.rsplit("/", 1)[-1],
                          "parameters": params, "remappings": [tuple(r) for r in (a._Node__expanded_remappings or [])]})
    by_id = {id(a): a for a in actions if isinstance(a, Node)}
    shutdown_on = [by_id[id(h.event_handler._OnActionEventBase__action_matcher)].node_name.rsplit("/", 1)[-1]
                   for h in actions if isinstance(h, RegisterEventHandler)]
    return nodes, declared, shutdown_on


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@needs_launch
@pytest.mark.parametrize("values", [
    {"graph": "demo", "episodes": "2"},
    {"graph": "policy", "strategy": "sync"},
    {"graph": "record"},
    {"graph": "viz", "hardware": "none", "robot": "aloha_agilex_2"},
    {"graph": "policy", "hardware": "none", "robot": "ac_one", "policy": "/path/to/checkpoint"},
    {"graph": "sim", "image_width": "640", "image_height": "480"},
])
def test_launch_file_and_launcher_start_the_same_nodes(values, ament_prefix, tmp_path):
    launched, declared, shutdown_on = _run_launch_file(values)
    assert set(declared) == {a.name for a in graph_mod.ARGUMENTS}, "launch arguments differ from the graph's"
    specs = graph_mod.describe_graph(values)
    launched = [n for n in launched if n["package"] == "motus_ros"]
    assert [(n["name"], n["executable"]) for n in launched] == [(s.name, s.executable) for s in specs]
    config = ROOT / "config"
    for node, spec in zip(launched, specs):
        expected = [_flatten(p) if isinstance(p, dict) else os.path.join(str(ament_prefix / "share" / "motus_ros" / "config"), p)
                    for p in spec.parameters]
        got = [_flatten(p) if isinstance(p, dict) else p for p in node["parameters"]]
        assert got == expected
        assert node["remappings"] == [tuple(r) for r in spec.remappings]
        assert node["executable"] in EXECUTABLES
        # the launcher's command line uses the same parameter files and remappings
        cmd = command_line(spec, tmp_path)
        files = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--params-file"]
        assert len(files) == len(spec.parameters)
        for f, p in zip(files, spec.parameters):
            if not isinstance(p, dict):
                assert Path(f).resolve() == (config / p).resolve()
    assert shutdown_on == [s.name for s in specs if s.required]


def test_unknown_or_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown graph argument"):
        graph_mod.describe_graph({"grpah": "demo"})
    with pytest.raises(ValueError, match="must be one of"):
        graph_mod.describe_graph({"graph": "nonsense"})


def test_every_parameter_file_named_by_the_graph_exists():
    for g in graph_mod.GRAPHS:
        for spec in graph_mod.describe_graph({"graph": g, "viz": "true"}):
            for p in spec.parameters:
                if not isinstance(p, dict):
                    assert (ROOT / "config" / p).is_file(), f"{spec.name}: config/{p} missing"
            module = EXECUTABLES[spec.executable].split(":")[0]
            assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{spec.name}: {module} missing"


def test_motus_launch_starts_the_described_nodes(ros_context):
    """`motus-launch` (pip-only) brings up exactly the nodes of the description, and Ctrl-C stops them all."""
    import signal
    import subprocess

    import rclpy

    from test.helpers import ROOT as REPO, stop_process, wait_until

    values = {"graph": "viz", "hardware": "sim", "image_width": "64", "image_height": "48"}
    expected = {f"{s.namespace}/{s.name}".replace("//", "/") if s.namespace else f"/{s.name}" for s in graph_mod.describe_graph(values)}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "motus_ros.launcher", *[f"{k}:={v}" for k, v in values.items()]], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    node = rclpy.create_node("graph_probe", context=ros_context)
    try:
        seen: set[str] = set()

        def all_seen() -> bool:
            seen.clear()
            seen.update(f"{ns.rstrip('/')}/{n}" for n, ns in node.get_node_names_and_namespaces())
            return expected <= seen

        wait_until(all_seen, 60, what="the graph's nodes", procs=[proc], period=0.2,
                   describe=lambda: f"missing nodes: {expected - seen}")
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
    finally:
        if proc.poll() is None:
            stop_process(proc)
        node.destroy_node()


def test_arguments_not_given_never_override_the_yaml():
    """Precedence: defaults < config/<node>.yaml < launch arguments that were given."""
    def params(values, node):
        (spec,) = [s for s in graph_mod.describe_graph(values) if s.name == node]
        merged = {}
        for p in spec.parameters:
            if isinstance(p, dict):
                merged.update(p)
        return spec, merged

    spec, merged = params({"graph": "policy"}, "executor")
    assert "executor.yaml" in spec.parameters and "strategy" not in merged and "command_interface" not in merged
    assert params({"graph": "policy", "strategy": "sync"}, "executor")[1]["strategy"] == "sync"
    _, sim = params({"graph": "sim"}, "sim")
    assert not {"camera_rate", "real_time_factor", "image_height", "image_width"} & set(sim)
    assert params({"graph": "sim", "camera_rate": "15"}, "sim")[1]["camera_rate"] == 15.0
    from motus_core.runtime.strategies import strategy_names

    (arg,) = [a for a in graph_mod.ARGUMENTS if a.name == "strategy"]
    assert set(strategy_names()) <= set(arg.choices)
