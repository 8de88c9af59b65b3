"""The layering rules of docs/ARCHITECTURE.md, checked on the source (imports read with ``ast``, nothing executed)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from motus_ros.executables import EXECUTABLES, TOOLS

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "motus_core"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (top level or inside functions), relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # "from pkg import module"
    return out


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _offenders(folder: Path, forbidden: tuple[str, ...], skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    bad = {}
    for path in _sources(folder):
        if _module_name(path) in skip:
            continue
        hits = sorted(m for m in _imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    return bad


def test_import_resolution_sees_relative_imports():
    """The checker itself: a relative import of a forbidden module is found (else the rules below prove nothing)."""
    got = _imports(CORE / "models" / "mola" / "testing.py")
    assert "motus_core.models.mola.config.MolaConfig" in got and "motus_core.models.mola.config" in got


def test_motus_core_never_imports_ros():
    assert _offenders(CORE, ("rclpy", "rosidl_runtime_py", "motus_msgs", "sensor_msgs", "std_msgs", "motus_ros")) == {}


def test_data_does_not_reach_models_policies_or_tools():
    """The data layer gets its text encoder through motus_core.data.text.TextEncoder, never by import."""
    assert _offenders(CORE / "data", ("motus_core.models", "motus_core.policies", "motus_core.cli", "motus_core.runtime")) == {}


def test_policy_interface_sits_below_registry_and_implementations():
    assert _offenders(CORE / "policy", ("motus_core.policies", "motus_core.models", "motus_core.cli", "torch")) == {}


def test_no_production_import_of_test_helpers():
    testing = ("motus_core.models.mola.testing",)
    assert _offenders(CORE, testing, skip=testing) == {}
    assert _offenders(ROOT / "motus_ros", testing) == {}


def test_library_code_does_not_import_the_command_line_tools():
    assert _offenders(CORE, ("motus_core.cli",), skip=tuple(_module_name(p) for p in _sources(CORE / "cli"))) == {}


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_tools_are_registered_mains_in_one_place(name):
    """ROS-free tools are motus_core.cli modules, ROS tools motus_ros modules; each entry resolves."""
    module, func = TOOLS[name].split(":")
    assert module.startswith(("motus_core.cli.", "motus_ros.")), f"{name} -> {module}: tools live in motus_core/cli/"
    assert name not in EXECUTABLES
    if module.startswith("motus_ros."):  # ROS tools: found, not imported (this test stays ROS-free)
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file() and f"def {func}(" in path.read_text()
        return
    assert callable(getattr(importlib.import_module(module), func))
