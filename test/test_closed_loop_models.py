"""Motus and MoLA themselves (not a replay declaring their chunk length) in the closed loop on the
simulated robot, with the executor's default settings.

The policy node serves policy directories of the real implementations at tiny widths: a Motus written
by ``motus-train`` (H = 48) and a MoLA (H = 15). Random weights fed their own motion back as state and
ran away across the joint ranges (measured: up to 2 rad in 6 s, chunks rejected as discontinuous),
which says nothing about the contract. So the last layer of each action head is zeroed: the flow's
velocity is 0, a chunk is the de-normalised initial noise (pulled towards the executor's prefix by the
RTC guidance), and statistics 0.002 rad wide around the home pose keep it where the robot stands.
Everything else is the real path: loading, preprocessing, sampling, de-normalisation, chunk timing and
the node transport. What is checked is the contract between model and executor: the executor learns
H and the step period from the policy, derives its horizon, accepts every chunk, requests the next one
before the plan runs out, and keeps the motion within the limits.
"""
import json

import numpy as np
import pytest

from motus_core.preprocessing import MinMaxNormalizer, write_stats
from motus_core.robot_profile import load_profile
from motus_core.runtime.strategies import LATE_CHUNK_CAUSES
from test.closed_loop_helpers import spawned_cleanup  # noqa: F401  (autouse: no node outlives its test)
from test.closed_loop_helpers import Monitor, check_limits, load_record, start_executor, start_policy, start_sim
from test.helpers import stop_process

PROFILE = load_profile("sim_aloha")
# rad: the statistics' half range around home. The chunk is the initial noise (a few units) times the
# range: 0.002 rad from one action to the next, well within the acceleration limit at 30 Hz (0.02 rad
# of white noise asks for ~40 rad/s^2 and the executor's guard clamps most ticks).
HALF_WIDTH = 0.001
INSTRUCTION = "transfer the cube to the other arm"


def _narrow_stats() -> MinMaxNormalizer:
    """home +- HALF_WIDTH, moved inside the limits (a gripper's home is at the end of its range, where
    any excursion would leave the limits and the chunk be rejected)."""
    lower, upper = np.asarray(PROFILE.position_lower, float), np.asarray(PROFILE.position_upper, float)
    centre = np.clip(np.asarray(PROFILE.home, float), lower + 0.02, upper - 0.02)
    return MinMaxNormalizer(centre - HALF_WIDTH, centre + HALF_WIDTH, "sim_aloha")


def _zero_action_head(sd: dict, layer: str) -> dict:
    keys = [k for k in sd if k.endswith((layer + ".weight", layer + ".bias"))]
    assert keys, f"no {layer} in the state dict"
    for k in keys:
        sd[k] = sd[k].clone().zero_()
    return sd


def _motus_dir(root):
    """A tiny Motus written by motus-train (one step at lr 0), its action head zeroed, narrow stats."""
    from safetensors.torch import load_file, save_file

    from motus_core.models.motus.train.config import load_config
    from motus_core.models.motus.train.trainer import train
    from test.motus_train_helpers import make_dataset

    data = make_dataset(root / "data", episodes=2, frames=60, instruction=INSTRUCTION)
    cfg = load_config(None, [
        "model.preset=tiny", "model.config.num_video_frames=8", "model.config.video_action_freq_ratio=6",  # H = 48
        "data.text_encoder=tiny", "data.num_workers=0", "data.val_episodes=0", "train.batch_size=1", "train.steps=1",
        "train.val_every=0", "train.save_every=0", "train.save_every_minutes=0", "train.num_threads=1",
        "optim.lr=0", "optim.wan_lr=0", f"data.path={data}", f"output_dir={root / 'run'}"])
    assert train(cfg) == 0
    policy = root / "run" / "final"
    for shard in policy.glob("motus-*.safetensors"):
        save_file(_zero_action_head(load_file(str(shard)), "action_head.0"), str(shard))
    stats = json.loads((policy / "stats.json").read_text())
    (policy / "stats.json").write_text(json.dumps({key: _narrow_stats().to_stat_entry() for key in stats}))
    return policy


def _mola_dir(root):
    """A tiny MoLA (H = 15), its flow head's output zeroed, narrow stats."""
    import torch

    from motus_core.models.mola.checkpoint import write_policy_dir
    from motus_core.models.mola.config import tiny_config
    from motus_core.models.mola.model import MolaNet
    from motus_core.models.mola.testing import save_tiny_foundation

    cfg = save_tiny_foundation(tiny_config(chunk_length=15), root / "foundation")
    torch.manual_seed(0)
    write_stats(root / "stat.json", "sim_aloha", _narrow_stats())
    sd = _zero_action_head(MolaNet(cfg).state_dict(), "action_pred")
    return write_policy_dir(root / "policy", cfg, sd, stats_file="../stat.json", stats_key="sim_aloha")


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    import rclpy
    from rclpy.context import Context

    tmp = tmp_path_factory.mktemp("models")
    # half real time: a CPU chunk of the tiny models then fits the horizon on the shared 2-core machine
    sim = start_sim("real_time_factor:=0.5")
    ctx = Context()
    rclpy.init(context=ctx)
    mon = Monitor(ctx, PROFILE)
    try:
        mon.wait(lambda: mon.clock > 0.5 and len(mon.joint_states) > 10, 60, "the simulator", procs=[sim])
        yield {"tmp": tmp, "monitor": mon}
    finally:
        mon.close()
        rclpy.shutdown(context=ctx)
        stop_process(sim)


MODELS = {
    # name: (chunk length H, the executor's derived horizon s = H // 3)
    "motus": (48, 16),
    "mola": (15, 5),
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_model_runs_in_the_closed_loop_with_default_settings(graph, model):
    tmp, mon = graph["tmp"], graph["monitor"]
    H, s = MODELS[model]
    spec = str(_motus_dir(tmp / "motus") if model == "motus" else _mola_dir(tmp / "mola"))
    mon.forget()
    policy = start_policy(spec, f"instruction:={INSTRUCTION}")
    ex = None
    try:
        mon.wait(lambda: mon.policy_status is not None and mon.policy_status.chunk_length == H, 180,
                 f"the {model} policy's chunk contract", procs=[policy])
        assert mon.policy_status.step_period == pytest.approx(1 / 30)
        record, summary_file = tmp / f"{model}.npz", tmp / f"{model}.json"
        ex = start_executor("run_time:=6.0", f"record_file:={record}", f"summary_file:={summary_file}")
        mon.wait(lambda: mon.exec_status is not None and mon.exec_status.chunk_length == H, 60, "the executor's contract", procs=[ex])
        st = mon.exec_status
        assert st.execution_horizon == s and st.step_period == pytest.approx(1 / 30), st
        assert st.max_delay == H - s, st  # the default: all the horizon leaves
        ex.wait(timeout=240)
    finally:
        out = stop_process(ex) if ex is not None else ""
        stop_process(policy)
    assert ex.returncode == 0, out[-3000:]
    summary = json.loads(summary_file.read_text())
    # a chunk that arrives after its last action was due is refused by any executor: the shared machine's
    # doing, like a watchdog stop; any other rejection (out of limits, wrong length or period) fails
    # (the summary lists the last five rejections)
    assert all(r.startswith(LATE_CHUNK_CAUSES) for r in summary["rejections"]), (summary, out[-3000:])
    assert summary["chunks_rejected"] <= summary["chunks_received"] // 4, (summary, out[-3000:])
    # 6 s of actions at a chunk every s actions: ~180 / s chunks (fewer while the first one is computed)
    assert summary["chunks_received"] >= (180 // s) // 2, summary
    # a stop now and then is the shared machine; a stop after every chunk was the missing contract
    assert summary["watchdog_stops"] <= summary["chunks_received"] // 4, summary
    rec = load_record(record)
    check_limits(rec)
    # the commands stayed where the statistics put them (near home), so de-normalisation was the model's
    arms = [i for i in range(14) if i not in (6, 13)]
    assert np.abs(rec["position"][:, arms] - np.asarray(PROFILE.home, float)[arms]).max() < 0.05
