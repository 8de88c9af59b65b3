"""``motus-eval``: success rate of a policy on a simulated task, through the ROS graph.

    motus-eval --policy <dir|replay:...|tiny_motus> --task transfer_cube --episodes 50 --seeds 1000:1050 --strategy rtc
    motus-eval --policy runs/proof/train/latest --strategy temporal_ensemble --real-time-factor 0.25 --videos failures/
    motus-eval --attach --episodes 5                 # a graph that is already running (sim + policy + executor)
    motus-eval --compare a.json b.json               # two evaluations on the same seeds, episode by episode

It starts the simulator, the policy node and the chunk executor (the nodes of ``graph:=policy``,
without the visualizer) or attaches to running ones, then for each seed: resets the simulator
(``/sim/reset`` with the task and seed), runs the policy through the executor's ``RunTask`` action for
the task's time limit (ending early on success) and records success, time to success, chunks
received and rejected, and limit hits. It prints a table and the success rate with its 95 % Wilson
interval, writes JSON (``--json``) and, with ``--videos DIR``, an MP4 of the high camera for every
failed episode.

When CPU inference is too slow for real time, run the simulator slower (``--real-time-factor``, sim
seconds per wall second): the policy then sees the world as a fast enough computer would; the report
states the factor. Exit codes: 0 done, 1 the graph did not come up / the policy did not load, 2 bad
arguments, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

from motus_core.sim.tasks import TASKS

from .report import EvalReport

STRATEGIES = ("rtc", "sync", "temporal_ensemble")


def time_limit_for(task: str) -> float:
    """Seconds of sim time a policy gets: 1.5 x what the scripted demonstrator needs (a learned policy is
    slower and starts with a 1 s fade-in) + 1 s."""
    return round(1.5 * TASKS[task].default_episode_time + 1.0, 1)


def parse_seeds(text: str) -> list[int]:
    m = re.fullmatch(r"\s*(-?\d+)\s*:\s*(-?\d+)\s*", text)
    if not m or int(m.group(1)) >= int(m.group(2)) or int(m.group(1)) < 0:
        raise argparse.ArgumentTypeError(f"seeds are A:B with 0 <= A < B (B excluded), got {text!r}")
    return list(range(int(m.group(1)), int(m.group(2))))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="motus-eval", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default="", help="policy spec: a checkpoint directory, replay:<file>, or tiny_motus (not with --attach)")
    p.add_argument("--policy-options", default="", help="policy options, space separated key=value (e.g. 'align=time' for replay)")
    p.add_argument("--task", default="transfer_cube", help=f"simulated task: {', '.join(sorted(TASKS))}")
    p.add_argument("--episodes", type=int, default=0, help="number of episodes (default: one per seed)")
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("1000:1050"), help="seeds A:B (B excluded; default 1000:1050)")
    p.add_argument("--strategy", choices=STRATEGIES, default=None, help="chunk execution strategy (default rtc; --attach: the running executor's)")
    p.add_argument("--device", default="cpu", help="policy device (cpu, cuda, cuda:1)")
    p.add_argument("--real-time-factor", type=float, default=1.0, help="simulation speed (sim s per wall s); < 1 when inference is slow")
    p.add_argument("--time-limit", type=float, default=0.0, help="sim seconds per episode (default: the task's limit, 14.5 s for transfer_cube)")
    p.add_argument("--instruction", default="", help="language instruction (default: the task's)")
    p.add_argument("--json", type=Path, default=None, help="write the results here (default motus_eval_<task>_<strategy>.json)")
    p.add_argument("--videos", type=Path, default=None, help="write an MP4 of the high camera of every failed episode into this directory")
    p.add_argument("--attach", action="store_true", help="use a running sim + policy + executor graph instead of starting one")
    p.add_argument("--startup-timeout", type=float, default=600.0, help="wall seconds for the graph to come up (model loading included)")
    p.add_argument("--log-dir", type=Path, default=None, help="node logs of the started graph (default: next to the JSON file)")
    p.add_argument("--liveliness-lease", type=float, default=0.5,
                   help="s, the policy's liveliness lease in the started graph (60 ms on a robot PC; longer on a loaded machine)")
    p.add_argument("--executor-param", action="append", default=[], metavar="NAME=VALUE",
                   help="executor parameter for the started graph (repeatable), e.g. step_tolerance=3.0; listed in the report")
    p.add_argument("--robot", default="sim_aloha", help="robot profile (topics)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"), default=None,
                   help="compare two evaluations' JSON on their common seeds (episodes that differ, exact McNemar p) "
                        "and exit; nothing is run")
    return p


def executor_params(items: list[str]) -> dict:
    """``NAME=VALUE`` strings -> parameters (numbers and booleans as such; the executor validates them)."""
    out: dict = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"motus-eval: --executor-param wants NAME=VALUE, got {item!r}")
        value: object = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        else:
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    pass
        out[name] = value
    return out


def _check_args(ns, p: argparse.ArgumentParser) -> None:
    executor_params(ns.executor_param)  # fail before anything starts
    if ns.task not in TASKS:
        p.error(f"unknown task {ns.task!r}; the simulator knows: {', '.join(sorted(TASKS))}")
    if ns.attach and ns.policy:
        p.error("--policy starts a policy node; with --attach the running graph's policy is used")
    if not ns.attach:
        if not ns.policy:
            p.error("--policy is required (a checkpoint directory, replay:<file> or tiny_motus)")
        spec = ns.policy
        if spec != "tiny_motus" and not spec.startswith("replay:"):
            d = Path(spec).expanduser()
            if not d.is_dir():
                p.error(f"policy {spec!r} is neither tiny_motus, replay:<file> nor an existing checkpoint directory")
            if not (d / "motus_policy.yaml").is_file():
                p.error(f"policy directory {d} has no motus_policy.yaml (is it a checkpoint directory written by motus-train?)")
        elif spec.startswith("replay:") and not Path(spec[len("replay:"):].split("#")[0]).expanduser().exists():
            p.error(f"replay file {spec[len('replay:'):]!r} does not exist")
    if ns.episodes < 0 or ns.episodes > len(ns.seeds):
        p.error(f"--episodes must be within 0..{len(ns.seeds)} (the number of seeds)")
    if not ns.real_time_factor > 0:
        p.error("--real-time-factor must be positive")
    if not ns.liveliness_lease > 0:
        p.error("--liveliness-lease must be positive")
    if ns.time_limit < 0:
        p.error("--time-limit must be positive")


def compare(paths: list[Path], p: argparse.ArgumentParser) -> int:
    from .report import compare_reports, wilson_interval

    data = []
    for path in paths:
        try:
            data.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            p.error(f"--compare: cannot read {path}: {exc}")
        if not isinstance(data[-1], dict) or "episodes" not in data[-1]:
            p.error(f"--compare: {path} is not a motus-eval JSON file (no 'episodes')")
    try:
        c = compare_reports(*data)
    except ValueError as exc:
        p.error(f"--compare: {exc}")
    n = c["seeds"]
    try:
        for tag, path in zip("ab", paths):
            k = c[f"successes_{tag}"]
            lo, hi = wilson_interval(k, n)
            print(f"{tag.upper()} {path}: {k}/{n} ({k / n:.2f}, 95 % Wilson {lo:.2f}..{hi:.2f})")
        print(f"both succeed {c['both']}, neither {c['neither']}; only A {len(c['only_a'])} {c['only_a']}, "
              f"only B {len(c['only_b'])} {c['only_b']}")
        print(f"exact McNemar p = {c['mcnemar_p']:.3f} (the chance of a split at least this uneven if A and B were equally good)")
        if c["seeds_only_in_one"]:
            print(f"left out, evaluated by one only: seeds {c['seeds_only_in_one']}")
        print(json.dumps(c), flush=True)
    except BrokenPipeError:  # piped into head: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    ns = p.parse_args(argv)
    if ns.compare:
        return compare(ns.compare, p)
    _check_args(ns, p)
    seeds = ns.seeds[: ns.episodes] if ns.episodes else ns.seeds
    strategy = ns.strategy or ("" if ns.attach else "rtc")
    duration = ns.time_limit or time_limit_for(ns.task)
    instruction = ns.instruction or TASKS[ns.task].instruction
    out_json = ns.json or Path(f"motus_eval_{ns.task}_{strategy or 'attached'}.json")
    # SIGTERM (kill, a job scheduler, a parent's timeout) ends the run like Ctrl-C: the node processes it
    # started run in sessions of their own, and Python's default SIGTERM exit would skip the clean-up
    # that stops them (orphaned simulator, policy and executor nodes kept two cores busy for hours).
    signal.signal(signal.SIGTERM, _terminate)
    return Evaluation(ns, seeds, strategy, duration, instruction, out_json).run()


def _terminate(signum, frame):
    raise KeyboardInterrupt


class Evaluation:
    def __init__(self, ns, seeds: list[int], strategy: str, duration: float, instruction: str, out_json: Path):
        self.ns, self.seeds, self.strategy, self.duration, self.instruction, self.out_json = ns, seeds, strategy, duration, instruction, out_json
        self.graph = None
        self.client = None
        self.report = EvalReport(policy=ns.policy or "(attached)", task=ns.task, strategy=strategy, seeds=seeds,
                                 real_time_factor=ns.real_time_factor, time_limit=duration)
        if ns.executor_param:
            self.report.notes.append(f"executor parameters overridden: {', '.join(ns.executor_param)}")

    def _say(self, text: str) -> None:
        print(f"[motus-eval] {text}", flush=True)

    def _fail(self, text: str) -> int:
        print(f"motus-eval: error: {text}", file=sys.stderr, flush=True)
        return 1

    # -- graph --------------------------------------------------------------------------------------
    def _start_graph(self) -> str | None:
        from .graph import EvalGraph

        ns = self.ns
        values = {"robot": ns.robot, "task": ns.task, "seed": str(self.seeds[0]), "policy": ns.policy, "policy_options": ns.policy_options,
                  "device": ns.device, "strategy": self.strategy, "instruction": self.instruction,
                  "real_time_factor": str(ns.real_time_factor)}
        log_dir = ns.log_dir or self.out_json.with_suffix("").parent / (self.out_json.stem + "_logs")
        self.graph = EvalGraph(values, log_dir, ns.liveliness_lease, executor_params(ns.executor_param))
        self._say(f"starting sim + policy ({ns.policy}) + executor ({self.strategy}); node logs in {log_dir}")
        self.graph.start_all()
        return None

    def _node_fault(self) -> str | None:
        if self.graph is not None:
            dead = self.graph.dead()
            if dead:
                name, rc = next(iter(dead.items()))
                return f"node {name} died (exit code {rc})" + self._why(name)
            return None
        c = self.client
        now = time.monotonic()
        if now - c.policy_status_wall > 5.0:
            return "the policy node stopped publishing its status for 5 s (dead?)"
        if now - c.executor_status_wall > 5.0:
            return "the executor stopped publishing its status for 5 s (dead?)"
        if now - c.clock_wall > 10.0:
            return "the simulator's /clock stopped for 10 s (dead?)"
        return None

    def _why(self, name: str) -> str:
        lines = self.graph.error_lines(name) if self.graph else []
        return (": " + " | ".join(ln.strip() for ln in lines[-3:])) if lines else ""

    def _wait_up(self, timeout: float) -> str | None:
        """None when the graph answers; else an error sentence (dead nodes named with their log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fault = self._node_fault() if self.graph is not None else None
            if fault:
                if "node policy died" in fault:
                    return f"the policy {self.ns.policy!r} did not load: {fault}"
                return f"the graph did not come up: {fault}"
            missing = self.client.wait_for_graph(min(5.0, max(0.1, deadline - time.monotonic())))
            if missing is None:
                return None
        missing = self.client.wait_for_graph(1.0)
        return f"the graph did not come up: {missing}" if missing else None

    def _recover(self) -> str | None:
        """Restart dead nodes of the started graph before the next episode."""
        dead = self.graph.dead()
        if not dead:
            return None
        for name in dead:
            self._say(f"restarting node {name} (it exited with {dead[name]})")
            self.graph.start(name)
        return self._wait_up(self.ns.startup_timeout)

    # -- run ----------------------------------------------------------------------------------------
    def run(self) -> int:
        from .client import EvalClient
        from motus_core.robot_profile import load_profile

        ns = self.ns
        camera = load_profile(ns.robot).cameras["high"].topic if ns.videos else None
        try:
            self.client = EvalClient(camera_topic=camera)
            if not ns.attach:
                self._start_graph()
            problem = self._wait_up(ns.startup_timeout)
            if problem:
                return self._fail(problem)
            if ns.attach:
                running = self.client.strategy()
                if self.strategy and running and running != self.strategy:
                    return self._fail(f"the running executor uses strategy {running!r}, not {self.strategy!r}; restart it or drop --strategy")
                self.strategy = self.report.strategy = running or self.strategy
                self.report.notes.append("attached to a running graph: the executor is not restarted between episodes")
            return self._episodes()
        except KeyboardInterrupt:
            self._say("interrupted; writing the episodes done so far")
            self._finish()
            return 130
        finally:
            # the node processes first: they must never outlive this process, whatever the ROS client does
            if self.graph is not None:
                self.graph.close()
            if self.client is not None:
                self.client.close()

    def _episodes(self) -> int:
        from .client import frames_to_rgb
        from .video import write_mp4

        ns = self.ns
        # a safety net only: a slow machine runs the simulator slower than asked (the real test is that
        # sim time keeps advancing: run_episode's stall check)
        wall_timeout = self.duration / ns.real_time_factor * 30 + 600.0
        bar = None
        if not ns.quiet:
            from tqdm import tqdm

            bar = tqdm(total=len(self.seeds), desc=f"motus-eval {self.strategy}", unit="episode", dynamic_ncols=True)
        rtfs = []
        for seed in self.seeds:
            ep = None
            if self.graph is not None:
                problem = self._recover()
                if problem:
                    self._finish(bar)
                    return self._fail(f"cannot continue: {problem}")
                self.graph.procs["executor"].stop()  # see graph.py: a fresh executor holds the reset pose
            why = self.client.reset(ns.task, seed)
            if why is None:
                why = self.client.reset_policy()
            if why is None and self.graph is not None:
                self.graph.start("executor")
                why = self.client.wait_fresh_executor(120.0)
            if why is not None:
                from .report import EpisodeResult

                ep = EpisodeResult(seed=seed, success=False, outcome="error", failure_reason=why)
            else:
                ep, frames = self.client.run_episode(seed, self.instruction, self.duration, wall_timeout, self._node_fault)
                if ns.videos and not ep.success and frames:
                    try:
                        ep.video = str(write_mp4(frames_to_rgb(frames), ns.videos / f"{ns.task}_{self.strategy}_seed{seed}.mp4"))
                    except Exception as exc:  # noqa: BLE001 - a video must not end the evaluation
                        self.report.notes.append(f"seed {seed}: video not written: {exc}")
                rtf = self.client.achieved_real_time_factor()
                if rtf > 0:
                    rtfs.append(rtf)
            self.report.episodes.append(ep)
            self.report.policy_chunk_ms = self.client.policy_chunk_ms()
            self.report.achieved_real_time_factor = sum(rtfs) / len(rtfs) if rtfs else 0.0
            self.report.write_json(self.out_json)  # after every episode: an interrupted run keeps its results
            line = (f"seed {seed}: {'success' if ep.success else 'FAIL'}"
                    + (f" in {ep.time_to_success:.1f} s" if ep.success and ep.time_to_success >= 0 else "")
                    + f", {ep.chunks_received} chunks ({ep.chunks_rejected} rejected), {ep.limit_hits} limit hits"
                    + (f" - {ep.failure_reason}" if ep.failure_reason else ""))
            if bar is not None:
                bar.write(line)
                bar.update(1)
                bar.set_postfix(success=f"{self.report.successes}/{len(self.report.episodes)}")
            else:
                self._say(line)
        self._finish(bar)
        return 0

    def _finish(self, bar=None) -> None:
        if bar is not None:
            bar.close()
        self.report.write_json(self.out_json)
        print(self.report.table(), flush=True)
        print(json.dumps({"json": str(self.out_json), **self.report.summary()}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
