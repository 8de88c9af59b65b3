"""The proof: a Motus trained by the suite on its own recordings transfers the cube in simulation.

    python bench/learn_transfer_cube.py --workdir ~/proof [--demos 50] [--eval-seeds 1000:1050]
    make proof

Stages, each writing under ``--workdir`` and skipped when its output there is complete (so an
interrupted run continues where it stopped):

1. ``record``  (``demos/``): N scripted demonstrations of transfer_cube through the ROS graph
   (``motus-launch graph:=record``: simulator + scripted demonstrator + recorder node -> one MCAP
   bag per episode), seeds 0, 1, ... (disjoint from the evaluation seeds) until N demonstrations
   succeeded; the simulator pushes the follower arms off the demonstrator's commands during the approach
   (``--disturbance``, recovery demonstrations); ``--placement-margin`` widens the box the cube is placed in
   (the evaluation always uses the task's box). A failed demonstration is retried once with its seed;
   failures stay in ``demos/`` with outcome ``failure`` and are not converted.
2. ``convert`` (``dataset/``): ``motus-convert --actions leader`` into the Motus layout (T-mosaic
   videos, qpos = the measured joints, actions = the demonstrator's commands as the training
   targets, instructions + umT5 embeddings, ``stat.json``).
3. ``train``   (``train/``): ``motus-train --config config/motus/reduced_sim.yaml`` (a reduced Motus
   from scratch, see docs/proof.md for the choices).
4. ``eval``    (``eval/``): ``motus-eval`` of the final checkpoint on the evaluation seeds with each
   strategy (rtc, temporal_ensemble, sync), and of earlier checkpoints (the learning curve);
   ``--eval-jobs N`` runs N of these evaluations side by side, each graph on a ROS domain of its own.

Final line: JSON with ``success_rate_rtc``, ``success_rate_te``, ``success_rate_sync``, ``demos``,
``train_minutes``, ``train_steps``, ``val_action_error``, ``policy_chunk_ms_p50``, ``eval_seeds``.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASK = "transfer_cube"
STAGES = ("record", "convert", "train", "eval")
DONE = "STAGE_DONE.json"  # each stage's completion marker, written last


def log(msg: str) -> None:
    print(f"[proof {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_seeds(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not m or int(m.group(1)) >= int(m.group(2)):
        raise argparse.ArgumentTypeError(f"seeds are A:B with A < B (half-open range), got {text!r}")
    return int(m.group(1)), int(m.group(2))


_DOMAIN: list[str] = []
# An evaluation running beside others (--eval-jobs) sets its own ROS domain here, in its thread.
_JOB = threading.local()
# Every running child, so that a stop reaches all of them (--eval-jobs runs several at once).
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()
_STOPPING = threading.Event()


def private_domain() -> str:
    """A ROS_DOMAIN_ID reserved for this run (the test suite's lock files), unless one is set: the
    graphs of every stage must not see another graph on the machine (two simulators on one domain
    would mix their /clock, joint states and commands)."""
    if not _DOMAIN:
        if os.environ.get("ROS_DOMAIN_ID"):
            _DOMAIN.append(os.environ["ROS_DOMAIN_ID"])
        else:
            from test.helpers import reserve_domain_id

            _DOMAIN.append(str(reserve_domain_id()))
    return _DOMAIN[0]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = getattr(_JOB, "domain", None) or private_domain()
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def _run(cmd: list[str], logfile: Path) -> int:
    """Run ``cmd`` with its output appended to ``logfile`` (and the tail echoed on failure)."""
    log("$ " + " ".join(cmd))
    with open(logfile, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        with _CHILDREN_LOCK:
            if _STOPPING.is_set():  # the run is being stopped: start nothing more
                return 130
            proc = subprocess.Popen(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT)
            _CHILDREN.add(proc)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            stop_children()
            raise
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(proc)
    if rc != 0:
        tail = logfile.read_text().splitlines()[-30:]
        log(f"command exited with {rc}; last lines of {logfile}:\n    " + "\n    ".join(tail))
    return rc


def stop_children(timeout: float = 30.0) -> None:
    """Let every running child stop its graph or save its step: SIGTERM, which motus-launch, motus-eval and
    motus-train treat as Ctrl-C (a job started in the background of a shell ignores SIGINT); killed after
    ``timeout`` s. Nothing new starts afterwards."""
    with _CHILDREN_LOCK:
        _STOPPING.set()
        procs = list(_CHILDREN)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _done(stage_dir: Path) -> dict | None:
    f = stage_dir / DONE
    return json.loads(f.read_text()) if f.is_file() else None


def _mark_done(stage_dir: Path, info: dict) -> None:
    tmp = stage_dir / (DONE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(stage_dir / DONE)


# -- 1. record ------------------------------------------------------------------------------------
_SEED_NOTE = re.compile(r"seed (\d+)")


def recorded_seeds(demos: Path) -> dict[int, list[str]]:
    """seed -> outcomes of the complete episodes in ``demos`` (the demonstrator writes its seed in the notes)."""
    from motus_core.data.episode import COMPLETE, list_episodes

    out: dict[int, list[str]] = {}
    if not demos.is_dir():
        return out
    eps, _ = list_episodes(demos)
    for ep in eps:
        m = _SEED_NOTE.search(ep.meta.notes or "")
        if ep.meta.state == COMPLETE and m and ep.meta.task == TASK:
            out.setdefault(int(m.group(1)), []).append(ep.meta.outcome)
    return out


def placement_margin_problem(margin: float) -> str | None:
    """The sim node's bounds of ``placement_margin`` (declared once, in SimConfig), checked before a graph starts."""
    import dataclasses

    from motus_core.config_fields import check_value
    from motus_core.sim.config import SimConfig

    meta = next(f.metadata for f in dataclasses.fields(SimConfig) if f.name == "placement_margin")
    return check_value("--placement-margin", margin, meta)


def check_record_settings(demos: Path, how: str, recorded: dict, wanted: dict) -> None:
    """A workdir's demonstrations keep the push and placement they were recorded with: mixing two would make a
    dataset no option describes. Workdirs from before the placement margin existed were recorded with 0."""
    for key, default in (("disturbance", None), ("placement_margin", 0.0)):
        if recorded.get(key, default) != wanted[key]:
            raise SystemExit(f"record: {demos} {how} recorded with {key} {recorded.get(key, default)}, not {wanted[key]}: "
                             "use another --workdir")


def stage_record(ns, work: Path) -> dict:
    """Seeds 0, 1, ... until ``ns.demos`` succeeded. A failed demonstration (the scripted demonstrator
    fails more often on a loaded machine: its command stream starves) is retried once with the same
    seed, then the seed is given up; failures stay in demos/ with outcome ``failure`` and are not converted."""
    demos = work / "demos"
    push = {"amplitude": ns.disturbance, "until": ns.disturbance_until} if ns.disturbance > 0 else None
    wanted = {"disturbance": push, "placement_margin": ns.placement_margin}
    info = _done(demos)
    if info is not None:
        check_record_settings(demos, "was", info, wanted)
    if info and info.get("demos") == ns.demos:
        log(f"record: done ({info['demos']} successful demonstrations, seeds {info['seeds'][0]}..{info['seeds'][-1]})")
        return info
    demos.mkdir(parents=True, exist_ok=True)
    settings = demos / "record_settings.json"  # a partly recorded workdir keeps its push and placement
    if settings.is_file():
        check_record_settings(demos, "was partly", json.loads(settings.read_text()), wanted)
    settings.write_text(json.dumps(wanted))
    eval_lo, eval_hi = ns.eval_seeds
    t0 = time.monotonic()
    attempts = 2
    while True:
        seeds = recorded_seeds(demos)
        ok = sorted(s for s, o in seeds.items() if "success" in o)
        if len(ok) >= ns.demos:
            break
        todo = [s for s in range(10**6) if "success" not in seeds.get(s, []) and len(seeds.get(s, [])) < attempts]
        # next batch: consecutive seeds still to do; one graph start per batch (an interruption loses at most a batch)
        need = ns.demos - len(ok)
        first, count = todo[0], 1
        while count < min(need, ns.batch) and todo[count] == first + count:
            count += 1
        if first + count > eval_lo and first < eval_hi:
            raise SystemExit(f"record: would need seed {first + count - 1}, inside the evaluation seeds {eval_lo}:{eval_hi}")
        given_up = [s for s, o in seeds.items() if "success" not in o and len(o) >= attempts]
        if len(given_up) > max(5, ns.demos // 5):
            raise SystemExit(f"record: the demonstrations of {len(given_up)} seeds failed twice; the machine is probably too "
                             f"loaded: lower --real-time-factor (now {ns.real_time_factor})")
        log(f"record: {len(ok)}/{ns.demos} successful so far; recording seeds {first}..{first + count - 1} "
            f"(real_time_factor {ns.real_time_factor})")
        rc = _run([sys.executable, "-m", "motus_ros.launcher", "graph:=record", f"task:={TASK}", f"episodes:={count}",
                   f"seed:={first}", f"output_dir:={demos}", f"real_time_factor:={ns.real_time_factor}"]
                  + ([f"disturbance:={ns.disturbance}", f"disturbance_until:={ns.disturbance_until}"] if push else [])
                  + ([f"placement_margin:={ns.placement_margin}"] if ns.placement_margin > 0 else []), demos / "record.log")
        if rc != 0 and sum(map(len, recorded_seeds(demos).values())) == sum(map(len, seeds.values())):
            raise SystemExit(f"record: the record graph exited with {rc} without recording an episode (see {demos / 'record.log'})")
    seeds = recorded_seeds(demos)
    ok = sorted(s for s, o in seeds.items() if "success" in o)
    failed = sum(o.count("failure") for o in seeds.values())
    info = {"demos": len(ok), "seeds": ok, "failed_attempts": failed, "given_up_seeds": sorted(s for s, o in seeds.items() if "success" not in o),
            "real_time_factor": ns.real_time_factor, "record_minutes_this_run": round((time.monotonic() - t0) / 60, 1),
            **wanted}
    _mark_done(demos, info)
    log(f"record: {len(ok)} successful demonstrations ({failed} failed attempts)")
    return info


# -- 2. convert -----------------------------------------------------------------------------------
def stage_convert(ns, work: Path, rec: dict) -> dict:
    demos, dataset = work / "demos", work / "dataset"
    if (info := _done(dataset)) and info.get("source_demos") == rec["demos"]:
        log(f"convert: done ({info['episodes']} episodes, {info['frames']} frames in {dataset})")
        return info
    dataset.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "motus_core.cli.convert", str(demos), str(dataset), "--format", "motus", "--actions", "leader", "--quiet"]
    cmd += ["--text-encoder", ns.text_encoder] if ns.text_encoder else ["--tiny-text-encoder"]
    if _run(cmd, dataset / "convert.log") != 0:
        raise SystemExit(f"convert: motus-convert failed (see {dataset / 'convert.log'})")
    import torch

    report = json.loads((dataset / "conversion_report.json").read_text())
    qpos = sorted((dataset / TASK / "qpos").glob("*.pt"))
    frames = sum(int(torch.load(p, weights_only=True).shape[0]) for p in qpos)
    emb = sorted((dataset / TASK / "instructions").glob("*.pt"))
    # the targets are the demonstrator's commands (its leader stream): measured joints cannot be replayed
    # into a grasp (bench/replay_targets.py), so a dataset without them is not what this proof trains on
    actions = sorted((dataset / TASK / "actions").glob("*.pt"))
    if len(qpos) < rec["demos"] or len(emb) < len(qpos) or len(actions) != len(qpos) or not (dataset / "stat.json").is_file():
        raise SystemExit(f"convert: expected {rec['demos']} episodes with embeddings, action targets and stat.json, found "
                         f"{len(qpos)} episodes, {len(emb)} embeddings, {len(actions)} action files "
                         f"(see {dataset / 'conversion_report.json'})")
    info = {"episodes": len(qpos), "frames": frames, "source_demos": rec["demos"], "dataset": str(dataset),
            "action_targets": "the demonstrator's commands (leader stream, actions/)",
            "text_encoder": ns.text_encoder or "tiny (random umT5, byte tokenizer)",
            "left_out": {e["episode_id"]: e.get("reason", "") for e in report.get("episodes", []) if e.get("status") not in ("converted", "up_to_date")}}
    _mark_done(dataset, info)
    (work / "DATA_READY").write_text(
        f"{dataset}\n{len(qpos)} episodes ({frames} frames at 30 Hz, tiny umT5 embeddings, stat.json key sim_aloha)\n"
        f"train (the proof's train stage runs exactly this; keep_checkpoints so the learning curve has early checkpoints):\n"
        f"python -m motus_core.cli.motus_train --config config/motus/reduced_sim.yaml data.path={dataset} output_dir={work / 'train'} "
        f"train.keep_checkpoints={ns.keep_checkpoints} train.device={ns.device}\n")
    log(f"convert: {len(qpos)} episodes, {frames} frames ({frames / 30 / 60:.1f} min at 30 Hz) in {dataset}")
    return info


# -- 3. train -------------------------------------------------------------------------------------
RECIPE = ROOT / "config" / "motus" / "reduced_sim.yaml"


def _train_summary(train: Path) -> dict:
    f = train / "summary.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _val_action_error(train: Path, key: str = "val/action_mae") -> float | None:
    """The last validation's action error (``val/action_mae_other_images``: with another sample's
    images, the test of whether the model uses its cameras)."""
    f = train / "validation.jsonl"
    if not f.is_file():
        return None
    rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return float(rows[-1][key]) if rows and key in rows[-1] else None


def stage_train(ns, work: Path, data: dict) -> dict:
    """``motus-train`` on the dataset; re-running resumes from train/latest (motus-train's own resume).

    A finished run with other ``--train-override`` values is trained on from its last checkpoint
    (e.g. ``train.steps=12000`` after 6000: the schedule goes on where it stood, the minutes add up)."""
    train = work / "train"
    timing = train / "proof_train_time.json"
    if (info := _done(train)) and info.get("dataset_episodes") == data["episodes"]:
        if info.get("overrides", []) == list(ns.train_override):
            log(f"train: done ({info['train_steps']} steps in {info['train_minutes']} min, val action error {info['val_action_error']})")
            return info
        log(f"train: the finished run ({info['train_steps']} steps) had overrides {info.get('overrides', [])}, now "
            f"{list(ns.train_override)}: training on from {train / 'latest'}")
        (train / DONE).unlink()
        ev = work / "eval"
        if ev.is_dir() and not (ev / "model.json").is_file():  # evaluated before model.json existed: label it
            (ev / "model.json").write_text(json.dumps({"train_steps": info["train_steps"], "overrides": info.get("overrides", [])}))
    train.mkdir(parents=True, exist_ok=True)
    spent = json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
    cmd = [sys.executable, "-m", "motus_core.cli.motus_train", "--config", str(RECIPE), f"data.path={work / 'dataset'}",
           f"output_dir={train}", f"train.keep_checkpoints={ns.keep_checkpoints}", f"train.device={ns.device}", *ns.train_override]
    t0 = time.monotonic()
    try:
        rc = _run(cmd, train / "console.log")  # motus-train writes train.log itself: the same lines once
    finally:
        timing.write_text(json.dumps({"seconds": spent + time.monotonic() - t0}))
    summary = _train_summary(train)
    if rc != 0 or not summary.get("finished"):
        raise SystemExit(f"train: motus-train exited with {rc} (finished: {summary.get('finished')}); re-run to resume (see {train / 'train.log'} and {train / 'console.log'})")
    minutes = (spent + time.monotonic() - t0) / 60
    if minutes < 1.0 and (train / "frozen").exists() and (train / "final").exists():
        # trained outside this bench (same command, e.g. started by hand): from the run's own files, the
        # frozen weights written at its start to the final checkpoint (includes any pause between resumes)
        minutes = ((train / "final").stat().st_mtime - (train / "frozen").stat().st_mtime) / 60
    info = {"train_steps": int(summary["step"]), "train_minutes": round(minutes, 1),
            "val_action_error": _val_action_error(train), "dataset_episodes": data["episodes"], "final": str(train / "final"),
            "val_action_error_other_images": _val_action_error(train, "val/action_mae_other_images"),
            "device": ns.device, "overrides": ns.train_override}
    _mark_done(train, info)
    log(f"train: {info['train_steps']} steps in {info['train_minutes']} min; validation action error {info['val_action_error']} (joint units)")
    return info


# -- 4. eval --------------------------------------------------------------------------------------
EVAL_STRATEGIES = {"rtc": "rtc", "te": "temporal_ensemble", "sync": "sync"}


def measure_chunk_seconds(policy_dir: Path, device: str, calls: int = 5) -> float:
    """Median seconds of one ``predict`` of the policy on a synthetic observation (after a warm-up)."""
    import numpy as np

    from motus_core.policy.base import Observation, PolicyRequest
    from motus_core.policies import load_policy
    from motus_core.robot_profile import load_profile

    profile = load_profile("sim_aloha")
    policy = load_policy(str(policy_dir), device=device, profile=profile)
    try:
        policy.warmup()
        policy.set_instruction("transfer the cube to the other arm")
        rng = np.random.default_rng(0)
        h, w = 240, 320
        images = {role: rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for role in profile.cameras}
        obs = Observation(stamp=0.0, images=images, state=np.asarray(profile.home, dtype=np.float64))
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            policy.predict(PolicyRequest(observation=obs, instruction="transfer the cube to the other arm"))
            times.append(time.perf_counter() - t)
        return float(np.median(times))
    finally:
        policy.close()


# On a CPU the simulator's three cameras and the image transport share the cores with the policy, so the
# in-process chunk time says little about the graph's: the tenth run's chunk took 0.08 s in process and
# 0.37 s (p50) in the graph at 0.3. Every proof figure on the 2-core machine was measured at 0.3.
CPU_MAX_REAL_TIME_FACTOR = 0.3


def choose_real_time_factor(chunk_s: float, device: str = "cuda") -> float:
    """Sim speed at which a chunk arrives within ~0.4 s of sim time (RTC requests every 16 actions =
    0.53 s and tolerates up to 32 actions = 1.07 s of delay): 1.0 when the policy is fast enough, at most
    ``CPU_MAX_REAL_TIME_FACTOR`` when the graph runs on the CPU."""
    rtf = 1.0 if chunk_s <= 0.4 else max(0.05, int(0.4 / chunk_s / 0.05) * 0.05)
    return min(rtf, CPU_MAX_REAL_TIME_FACTOR) if device == "cpu" else rtf


def _eval_json_complete(path: Path, seeds: tuple[int, int]) -> bool:
    if not path.is_file():
        return False
    eps = json.loads(path.read_text()).get("episodes", [])
    return [e["seed"] for e in eps] == list(range(*seeds))


def run_eval(ns, work: Path, policy: Path, strategy: str, seeds: tuple[int, int], out: Path, rtf: float, videos: bool) -> dict:
    """motus-eval of ``policy`` on ``seeds``; an interrupted evaluation continues with its remaining seeds."""
    from motus_ros.eval.report import EpisodeResult, EvalReport

    done_eps: list[dict] = []
    if out.is_file():
        done_eps = [e for e in json.loads(out.read_text()).get("episodes", []) if seeds[0] <= e["seed"] < seeds[1]]
    # a killed motus-eval leaves its part file (written after every episode): keep the episodes it finished
    # (the part files go once the merged report is written)
    old_parts = sorted(out.parent.glob(f"{out.stem}_from*.json"), key=lambda f: int(f.stem.rsplit("_from", 1)[1]))
    old_chunk_ms: list[float] = []
    for part in old_parts:
        try:
            old = json.loads(part.read_text())
        except (OSError, ValueError):
            continue
        old_chunk_ms += old.get("policy_chunk_ms", [])
        for e in old.get("episodes", []):
            if e["seed"] == seeds[0] + len(done_eps) and e["seed"] < seeds[1]:
                done_eps.append(e)
    first = seeds[0] + len(done_eps)
    if first < seeds[1]:
        part = out.with_name(out.stem + f"_from{first}.json")
        cmd = [sys.executable, "-m", "motus_ros.eval", "--policy", str(policy), "--task", TASK, "--seeds", f"{first}:{seeds[1]}",
               "--strategy", strategy, "--device", ns.device, "--real-time-factor", f"{rtf:g}", "--json", str(part), "--quiet"]
        if ns.eval_time_limit:
            cmd += ["--time-limit", f"{ns.eval_time_limit:g}"]
        if videos:
            cmd += ["--videos", str(out.parent / "videos" / out.stem)]
        for item in ns.eval_executor_param:
            cmd += ["--executor-param", item]
        rc = _run(cmd, out.parent / f"{out.stem}.log")
        new = json.loads(part.read_text()).get("episodes", []) if part.is_file() else []
        done_eps += new
        if rc != 0 and not new:
            raise SystemExit(f"eval: motus-eval exited with {rc} (see {out.parent / (out.stem + '.log')})")
        part_data = json.loads(part.read_text()) if part.is_file() else {}
        chunk_ms = part_data.get("summary", {})
        run_chunk_ms = part_data.get("policy_chunk_ms", [])
        part.unlink(missing_ok=True)
    else:
        chunk_ms, run_chunk_ms = {}, []
        rc = 0
    prev = json.loads(out.read_text()) if out.is_file() else {}
    report = EvalReport(policy=str(policy), task=TASK, strategy=strategy, seeds=list(range(*seeds)), real_time_factor=rtf,
                        time_limit=prev.get("summary", {}).get("time_limit", 0.0) or chunk_ms.get("time_limit", 0.0))
    report.episodes = [EpisodeResult(**e) for e in done_eps]
    report.achieved_real_time_factor = chunk_ms.get("achieved_real_time_factor") or prev.get("summary", {}).get("achieved_real_time_factor", 0.0)
    report.policy_chunk_ms = prev.get("policy_chunk_ms", []) + old_chunk_ms + run_chunk_ms  # every chunk's time, over the parts
    data = report.as_dict()
    out.write_text(json.dumps(data, indent=1))
    for part in old_parts:
        part.unlink(missing_ok=True)
    if rc != 0 and len(done_eps) < seeds[1] - seeds[0]:
        # a killed motus-eval: what it finished is kept above (a re-run continues), never reported as the result
        raise SystemExit(f"eval: motus-eval exited with {rc} after {len(done_eps)} of {seeds[1] - seeds[0]} episodes "
                         f"(see {out.parent / (out.stem + '.log')}); re-run to continue with the remaining seeds")
    s = data["summary"]
    log(f"eval {policy.name} {strategy}: {s['successes']}/{s['episodes']} successes, rate {s['success_rate']:.2f} "
        f"(95 % Wilson {s['wilson95'][0]:.2f}..{s['wilson95'][1]:.2f})")
    return data


def run_evals(ns, work: Path, jobs: list[tuple], rtf: float) -> None:
    """Run the evaluations ``jobs`` (policy, strategy, seeds, out, videos), ``ns.eval_jobs`` at a time. A graph
    running beside another gets a ROS domain of its own (two simulators on one domain mix their clocks); a
    failed evaluation does not stop the others, and is raised once they have ended."""
    n = max(1, min(int(getattr(ns, "eval_jobs", 1)), len(jobs)))
    if n == 1:
        for policy, strategy, seeds, out, videos in jobs:
            run_eval(ns, work, policy, strategy, seeds, out, rtf, videos=videos)
        return
    from test.helpers import reserve_domain_id

    domains: queue.SimpleQueue[str] = queue.SimpleQueue()
    domains.put(private_domain())
    for _ in range(n - 1):
        domains.put(str(reserve_domain_id()))

    def one(job: tuple) -> None:
        policy, strategy, seeds, out, videos = job
        _JOB.domain = domains.get()
        try:
            run_eval(ns, work, policy, strategy, seeds, out, rtf, videos=videos)
        finally:
            domains.put(_JOB.domain)
            _JOB.domain = None

    log(f"eval: {len(jobs)} evaluations, {n} side by side")
    pool = ThreadPoolExecutor(n, thread_name_prefix="eval")
    futures = [pool.submit(one, job) for job in jobs]
    try:
        wait(futures)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        stop_children()
        wait([f for f in futures if not f.cancelled()])
        raise
    pool.shutdown()
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


def curve_checkpoints(train: Path, n: int) -> list[Path]:
    """Up to ``n`` kept step checkpoints, evenly spread over the run (the final one is evaluated anyway)."""
    steps = sorted((train / "checkpoints").glob("step_*"))
    if len(steps) <= n:
        return steps
    idx = sorted({round(i * (len(steps) - 1) / max(1, n - 1)) for i in range(n)})
    return [steps[i] for i in idx]


def stage_eval(ns, work: Path, rec: dict, trained: dict) -> dict:
    ev = work / "eval"
    model = {"train_steps": trained["train_steps"], "overrides": trained.get("overrides", [])}
    model_file = ev / "model.json"
    # (an eval/ without model.json predates training on: its results are of the only model the run had)
    if model_file.is_file():
        old = json.loads(model_file.read_text())
        if old != model:
            # the results of the model trained before (kept, never mixed with this one's)
            steps = old.get("train_steps", "unknown")
            keep = work / f"eval_steps{steps}"
            n = 1
            while keep.exists():
                keep, n = work / f"eval_steps{steps}_{n}", n + 1
            ev.rename(keep)
            log(f"eval: the results in {ev} are of another model ({old}): moved to {keep}")
    ev.mkdir(parents=True, exist_ok=True)
    model_file.write_text(json.dumps(model))
    final = work / "train" / "final"
    rtf_file = ev / "real_time_factor.json"
    if rtf_file.is_file():
        rtf_info = json.loads(rtf_file.read_text())
    else:
        chunk_s = measure_chunk_seconds(final, ns.device)
        rtf_info = {"chunk_seconds_in_process": round(chunk_s, 3), "real_time_factor": ns.eval_real_time_factor or choose_real_time_factor(chunk_s, ns.device)}
        rtf_file.write_text(json.dumps(rtf_info))
    rtf = ns.eval_real_time_factor or rtf_info["real_time_factor"]
    log(f"eval: policy chunk {rtf_info['chunk_seconds_in_process']:.2f} s in-process -> simulation at real_time_factor {rtf:g}")
    curve_seeds = (ns.eval_seeds[0], min(ns.eval_seeds[1], ns.eval_seeds[0] + ns.curve_episodes))
    ckpts = curve_checkpoints(work / "train", ns.curve_points)
    jobs = [(final, strategy, ns.eval_seeds, ev / f"final_{key}.json", True) for key, strategy in EVAL_STRATEGIES.items()]
    jobs += [(ckpt, "rtc", curve_seeds, ev / f"curve_{ckpt.name}_rtc.json", False) for ckpt in ckpts]
    run_evals(ns, work, [job for job in jobs if not _eval_json_complete(job[3], job[2])], rtf)
    results = {key: json.loads((ev / f"final_{key}.json").read_text()) for key in EVAL_STRATEGIES}
    curve = []
    for ckpt in ckpts:
        d = json.loads((ev / f"curve_{ckpt.name}_rtc.json").read_text())
        step = int(ckpt.name.split("_")[-1])
        curve.append({"step": step, "success_rate": d["summary"]["success_rate"], "episodes": d["summary"]["episodes"],
                      "wilson95": d["summary"]["wilson95"]})
    s_final = results["rtc"]["summary"]
    curve.append({"step": trained["train_steps"], "success_rate": s_final["success_rate"], "episodes": s_final["episodes"],
                  "wilson95": s_final["wilson95"], "final": True})
    return {"results": results, "curve": curve, "real_time_factor": rtf, "rtf_info": rtf_info}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="where every stage writes (demos/, dataset/, train/, eval/)")
    ap.add_argument("--eval-seeds", type=parse_seeds, default=(1000, 1050), help="evaluation seeds A:B (half-open; default 1000:1050)")
    ap.add_argument("--demos", type=int, default=50, help="successful demonstrations to record (1..100; default 50)")
    ap.add_argument("--batch", type=int, default=10, help="episodes per start of the record graph")
    ap.add_argument("--real-time-factor", type=float, default=0.3,
                    help="simulation speed while recording (the scripted demonstrator fails more often on a loaded machine)")
    ap.add_argument("--disturbance", type=float, default=0.08,
                    help="rad, RMS push on the follower arms while recording (recovery demonstrations, DART-style; "
                         "motus_core/sim/disturbance.py; default 0.08, the tenth run's); 0 = clean demonstrations")
    ap.add_argument("--disturbance-until", type=float, default=1.4,
                    help="episode s by which the push has faded out (default 1.4: the approach; the grasp runs undisturbed)")
    ap.add_argument("--placement-margin", type=float, default=0.0,
                    help="m the cube's placement box is widened by on every side while recording (demonstrations that cover "
                         "the evaluation box's edges from both sides; default 0: the task's box, as the evaluation)")
    ap.add_argument("--text-encoder", default="", help="converted umT5 directory for the instruction embeddings (default: the tiny one)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="training and policy device (default cpu)")
    ap.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra motus-train override (repeatable), e.g. train.steps=200 for a short run")
    ap.add_argument("--keep-checkpoints", type=int, default=30, help="step checkpoints motus-train keeps (the learning curve evaluates them)")
    ap.add_argument("--curve-points", type=int, default=3, help="checkpoints of the run evaluated for the learning curve (>= 3)")
    ap.add_argument("--curve-episodes", type=int, default=10, help="evaluation seeds per learning-curve point (the first of --eval-seeds)")
    ap.add_argument("--eval-real-time-factor", type=float, default=0.0,
                    help="simulation speed during evaluation (default: chosen from the policy's measured chunk time, "
                         "at most 0.3 on a CPU)")
    ap.add_argument("--eval-time-limit", type=float, default=0.0, help="sim seconds per evaluation episode (default: the task's limit)")
    ap.add_argument("--eval-executor-param", action="append", default=[], metavar="NAME=VALUE",
                    help="executor parameter during evaluation (repeatable), e.g. step_tolerance=3.0; in the final JSON")
    ap.add_argument("--eval-jobs", type=int, default=1,
                    help="evaluations (strategies, learning-curve points) run side by side, each graph on a ROS domain of its "
                         "own (default 1; on the 2-core CPU machine 2 fill it)")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run (default all; done stages are skipped)")
    ns = ap.parse_args(argv)
    if not 1 <= ns.demos <= 100:
        ap.error("--demos must be within 1..100")
    if ns.eval_jobs < 1:
        ap.error("--eval-jobs must be at least 1")
    if (why := placement_margin_problem(ns.placement_margin)) is not None:
        ap.error(why)
    stages = [s.strip() for s in ns.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        ap.error(f"unknown stages {sorted(unknown)}; known: {STAGES}")
    work = ns.workdir.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _terminate)  # `kill` stops the run as Ctrl-C does: the running stage's child first
    log(f"workdir {work}; ROS_DOMAIN_ID {private_domain()} for every graph of this run")
    rec = stage_record(ns, work) if "record" in stages else _done(work / "demos")
    data = trained = None
    if "convert" in stages:
        if rec is None:
            raise SystemExit("convert: the record stage has not completed")
        data = stage_convert(ns, work, rec)
    else:
        data = _done(work / "dataset")
    if "train" in stages:
        if data is None:
            raise SystemExit("train: the convert stage has not completed")
        trained = stage_train(ns, work, data)
    else:
        trained = _done(work / "train")
    if "eval" not in stages:
        return 0
    if trained is None:
        raise SystemExit("eval: the train stage has not completed")
    ev = stage_eval(ns, work, rec, trained)
    r = ev["results"]
    chunk_p50 = r["rtc"]["summary"].get("policy_chunk_ms_p50")
    final = {
        "success_rate_rtc": r["rtc"]["summary"]["success_rate"], "success_rate_te": r["te"]["summary"]["success_rate"],
        "success_rate_sync": r["sync"]["summary"]["success_rate"],
        "wilson95_rtc": r["rtc"]["summary"]["wilson95"], "wilson95_te": r["te"]["summary"]["wilson95"],
        "wilson95_sync": r["sync"]["summary"]["wilson95"],
        "demos": rec["demos"], "train_minutes": trained["train_minutes"], "train_steps": trained["train_steps"],
        "val_action_error": trained["val_action_error"], "policy_chunk_ms_p50": chunk_p50,
        "val_action_error_other_images": trained.get("val_action_error_other_images"),
        "eval_seeds": f"{ns.eval_seeds[0]}:{ns.eval_seeds[1]}", "real_time_factor": ev["real_time_factor"],
        "learning_curve": ev["curve"], "device": trained.get("device", ns.device),
        "eval_executor_params": ns.eval_executor_param, "eval_jobs": ns.eval_jobs, "record_disturbance": rec.get("disturbance"),
        "record_placement_margin": rec.get("placement_margin", 0.0),
    }
    (work / "proof_result.json").write_text(json.dumps(final, indent=1))
    print(json.dumps(final), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: run the same command again to continue where it stopped")
        sys.exit(130)
