"""No rclpy API that ROS 2 Humble lacks (the oldest distro the README claims), or a tested fallback.

* A static scan of every module of motus_ros for the rclpy modules and names it uses, checked against
  Humble's rclpy (3.3) public API listed below. An import inside ``try: ... except ImportError:`` is a
  fallback (motus_ros/compat.py) and is allowed. A new rclpy API (say ``rclpy.type_support``, Jazzy+)
  fails here until it gets a fallback or is added to the table after checking Humble's rclpy.
* Every node module imports under a simulated Humble: ``rclpy.event_handler`` hidden, the classes only
  in ``rclpy.qos_event``.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# rclpy 3.3 (Humble): the public names of the modules the suite may use (from Humble's rclpy sources).
HUMBLE_RCLPY: dict[str, set[str]] = {
    "rclpy": {"init", "shutdown", "try_shutdown", "ok", "spin", "spin_once", "spin_until_future_complete", "create_node",
              "get_global_executor", "get_default_context", "get_rmw_implementation_identifier", "logging", "utilities",
              "executors", "node", "qos", "clock", "duration", "time", "action", "serialization", "parameter", "task",
              "lifecycle", "qos_event", "callback_groups", "context", "signals", "timer", "publisher", "subscription"},
    "rclpy.action": {"ActionClient", "ActionServer", "CancelResponse", "GoalResponse", "GoalStatus", "client", "server",
                     "get_action_client_names_and_types_by_node", "get_action_server_names_and_types_by_node",
                     "get_action_names_and_types"},
    "rclpy.action.client": {"ActionClient", "ClientGoalHandle"},
    "rclpy.action.server": {"ActionServer", "CancelResponse", "GoalResponse", "ServerGoalHandle", "default_goal_callback",
                            "default_cancel_callback", "default_handle_accepted_callback"},
    "rclpy.callback_groups": {"CallbackGroup", "MutuallyExclusiveCallbackGroup", "ReentrantCallbackGroup"},
    "rclpy.clock": {"Clock", "ClockType", "ROSClock", "JumpThreshold", "JumpHandle", "TimeJump", "ClockChange"},
    "rclpy.context": {"Context"},
    "rclpy.duration": {"Duration", "Infinite"},
    "rclpy.executors": {"Executor", "SingleThreadedExecutor", "MultiThreadedExecutor", "ExternalShutdownException",
                        "ShutdownException", "TimeoutException", "ConditionReachedException"},
    "rclpy.lifecycle": {"LifecycleNode", "LifecycleNodeMixin", "LifecycleState", "TransitionCallbackReturn", "LifecyclePublisher",
                        "Publisher", "State", "ManagedEntity", "SimpleManagedEntity", "LifecycleStateMachine"},
    "rclpy.logging": {"get_logger", "LoggingSeverity", "set_logger_level", "get_logger_effective_level", "initialize", "shutdown"},
    "rclpy.node": {"Node"},
    "rclpy.parameter": {"Parameter", "parameter_value_to_python"},
    "rclpy.publisher": {"Publisher"},
    "rclpy.qos": {"QoSProfile", "ReliabilityPolicy", "HistoryPolicy", "DurabilityPolicy", "LivelinessPolicy", "QoSPolicyKind",
                  "QoSPresetProfiles", "qos_profile_sensor_data", "qos_profile_system_default", "qos_profile_services_default",
                  "qos_profile_parameters", "qos_profile_parameter_events", "qos_profile_action_status_default",
                  "QoSCompatibility", "qos_check_compatible"},
    "rclpy.qos_event": {"SubscriptionEventCallbacks", "PublisherEventCallbacks", "QoSLivelinessChangedInfo",
                        "QoSLivelinessLostInfo", "QoSRequestedDeadlineMissedInfo", "QoSOfferedDeadlineMissedInfo",
                        "QoSRequestedIncompatibleQoSInfo", "QoSOfferedIncompatibleQoSInfo", "QoSSubscriptionEventType",
                        "QoSPublisherEventType", "UnsupportedEventTypeError"},
    "rclpy.serialization": {"serialize_message", "deserialize_message"},
    "rclpy.signals": {"SignalHandlerOptions", "SignalHandlerGuardCondition"},
    "rclpy.subscription": {"Subscription"},
    "rclpy.task": {"Future", "Task"},
    "rclpy.time": {"Time"},
    "rclpy.timer": {"Timer", "Rate"},
    "rclpy.utilities": {"remove_ros_args", "ok", "get_default_context", "try_shutdown", "shutdown", "get_rmw_implementation_identifier",
                        "timeout_sec_to_nsec"},
}
# keyword arguments added after Humble, by method name
NEWER_KEYWORDS = {"create_timer": {"autostart"}, "create_subscription": {"content_filter_options"}}


def _guarded(tree: ast.AST) -> set[int]:
    """ids of import nodes inside ``try`` blocks that catch ImportError (a fallback exists)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            catches = []
            for h in node.handlers:
                t = h.type
                names = [t] if t is not None and not isinstance(t, ast.Tuple) else list(getattr(t, "elts", []))
                catches += [getattr(n, "id", getattr(n, "attr", "")) for n in names]
            if {"ImportError", "ModuleNotFoundError"} & set(catches):
                out |= {id(n) for b in node.body for n in ast.walk(b)}
    return out


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def rclpy_uses(source: str) -> list[tuple[int, str, str]]:
    """(line, module, name) for every rclpy name the code uses outside an ImportError fallback."""
    tree = ast.parse(source)
    guarded = _guarded(tree)
    uses = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rclpy" and node.level == 0:
            for a in node.names:
                uses.append((node.lineno, node.module, a.name))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("rclpy."):
                    parent, name = a.name.rsplit(".", 1)
                    uses.append((node.lineno, parent, name))
        elif isinstance(node, ast.Attribute) and not isinstance(getattr(node, "_parent", None), ast.Attribute):
            dotted = _dotted(node)
            if dotted and dotted.startswith("rclpy."):
                parts = dotted.split(".")
                # the longest known module prefix, then the next name
                for k in range(len(parts) - 1, 0, -1):
                    mod = ".".join(parts[:k])
                    if mod in HUMBLE_RCLPY:
                        uses.append((node.lineno, mod, parts[k]))
                        break
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in NEWER_KEYWORDS:
            for kw in node.keywords:
                if kw.arg in NEWER_KEYWORDS[node.func.attr]:
                    uses.append((node.lineno, f"<{node.func.attr} keyword>", kw.arg))
    return uses


def humble_violations(source: str) -> list[str]:
    bad = []
    for line, mod, name in rclpy_uses(source):
        if mod.startswith("<"):
            bad.append(f"line {line}: {mod} {name!r} is newer than Humble")
        elif mod not in HUMBLE_RCLPY:
            bad.append(f"line {line}: module {mod} does not exist in Humble's rclpy")
        elif name not in HUMBLE_RCLPY[mod]:
            bad.append(f"line {line}: {mod}.{name} is not in Humble's rclpy")
    return bad


def test_scanner_catches_newer_api():
    assert humble_violations("from rclpy.event_handler import SubscriptionEventCallbacks\n")
    assert humble_violations("import rclpy.type_support\n")
    assert humble_violations("import rclpy\nx = rclpy.experimental.EventsExecutor()\n")
    assert humble_violations("from rclpy.qos import QoSProfile, NewPolicy\n")
    assert humble_violations("node.create_timer(0.1, cb, autostart=False)\n")
    # a fallback inside try/except ImportError is fine; so is Humble's API
    ok = "try:\n    from rclpy.event_handler import X\nexcept ImportError:\n    from rclpy.qos_event import SubscriptionEventCallbacks as X\n"
    assert humble_violations(ok) == []
    assert humble_violations("import rclpy\nrclpy.init()\nfrom rclpy.executors import ExternalShutdownException\n") == []


def test_motus_ros_uses_only_humble_rclpy_api():
    bad = []
    files = sorted((ROOT / "motus_ros").rglob("*.py")) + sorted((ROOT / "launch").glob("*.py"))
    assert len(files) > 10
    for path in files:
        for v in humble_violations(path.read_text()):
            bad.append(f"{path.relative_to(ROOT)} {v}")
    assert not bad, "rclpy API that Humble lacks (add a fallback in motus_ros/compat.py):\n" + "\n".join(bad)


SIMULATED_HUMBLE = textwrap.dedent("""
    import importlib, importlib.abc, pkgutil, sys, types
    # rclpy's own modules (Kilted's use event_handler internally) are loaded first; then the name is hidden
    for m in ("node", "executors", "subscription", "publisher", "action", "lifecycle", "qos", "clock", "serialization"):
        importlib.import_module("rclpy." + m)
    import rclpy.event_handler as real
    # Humble: rclpy.event_handler does not exist; the callbacks live in rclpy.qos_event
    qos_event = types.ModuleType("rclpy.qos_event")
    qos_event.SubscriptionEventCallbacks = real.SubscriptionEventCallbacks
    qos_event.PublisherEventCallbacks = real.PublisherEventCallbacks
    sys.modules["rclpy.qos_event"] = qos_event
    del sys.modules["rclpy.event_handler"]
    import rclpy
    if hasattr(rclpy, "event_handler"):
        delattr(rclpy, "event_handler")
    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "rclpy.event_handler":
                raise ModuleNotFoundError("No module named 'rclpy.event_handler' (simulated Humble)")
    sys.meta_path.insert(0, Hide())
    import motus_ros.nodes
    names = sorted(m.name for m in pkgutil.iter_modules(motus_ros.nodes.__path__))
    for name in names:
        importlib.import_module("motus_ros.nodes." + name)
    import motus_ros.compat
    print("compat:", motus_ros.compat.EVENT_HANDLER_MODULE, "nodes:", len(names))
""")


def test_every_node_imports_under_simulated_humble():
    out = subprocess.run([sys.executable, "-c", SIMULATED_HUMBLE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "compat: rclpy.qos_event" in out.stdout, out.stdout
