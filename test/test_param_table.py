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


def test_old_and_unknown_parameter_names_are_not_dropped_silently(ros_context, monkeypatch):
    """ROS ignores a value for a parameter a node does not declare: a params file written for an older
    version (``execution_horizon`` before it became ``rtc.execution_horizon``) would run with the default."""
    import rclpy
    from rclpy.parameter import Parameter

    from motus_ros.nodes.executor_node import ExecutorNode
    from motus_ros.params import declare_parameters
    from motus_ros.nodes.executor_node import ExecutorNodeParams
    from motus_core.runtime.executor import RENAMED_PARAMETERS

    with pytest.raises(ValueError) as e:
        ExecutorNode(context=ros_context, parameter_overrides=[
            Parameter("execution_horizon", Parameter.Type.INTEGER, 12), Parameter("te_decay", Parameter.Type.DOUBLE, 0.1)])
    assert "'execution_horizon' was renamed: use 'rtc.execution_horizon'" in str(e.value)
    assert "'te_decay' was renamed: use 'temporal_ensemble.decay'" in str(e.value)

    node = rclpy.create_node("param_unknown", context=ros_context, parameter_overrides=[
        Parameter("limit_budgett", Parameter.Type.DOUBLE, 0.5), Parameter("qos_overrides./tf.publisher.depth", Parameter.Type.INTEGER, 5)])
    warnings = []
    monkeypatch.setattr(node.get_logger(), "warning", lambda msg, **kw: warnings.append(msg))
    try:
        cfg = declare_parameters(node, ExecutorNodeParams, renamed=RENAMED_PARAMETERS)
        assert cfg.limit_budget == 0.8
        assert len(warnings) == 1 and "limit_budgett" in warnings[0] and "qos_overrides" not in warnings[0]
    finally:
        node.destroy_node()
