"""The proof bench's bookkeeping (ROS-free): which seeds are recorded, when a stage is complete, the
learning-curve checkpoints and the evaluation speed. The stages themselves run in ``make proof``."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from test.helpers import ROOT

spec = importlib.util.spec_from_file_location("learn_transfer_cube", ROOT / "bench" / "learn_transfer_cube.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _episode(root: Path, eid: str, state: str, outcome: str, seed: int | None, task: str = "transfer_cube") -> None:
    from motus_core.data.episode import EpisodeMetadata, write_metadata

    d = root / eid
    (d / "bag").mkdir(parents=True)
    notes = f"scripted demonstrator, seed {seed}" if seed is not None else ""
    write_metadata(d, EpisodeMetadata(episode_id=eid, robot="sim_aloha", task=task, instruction="x", state=state, outcome=outcome, notes=notes))


def test_recorded_seeds_counts_complete_episodes_of_the_task_only(tmp_path):
    _episode(tmp_path, "transfer_cube_1", "complete", "success", 0)
    _episode(tmp_path, "transfer_cube_2", "complete", "failure", 1)
    _episode(tmp_path, "transfer_cube_3", "complete", "success", 1)  # the retry of seed 1
    _episode(tmp_path, "transfer_cube_4", "incomplete", "unknown", 2)  # interrupted: not recorded
    _episode(tmp_path, "insertion_5", "complete", "success", 3, task="insertion")
    _episode(tmp_path, "transfer_cube_6", "complete", "success", None)  # not the demonstrator's
    assert bench.recorded_seeds(tmp_path) == {0: ["success"], 1: ["failure", "success"]}


def test_parse_seeds():
    assert bench.parse_seeds("1000:1050") == (1000, 1050)
    for bad in ("5:5", "10:2", "a:b", "3"):
        with pytest.raises(Exception):
            bench.parse_seeds(bad)


def test_real_time_factor_follows_the_chunk_time():
    assert bench.choose_real_time_factor(0.1) == 1.0
    assert bench.choose_real_time_factor(0.4) == 1.0
    assert bench.choose_real_time_factor(1.0) == pytest.approx(0.4)
    assert bench.choose_real_time_factor(2.5) == pytest.approx(0.15)
    assert bench.choose_real_time_factor(100.0) == pytest.approx(0.05)  # floor
    # on a CPU the graph's chunk is several times the in-process one: never faster than the proof measured at
    assert bench.choose_real_time_factor(0.1, "cpu") == pytest.approx(0.3)
    assert bench.choose_real_time_factor(2.5, "cpu") == pytest.approx(0.15)


def test_curve_checkpoints_spread_over_the_run(tmp_path):
    for s in range(500, 6001, 500):
        (tmp_path / "checkpoints" / f"step_{s:08d}").mkdir(parents=True)
    picked = [p.name for p in bench.curve_checkpoints(tmp_path, 3)]
    assert picked == ["step_00000500", "step_00003000", "step_00006000"] or picked == ["step_00000500", "step_00003500", "step_00006000"]
    assert len(bench.curve_checkpoints(tmp_path, 20)) == 12


def test_eval_json_complete(tmp_path):
    f = tmp_path / "e.json"
    assert not bench._eval_json_complete(f, (1000, 1003))
    f.write_text(json.dumps({"episodes": [{"seed": 1000}, {"seed": 1001}]}))
    assert not bench._eval_json_complete(f, (1000, 1003))
    f.write_text(json.dumps({"episodes": [{"seed": 1000}, {"seed": 1001}, {"seed": 1002}]}))
    assert bench._eval_json_complete(f, (1000, 1003))


def test_a_killed_evaluation_keeps_its_finished_episodes(tmp_path, monkeypatch):
    """motus-eval writes its JSON after every episode; a run killed part-way (session end) must not
    evaluate those seeds again, and the merged report lists every seed once."""
    import argparse

    def ep(seed):
        return {"seed": seed, "success": seed % 2 == 0, "outcome": "timeout"}

    out = tmp_path / "final_rtc.json"
    out.write_text(json.dumps({"episodes": [ep(s) for s in range(1000, 1002)], "summary": {"time_limit": 14.5}}))
    (tmp_path / "final_rtc_from1002.json").write_text(json.dumps({"episodes": [ep(s) for s in range(1002, 1005)],
                                                                  "policy_chunk_ms": [300.0] * 30}))
    ran = []

    def fake_run(cmd, log_path):
        seeds = cmd[cmd.index("--seeds") + 1]
        ran.append(seeds)
        a, b = (int(x) for x in seeds.split(":"))
        part = Path(cmd[cmd.index("--json") + 1])
        part.write_text(json.dumps({"episodes": [ep(s) for s in range(a, b)],
                                    "summary": {"policy_chunk_ms_p50": 100.0, "achieved_real_time_factor": 0.3, "time_limit": 14.5},
                                    "policy_chunk_ms": [100.0] * 20 + [500.0] * 5}))
        return 0

    monkeypatch.setattr(bench, "_run", fake_run)
    ns = argparse.Namespace(device="cpu", eval_time_limit=0.0, eval_executor_param=[])
    data = bench.run_eval(ns, tmp_path, tmp_path / "policy", "rtc", (1000, 1008), out, 0.3, videos=False)
    assert ran == ["1005:1008"]
    assert [e["seed"] for e in data["episodes"]] == list(range(1000, 1008))
    assert not list(tmp_path.glob("final_rtc_from*.json"))
    assert bench._eval_json_complete(out, (1000, 1008))
    # the percentiles are over every chunk of both parts, not over each part's median
    assert len(data["policy_chunk_ms"]) == 55
    assert data["summary"]["policy_chunk_ms_p50"] == 300.0 and data["summary"]["policy_chunk_ms_p95"] == 500.0


def test_an_evaluation_killed_by_a_signal_is_not_reported_as_the_result(tmp_path, monkeypatch):
    """motus-eval killed part-way (SIGTERM) while the bench runs: its episodes are kept for a re-run, and
    the bench stops instead of reporting 2 of 10 seeds as the strategy's success rate."""
    import argparse

    out = tmp_path / "final_te.json"

    def killed_run(cmd, log_path):
        part = Path(cmd[cmd.index("--json") + 1])
        part.write_text(json.dumps({"episodes": [{"seed": s, "success": True, "outcome": "success"} for s in (1000, 1001)],
                                    "summary": {"time_limit": 14.5}}))
        return 130

    monkeypatch.setattr(bench, "_run", killed_run)
    ns = argparse.Namespace(device="cpu", eval_time_limit=0.0, eval_executor_param=[])
    with pytest.raises(SystemExit, match="after 2 of 10 episodes"):
        bench.run_eval(ns, tmp_path, tmp_path / "policy", "temporal_ensemble", (1000, 1010), out, 0.3, videos=False)
    assert not bench._eval_json_complete(out, (1000, 1010))
    assert [e["seed"] for e in json.loads(out.read_text())["episodes"]] == [1000, 1001]  # a re-run continues at 1002


def test_encoder_probe_ridge_finds_a_linear_signal_and_not_noise():
    spec = importlib.util.spec_from_file_location("encoder_probe", ROOT / "bench" / "encoder_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.uniform(-0.05, 0.05, size=(120, 2))
    X = rng.normal(size=(120, 500)) * 0.1
    X[:, :40] += y @ rng.normal(size=(2, 40)) * 20  # the position, spread over 40 features
    err, base = probe.ridge_heldout(X, y, 1e-3)
    assert np.all(err < 0.4 * base)
    err_noise, base_noise = probe.ridge_heldout(rng.normal(size=(120, 500)), y, 1e-3)
    assert np.all(err_noise > 0.7 * base_noise)


def test_a_finished_training_is_trained_on_when_the_overrides_change(tmp_path, monkeypatch):
    """`--train-override train.steps=12000` on a workdir whose 6000-step run finished: motus-train runs
    again (it resumes from train/latest), the minutes add up; the same overrides again: nothing runs."""
    import argparse

    train = tmp_path / "train"
    train.mkdir()
    bench._mark_done(train, {"train_steps": 6000, "train_minutes": 40.0, "val_action_error": 0.02, "dataset_episodes": 3,
                             "final": str(train / "final"), "device": "cpu", "overrides": []})
    (train / "proof_train_time.json").write_text(json.dumps({"seconds": 2400.0}))
    ran = []

    def fake_train(cmd, log_path):
        ran.append(cmd)
        (train / "summary.json").write_text(json.dumps({"step": 12000, "finished": True}))
        return 0

    monkeypatch.setattr(bench, "_run", fake_train)
    same = argparse.Namespace(train_override=[], keep_checkpoints=20, device="cpu")
    assert bench.stage_train(same, tmp_path, {"episodes": 3})["train_steps"] == 6000 and not ran
    (tmp_path / "eval").mkdir()  # evaluated before eval/model.json existed
    more = argparse.Namespace(train_override=["train.steps=12000"], keep_checkpoints=20, device="cpu")
    info = bench.stage_train(more, tmp_path, {"episodes": 3})
    assert json.loads((tmp_path / "eval" / "model.json").read_text())["train_steps"] == 6000  # so the eval stage moves it aside
    assert len(ran) == 1 and "train.steps=12000" in ran[0] and f"output_dir={train}" in ran[0]
    assert info["train_steps"] == 12000 and info["overrides"] == ["train.steps=12000"] and info["train_minutes"] >= 40.0
    assert bench.stage_train(more, tmp_path, {"episodes": 3})["train_steps"] == 12000 and len(ran) == 1


def test_the_evaluations_of_an_earlier_model_are_moved_aside_not_reused(tmp_path, monkeypatch):
    import argparse

    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "model.json").write_text(json.dumps({"train_steps": 6000, "overrides": []}))
    (ev / "real_time_factor.json").write_text(json.dumps({"chunk_seconds_in_process": 0.3, "real_time_factor": 0.3}))
    for key in bench.EVAL_STRATEGIES:
        (ev / f"final_{key}.json").write_text(json.dumps({"episodes": [{"seed": 1000}, {"seed": 1001}]}))
    ran = []

    def fake_eval(ns, work, policy, strategy, seeds, out, rtf, videos):
        ran.append(strategy)
        data = {"episodes": [{"seed": s} for s in range(*seeds)], "summary": {"success_rate": 0.5, "episodes": 2, "wilson95": [0.1, 0.9]}}
        out.write_text(json.dumps(data))
        return data

    monkeypatch.setattr(bench, "run_eval", fake_eval)
    monkeypatch.setattr(bench, "measure_chunk_seconds", lambda *a, **k: 0.3)
    ns = argparse.Namespace(eval_real_time_factor=0.3, eval_seeds=(1000, 1002), curve_points=3, curve_episodes=2, device="cpu")
    trained = {"train_steps": 12000, "overrides": ["train.steps=12000"]}
    res = bench.stage_eval(ns, tmp_path, {}, trained)
    assert sorted(ran) == sorted(bench.EVAL_STRATEGIES.values())
    assert (tmp_path / "eval_steps6000" / "final_rtc.json").is_file()
    assert json.loads((ev / "model.json").read_text())["train_steps"] == 12000
    assert res["curve"][-1]["step"] == 12000
    bench.stage_eval(ns, tmp_path, {}, trained)  # the same model: its complete results are kept
    assert len(ran) == 3 and not (tmp_path / "eval_steps12000").exists()


def test_a_workdir_recorded_with_another_push_is_not_mixed_in(tmp_path):
    """Recovery demonstrations (--disturbance) and clean ones are different data: a workdir keeps the push it
    was recorded with, finished (STAGE_DONE) or not (record_settings.json)."""
    import types

    ns = types.SimpleNamespace(demos=2, eval_seeds=(1000, 1050), batch=10, real_time_factor=0.3, disturbance=0.08, disturbance_until=1.4,
                               placement_margin=0.0)
    done = tmp_path / "done"
    (done / "demos").mkdir(parents=True)
    bench._mark_done(done / "demos", {"demos": 2, "seeds": [0, 1]})  # a clean recording (before the option existed)
    with pytest.raises(SystemExit, match="disturbance"):
        bench.stage_record(ns, done)
    clean = types.SimpleNamespace(**{**vars(ns), "disturbance": 0.0})
    assert bench.stage_record(clean, done)["demos"] == 2  # the same settings: done, nothing recorded
    partial = tmp_path / "partial"
    (partial / "demos").mkdir(parents=True)
    (partial / "demos" / "record_settings.json").write_text(json.dumps({"disturbance": {"amplitude": 0.05, "until": 1.4}}))
    with pytest.raises(SystemExit, match="partly recorded"):
        bench.stage_record(ns, partial)
    # the placement box likewise: a workdir from before the option was recorded in the task's own box
    wide = types.SimpleNamespace(**{**vars(clean), "placement_margin": 0.03})
    with pytest.raises(SystemExit, match="placement_margin 0.0, not 0.03"):
        bench.stage_record(wide, done)
    (partial / "demos" / "record_settings.json").write_text(json.dumps({"disturbance": None, "placement_margin": 0.03}))
    with pytest.raises(SystemExit, match="partly recorded with placement_margin 0.03"):
        bench.stage_record(clean, partial)


def test_the_placement_margin_is_bounded_as_the_sim_node_declares_it():
    assert bench.placement_margin_problem(0.0) is None and bench.placement_margin_problem(0.03) is None
    assert "<= 0.1" in bench.placement_margin_problem(0.2)
    assert ">= 0.0" in bench.placement_margin_problem(-0.01)


def _sigterm_a_driver(tmp_path: Path, child_src: str, driver_body: str, children_up: int) -> tuple[int, str, str]:
    """Run ``driver_body`` (the bench loaded as ``ltc``, its SIGTERM handler installed; ``child`` the path of
    ``child_src``, ``log`` the children's log) as a background job (SIGINT ignored), SIGTERM it once
    ``children_up`` children have printed ": up"; returns (exit code, driver output, children's log)."""
    import signal
    import subprocess
    import sys
    import time

    child = tmp_path / "child.py"
    child.write_text(child_src)
    log = tmp_path / "child.log"
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import signal, sys, types, importlib.util\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        f"spec = importlib.util.spec_from_file_location('ltc', {str(ROOT / 'bench' / 'learn_transfer_cube.py')!r})\n"
        "ltc = importlib.util.module_from_spec(spec); spec.loader.exec_module(ltc)\n"
        "signal.signal(signal.SIGTERM, ltc._terminate)\n"
        f"child, log = {str(child)!r}, ltc.Path({str(log)!r})\n" + driver_body)
    proc = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 120
    while (log.read_text() if log.is_file() else "").count(": up") < children_up and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=90)
    return proc.returncode, out, log.read_text()


def test_a_background_run_stopped_with_kill_stops_its_child_first(tmp_path):
    """`kill` (SIGTERM) of the bench, started in a shell's background where SIGINT is ignored, stops the running
    stage's child with SIGTERM (which motus-eval/-train/-launch treat as Ctrl-C) and exits 130 without a traceback."""
    rc, out, text = _sigterm_a_driver(
        tmp_path,
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('child: saved and stopped', flush=True), sys.exit(0)))\n"
        "print('child: up', flush=True)\n"
        "time.sleep(60)\n",
        "try:\n"
        "    ltc._run([sys.executable, child], log)\n"
        "except KeyboardInterrupt:\n"
        "    print('driver: interrupted', flush=True); sys.exit(130)\n",
        children_up=1)
    assert rc == 130, out
    assert "driver: interrupted" in out and "Traceback" not in out
    assert "child: saved and stopped" in text


def test_evaluations_side_by_side_each_on_its_own_domain(tmp_path, monkeypatch):
    """--eval-jobs 2: two graphs run at once, never on one ROS domain (their simulators would mix clocks and
    commands); every strategy and curve point is evaluated once; a failed one does not stop the others."""
    import argparse
    import threading

    monkeypatch.setattr(bench, "_DOMAIN", ["77"])
    both_running = threading.Barrier(2, timeout=60)
    lock = threading.Lock()
    running: dict[str, str] = {}  # out file -> domain, while its graph runs
    overlaps, ran = [], []

    def fake_run(cmd, log_path):
        part = Path(cmd[cmd.index("--json") + 1])
        domain = bench._env()["ROS_DOMAIN_ID"]
        with lock:
            overlaps.append(sorted(running.values()) + [domain])
            running[str(part)] = domain
            ran.append(cmd[cmd.index("--strategy") + 1] + " " + Path(cmd[cmd.index("--policy") + 1]).name)
        if len(ran) <= 2:
            both_running.wait()  # the first two are running at the same time
        a, b = (int(x) for x in cmd[cmd.index("--seeds") + 1].split(":"))
        with lock:
            del running[str(part)]
        if "sync" in cmd:
            return 1  # motus-eval failed before any episode
        part.write_text(json.dumps({"episodes": [{"seed": s, "success": True, "outcome": "success"} for s in range(a, b)],
                                    "summary": {"time_limit": 14.5}}))
        return 0

    monkeypatch.setattr(bench, "_run", fake_run)
    ev = tmp_path / "eval"
    ev.mkdir()
    for s in (500, 1000, 1500):
        (tmp_path / "train" / "checkpoints" / f"step_{s:08d}").mkdir(parents=True)
    ns = argparse.Namespace(device="cpu", eval_time_limit=0.0, eval_executor_param=[], eval_jobs=2)
    jobs = [(tmp_path / "final", strategy, (1000, 1004), ev / f"final_{key}.json", False) for key, strategy in bench.EVAL_STRATEGIES.items()]
    jobs += [(c, "rtc", (1000, 1002), ev / f"curve_{c.name}_rtc.json", False) for c in bench.curve_checkpoints(tmp_path / "train", 3)]
    with pytest.raises(SystemExit, match="motus-eval exited with 1"):
        bench.run_evals(ns, tmp_path, jobs, 0.3)
    assert sorted(ran) == sorted(f"{j[1]} {j[0].name}" for j in jobs)  # each once, the failed sync included
    assert max(len(o) for o in overlaps) == 2
    assert all(len(set(o)) == len(o) for o in overlaps), overlaps
    assert {d for o in overlaps for d in o} >= {"77"} and len({d for o in overlaps for d in o}) == 2
    for policy, strategy, seeds, out, _ in jobs:
        assert bench._eval_json_complete(out, seeds) == (strategy != "sync")


def test_a_run_stopped_with_kill_stops_every_evaluation_running_side_by_side(tmp_path):
    """SIGTERM while two evaluations run: both children get SIGTERM (and save their state), none starts after."""
    rc, out, text = _sigterm_a_driver(
        tmp_path,
        "import signal, sys, time\n"
        "tag = sys.argv[1]\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print(f'child {tag}: stopped', flush=True), sys.exit(130)))\n"
        "print(f'child {tag}: up', flush=True)\n"
        "time.sleep(60)\n",
        "ltc._DOMAIN.append('77')\n"
        "ltc.run_eval = lambda ns, work, policy, strategy, seeds, out, rtf, videos: ltc._run([sys.executable, child, strategy], log)\n"
        "ns = types.SimpleNamespace(eval_jobs=2)\n"
        "try:\n"
        "    ltc.run_evals(ns, log.parent, [(None, s, (0, 1), None, False) for s in ('a', 'b', 'c')], 0.3)\n"
        "except KeyboardInterrupt:\n"
        "    print('driver: interrupted', flush=True); sys.exit(130)\n",
        children_up=2)
    assert rc == 130, out
    assert "driver: interrupted" in out and "Traceback" not in out, out
    assert "child a: stopped" in text and "child b: stopped" in text
    assert "child c" not in text  # the third evaluation never started
