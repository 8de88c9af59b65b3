"""Where does a transfer_cube policy grasp in closed loop? The policy, the chunk executor and the simulated
robot in one process on the simulation's clock (no ROS, no real-time pacing), with the grasp measured.

    python bench/closed_loop_sim.py --policy /work/proof12/train/final --seeds 2000:2010

``motus-eval`` measures success through the ROS graph, which is what counts; it cannot say *why* an
episode failed beyond its progress stage. This loop runs the same pieces (the executor with the robot
profile's URDF-tightened limits, the policy node's request building, the simulator's physics and
cameras) and at the moment the executor first commands the right gripper shut it records where the
gripper's TCP is against the cube (cm, world axes; the fingers close along y) and how far the executed
arm lags the policy's plan there. The scripted demonstrator runs the same seed for reference: its grasp
sits within 1 mm of the cube's centre in x and y, and ``bench/grasp_tolerance.py`` found a grasp holds to
about +-1 cm in y.

It differs from the ROS graph in ways that favour the policy: camera frames are rendered at the request's
time (the graph's are up to one 30 Hz frame old), the inference delay is fixed (``--delay`` sim seconds,
the graph's p50 at real_time_factor 0.3 is about 0.1 s) and every command reaches the simulator at
once, as a position target. Use seeds that neither the proof records (0..99) nor evaluates
(1000..1049): ablations here must not tune on the evaluation seeds.

Stage 2 ("lifted": the right fingers touch the cube and the table does not, as in ACT's reward) is reached
by a cube knocked off the table for one physics step: each row has ``max_lift_cm`` (the cube's highest rise),
``knocks`` (stage-2 moments without a real lift) and ``lost`` (each time the cube left the right gripper
after a real lift: how high it was and whether the policy had opened the gripper or it slipped). Final JSON
line: ``success_rate`` (and its ``wilson95`` interval), ``grasped`` (episodes that reached stage 2), ``lifted`` (episodes that raised the
cube more than 2 cm), ``grasp_y_cm_abs_median``, ``beyond_y_tolerance``, ``lost_after_lift`` (counts by
cause), per episode rows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from image_reliance import INSTRUCTION  # noqa: E402
from release_timing import RIGHT_GRIPPER  # noqa: E402

TASK = "transfer_cube"
RIGHT = 1  # ee_positions: [left, right]


def set_param(cfg, item: str) -> None:
    """``NAME=VALUE`` (dotted for a strategy's field, e.g. ``rtc.execution_horizon=8``) onto an ExecutorConfig."""
    name, sep, text = item.partition("=")
    if not sep:
        raise SystemExit(f"--executor-param wants NAME=VALUE, got {item!r}")
    *path, leaf = name.split(".")
    obj = cfg
    for part in path:
        obj = getattr(obj, part)
    if not hasattr(obj, leaf):
        raise SystemExit(f"unknown executor parameter {name!r}")
    old = getattr(obj, leaf)
    setattr(obj, leaf, type(old)(text) if not isinstance(old, bool) else text.lower() == "true")


class GraspProbe:
    """Watches the commands for the right gripper's first close after it opened; records the TCP then."""

    def __init__(self):
        self.opened = False
        self.at: dict | None = None

    def see(self, t: float, command: np.ndarray, measured: np.ndarray, cube: np.ndarray) -> None:
        from motus_core.sim import ee_positions

        g = float(command[RIGHT_GRIPPER])
        if not self.opened:
            self.opened = g > 0.5
            return
        if self.at is None and g < 0.5:
            d = ee_positions(measured, "tcp")[RIGHT] - cube
            lag = ee_positions(command, "tcp")[RIGHT] - ee_positions(measured, "tcp")[RIGHT]
            self.at = {"time": round(t, 3), "x_cm": 100 * float(d[0]), "y_cm": 100 * float(d[1]), "z_cm": 100 * float(d[2]),
                       "command_ahead_cm": 100 * float(np.linalg.norm(lag))}


class CarryProbe:
    """Watches the cube whenever it is at stage 2 or beyond (the right fingers on it, off the table). Each
    time it leaves that state and the right hand (``AWAY_M``) after a real lift (raised more than ``LIFT_CM``
    above where it rested) it records how high it had been and what the right gripper was commanded: opened by the policy (a command
    above 0.5 within the last 0.3 s) or slipped with the gripper commanded shut. Shorter stage-2 moments (a
    cube knocked off the table by a gripper closing beside it) are only counted, as ``knocks``."""

    LIFT_CM = 2.0
    AWAY_M = 0.03  # the cube's centre this far from the right TCP: out of the hand (the cube is 4 cm wide)

    def __init__(self):
        self.holding = False
        self.lost: list[dict] = []
        self.knocks = 0
        self._since = 0.0
        self._max_lift = 0.0
        self._max_stage = 0
        self._recent: list[tuple[float, float]] = []  # (t, right gripper command)

    def see(self, t: float, stage: int, lift: float, command: np.ndarray, measured: np.ndarray, cube: np.ndarray) -> None:
        """``lift``: the cube's rise above where it rested (m, the task tracker's)."""
        from motus_core.sim import ee_positions

        self._recent = [(tt, g) for tt, g in self._recent if t - tt <= 0.3] + [(t, float(command[RIGHT_GRIPPER]))]
        if stage >= 2:
            if not self.holding:
                self.holding, self._since, self._max_lift, self._max_stage = True, t, 0.0, 0
            self._max_lift = max(self._max_lift, lift)
            self._max_stage = max(self._max_stage, stage)
            return
        if not self.holding:
            return
        d = ee_positions(measured, "tcp")[RIGHT] - cube
        if np.linalg.norm(d) <= self.AWAY_M:
            return  # the fingers' contacts flicker while they carry the cube: it is lost once it is out of the hand
        self.holding = False
        if 100 * self._max_lift <= self.LIFT_CM:
            self.knocks += 1
            return
        self.lost.append({"time": round(t, 2), "held_s": round(t - self._since, 2),
                          "cause": "opened" if max(g for _, g in self._recent) > 0.5 else "slipped",
                          "left_touched": self._max_stage >= 3,
                          "right_command": round(float(command[RIGHT_GRIPPER]), 3),
                          "right_measured": round(float(measured[RIGHT_GRIPPER]), 3),
                          "lift_cm": round(100 * self._max_lift, 1),
                          "tcp_minus_cube_cm": [round(100 * float(v), 1) for v in d]})


def demonstrated_grasp(seed: int) -> dict | None:
    """The scripted demonstrator's grasp on ``seed`` (same probe), no rendering."""
    from motus_core.sim import AlohaSim
    from motus_core.sim.demonstrator import ScriptedDemonstrator, run_episode

    sim = AlohaSim(TASK)
    probe = GraspProbe()
    run_episode(sim, ScriptedDemonstrator(TASK), seed,
                on_tick=lambda obs, cmd: probe.see(obs.t, np.asarray(cmd), np.asarray(obs.q), obs.objects["box"].position))
    return probe.at


def episode(policy, seed: int, ns, limits, profile) -> dict:
    from motus_core.runtime.executor import ChunkExecutor, ExecutorConfig
    from motus_core.runtime.offline import run_closed_loop
    from motus_core.sim import AlohaSim
    from motus_core.sim.dataset import ROLES
    from motus_core.sim.render import CameraRenderer

    from motus_core.sim.commands import ProfileAdapter

    # the sim node's default (speed_limit_scale 1): arm joints saturate at the profile's velocity limits
    sim = AlohaSim(TASK, speed_limit=np.abs(ProfileAdapter(profile).rate_to_sim(profile.velocity_limit)))
    sim.reset(seed=seed)
    cam = profile.cameras["high"]
    renderer = CameraRenderer(sim.model, cam.width, cam.height, ROLES)
    cfg = ExecutorConfig(strategy=ns.strategy)
    for item in ns.executor_param:
        set_param(cfg, item)
    cfg.validate()
    ex = ChunkExecutor(cfg, limits)
    ex.configure_for_profile(profile)  # as the executor node
    probe, carry = GraspProbe(), CarryProbe()
    t0 = sim.time
    ticks = [0]

    def measure(command: np.ndarray) -> np.ndarray:
        # the command holds until the next tick; the physics runs to that tick's time (a whole number of
        # physics steps per tick would tie the executor's rate to physics_dt: 200 Hz is 2.5 steps of 2 ms)
        sim.set_targets(command)
        ticks[0] += 1
        sim.step_until(t0 + ticks[0] / ns.command_rate)
        stage = sim.update_task()
        q = sim.positions()
        cube = sim.object_poses()["box"].position
        probe.see(sim.time - t0, command, q, cube)
        carry.see(sim.time - t0, stage, sim.tracker.lift, command, q, cube)
        return q

    try:
        run = run_closed_loop(policy, ex, duration=ns.time_limit, initial_state=sim.positions(), inference_delay=ns.delay,
                              command_rate=ns.command_rate, instruction=INSTRUCTION,
                              images=lambda now: {role: renderer.render(sim.data, role).copy() for role in ROLES},
                              measure=measure, until=lambda now: sim.tracker.success)
    finally:
        renderer.close()
    t = sim.tracker
    st = run.status
    return {"seed": seed, "success": bool(t.success), "max_stage": int(t.max_stage),
            "time_to_success": round(t.success_time - sim.episode_start, 2) if t.success else -1.0,
            "chunks": len(run.requests), "chunks_rejected": int(st.get("chunks_rejected", 0)),
            "limit_hits": int(st.get("limit_hits", 0)), "max_lift_cm": round(100 * t.max_lift, 1), "grasp": probe.at,
            "lost": carry.lost, "knocks": carry.knocks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="a policy directory (motus-train checkpoint)")
    ap.add_argument("--seeds", default="2000:2010", help="seeds A:B, disjoint from the proof's (default 2000:2010)")
    ap.add_argument("--strategy", default="rtc", help="executor strategy (default rtc)")
    ap.add_argument("--executor-param", action="append", default=[], metavar="NAME=VALUE",
                    help="executor parameter (repeatable), e.g. rtc.execution_horizon=8")
    ap.add_argument("--delay", type=float, default=0.1, help="sim s from a request to its chunk (default 0.1)")
    ap.add_argument("--time-limit", type=float, default=14.5, help="sim s per episode (default 14.5, the task's)")
    ap.add_argument("--command-rate", type=float, default=200.0, help="executor ticks per sim s (default 200)")
    ap.add_argument("--y-tolerance-cm", type=float, default=1.0, help="the grasp's tolerance along y (default 1.0)")
    ns = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from motus_core.policies import load_policy
    from motus_core.robot_profile import load_profile
    from motus_core.runtime.safety import JointLimits

    profile = load_profile("sim_aloha")
    limits = JointLimits.from_profile(profile, use_urdf=True)  # as the executor node
    policy = load_policy(ns.policy, device="cpu", profile=profile)
    policy.set_instruction(INSTRUCTION)
    a, b = (int(x) for x in ns.seeds.split(":"))
    rows = []
    try:
        for seed in range(a, b):
            w = time.monotonic()
            row = episode(policy, seed, ns, limits, profile)
            row["demonstrated_grasp"] = demonstrated_grasp(seed)
            row["wall_s"] = round(time.monotonic() - w, 1)
            rows.append(row)
            g = row["grasp"]
            where = (f"closed at {g['time']:.2f} s with the TCP x {g['x_cm']:+.1f} y {g['y_cm']:+.1f} z {g['z_cm']:+.1f} cm "
                     f"from the cube (command {g['command_ahead_cm']:.1f} cm ahead)" if g else "never closed")
            d = row["demonstrated_grasp"]
            ref = f"; demonstrator z {d['z_cm']:+.1f} cm" if d else ""
            lost = "; ".join(f"lost at {x['time']:.2f} s ({x['cause']}{', left touched' if x['left_touched'] else ''}, "
                             f"held {x['held_s']:.2f} s, lifted {x['lift_cm']:.1f} cm)" for x in row["lost"])
            print(f"seed {seed}: {'success' if row['success'] else 'fail'} (stage {row['max_stage']}, "
                  f"lifted {row['max_lift_cm']:.1f} cm), {where}{ref}, "
                  f"{row['chunks']} chunks, {row['limit_hits']} limit hits, {row['knocks']} knocks, {row['wall_s']} s"
                  f"{'; ' + lost if lost else ''}", flush=True)
    finally:
        policy.close()
    from motus_ros.eval.report import wilson_interval  # ROS-free

    ys = [abs(r["grasp"]["y_cm"]) for r in rows if r["grasp"]]
    wins = sum(r["success"] for r in rows)
    # a dozen tuning seeds find failure modes; they cannot rank two policies (the interval says how wide)
    summary = {"policy": ns.policy, "seeds": ns.seeds, "strategy": ns.strategy, "executor_params": ns.executor_param,
               "delay": ns.delay, "episodes": len(rows), "success_rate": wins / max(1, len(rows)),
               "wilson95": [round(x, 4) for x in wilson_interval(wins, len(rows))],
               "grasped": sum(r["max_stage"] >= 2 for r in rows),
               "lifted": sum(r["max_lift_cm"] > CarryProbe.LIFT_CM for r in rows),
               "grasp_y_cm_abs_median": float(np.median(ys)) if ys else None,
               "beyond_y_tolerance": sum(y > ns.y_tolerance_cm for y in ys),
               "lost_after_lift": {c: sum(x["cause"] == c for r in rows for x in r["lost"]) for c in ("opened", "slipped")},
               "rows": rows}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
