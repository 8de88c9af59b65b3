"""motus-eval: the success rate of a policy through the ROS graph (sim + policy node + executor).

End to end with the replay policy (a scripted demonstration of seed 1000 replayed on the robot's
clock): on seed 1000 it transfers the cube, on seed 1001 (the cube elsewhere) it does not, so one
run shows a success, a failure, its video and the table; every strategy runs; tiny_motus (random
weights) has its chunks rejected; a node killed during an episode fails that episode with the reason
and the next episode runs; bad input ends with a clear error and a non-zero exit.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from test.helpers import ROOT

from motus_ros.eval.report import EpisodeResult, EvalReport, wilson_interval

RTF = "0.5"  # the loaded 2-core machine: half real time keeps the replayed grasp on schedule


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _eval(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "motus_ros.eval", "--quiet", *args], env=_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def demo_replay(tmp_path_factory) -> str:
    """The scripted demonstration of seed 1000 (its joint targets at 30 Hz), ROS-free."""
    from motus_ros.demo import record_demonstration

    path, start, info = record_demonstration("transfer_cube", 1000, tmp_path_factory.mktemp("replay"))
    assert info["episode_success"]
    return f"replay:{path}"


# -- ROS-free parts -------------------------------------------------------------------------------
def test_wilson_interval_known_values():
    # reference values (Wilson 1927 score interval, z = 1.96), e.g. Brown, Cai & DasGupta (2001)
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 3) == 0.278
    lo, hi = wilson_interval(50, 50)
    assert round(lo, 3) == 0.929 and hi == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_report_table_and_json(tmp_path):
    r = EvalReport(policy="p", task="transfer_cube", strategy="rtc", seeds=[1000, 1001, 1002], real_time_factor=0.25, time_limit=14.5)
    r.episodes = [EpisodeResult(1000, True, time_to_success=6.0, chunks_received=10),
                  EpisodeResult(1001, False, outcome="timeout", chunks_received=12, chunks_rejected=2, limit_hits=3),
                  EpisodeResult(1002, False, outcome="error", failure_reason="node policy died (exit code -9)")]
    r.policy_chunk_ms = [100.0, 200.0, 300.0]
    s = r.summary()
    assert s["successes"] == 1 and s["episodes"] == 3 and abs(s["success_rate"] - 1 / 3) < 1e-3
    assert s["chunks_rejected"] == 2 and s["limit_hits"] == 3 and s["episodes_ended_by_a_fault"] == 1
    assert s["policy_chunk_ms_p50"] == 200.0 and s["seeds"] == [1000, 1003]
    table = r.table()
    assert "1/3 successes" in table and "real_time_factor 0.25" in table and "node policy died" in table
    r.write_json(tmp_path / "r.json")
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["summary"] == s and [e["seed"] for e in d["episodes"]] == [1000, 1001, 1002]


def test_paired_comparison_and_exact_mcnemar(tmp_path, capsys):
    from motus_ros.eval.cli import main
    from motus_ros.eval.report import compare_reports, mcnemar_exact_p

    # exact two-sided binomial at 1/2 on the discordant pairs: 0 vs 6 -> 2 / 64; 5 vs 11 -> 0.2101
    assert mcnemar_exact_p(0, 6) == pytest.approx(0.03125)
    assert mcnemar_exact_p(5, 11) == pytest.approx(0.2101, abs=1e-4)
    assert mcnemar_exact_p(3, 3) == 1.0 and mcnemar_exact_p(0, 0) == 1.0

    def report(successes: dict) -> dict:
        r = EvalReport(policy="p", task="transfer_cube", strategy="rtc", seeds=sorted(successes), real_time_factor=1.0)
        r.episodes = [EpisodeResult(seed, ok) for seed, ok in sorted(successes.items())]
        return r.as_dict()

    a = report({1000: True, 1001: True, 1002: False, 1003: False, 1004: True})
    b = report({1000: True, 1001: False, 1002: True, 1003: False, 1005: True})
    c = compare_reports(a, b)
    assert (c["seeds"], c["both"], c["neither"], c["only_a"], c["only_b"]) == (4, 1, 1, [1001], [1002])
    assert (c["successes_a"], c["successes_b"], c["seeds_only_in_one"]) == (2, 2, [1004, 1005])
    with pytest.raises(ValueError, match="no seed"):
        compare_reports(report({1: True}), report({2: True}))
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "only A 1 [1001]" in out and "left out, evaluated by one only: seeds [1004, 1005]" in out
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "bad.json")])
    assert exc.value.code == 2 and "not a motus-eval JSON" in capsys.readouterr().err


def test_write_mp4_roundtrip(tmp_path):
    import av

    from motus_ros.eval.video import write_mp4

    frames = [np.full((241, 320, 3), (20 * i % 255, 100, 200), np.uint8) for i in range(12)]
    path = write_mp4(frames, tmp_path / "v.mp4", fps=30)
    with av.open(str(path)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 12 and decoded[0].shape == (242, 320, 3)
    assert np.abs(decoded[5][:241].astype(int) - frames[5].astype(int)).mean() < 4


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--policy", "tiny_motus", "--task", "stack_cups"], "unknown task 'stack_cups'"),
    (["--policy", "/nonexistent/ckpt"], "neither tiny_motus"),
    (["--policy", "tiny_motus", "--episodes", "51"], "--episodes must be within 0..50"),
    (["--policy", "replay:/nonexistent.npy"], "does not exist"),
    (["--policy", "tiny_motus", "--seeds", "5:5"], "seeds are A:B"),
])
def test_bad_arguments(args, message, capsys):
    from motus_ros.eval.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_directory_without_policy_yaml(tmp_path, capsys):
    from motus_ros.eval.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--policy", str(tmp_path)])
    assert exc.value.code == 2 and "no motus_policy.yaml" in capsys.readouterr().err


def test_policy_that_does_not_load(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "motus_policy.yaml").write_text("kind: motus\nweights: missing.safetensors\n")
    res = _eval(["--policy", str(ckpt), "--episodes", "1", "--json", str(tmp_path / "r.json"), "--startup-timeout", "300"])
    assert res.returncode == 1, res.stdout + res.stderr
    assert "did not load" in res.stderr and "node policy died" in res.stderr, res.stderr


def test_attach_without_a_graph(tmp_path):
    res = _eval(["--attach", "--episodes", "1", "--startup-timeout", "3", "--json", str(tmp_path / "r.json")], timeout=120)
    assert res.returncode == 1
    assert "did not come up" in res.stderr, res.stderr


# -- through the graph ----------------------------------------------------------------------------
def test_replay_success_failure_and_video(tmp_path, demo_replay):
    out = tmp_path / "rtc.json"
    res = _eval(["--policy", demo_replay, "--policy-options", "align=time", "--seeds", "1000:1002", "--strategy", "rtc",
                 "--real-time-factor", RTF, "--json", str(out), "--videos", str(tmp_path / "videos")])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    d = json.loads(out.read_text())
    e1000, e1001 = d["episodes"]
    assert e1000["success"] and 0 < e1000["time_to_success"] < 14.5 and e1000["max_stage"] == 4, e1000
    assert e1000["max_lift_cm"] > 10, e1000  # the hand-over happens well above the table
    assert not e1001["success"] and e1001["outcome"] == "timeout" and e1001["max_stage"] < 4, e1001
    for e in (e1000, e1001):
        assert e["chunks_received"] > 0 and e["chunks_rejected"] == 0 and not e["failure_reason"], e
    # the policy's time of (nearly) every chunk of the episodes, not of one (status messages are 10 Hz, chunks slower)
    assert len(d["policy_chunk_ms"]) >= 0.8 * (e1000["chunks_received"] + e1001["chunks_received"]), (len(d["policy_chunk_ms"]), e1000, e1001)
    # the video of the failed episode only: the high camera, about 30 frames per sim second
    assert e1000["video"] == "" and Path(e1001["video"]).is_file()
    import av

    with av.open(e1001["video"]) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n >= 30 * 14.5 * 0.8
    s = d["summary"]
    assert s["successes"] == 1 and s["episodes"] == 2 and s["real_time_factor"] == float(RTF) and s["strategy"] == "rtc"
    assert "1/2 successes" in res.stdout and "Wilson" in res.stdout and "real_time_factor 0.5" in res.stdout
    assert json.loads(res.stdout.strip().splitlines()[-1])["success_rate"] == 0.5


@pytest.mark.parametrize("strategy", ["sync", "temporal_ensemble"])
def test_every_strategy_runs_the_policy(tmp_path, demo_replay, strategy):
    out = tmp_path / "r.json"
    res = _eval(["--policy", demo_replay, "--policy-options", "align=time", "--seeds", "1000:1001", "--strategy", strategy,
                 "--real-time-factor", RTF, "--json", str(out)])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    d = json.loads(out.read_text())
    (e,) = d["episodes"]
    assert d["summary"]["strategy"] == strategy
    assert e["chunks_received"] >= 2 and e["chunks_rejected"] == 0 and not e["failure_reason"], e
    if strategy == "temporal_ensemble":  # the replay follows the robot's clock: TE executes it on schedule
        assert e["success"], json.dumps(e)


def test_tiny_motus_chunks_are_rejected(tmp_path):
    out = tmp_path / "r.json"
    res = _eval(["--policy", "tiny_motus", "--seeds", "1000:1001", "--time-limit", "4", "--real-time-factor", RTF, "--json", str(out)])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (e,) = json.loads(out.read_text())["episodes"]
    assert not e["success"] and e["chunks_rejected"] >= 1, e


def _policy_pid(eval_pid: int) -> int | None:
    import psutil

    for child in psutil.Process(eval_pid).children(recursive=True):
        try:
            if "__node:=policy" in child.cmdline():
                return child.pid
        except psutil.Error:
            continue
    return None


def test_node_death_fails_the_episode_and_the_run_continues(tmp_path, demo_replay):
    out = tmp_path / "r.json"
    logs = tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, "-m", "motus_ros.eval", "--quiet", "--policy", demo_replay, "--policy-options", "align=time",
                             "--seeds", "1000:1002", "--time-limit", "6", "--real-time-factor", RTF, "--json", str(out),
                             "--log-dir", str(logs)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 600
        executor_log = logs / "executor.log"
        while time.monotonic() < deadline:  # the first episode is running
            if executor_log.is_file() and "RunTask: running" in executor_log.read_text(errors="replace"):
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        pid = _policy_pid(proc.pid)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    assert proc.returncode == 0, output[-3000:]
    first, second = json.loads(out.read_text())["episodes"]
    assert not first["success"] and "node policy died" in first["failure_reason"], first
    assert "restarting node policy" in output
    assert not second["failure_reason"] and second["chunks_received"] > 0, second


def test_sigterm_stops_the_nodes_it_started(tmp_path, demo_replay):
    """A terminated motus-eval (kill, a scheduler, a parent's timeout) takes its node processes with it: they
    run in sessions of their own, and once outlived it for hours, keeping the cores busy."""
    import psutil

    out, logs = tmp_path / "r.json", tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, "-m", "motus_ros.eval", "--quiet", "--policy", demo_replay, "--policy-options", "align=time",
                             "--seeds", "1000:1003", "--real-time-factor", RTF, "--json", str(out), "--log-dir", str(logs)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # the first episode is running
            if (logs / "executor.log").is_file() and "RunTask: running" in (logs / "executor.log").read_text(errors="replace"):
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        nodes = []
        for c in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "motus_ros.nodes" in " ".join(c.cmdline()):
                    nodes.append(c)
            except psutil.Error:  # a process that just ended (a restarted executor's predecessor)
                continue
        assert len(nodes) >= 3, [c.cmdline() for c in nodes]
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    gone, alive = psutil.wait_procs(nodes, timeout=30)
    for p in alive:
        p.kill()
    assert not alive, [p.cmdline() for p in alive]
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted; writing the episodes done so far" in output and "Traceback" not in output, output[-3000:]
