"""bench/gpu.py runs end to end before it ever meets the GPU: the same script, tiny configs, on the CPU.

GPU time is scarce (one short call), so a typo, a wrong key or a broken part must show up here: the
script runs as a subprocess exactly as on the GPU (parts, children, JSON line) and every part must
finish without error; the error paths (a failing part, a missing package, a child killed at its
deadline, a part out of time) are checked too.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu.py"

MOTUS_KEYS = (
    "motus_vla_10step_ms_p50", "motus_vla_10step_ms_p90", "motus_vla_3step_ms_p50", "motus_vla_3step_ms_p90",
    "motus_joint_10step_ms_p50", "motus_joint_10step_ms_p90", "motus_vla_10step_rtc_ms_p50",
    "motus_vla_10step_compiled_ms_p50", "motus_compile_s", "motus_vlm_ms_p50", "motus_vae_encode_ms_p50",
    "motus_denoise_10step_ms_p50", "motus_denoise_3step_ms_p50", "motus_vae_decode_ms_p50", "motus_peak_gb",
    "motus_rtc_peak_gb", "motus_rtc_overhead_x", "mola_step_ms_p50", "mola_step_ms_p90", "mola_peak_gb",
)


def has_motus_train() -> bool:
    try:
        return importlib.util.find_spec("motus_core.models.motus.train") is not None
    except ModuleNotFoundError:
        return False


def run_script(*args, env_extra=None, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env_extra or {})}
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"no output (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    try:
        result = json.loads(lines[-1])
    except ValueError:
        pytest.fail(f"last line is not JSON (rc {proc.returncode}): {lines[-1][:500]}\n{proc.stderr[-3000:]}")
    return proc, result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_gpu") / "result.json"
    t = time.monotonic()
    proc, result = run_script("--device", "cpu", "--config", "tiny", "--repeats", "2", "--threads", "1",
                              "--compile-backend", "eager", "--budget-s", "1200", "--out", str(out))
    return proc, result, out, time.monotonic() - t


def test_every_part_runs_on_tiny_configs(tiny_run):
    proc, result, _, _ = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    parts = result["parts"]
    expected = {"motus_build", "motus_vla_10step", "motus_vla_3step", "motus_joint_10step", "motus_rtc", "motus_flash",
                "mola", "train", "motus_compiled"}
    assert set(parts) == expected
    # flash-attn never exists on a CPU; training only once motus-train exists: everything else must be ok
    allowed = {"motus_flash": {"unavailable"}, "train": {"ok"} if has_motus_train() else {"unavailable"}}
    for name, part in parts.items():
        assert part["status"] in allowed.get(name, {"ok"}), (name, part)
    assert result["errors"] == {}
    assert result["status"] == "ok"


def test_figures_and_keys(tiny_run):
    _, result, out, _ = tiny_run
    for key in MOTUS_KEYS:
        assert isinstance(result.get(key), (int, float)) and result[key] > 0, (key, result.get(key))
    # named like bench/train.py's GPU keys, with the measured config and dtype in the name
    assert "train_step_ms_tiny_lora_fp32" in result and "peak_mem_gb_tiny_lora_fp32" in result
    if has_motus_train():
        assert result["train_step_ms_tiny_lora_fp32"] > 0
    assert result["motus_vla_10step_flash_ms_p50"] is None  # unavailable parts give null, never a number
    assert result["motus_vla_10step_ms_p90"] >= result["motus_vla_10step_ms_p50"]
    assert result["goals"] == {"motus_vla_10step_ms": 250.0, "motus_vla_3step_ms": 100.0, "mola_step_ms": 65.0,
                               "mola_paper_rtx4090_ms": 129.6}
    assert json.loads(out.read_text()) == result  # --out writes the same object


def test_parts_measure_what_they_say(tiny_run):
    _, result, _, _ = tiny_run
    p = result["parts"]
    for name in ("motus_vla_10step", "motus_vla_3step", "motus_joint_10step", "motus_rtc", "motus_compiled", "mola"):
        assert p[name]["reps_done"] == 2 and p[name]["reps_asked"] == 2, (name, p[name])
    assert p["motus_vla_10step"]["steps"] == 10 and p["motus_vla_3step"]["steps"] == 3
    assert p["motus_vla_10step"]["attention"] == "sdpa"
    assert p["motus_vla_10step"]["actions_shape"] == [48, 14]
    assert p["motus_vla_10step"]["frames_shape"] is None
    assert p["motus_joint_10step"]["mode"] == "joint"
    assert p["motus_joint_10step"]["frames_shape"][0] == 8  # the 8 decoded frames
    assert p["motus_joint_10step"]["stage_ms_p50"]["vae_decode"] > 0
    assert p["motus_rtc"]["rtc_prefix"] is True and p["motus_rtc"]["prefix_length"] == 32
    assert p["motus_rtc"]["expected_delay"] == 4
    for stage in ("vlm", "vae_encode", "denoise"):
        assert p["motus_vla_10step"]["stage_ms_p50"][stage] > 0, stage
    assert p["motus_compiled"]["compile_backend"] == "eager" and p["motus_compiled"]["first_chunk_s"] > 0
    assert p["mola"]["actions_shape"][1] == 14
    assert set(p["mola"]["stage_ms_p50"]) == {"preprocess", "text", "video", "moidm", "video_former", "head"}


def test_environment_and_settings_are_reported(tiny_run):
    proc, result, _, _ = tiny_run
    env, settings = result["env"], result["settings"]
    for key in ("python", "torch", "cuda_runtime", "transformers", "diffusers", "gpu"):
        assert key in env
    assert settings["config"] == "tiny" and settings["repeats"] == 2 and settings["device"] == "cpu"
    assert settings["dtype"] == "float32" and settings["vae_dtype"] == "float32"
    assert "environment:" in proc.stdout and "settings:" in proc.stdout and "summary:" in proc.stdout


def load_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_main(mod, capsys, *args):
    """main() in this process (the libraries are imported once): the error paths, quickly."""
    import torch

    threads = torch.get_num_threads()
    try:
        rc = mod.main(list(args))
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    return rc, json.loads(out.strip().splitlines()[-1]), out


def test_a_failing_part_is_recorded_and_the_rest_runs(capsys):
    # an unknown VAE dtype makes the Motus build fail: the Motus parts report it, MoLA still runs
    rc, result, _ = run_main(load_module(), capsys, "--device", "cpu", "--config", "tiny", "--repeats", "1",
                             "--threads", "1", "--parts", "motus_vla_10step,mola", "--vae-dtype", "float7")
    assert rc == 0
    parts = result["parts"]
    assert parts["motus_build"]["status"] == "error" and "float7" in parts["motus_build"]["error"]
    assert parts["motus_vla_10step"]["status"] == "error"
    assert "motus_build failed" in parts["motus_vla_10step"]["error"]
    assert parts["mola"]["status"] == "ok" and result["mola_step_ms_p50"] > 0
    assert result["motus_vla_10step_ms_p50"] is None
    assert result["status"] == "partial" and set(result["errors"]) == {"motus_build", "motus_vla_10step"}


def test_a_missing_package_is_named_before_anything_runs(capsys):
    mod = load_module()
    mod.REQUIRED.append(("motus_bench_absent_module", "motus-bench-absent"))
    rc, result, out = run_main(mod, capsys, "--device", "cpu", "--config", "tiny")
    assert rc == 2
    assert result["status"] == "error" and "parts" not in result
    assert result["missing"] == ["motus_bench_absent_module (pip: motus-bench-absent): "
                                 "ModuleNotFoundError: No module named 'motus_bench_absent_module'"]
    assert "MISSING motus_bench_absent_module" in out


def test_a_missing_name_in_a_library_is_named(capsys):
    mod = load_module()
    mod.REQUIRED_NAMES.append(("diffusers", ("NoSuchModelClass",)))
    rc, result, _ = run_main(mod, capsys, "--device", "cpu", "--config", "tiny")
    assert rc == 2 and len(result["missing"]) == 1 and result["missing"][0].startswith("diffusers.NoSuchModelClass")


def test_no_cuda_without_explicit_device_is_a_skip_not_a_failure(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    mod = load_module()
    rc, result, _ = run_main(mod, capsys, "--config", "tiny")  # what `make bench` runs on a CPU machine
    assert rc == 0 and result["status"] == "skipped"
    rc, result, _ = run_main(mod, capsys, "--device", "cuda", "--config", "tiny")  # what `make bench-gpu` runs
    assert rc == 2 and result["status"] == "error"


def test_a_part_out_of_time_stops_its_repetitions():
    mod = load_module()
    part = mod.Part("x", deadline=time.monotonic() - 1.0)  # its budget is already used
    calls = []
    done = part.repeat(lambda i: calls.append(i) or i, reps=5, warmup=1)
    assert calls == [-1, 0] and done == [0]  # the warm-up, then one measured repetition, then it stops
    assert part.result["reps_done"] == 1 and part.result["reps_asked"] == 5
    assert "stopped after 1 of 5" in part.result["note"]
    part = mod.Part("y", deadline=time.monotonic() + 60.0)
    assert part.repeat(lambda i: i, reps=3, warmup=0) == [0, 1, 2] and "note" not in part.result


def test_a_child_over_its_deadline_is_killed_and_reported(tmp_path, monkeypatch):
    mod = load_module()
    # inductor on CPU compiles for minutes: a 10 s budget cannot be met, so the child must be killed. A warm
    # inductor cache (an earlier run on this machine) compiled it in 4.5 s: the child gets an empty one.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    args = SimpleNamespace(device="cpu", config="tiny", repeats=2, warmup=1, profile="aloha_agilex_2",
                           vae_dtype="float32", train_steps=1, compile_backend="inductor", dtype="float32", threads=1)
    clock = mod.Clock(budget_s=10.0 + mod.RESERVE_S + (time.monotonic() - mod.T0))
    t = time.monotonic()
    res = mod.run_child("compile", args, clock, None, [])
    assert time.monotonic() - t < 10.0 + mod.CHILD_GRACE_S + 10.0
    assert res["status"] == "error" and "killed at the part's deadline" in res["error"], res
