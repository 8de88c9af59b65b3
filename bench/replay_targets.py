"""Can the proof's training targets transfer the cube at all? Demonstrations replayed open-loop.

    python bench/replay_targets.py [--seeds 3000:3010]

For each seed the scripted demonstrator runs once (ROS-free, no rendering) and its per-tick commands
and measured joint positions are kept. The same episode is then replayed from the same reset with:

* ``commands``: what the demonstrator commanded (a leader arm's stream, LeRobot's ``action``);
* ``measured_next``: the measured joint positions one control tick ahead. This is what the official Motus
  loaders train the actions on ("future qpos as action"; ``motus-convert --actions follower``), i.e. what
  a perfect model of such training data would command;
* ``measured_next_grippers_offset``: the same with both grippers ``--offset`` more open (a model's error);
* ``measured_arms_commanded_grippers``: measured arms, commanded grippers.

A target that fails when replayed exactly cannot be learnt into a policy that succeeds. The seeds are
neither recorded nor evaluated by the proof. Final JSON line: ``episodes`` and the successes per target.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TASK = "transfer_cube"


class _Replay:
    """A demonstrator that sends a fixed target per control tick (the run_episode interface)."""

    def __init__(self, targets: np.ndarray, duration: float):
        self.task, self.targets, self.duration, self._i = TASK, targets, duration, 0

    def reset(self, obs) -> None:
        self._i = 0

    def act(self, obs) -> np.ndarray:
        target = self.targets[min(self._i, len(self.targets) - 1)]
        self._i += 1
        return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="3000:3010", help="demonstration seeds A:B (default 3000:3010)")
    ap.add_argument("--offset", type=float, default=0.02, help="gripper error added in one variant (normalised units)")
    ns = ap.parse_args(argv)
    from motus_core.robot_profile import load_profile
    from motus_core.sim.demonstrator import ScriptedDemonstrator, run_episode
    from motus_core.sim.simulator import AlohaSim

    grippers = list(load_profile("sim_aloha").gripper_indices)
    a, b = (int(x) for x in ns.seeds.split(":"))
    names = ("commands", "measured_next", "measured_next_grippers_offset", "measured_arms_commanded_grippers")
    wins = dict.fromkeys(names, 0)
    episodes = 0
    for seed in range(a, b):
        measured, commands = [], []
        demo = ScriptedDemonstrator(TASK)
        result = run_episode(AlohaSim(TASK), demo, seed,
                             on_tick=lambda obs, cmd: (measured.append(np.asarray(obs.q, float)), commands.append(np.asarray(cmd, float))))
        if not result.success:
            print(f"seed {seed}: the demonstration failed, left out", file=sys.stderr)
            continue
        episodes += 1
        Q, C = np.asarray(measured), np.asarray(commands)
        nxt = np.vstack([Q[1:], Q[-1:]])
        offset = nxt.copy()
        offset[:, grippers] += ns.offset
        mixed = nxt.copy()
        mixed[:, grippers] = C[:, grippers]
        row = {}
        for name, targets in zip(names, (C, nxt, offset, mixed)):
            ok = run_episode(AlohaSim(TASK), _Replay(targets, demo.duration), seed).success
            wins[name] += int(ok)
            row[name] = ok
        print(f"seed {seed}: " + ", ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in row.items()), flush=True)
    print(json.dumps({"task": TASK, "seeds": ns.seeds, "episodes": episodes, "gripper_offset": ns.offset,
                      "successes": wins}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
