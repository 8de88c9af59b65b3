"""The packages build with colcon the way a robot user builds them (documented --base-paths)."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_colcon_build_from_a_workspace(tmp_path):
    proc = subprocess.run([str(ROOT / "tools" / "colcon_check.sh"), str(tmp_path / "ws")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "colcon_check: ok" in proc.stdout
