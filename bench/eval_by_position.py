"""Where in the placement box does a policy fail? Splits `motus-eval` results by how far each episode's object
started from the centre of the task's placement box.

    python bench/eval_by_position.py /work/proof14/eval/final_rtc.json /work/proof20/eval/final_rtc.json

A policy trained on demonstrations drawn from the box interpolates between the positions it was shown and
extrapolates poorly: its failures gather at the box's edges and corners. The start positions are recomputed from
the episode seeds exactly as the simulator draws them (``Task.sample_poses(default_rng(seed), margin)``), so the
evaluation JSON needs nothing more than its seeds. ``--placement-margin`` is the evaluation simulator's (the
evaluations of the proof use 0). Final JSON line: per file, the episodes and successes in each distance band.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from motus_core.sim.tasks import TASKS  # noqa: E402


def start_xy(task: str, seed: int, margin: float = 0.0, obj: str | None = None) -> np.ndarray:
    """The (x, y) in m where the simulator places ``obj`` (default: the task's first object) for ``seed``."""
    t = TASKS[task]
    name = obj or t.objects[0].name
    return np.asarray(t.sample_poses(np.random.default_rng(seed), margin)[name][0][:2], dtype=float)


def box_centre(task: str, obj: str | None = None) -> np.ndarray:
    t = TASKS[task]
    spec = next(o for o in t.objects if obj is None or o.name == obj)
    return np.array([sum(spec.x_range) / 2.0, sum(spec.y_range) / 2.0])


def split_by_distance(episodes: list[dict], task: str, edges_cm: list[float], margin: float = 0.0) -> list[dict]:
    """Episodes and successes per band [edges_cm[i], edges_cm[i+1]) of distance (cm) from the box centre; the last
    band is open-ended."""
    centre = box_centre(task)
    bounds = list(edges_cm) + [float("inf")]
    bands = [{"from_cm": lo, "to_cm": hi, "episodes": 0, "successes": 0} for lo, hi in zip(bounds[:-1], bounds[1:])]
    for e in episodes:
        d = 100.0 * float(np.linalg.norm(start_xy(task, int(e["seed"]), margin) - centre))
        for b in bands:
            if b["from_cm"] <= d < b["to_cm"]:
                b["episodes"] += 1
                b["successes"] += int(bool(e["success"]))
                break
    return bands


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="motus-eval JSON files")
    ap.add_argument("--task", default="transfer_cube")
    ap.add_argument("--bands", default="0,6,9", help="band edges in cm from the box centre (default 0,6,9: 9+ is the "
                                                     "edges and corners of transfer_cube's 20 x 20 cm box)")
    ap.add_argument("--placement-margin", type=float, default=0.0, help="the evaluation simulator's placement margin (m)")
    ns = ap.parse_args(argv)
    if ns.task not in TASKS:
        raise SystemExit(f"unknown task {ns.task!r}; known: {sorted(TASKS)}")
    edges = [float(x) for x in ns.bands.split(",")]
    if edges != sorted(edges) or edges[0] != 0.0:
        raise SystemExit("--bands must be increasing and start at 0")
    out = []
    for path in ns.results:
        episodes = json.loads(Path(path).read_text())["episodes"]
        bands = split_by_distance(episodes, ns.task, edges, ns.placement_margin)
        cells = ", ".join(f"{b['from_cm']:g}-{b['to_cm']:g} cm: {b['successes']}/{b['episodes']}" for b in bands)
        print(f"{path}: {cells}")
        out.append({"file": path, "episodes": len(episodes), "successes": sum(bool(e["success"]) for e in episodes),
                    "bands": [{**b, "to_cm": None if b["to_cm"] == float("inf") else b["to_cm"]} for b in bands]})
    print(json.dumps({"task": ns.task, "results": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
