"""Parameters are declared once: the docs table is generated from the dataclasses, the YAML files hold
only values that differ from the defaults, and values outside their metadata are refused at start."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_docs_table_is_current_and_yaml_files_are_minimal():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "param_table.py"), "--check"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_yaml_check_finds_restated_defaults_and_unknown_names(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import param_table
    finally:
        sys.path.pop(0)
    from motus_ros.nodes.executor_node import ExecutorNodeParams

    f = tmp_path / "executor.yaml"
    f.write_text("/**:\n  ros__parameters:\n    strategy: rtc\n    execution_horizon: 12\n    rtc: {schedule: cosine}\n"
                 "    temporal_ensemble: {decay: 0.02}\n")
    problems = param_table.yaml_problems(f, ExecutorNodeParams)
    assert any("strategy: 'rtc' is the default" in p for p in problems)
    assert any("execution_horizon is not a parameter" in p for p in problems)
    assert any("rtc.schedule must be one of" in p for p in problems)
    assert not any("temporal_ensemble.decay" in p for p in problems)


def test_a_parameter_outside_its_choices_or_bounds_stops_the_node(ros_context):
    import rclpy
    from rclpy.parameter import Parameter

    from motus_core.runtime.executor import ExecutorConfig
    from motus_ros.params import declare_parameters

    node = rclpy.create_node("param_check", context=ros_context, parameter_overrides=[
        Parameter("rtc.schedule", Parameter.Type.STRING, "cosine"), Parameter("limit_budget", Parameter.Type.DOUBLE, 1.5)])
    try:
        with pytest.raises(ValueError) as e:
            declare_parameters(node, ExecutorConfig)
        assert "rtc.schedule must be one of ('exp', 'linear', 'hard')" in str(e.value)
        assert "limit_budget must be <= 1.0" in str(e.value)
    finally:
        node.destroy_node()
    node = rclpy.create_node("param_ok", context=ros_context,
                             parameter_overrides=[Parameter("rtc.execution_horizon", Parameter.Type.INTEGER, 12)])
    try:
        cfg = declare_parameters(node, ExecutorConfig)
        assert cfg.rtc.execution_horizon == 12 and cfg.strategy == "rtc"
    finally:
        node.destroy_node()
    # `-p tracking_grace:=1000` arrives as an integer: a float parameter takes it (it once crashed the node)
    node = rclpy.create_node("param_int_for_float", context=ros_context,
                             parameter_overrides=[Parameter("tracking_grace", Parameter.Type.INTEGER, 1000)])
    try:
        cfg = declare_parameters(node, ExecutorConfig)
        assert cfg.tracking_grace == 1000.0 and isinstance(cfg.tracking_grace, float)
    finally:
        node.destroy_node()
    # a value of the wrong kind is an error that names the parameter, not a traceback from rclpy
    node = rclpy.create_node("param_wrong_type", context=ros_context, parameter_overrides=[
        Parameter("tracking_grace", Parameter.Type.STRING, "long"), Parameter("delay_window", Parameter.Type.STRING, "many")])
    try:
        with pytest.raises(ValueError) as e:
            declare_parameters(node, ExecutorConfig)
        assert "tracking_grace must be a number, got 'long'" in str(e.value) and "delay_window has the wrong type" in str(e.value)
    finally:
        node.destroy_node()
