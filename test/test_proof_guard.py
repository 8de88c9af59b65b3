"""The proof's CI-sized guard: a briefly trained reduced Motus predicts demonstrated actions on held-out
frames better than an untrained one - unless the pipeline is broken.

A few transfer_cube episodes are recorded with the ROS-free ``motus-sim-dataset`` (the same episode
writer, T-mosaic and preprocessing as ``motus-convert``; the ROS recording path has its own end-to-end
test), the ``reduced_sim`` recipe trains briefly through ``motus-train``'s trainer, and a held-out
demonstration (another seed, rendered in-process at the cameras' native size) is fed frame by frame
to the checkpoint through ``Policy.predict``, exactly what the policy node serves. The check: the
mean error (joint units) of the predicted 48-action chunks against the demonstrated targets (the
demonstrator's commands, what the datasets train on) is below ``MARGIN`` x the untrained model's.

Mutants (each must make the check fail):

* ``stats``: the policy de-normalises with other statistics (another robot's stat.json);
* ``shift``: training pairs each frame with the actions one step later (targets[c+2..c+49] instead of
  targets[c+1..c+48]: a time-alignment bug between frames and actions);
* ``swap``: two cameras of the mosaic swapped between training and serving (left and right wrist).

What this budget can and cannot catch is measured and written down in docs/proof.md: a model trained
for a minute of CPU learns the state -> action map and the normalisation, not yet the images or the
one-step timing, so ``shift`` and ``swap`` are expected failures of the guard (strict: the day a
brief training catches them, the marks must go) and the full proof run is what catches them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from test.helpers import ROOT

RECIPE = ROOT / "config" / "motus" / "reduced_sim.yaml"
TASK = "transfer_cube"
INSTRUCTION = "transfer the cube to the other arm"
TRAIN_EPISODES = 3
HELDOUT_SEED = 500
STEPS = 60
MARGIN = 0.85  # trained error must be below 85 % of the untrained model's


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Training episodes (Motus layout) and a held-out demonstration (camera images + joints per frame)."""
    from motus_core.models.motus.text_encoder import build_tiny_text_encoder
    from motus_core.robot_profile import load_profile
    from motus_core.sim.dataset import SimDatasetOptions, generate, render_demonstration

    root = tmp_path_factory.mktemp("guard")
    cam = load_profile("sim_aloha").cameras["high"]
    h, w = cam.height, cam.width
    summary = generate(root / "data", SimDatasetOptions(task=TASK, episodes=TRAIN_EPISODES, height=h, width=w),
                       text_encoder=build_tiny_text_encoder(seed=0), progress=False)
    assert summary["episodes"] == TRAIN_EPISODES
    demo = render_demonstration(TASK, HELDOUT_SEED, w, h)
    assert demo.success
    return {"root": root, "dataset": root / "data", "frames": demo.frames, "q": demo.q, "targets": demo.targets}


def _train(data: dict, name: str, steps: int, *extra: str) -> Path:
    from motus_core.models.motus.train.config import load_config
    from motus_core.models.motus.train.trainer import train

    out = data["root"] / name
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(str(RECIPE), [
        f"data.path={data['dataset']}", f"output_dir={out}", f"train.steps={steps}", "train.device=cpu",
        "data.val_episodes=0", "data.num_workers=0", "train.val_every=0", "train.save_every=0", "train.save_every_minutes=0",
        "optim.warmup_steps=5", f"optim.cycle_length={steps}", *extra])
    assert train(cfg) == 0
    return out / "final"


def heldout_error(ckpt: Path, data: dict, swap: tuple[str, str] | None = None, every: int = 20) -> float:
    """Mean |predicted chunk - demonstrated targets| (joint units) over held-out condition frames."""
    from motus_core.policy.base import Observation, PolicyRequest
    from motus_core.policies import load_policy
    from motus_core.robot_profile import load_profile

    q, frames, targets = data["q"], data["frames"], data["targets"]
    policy = load_policy(str(ckpt), device="cpu", profile=load_profile("sim_aloha"))
    try:
        policy.set_instruction(INSTRUCTION)
        errors = []
        for c in range(0, len(q) - 49, every):
            images = dict(frames[c])
            if swap:
                images[swap[0]], images[swap[1]] = images[swap[1]], images[swap[0]]
            chunk = policy.predict(PolicyRequest(Observation(images=images, state=q[c], stamp=c / 30.0), instruction=INSTRUCTION, seed=0))
            k = chunk.actions.shape[0]
            errors.append(np.abs(chunk.actions - targets[c + 1:c + 1 + k]).mean())
        return float(np.mean(errors))
    finally:
        policy.close()


@pytest.fixture(scope="module")
def untrained_error(data) -> float:
    # one step at lr 0: the initial weights, written as a policy directory with the dataset's stats
    return heldout_error(_train(data, "untrained", 1, "optim.lr=0", "optim.wan_lr=0"), data)


@pytest.fixture(scope="module")
def trained(data) -> Path:
    return _train(data, "trained", STEPS)


def guard_passes(error: float, untrained: float) -> bool:
    return error < MARGIN * untrained


def test_brief_training_beats_the_untrained_model(data, trained, untrained_error):
    err = heldout_error(trained, data)
    print(f"held-out action error: trained {err:.4f}, untrained {untrained_error:.4f} (joint units)")
    assert guard_passes(err, untrained_error), (err, untrained_error)


def _other_stats(ckpt: Path, data: dict) -> Path:
    """The checkpoint with another robot's statistics (the official aloha_agilex_2 stat.json entry)."""
    from motus_core.preprocessing import DEFAULT_STATS_FILE

    out = data["root"] / "other_stats"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(ckpt, out, symlinks=True)
    stats = json.loads((out / "stats.json").read_text())
    other = json.loads(DEFAULT_STATS_FILE.read_text())["aloha_agilex_2"]
    for entry in stats.values():
        entry["min"], entry["max"] = list(other["min"]), list(other["max"])
    (out / "stats.json").write_text(json.dumps(stats))
    return out


def _shifted_training(data: dict, monkeypatch) -> Path:
    import motus_core.data.reader as reader

    original = reader.sampling_indices

    def shifted(total_frames, cond, **kw):
        idx = original(total_frames, cond, **kw)
        actions = tuple(min(a + 1, total_frames - 1) for a in idx.actions)
        return type(idx)(cond=idx.cond, actions=actions, video=idx.video)

    ds = reader.MotusDataset(data["dataset"], seed=0)
    before = ds.sample(0, 10)["action_sequence"]
    monkeypatch.setattr(reader, "sampling_indices", shifted)
    after = ds.sample(0, 10)["action_sequence"]
    assert np.allclose(after[:-1].numpy(), before[1:].numpy()) and not np.allclose(after.numpy(), before.numpy())  # the mutant is real
    return _train(data, "shifted", STEPS)


@pytest.mark.parametrize("mutant", [
    "stats",
    pytest.param("shift", marks=pytest.mark.xfail(strict=True, reason="open: a one-minute training does not learn one-step timing (its action error is far above one step of motion)")),
    pytest.param("swap", marks=pytest.mark.xfail(strict=True, reason="open: a one-minute training does not use its images yet (the proof's 6000-step run does since the VAE statistics are measured: docs/proof.md)")),
])
def test_guard_fails_for_a_broken_pipeline(mutant, data, trained, untrained_error, monkeypatch):
    if mutant == "stats":
        err = heldout_error(_other_stats(trained, data), data)
    elif mutant == "shift":
        err = heldout_error(_shifted_training(data, monkeypatch), data)
    else:
        err = heldout_error(trained, data, swap=("left_wrist", "right_wrist"))
    print(f"mutant {mutant}: held-out action error {err:.4f}, untrained {untrained_error:.4f}")
    assert not guard_passes(err, untrained_error), (err, untrained_error)
