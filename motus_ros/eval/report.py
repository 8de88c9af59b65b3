"""Evaluation results: per-episode records, the success rate with its Wilson interval, table and JSON.

ROS-free (plain dataclasses), so the figures can be computed and tested without a graph.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    time_to_success: float = -1.0  # s of sim time from the start of the task to the first success report; -1: none
    elapsed: float = 0.0  # s of sim time the task ran
    outcome: str = ""  # RunTask outcome (timeout, success, canceled, estop, error) or what ended the episode
    chunks_received: int = 0
    chunks_rejected: int = 0
    limit_hits: int = 0
    watchdog_stops: int = 0
    max_stage: int = -1  # the task's progress stage reached (0..4; -1: unknown)
    max_lift_cm: float = -1.0  # cm the task's object was raised at most (a stage-2 flicker vs a real lift; -1: unknown)
    failure_reason: str = ""  # why a failed episode failed, when something else than the policy ended it
    wall_s: float = 0.0
    video: str = ""


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (stays within [0, 1], sane at 0 and n)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test: the probability, if both policies were equally good, of discordant
    episodes split at least as unevenly as ``only_a`` : ``only_b`` (a binomial test at 1/2)."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def compare_reports(a: dict, b: dict) -> dict:
    """Two evaluations' JSON (``EvalReport.as_dict``) on the same seeds, episode by episode: a closed loop is
    stochastic, so two success rates on the same seeds are compared by the episodes that differ."""
    sa = {e["seed"]: bool(e["success"]) for e in a["episodes"]}
    sb = {e["seed"]: bool(e["success"]) for e in b["episodes"]}
    seeds = sorted(set(sa) & set(sb))
    if not seeds:
        raise ValueError("the two evaluations share no seed")
    only_a = [s for s in seeds if sa[s] and not sb[s]]
    only_b = [s for s in seeds if sb[s] and not sa[s]]
    both = sum(sa[s] and sb[s] for s in seeds)
    return {"seeds": len(seeds), "successes_a": both + len(only_a), "successes_b": both + len(only_b), "both": both,
            "neither": len(seeds) - both - len(only_a) - len(only_b), "only_a": only_a, "only_b": only_b,
            "mcnemar_p": round(mcnemar_exact_p(len(only_a), len(only_b)), 4),
            "seeds_only_in_one": sorted(set(sa) ^ set(sb))}


@dataclass
class EvalReport:
    policy: str
    task: str
    strategy: str
    seeds: list[int]
    real_time_factor: float  # requested simulation speed (sim s per wall s)
    achieved_real_time_factor: float = 0.0  # what the simulator reported (mean over episodes)
    time_limit: float = 0.0
    episodes: list[EpisodeResult] = field(default_factory=list)
    policy_chunk_ms: list[float] = field(default_factory=list)  # total policy time per chunk (PolicyStatus timing)
    notes: list[str] = field(default_factory=list)

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    @property
    def success_rate(self) -> float:
        return self.successes / len(self.episodes) if self.episodes else 0.0

    def summary(self) -> dict:
        n, k = len(self.episodes), self.successes
        lo, hi = wilson_interval(k, n)
        tts = [e.time_to_success for e in self.episodes if e.success and e.time_to_success >= 0]
        ms = np.asarray(self.policy_chunk_ms, float)
        return {
            "policy": self.policy, "task": self.task, "strategy": self.strategy, "episodes": n, "successes": k,
            "success_rate": round(self.success_rate, 4), "wilson95": [round(lo, 4), round(hi, 4)],
            "time_to_success_mean": round(float(np.mean(tts)), 3) if tts else None,
            "chunks_received": sum(e.chunks_received for e in self.episodes),
            "chunks_rejected": sum(e.chunks_rejected for e in self.episodes),
            "limit_hits": sum(e.limit_hits for e in self.episodes),
            "episodes_ended_by_a_fault": sum(bool(e.failure_reason) for e in self.episodes),
            "policy_chunk_ms_p50": round(float(np.percentile(ms, 50)), 1) if ms.size else None,
            "policy_chunk_ms_p95": round(float(np.percentile(ms, 95)), 1) if ms.size else None,
            "real_time_factor": self.real_time_factor,
            "achieved_real_time_factor": round(self.achieved_real_time_factor, 3),
            "time_limit": self.time_limit, "seeds": [self.seeds[0], self.seeds[-1] + 1] if self.seeds else [],
        }

    def as_dict(self) -> dict:
        # every chunk's time, so evaluations run in parts (the proof bench's resumed runs) merge into true percentiles
        return {"summary": self.summary(), "episodes": [asdict(e) for e in self.episodes], "notes": self.notes,
                "policy_chunk_ms": [round(float(x), 1) for x in self.policy_chunk_ms]}

    def write_json(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=1))
        tmp.replace(p)

    def table(self) -> str:
        head = (f"{'seed':>6} {'result':<8} {'t_success':>9} {'stage':>5} {'lift_cm':>7} {'chunks':>6} {'rejected':>8} "
                f"{'limit_hits':>10}  reason")
        lines = [head, "-" * len(head)]
        for e in self.episodes:
            tts = f"{e.time_to_success:.2f}" if e.success and e.time_to_success >= 0 else "-"
            stage = str(e.max_stage) if e.max_stage >= 0 else "?"
            lift = f"{e.max_lift_cm:.1f}" if e.max_lift_cm >= 0 else "?"
            reason = e.failure_reason or ("" if e.success else e.outcome)
            lines.append(f"{e.seed:>6} {'success' if e.success else 'FAIL':<8} {tts:>9} {stage:>5} {lift:>7} {e.chunks_received:>6} "
                         f"{e.chunks_rejected:>8} {e.limit_hits:>10}  {reason}")
        s = self.summary()
        lo, hi = s["wilson95"]
        lines.append("-" * len(head))
        lines.append(f"{self.task} with {self.policy} ({self.strategy}): {s['successes']}/{s['episodes']} successes, "
                     f"success rate {s['success_rate']:.2f} (95 % Wilson interval {lo:.2f}..{hi:.2f})")
        rtf = f"simulation at real_time_factor {self.real_time_factor:g}"
        if self.achieved_real_time_factor:
            rtf += f" (achieved {self.achieved_real_time_factor:.2f})"
        chunk = f"; policy time per chunk p50 {s['policy_chunk_ms_p50']} ms" if s["policy_chunk_ms_p50"] is not None else ""
        lines.append(rtf + chunk + f"; time limit {self.time_limit:g} s of sim time per episode")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
