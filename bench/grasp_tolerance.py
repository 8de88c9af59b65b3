"""How far off can the right arm's grasp of transfer_cube be and the task still succeed? The scripted
demonstrator, ROS-free, seeing the cube shifted by an offset until its right gripper has closed.

    python bench/grasp_tolerance.py --seeds 2000:2010

Until the close (``CLOSE_AT``, 2.8 s into the script), the demonstrator is told the cube is ``offset``
from where it is: it grasps there, as a policy that localises the cube that far off would. After the
close it sees the truth again (the hand-over is not perturbed). For each horizontal axis and offset the
success rate over the seeds, and the furthest stage. (The script grasps at a fixed height above the
table whatever it sees, so a height error cannot be posed this way.) Together with ``bench/grasp_precision.py`` (where a policy
closes, in cm from the demonstrated grasp) it tells whether a policy's grasp errors explain its failures.
Final JSON line: ``rows`` (axis, offset_cm, successes, episodes, stages) and ``tolerance_cm`` per axis
(the largest offset, both signs, at which every episode still succeeded).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TASK = "transfer_cube"
CLOSE_AT = 2.8  # s: the right gripper's close command has ended (motus_core.sim.demonstrator.transfer_cube_scripts)
OFFSETS_CM = (0.5, 1.0, 1.5, 2.0)


def run(offset_m: np.ndarray, seeds: range) -> list:
    from motus_core.sim import AlohaSim
    from motus_core.sim.demonstrator import ScriptedDemonstrator, run_episode

    class Misled(ScriptedDemonstrator):
        def _shifted(self, obs):
            if obs.t >= CLOSE_AT:
                return obs
            objects = dict(obs.objects)
            box = objects["box"]
            objects["box"] = dataclasses.replace(box, position=box.position + offset_m)
            return dataclasses.replace(obs, objects=objects)

        def reset(self, obs):
            super().reset(self._shifted(obs))

        def act(self, obs):
            return super().act(self._shifted(obs))

    return [run_episode(AlohaSim(TASK), Misled(TASK), seed) for seed in seeds]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="2000:2010", help="demonstration seeds A:B (default 2000:2010)")
    ns = ap.parse_args(argv)
    a, b = (int(x) for x in ns.seeds.split(":"))
    seeds = range(a, b)
    rows = []
    base = run(np.zeros(3), seeds)
    rows.append({"axis": "-", "offset_cm": 0.0, "successes": sum(r.success for r in base), "episodes": len(base),
                 "stages": [r.max_stage for r in base]})
    print(f"no offset: {rows[-1]['successes']}/{len(base)}", flush=True)
    for k, axis in enumerate("xy"):
        for cm in OFFSETS_CM:
            for sign in (-1.0, 1.0):
                off = np.zeros(3)
                off[k] = sign * cm / 100.0
                res = run(off, seeds)
                rows.append({"axis": axis, "offset_cm": sign * cm, "successes": sum(r.success for r in res), "episodes": len(res),
                             "stages": [r.max_stage for r in res]})
                print(f"{axis} {sign * cm:+.1f} cm: {rows[-1]['successes']}/{len(res)} (stages {rows[-1]['stages']})", flush=True)
    tolerance = {}
    for axis in "xy":
        ok = {r["offset_cm"] for r in rows if r["axis"] == axis and r["successes"] == r["episodes"]}
        tolerance[axis] = 0.0
        for cm in OFFSETS_CM:  # up to the first offset at which an episode failed
            if cm not in ok or -cm not in ok:
                break
            tolerance[axis] = cm
    print(json.dumps({"seeds": ns.seeds, "close_at": CLOSE_AT, "rows": rows, "tolerance_cm": tolerance}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
