"""motus-train on tiny configs and real files: loss falls, checkpoints are policy dirs, exact resume,
bad data, config validation, the record-vs-serve input identity, NaN stop, Ctrl-C."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from test.motus_train_helpers import INSTRUCTION, make_dataset, render

ROOT = Path(__file__).resolve().parent.parent

TINY = [
    "model.preset=tiny", "model.config.num_video_frames=4", "model.config.video_action_freq_ratio=4",
    "data.text_encoder=tiny", "data.num_workers=0", "data.val_episodes=1", "train.batch_size=2",
    "train.val_every=0", "train.val_samples=2", "train.save_every=2", "train.save_every_minutes=0",
    "train.num_threads=1", "optim.lr=2e-3", "optim.warmup_steps=0", "optim.f_min=0.99",
]


def config(data: Path, out: Path, *extra: str):
    from motus_core.models.motus.train.config import load_config

    return load_config(None, [*TINY, f"data.path={data}", f"output_dir={out}", *extra])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("motus_ds"), episodes=3, frames=36)


def fixed_loss(trainer, n: int = 4) -> float:
    from motus_core.models.motus.train.data import collate

    batch = collate([trainer.data.train[i] for i in range(n)], trainer.mcfg.text_len)
    with torch.no_grad():
        enc = trainer.loss.encode(batch)
        out = trainer.loss(enc, torch.Generator().manual_seed(123))
    return float(out["total_loss"])


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    from motus_core.models.motus.train.trainer import Trainer

    out = tmp_path_factory.mktemp("run")
    t = Trainer(config(dataset, out, "train.steps=16", "train.save_every=8"))
    t.setup()
    before = fixed_loss(t)
    assert t.run() == 0
    after = fixed_loss(t)
    return t, out, before, after


def test_loss_falls_and_checkpoint_is_a_policy(trained):
    from motus_core.policy.base import Observation, PolicyRequest
    from motus_core.policies import load_policy

    t, out, before, after = trained
    assert after < 0.8 * before, (before, after)
    assert (out / "final" / "motus_policy.yaml").is_file()
    assert os.path.realpath(out / "latest") == os.path.realpath(out / "final")
    assert (out / "checkpoints" / "step_00000008" / "motus_policy.yaml").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == 16 and summary["skipped_episodes"] == []
    assert list((out / "tensorboard").iterdir())
    policy = load_policy(str(out / "latest"))
    # the statistics the model was trained with travel with it and are the ones it de-normalises with
    np.testing.assert_array_equal(policy.normalizer.min, t.data.normalizer.min)
    np.testing.assert_array_equal(policy.normalizer.max, t.data.normalizer.max)
    # the trained weights are the ones loaded
    sd = t.built.model.state_dict()
    for k, v in policy.model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    q = np.linspace(-0.5, 0.5, 14)
    imgs = {"high": render(q), "left_wrist": render(q[::-1].copy()), "right_wrist": render(-q)}
    chunk = policy.predict(PolicyRequest(observation=Observation(images=imgs, state=q, stamp=0.0), instruction=INSTRUCTION, seed=0))
    assert chunk.actions.shape == (16, 14) and np.all(np.isfinite(chunk.actions))
    # an instruction outside the dataset is encoded by the saved tiny umT5 (same identity)
    chunk2 = policy.predict(PolicyRequest(observation=Observation(images=imgs, state=q, stamp=0.0), instruction="other", seed=0))
    assert chunk2.actions.shape == (16, 14)


def test_a_random_vae_is_normalised_with_statistics_measured_on_the_training_frames(dataset, trained, tmp_path):
    """A scratch run's random VAE gets per-channel latent statistics measured on its training frames (as
    Wan's were for its VAE): normalised latents of training frames have about zero mean and unit
    deviation per channel, and the checkpoint carries the statistics to the policy. With the config's
    0 / 1 the random VAE's latents were ~0.1 in scale and dominated by channel offsets."""
    from motus_core.models.motus.train.trainer import Trainer
    from motus_core.models.motus.train.vae_stats import sample_videos
    from motus_core.policies import load_policy

    t, out, _, _ = trained
    policy = load_policy(str(out / "final"))
    torch.testing.assert_close(policy.vae.latents_mean, t.built.vae.latents_mean, rtol=0, atol=0)
    torch.testing.assert_close(policy.vae.latents_inv_std, t.built.vae.latents_inv_std, rtol=0, atol=0)
    mean = policy.vae.latents_mean.view(-1)
    assert not torch.all(mean == 0.0) and not torch.all(policy.vae.latents_inv_std == 1.0)
    z = policy.vae.encode_pixels(torch.stack(sample_videos(t.data.train.reader, 16)))
    assert z.mean(dim=(0, 2, 3, 4)).abs().max() < 0.2, z.mean(dim=(0, 2, 3, 4))
    std = z.std(dim=(0, 2, 3, 4))
    assert 0.7 < std.min() and std.max() < 1.3, std
    assert "VAE latent statistics measured on" in (out / "train.log").read_text()
    # 'config' keeps the model config's values
    kept = Trainer(config(dataset, tmp_path / "kept", "train.steps=1", "init.vae_statistics=config"))
    kept.setup()
    assert torch.all(kept.built.vae.latents_mean == 0.0) and torch.all(kept.built.vae.latents_inv_std == 1.0)
    assert kept.mcfg.vae["latents_std"] == [1.0] * len(kept.mcfg.vae["latents_std"])
    kept.close()



def test_per_position_statistics_standardise_every_latent_cell_and_reach_the_policy(dataset, tmp_path):
    """init.vae_statistics=measure_per_position: each latent channel and grid cell of the training frames gets
    about zero mean and unit deviation (the static scene subtracted; cells that never change floored, not blown
    up), the checkpoint's policy normalises and samples with the same [C][h][w] statistics, an image of
    another size is refused with a clear error, and a pretrained VAE refuses the mode."""
    from motus_core.models.motus.train.trainer import Trainer
    from motus_core.models.motus.train.vae_stats import CELL_STD_FLOOR, sample_videos
    from motus_core.policies import load_policy

    out = tmp_path / "cells"
    t = Trainer(config(dataset, out, "train.steps=2", "init.vae_statistics=measure_per_position"))
    t.setup()
    vae = t.built.vae
    assert vae.per_position and vae.latents_mean.shape[-2:] != (1, 1)
    videos = sample_videos(t.data.train.reader, 64)
    z = vae.encode_pixels(torch.stack(videos)).double()
    cell_mean, cell_std = z.mean(dim=(0, 2)), z.std(dim=(0, 2), unbiased=False)
    assert cell_mean.abs().max() < 1e-3, cell_mean.abs().max()  # measured on exactly these frames
    raw = z / vae.latents_inv_std.double() + vae.latents_mean.double()
    raw_cell_std = raw.std(dim=(0, 2), unbiased=False)
    raw_channel_std = raw.transpose(0, 1).reshape(raw.shape[1], -1).std(dim=1, unbiased=False)[:, None, None]
    varies = raw_cell_std > CELL_STD_FLOOR * raw_channel_std
    assert varies.float().mean() > 0.5
    assert (cell_std[varies] - 1.0).abs().max() < 1e-3  # every cell that varies has unit deviation
    assert cell_std.max() < 1.0 + 1e-3  # the others are floored, not blown up
    assert "per channel and grid cell" in (out / "train.log").read_text()
    assert t.run() == 0
    t.close()
    policy = load_policy(str(out / "final"))
    torch.testing.assert_close(policy.vae.latents_mean, vae.latents_mean, rtol=0, atol=0)
    torch.testing.assert_close(policy.vae.latents_inv_std, vae.latents_inv_std, rtol=0, atol=0)
    h, w = videos[0].shape[-2:]
    with pytest.raises(ValueError, match="another image size"):
        policy.vae.encode_pixels(torch.rand(1, 3, 1, h + 32, w))
    with pytest.raises(ValueError, match="for a random VAE"):
        Trainer(config(dataset, tmp_path / "pre", "train.steps=1", "init.vae_statistics=measure_per_position",
                       "init.source=converted", f"init.path={out / 'final'}")).setup()

def test_validation_reports_joint_errors(dataset, trained):
    t, out, _, _ = trained
    m = t.validate(16)
    assert m["val/action_mae"] > 0 and set(m) >= {"val/action_mae_first", "val/action_mae_last", "val_joint/13_mae"}
    # the same samples with each other's images: the number that says whether a model uses its cameras
    # (the second proof run's model did not: x1.00); here only that the images really were exchanged
    assert m["val/action_mae_other_images"] > 0 and m["val/action_mae_other_images"] != m["val/action_mae"]
    rows = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
    assert len(rows[-1]["per_joint_mae"]) == 14


def _same_final_weights(full: Path, part: Path):
    """Asserts both runs' final weights are equal; returns the weights and both training states."""
    from motus_core.models.motus.checkpoint import load_weights

    a = load_weights(full / "final" / "motus.safetensors.index.json")
    b = load_weights(part / "final" / "motus.safetensors.index.json")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(full / "final" / "training_state.pt", weights_only=False)
    sb = torch.load(part / "final" / "training_state.pt", weights_only=False)
    return a, sa, sb


def test_resume_is_bit_exact(dataset, tmp_path):
    from motus_core.models.motus.train.trainer import train

    full, part = tmp_path / "full", tmp_path / "part"
    assert train(config(dataset, full, "train.steps=6")) == 0
    assert train(config(dataset, part, "train.steps=3")) == 0  # stops after step 3 (writes final at 3)
    assert train(config(dataset, part, "train.steps=6")) == 0  # resumes from latest (step 3)
    a, sa, sb = _same_final_weights(full, part)
    assert sa["step"] == sb["step"] == 6
    for x, y in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(x["exp_avg"], y["exp_avg"]) and torch.equal(x["exp_avg_sq"], y["exp_avg_sq"])
    log = (part / "train.log").read_text()
    assert "resuming from" in log and "at step 3" in log


def test_config_validation():
    from motus_core.models.motus.train.config import TrainConfigError, load_config

    cfg = load_config(ROOT / "config/motus/reduced_sim.yaml", ["train.steps=7"])
    assert cfg.train.steps == 7 and cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.01
    with pytest.raises(TrainConfigError, match="train.stepz"):
        load_config(None, ["train.stepz=3"])
    with pytest.raises(TrainConfigError, match="expected an integer"):
        load_config(None, ["train.steps=abc"])
    with pytest.raises(TrainConfigError, match="below the minimum"):
        load_config(None, ["train.batch_size=0"])
    with pytest.raises(TrainConfigError, match="not one of"):
        load_config(None, ["train.precision=fp8"])
    # every shipped recipe is valid and holds only differences from the defaults
    from motus_core.models.motus.train.config import TrainConfig
    import yaml

    defaults = TrainConfig().to_dict()
    for recipe in sorted((ROOT / "config/motus").glob("*.yaml")):
        load_config(recipe)
        raw = yaml.safe_load(recipe.read_text())
        for section, values in raw.items():
            if not isinstance(values, dict):
                continue
            for k, v in values.items():
                if section == "model" and k == "config":
                    continue
                d = defaults[section][k]
                assert (list(v) if isinstance(v, (list, tuple)) else v) != d, f"{recipe.name}: {section}.{k} repeats the default"


def test_full_size_scratch_needs_the_flag(tmp_path):
    from motus_core.models.motus.train.build import build_models
    from motus_core.models.motus.train.config import TrainConfigError, load_config

    cfg = load_config(None, [])
    with pytest.raises(TrainConfigError, match="allow_full_size_scratch"):
        build_models(cfg.model, cfg.init, torch.device("cpu"))


# ------------------------------------------------------------------------------------ bad data


def _open(root: Path, *extra: str):
    from motus_core.models.motus.train.build import model_config
    from motus_core.models.motus.train.data import open_data
    from motus_core.models.motus.vlm import TinyPrompt

    cfg = config(root, root / "out", *extra)
    mcfg = model_config(cfg.model)
    return open_data(cfg.data, mcfg, TinyPrompt(mcfg.vlm, (mcfg.video_height, mcfg.video_width)), seed=0)


def test_bad_data_is_skipped_with_its_reason(tmp_path):
    from motus_core.data.motus_layout import DatasetError

    root = make_dataset(tmp_path / "ds", episodes=6, frames=24)
    task = root / "transfer_cube"
    q = torch.load(task / "qpos/000001.pt")
    q[5, 3] = float("nan")
    torch.save(q, task / "qpos/000001.pt")  # NaN in qpos
    torch.save(torch.load(task / "qpos/000002.pt")[:-2], task / "qpos/000002.pt")  # video 24 frames, qpos 22
    (task / "instructions/000003.pt").unlink()  # no embedding
    make_dataset(tmp_path / "short", episodes=1, frames=12)  # shorter than one chunk (16 actions + 1)
    os.replace(tmp_path / "short/transfer_cube/videos/000000.mp4", task / "videos/000004.mp4")
    os.replace(tmp_path / "short/transfer_cube/qpos/000000.pt", task / "qpos/000004.pt")
    data = _open(root)
    reasons = {s.episode: s.reason for s in data.skipped}
    assert "NaN/inf" in reasons["transfer_cube/000001"] and "frame 5, joint 3" in reasons["transfer_cube/000001"]
    assert "24 frames but qpos has 22" in reasons["transfer_cube/000002"]
    assert "no instruction embedding" in reasons["transfer_cube/000003"]
    assert "shorter than one chunk" in reasons["transfer_cube/000004"]
    assert [r.name for r in data.train.episodes + data.val.episodes] == ["transfer_cube/000000", "transfer_cube/000005"]
    # the wrong text width is an error before training (the whole dataset came from another encoder)
    with pytest.raises(DatasetError, match="32 wide, the model's text width is 48"):
        _open(root, "model.config.wan.text_dim=48")
    # an empty dataset
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty dataset"):
        _open(tmp_path / "empty")


def test_skipped_episodes_in_run_summary_and_zero_range_joints(tmp_path):
    from motus_core.models.motus.train.trainer import train
    from motus_core.preprocessing import load_stats

    root = make_dataset(tmp_path / "ds", episodes=3, frames=24)
    task = root / "transfer_cube"
    for i in range(3):  # joint 13 never moves
        q = torch.load(task / f"qpos/{i:06d}.pt")
        q[:, 13] = 0.25
        torch.save(q, task / f"qpos/{i:06d}.pt")
    from motus_core.data.motus_layout import write_dataset_stats

    write_dataset_stats(root, "sim_aloha")
    (task / "instructions/000001.pt").unlink()
    out = tmp_path / "run"
    assert train(config(root, out, "train.steps=2", "data.val_episodes=0")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_episodes"] == [{"episode": "transfer_cube/000001", "reason": "no instruction embedding (convert with --text-encoder or --tiny-text-encoder)"}]
    assert summary["zero_range_joints"] == [13]
    log = (out / "train.log").read_text()
    assert "skipping episode transfer_cube/000001" in log and "joints [13] never move" in log
    stats = json.loads((out / "final/stats.json").read_text())["sim_aloha"]
    assert stats["zero_range_joints"] == [13]
    n = load_stats(out / "final/stats.json", "sim_aloha")
    x = np.full(14, 0.25)
    assert n.normalize(x)[13] == 0.0 and n.denormalize(n.normalize(x))[13] == 0.25


# ------------------------------------------------------------------------------------ identity


def test_training_inputs_equal_policy_inputs(tmp_path):
    """Same raw frames + joint state: the training-sample path and the policy node's input path build the
    same model inputs (exactly without a codec; within H.264's error through a recorded video)."""
    from motus_core.data.motus_layout import write_episode
    from motus_core.models.motus.train.data import TrainSamples
    from motus_core.data.reader import MotusDataset
    from motus_core.models.motus.policy import create_random
    from motus_core.models.motus.train.build import model_config
    from motus_core.models.motus.train.config import load_config
    from motus_core.models.motus.train.step import vlm_hidden
    from motus_core.preprocessing import MinMaxNormalizer, make_mosaic, resize_with_padding, to_unit_chw

    rng = np.random.default_rng(0)
    frames = 20
    cams = [{r: rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for r in ("high", "left_wrist", "right_wrist")}
            for _ in range(frames)]
    for c in cams:  # smooth content so H.264's error is small and meaningful
        for r in c:
            c[r] = np.ascontiguousarray(np.repeat(np.repeat(c[r][::16, ::16], 16, 0), 16, 1))
    qpos = rng.normal(size=(frames, 14)).astype(np.float32)
    mosaics = [make_mosaic(c["high"], c["left_wrist"], c["right_wrist"]) for c in cams]
    write_episode(tmp_path / "task", "000000", mosaics, qpos, INSTRUCTION, torch.zeros(3, 32))
    mcfg = model_config(load_config(None, TINY).model)
    norm = MinMaxNormalizer(qpos.min(0), qpos.max(0), name="t")
    policy = create_random(mcfg, options={"text_encoder": False}, seed=0)
    policy.normalizer = norm
    reader = MotusDataset(tmp_path, normalizer=norm, num_video_frames=4, video_action_freq_ratio=4,
                          image_hw=(mcfg.video_height, mcfg.video_width), seed=0)
    ds = TrainSamples(reader, policy.vlm.prompt)
    s = ds.sample(reader.episodes[0], 2)
    # policy node path, from the live per-camera images and joint state of frame 2
    image = policy._model_image(cams[2], "observation")
    state = policy._normalize(qpos[2], "state")
    # exact: the training transform of the un-encoded mosaic IS the policy's transform of the cameras
    assert np.array_equal(resize_with_padding(mosaics[2], (mcfg.video_height, mcfg.video_width)), image)
    assert torch.equal(s["initial_state"], state)
    # through the H.264 round trip: within the codec's error
    diff = np.abs(s["condition_image"].astype(int) - image.astype(int))
    assert diff.mean() < 3.0, diff.mean()
    assert np.abs(s["first_frame"].numpy() - to_unit_chw(image)).mean() < 3.0 / 255
    vin_train, vin_policy = s["vlm_inputs"], policy.vlm.prompt(image, INSTRUCTION)
    assert torch.equal(vin_train["input_ids"], vin_policy["input_ids"])
    assert (vin_train["pixel_values"] - vin_policy["pixel_values"]).abs().mean() < 0.05
    # the training frame cache serves the very bytes the per-sample decode produces
    from motus_core.data.reader import FrameCache

    cache = FrameCache(tmp_path / "cache", (mcfg.video_height, mcfg.video_width))
    cache.ensure(reader.episodes[0])
    cached = MotusDataset(tmp_path, normalizer=norm, num_video_frames=4, video_action_freq_ratio=4,
                          image_hw=(mcfg.video_height, mcfg.video_width), seed=0, frame_cache=cache).sample(reader.episodes[0], 2)
    assert torch.equal(cached["first_frame"], s["first_frame"]) and torch.equal(cached["video_frames"], s["video_frames"])
    # identical inputs -> identical VLM features through both code paths
    h_train = vlm_hidden(policy.vlm, [vin_policy])
    h_policy = policy.vlm(image, INSTRUCTION)
    assert torch.equal(h_train, h_policy)


def test_export_official_round_trips_through_the_converter(trained, tmp_path):
    from motus_core.models.motus.checkpoint import load_weights
    from motus_core.models.motus.config import from_official
    from motus_core.models.motus.convert import motus_core_from_official, read_motus_checkpoint

    _, out, _, _ = trained
    rc = subprocess.run([sys.executable, "-m", "motus_core.cli.motus_train", "--export-official", str(tmp_path / "off"),
                         "--from", str(out / "final")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rc.returncode == 0, rc.stderr
    ck = torch.load(tmp_path / "off" / "mp_rank_00_model_states.pt", weights_only=True)
    assert set(ck) == {"module"}
    assert any(k.startswith("video_model.wan_model.blocks.0.self_attn.q.") for k in ck["module"])
    core, vlm = motus_core_from_official(read_motus_checkpoint(tmp_path / "off"))
    mine = load_weights(out / "final" / "motus.safetensors.index.json")
    assert core.keys() == mine.keys()
    for k in mine:  # bf16 in the official file
        assert torch.equal(core[k], mine[k].to(torch.bfloat16)), k
    mine_vlm = load_weights(out / "final" / "vlm.safetensors.index.json")
    assert vlm.keys() == mine_vlm.keys()
    off = json.loads((tmp_path / "off" / "official_config.json").read_text())
    cfg = from_official(off["wan"], off["motus"], vlm=off["vlm"])
    assert cfg.wan == json.loads((out / "final" / "motus_config.json").read_text())["wan"]


def test_nonfinite_loss_stops_naming_step_and_episodes(dataset, tmp_path):
    from motus_core.models.motus.checkpoint import load_weights
    from motus_core.models.motus.train.trainer import EXIT_NONFINITE, train

    out = tmp_path / "run"
    # an absurd learning rate blows the weights up: the loss of a later step is not finite
    rc = train(config(dataset, out, "train.steps=8", "train.save_every=1", "optim.lr=1e30", "optim.f_start=1.0",
                      "optim.f_max=1.0", "optim.f_min=1.0", "optim.grad_clip=0"))
    assert rc == EXIT_NONFINITE
    log = (out / "train.log").read_text()
    line = next(x for x in log.splitlines() if "non-finite loss/gradient at step" in x)
    bad_step = int(line.split("at step ")[1].split()[0])
    assert "transfer_cube/0000" in line and "@" in line  # the batch's episodes and condition frames
    latest = (out / "latest").resolve()
    assert latest.name == f"step_{bad_step - 1:08d}"  # the last good checkpoint is kept
    state = torch.load(latest / "training_state.pt", weights_only=False)
    assert state["step"] == bad_step - 1
    assert all(torch.isfinite(v).all() for v in load_weights(latest / "motus.safetensors.index.json").values())
    assert not (out / "final").exists()
    assert json.loads((out / "summary.json").read_text())["exit_code"] == EXIT_NONFINITE


@pytest.mark.parametrize("stop", ["ctrl_c", "sigterm_to_the_group"])
def test_ctrl_c_saves_and_exits_cleanly(dataset, tmp_path, stop):
    """Ctrl-C to the trainer, or SIGTERM to its whole process group with a data worker in it (how a
    session's end or `docker stop` stops it): a checkpoint is saved, no traceback."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "motus_core.cli.motus_train", *TINY, f"data.path={dataset}", f"output_dir={out}",
            "train.steps=100000", "train.save_every=0", *(["data.num_workers=1"] if stop != "ctrl_c" else [])]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not list((out / "tensorboard").glob("events*")) if (out / "tensorboard").is_dir() else True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        if stop == "ctrl_c":
            proc.send_signal(signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert f"{'SIGINT' if stop == 'ctrl_c' else 'SIGTERM'} received: saved step" in err
    latest = (out / "latest").resolve()
    state = torch.load(latest / "training_state.pt", weights_only=False)
    assert state["step"] >= 1 and latest.name == f"step_{state['step']:08d}"
    assert not (out / "final").exists()


def test_lora_trains_saves_loads_and_merges(dataset, tmp_path):
    from motus_core.models.motus.checkpoint import load_weights
    from motus_core.models.motus.model import Conditioning
    from motus_core.models.motus.train.lora import lora_layers
    from motus_core.models.motus.train.trainer import Trainer
    from motus_core.policies import load_policy

    out = tmp_path / "run"
    t = Trainer(config(dataset, out, "train.steps=4", "lora.enabled=true", "lora.rank=4", "lora.alpha=8"))
    t.setup()
    model = t.built.model
    assert lora_layers(model.video)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in trainable if n.startswith("video."))
    assert any(n.startswith("action_expert.") for n in trainable)  # experts stay fully trained
    assert t.run() == 0
    after = model.state_dict()
    changed = {k for k in base if not torch.equal(base[k], after[k])}
    assert any("lora_B" in k for k in changed) and not any(k.startswith("video.") and "lora_" not in k for k in changed)
    merged = load_weights(out / "final" / "motus.safetensors.index.json")
    assert not any("lora_" in k or "base_layer" in k for k in merged)
    policy = load_policy(str(out / "final"))  # plain weights, no peft needed to load
    # the merged model computes what the adapted one computes
    g = torch.Generator().manual_seed(0)
    cfg = t.mcfg
    h, w = cfg.latent_hw
    lat = torch.randn(1, 48, cfg.latent_frames, h, w, generator=g)
    act = torch.randn(1, cfg.action_chunk_size, 14, generator=g)
    st, und = torch.rand(1, 14, generator=g), torch.randn(1, 5, cfg.vlm_dim, generator=g)
    emb = torch.randn(7, int(cfg.wan["text_dim"]), generator=g)
    model.eval()
    with torch.no_grad():
        outs = []
        for m in (model, policy.model):
            c = Conditioning(und=m.und_tokens(und), context_kv=m.context_kv(m.text_context([emb])))
            outs.append(m(lat, torch.tensor([500.0]), act, torch.tensor([300.0]), st, c))
    torch.testing.assert_close(outs[0].action_velocity, outs[1].action_velocity, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[0].video_velocity, outs[1].video_velocity, rtol=1e-4, atol=1e-5)
    # resume keeps the unmerged adapters
    state = torch.load(out / "final" / "training_state.pt", weights_only=False)
    assert any("lora_A" in k for k in state["model"])


def torchrun(dataset: Path, out: Path, *extra: str) -> None:
    """``motus-train`` on the tiny config in 2 processes (gloo on the CPU, NCCL on CUDA)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(port), "-m", "motus_core.cli.motus_train", *TINY, f"data.path={dataset}",
            f"output_dir={out}", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=400)  # ~15 s idle; the CI once saw a 3-step run hang for 20 min
    except subprocess.TimeoutExpired:
        # the ranks print their Python stacks on SIGUSR1 (motus_core.models.training.setup_distributed)
        import psutil

        ranks = psutil.Process(proc.pid).children(recursive=True)
        for child in ranks:
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGUSR1)
        time.sleep(3)
        # torchrun starts its ranks in sessions of their own: killing its group leaves them holding the
        # output pipes, and reading to the end would wait for them forever
        for child in ranks:
            with contextlib.suppress(psutil.Error):
                child.kill()
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            err = "(the ranks' output could not be read)"
        pytest.fail(f"torchrun did not finish in 400 s; the ranks' stacks:\n{err[-12000:]}")
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.parametrize("engine", ["ddp", "fsdp"])  # FSDP2 (fully_shard) runs on the CPU with gloo too
def test_torchrun_two_processes_end_with_identical_weights(dataset, tmp_path, engine):
    out = tmp_path / "run"
    torchrun(dataset, out, "train.steps=3", "train.save_every=0", f"train.distributed={engine}")
    log = (out / "train.log").read_text()
    assert "2 process(es)" in log
    assert "2 ranks ended with identical weights" in log  # all_gather of each rank's full-weight checksum
    assert (out / "final" / "motus_policy.yaml").is_file()
    state = torch.load(out / "final" / "training_state.pt", weights_only=False)
    assert state["step"] == 3 and state["world"] == 2


def test_fsdp_resume_is_bit_exact(dataset, tmp_path):
    """2 FSDP2 processes resumed from the step-2 checkpoint (full weights and optimizer state, re-sharded)
    end where the uninterrupted run ends."""
    import shutil

    full, part = tmp_path / "full", tmp_path / "part"
    torchrun(dataset, full, "train.steps=4", "train.distributed=fsdp")  # checkpoints at 2, final at 4
    # the run as if stopped after its step-2 checkpoint (one launch fewer than stopping a run there)
    shutil.copytree(full, part, symlinks=True)
    shutil.rmtree(part / "final")
    (part / "latest").unlink()
    (part / "latest").symlink_to(Path("checkpoints") / "step_00000002")
    torchrun(dataset, part, "train.steps=4", "train.distributed=fsdp")
    a, sa, sb = _same_final_weights(full, part)
    assert sa["step"] == sb["step"] == 4 and sa["world"] == 2
    assert sa["optimizer"]["state"].keys() == sb["optimizer"]["state"].keys() and sa["optimizer"]["state"]
    for k, x in sa["optimizer"]["state"].items():  # full (unsharded) moments, keyed by parameter name
        y = sb["optimizer"]["state"][k]
        assert x["exp_avg"].shape == a[k.removeprefix("model.")].shape
        assert torch.equal(x["exp_avg"], y["exp_avg"]) and torch.equal(x["exp_avg_sq"], y["exp_avg_sq"])
    log = (part / "train.log").read_text()
    resumed = log[log.index("resuming from"):]  # the copied log holds the uninterrupted run's lines too
    assert "at step 2" in resumed.splitlines()[0] and "2 ranks ended with identical weights" in resumed


def test_fsdp_with_lora_is_refused(dataset, tmp_path, monkeypatch):
    from motus_core.models.motus.train.config import TrainConfigError
    from motus_core.models.motus.train.trainer import Trainer

    monkeypatch.setenv("WORLD_SIZE", "2")  # refused before any process group is joined
    t = Trainer(config(dataset, tmp_path / "run", "lora.enabled=true", "train.distributed=fsdp"))
    with pytest.raises(TrainConfigError, match="fsdp with lora.enabled is not supported"):
        t.setup()


def test_train_vlm_trains_saves_serves_and_resumes_bit_exact(dataset, tmp_path, monkeypatch):
    """model.train_vlm: the VLM is in the optimizer, changes, is written into each checkpoint (the policy
    serves it), and a resumed run continues it exactly; refused under torchrun (it is not wrapped)."""
    from motus_core.models.motus.checkpoint import load_weights
    from motus_core.models.motus.train.config import TrainConfigError
    from motus_core.models.motus.train.trainer import Trainer, train
    from motus_core.policies import load_policy

    full, part = tmp_path / "full", tmp_path / "part"
    t = Trainer(config(dataset, full, "train.steps=6", "model.train_vlm=true"))
    t.setup()
    assert [g["name"] for g in t.optimizer.param_groups][-1] == "vlm"
    before = {k: v.clone() for k, v in t.built.vlm.model.state_dict().items()}
    assert t.run() == 0
    after = t.built.vlm.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} VLM tensors trained"
    assert not (full / "frozen" / "vlm.safetensors.index.json").exists()  # no stale random VLM beside the trained one
    policy = load_policy(str(full / "final"))
    for k, v in policy.vlm.model.state_dict().items():
        assert torch.equal(v, after[k]), k
    # resume: the VLM and its optimizer state continue exactly
    assert train(config(dataset, part, "train.steps=3", "model.train_vlm=true")) == 0
    assert train(config(dataset, part, "train.steps=6", "model.train_vlm=true")) == 0
    _same_final_weights(full, part)
    va, vb = (load_weights(d / "final" / "vlm.safetensors.index.json") for d in (full, part))
    assert va.keys() == vb.keys() and all(torch.equal(va[k], vb[k]) for k in va)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainConfigError, match="train_vlm trains in a single process"):
        Trainer(config(dataset, tmp_path / "dist", "model.train_vlm=true")).setup()


def test_memory_estimate_and_benchmark_step_hook():
    from motus_core.models.motus.config import full_config
    from motus_core.models.motus.train.config import LoraSection
    from motus_core.models.motus.train.memory import GB, estimate
    from motus_core.models.motus.train.build import model_config
    from motus_core.models.motus.train.config import load_config
    from motus_core.models.motus.train.step import one_step, synthetic_setup

    lora = LoraSection(enabled=True)
    full = estimate(full_config(), batch_size=8, activation_checkpointing=False)
    ckpt = estimate(full_config(), batch_size=8, activation_checkpointing=True)
    small = estimate(full_config(), batch_size=1, lora=lora, activation_checkpointing=True)
    assert full["trainable_params"] > 5.8e9  # WAN 5.0B + action 0.64B + und 0.25B
    assert full["optimizer"] == 2 * full["gradients"] == 8 * full["trainable_params"]
    assert ckpt["activations"] < full["activations"] / 5  # checkpointing keeps only layer inputs + one layer
    assert small["total"] < 80 * GB < full["total"]  # the one-GPU goal, and why the official run OOMs
    # the GPU benchmark's step, exercised on a tiny config on the CPU
    cfg = model_config(load_config(None, TINY).model)
    loss, opt, batch = synthetic_setup(cfg, device="cpu", batch_size=2, lora=LoraSection(enabled=True, rank=2))
    r = one_step(loss, opt, batch, generator=torch.Generator().manual_seed(0))
    assert r["finite"] and r["grad_norm"] > 0


def test_official_layouts_through_the_reader(tmp_path):
    """AC-One/Aloha (one instruction .txt/.pt for a whole task, VLM image = condition frame at its original
    resolution) and RoboTwin 2.0 (metas lines + umt5_wan lists, raw qpos, downsample 3)."""
    from motus_core.data.video import write_video
    from motus_core.models.motus.text_encoder import build_tiny_text_encoder
    from motus_core.preprocessing import make_mosaic

    enc = build_tiny_text_encoder(seed=0)
    rng = np.random.default_rng(0)
    frames = 30
    q = rng.normal(size=(frames, 14)).astype(np.float32)
    mos = [make_mosaic(render(x), render(x[::-1].copy()), render(-x)) for x in q]
    # AC-One layout
    ac = tmp_path / "ac_one" / "fold_towel"
    for sub in ("videos", "qpos", "instructions"):
        (ac / sub).mkdir(parents=True)
    for i in range(2):
        write_video(ac / "videos" / f"{i}.mp4", mos)
        torch.save(torch.from_numpy(q), ac / "qpos" / f"{i}.pt")
    (ac / "instructions" / "fold_towel.txt").write_text("fold the towel")
    torch.save(enc.encode(["fold the towel"])[0][None].to(torch.bfloat16), ac / "instructions" / "fold_towel.pt")  # [1, L, D]
    data = _open(tmp_path / "ac_one", "data.stats_key=ac_one", "data.vlm_image=original", "data.val_episodes=0")
    assert data.stats_key == "ac_one" and not data.skipped  # packaged official statistics
    s = data.train[0]
    assert s["instruction"] == "fold the towel" and s["language_embedding"].shape[1] == 32
    v = data.train.prompt(np.ascontiguousarray(mos[s["cond_index"]]), "fold the towel")
    grid = s["vlm_inputs"]["image_grid_thw"]
    assert torch.equal(grid, v["image_grid_thw"])  # built from the 360x320 mosaic, not the 64x64 model image
    assert not torch.equal(grid, data.train.prompt(s["condition_image"], "x")["image_grid_thw"])
    # RoboTwin 2.0 layout
    rt = tmp_path / "robotwin" / "clean" / "stack_blocks"
    for sub in ("videos", "qpos", "metas", "umt5_wan"):
        (rt / sub).mkdir(parents=True)
    lines = ["stack the blocks", "put one block on the other"]
    for i in range(2):
        write_video(rt / "videos" / f"{i}.mp4", mos)
        torch.save(torch.from_numpy(q), rt / "qpos" / f"{i}.pt")
        (rt / "metas" / f"{i}.txt").write_text("\n".join(lines) + "\n")
        torch.save([e.to(torch.bfloat16) for e in enc.encode(lines)], rt / "umt5_wan" / f"{i}.pt")
    data = _open(tmp_path / "robotwin", "data.normalize=false", "data.global_downsample_rate=3",
                 "model.config.video_action_freq_ratio=2", "data.val_episodes=0")
    assert data.normalizer is None and not data.skipped and set(data.instructions) == set(lines)
    s = data.train[3]
    c = s["cond_index"]
    assert torch.equal(s["initial_state"], torch.from_numpy(q[c]))  # raw joints, not normalised
    assert torch.equal(s["action_sequence"], torch.from_numpy(q[[min(c + 3 * (i + 1), frames - 1) for i in range(8)]]))
    assert s["instruction"] in lines
    emb_index = lines.index(s["instruction"])
    assert torch.equal(s["language_embedding"], enc.encode(lines)[emb_index].to(torch.bfloat16))


def test_pretrain_layout_initialisation(tmp_path):
    """A Stage-2 (pretrain layout) official file into the finetune layout, as load_pretrain_weights."""
    from motus_core.models.motus.config import MotusConfig
    from motus_core.models.motus.train.build import build_models, model_config
    from motus_core.models.motus.train.export import official_state_dict
    from motus_core.models.motus.loading import build_motus_model, build_vlm
    from motus_core.models.motus.convert import CheckpointError

    cfg = model_config(config(tmp_path, tmp_path / "o").model)
    pre = MotusConfig.from_dict({**cfg.to_dict(), "training_mode": "pretrain"})
    src = build_motus_model(pre, None, seed=5)
    vlm = build_vlm(pre.vlm, None, seed=6)
    module = official_state_dict(src.state_dict(), vlm.state_dict(), dtype=None)
    (tmp_path / "stage2" / "pytorch_model").mkdir(parents=True)
    torch.save({"module": module}, tmp_path / "stage2" / "pytorch_model" / "mp_rank_00_model_states.pt")
    c = config(tmp_path, tmp_path / "o", "init.source=pretrain", f"init.path={tmp_path / 'stage2'}")
    built = build_models(c.model, c.init, torch.device("cpu"))
    sd, ref = built.model.state_dict(), src.state_dict()
    assert torch.equal(sd["video.blocks.0.attn1.to_q.weight"], ref["video.blocks.0.attn1.to_q.weight"])
    assert torch.equal(sd["action_expert.blocks.0.wan_action_qkv"], ref["action_expert.blocks.0.wan_action_qkv"])
    assert "action_expert.input_encoder.state_encoder.0.weight" in sd  # finetune layout, fresh
    assert "action_expert.registers" in sd and "action_expert.registers" not in ref
    assert torch.equal(built.vlm.model.state_dict()["language_model.embed_tokens.weight"], vlm.state_dict()["language_model.embed_tokens.weight"])
    # anything else that does not fit is an error naming the key
    module.pop("video_model.wan_model.blocks.0.self_attn.q.weight")
    torch.save({"module": module}, tmp_path / "stage2" / "pytorch_model" / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match="blocks.0.attn1.to_q.weight"):
        build_models(c.model, c.init, torch.device("cpu"))


def test_time_based_checkpoints_and_pruning(dataset, tmp_path):
    from motus_core.models.motus.train.trainer import train

    out = tmp_path / "run"
    assert train(config(dataset, out, "train.steps=4", "train.save_every=0", "train.save_every_minutes=1e-9",
                        "train.keep_checkpoints=2")) == 0
    # a checkpoint after every step (the interval has always elapsed), the oldest pruned, final at the end
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000003"]
    assert (out / "final" / "training_state.pt").is_file() and (out / "latest").resolve() == (out / "final").resolve()


def test_converted_checkpoint_initialisation_is_strict(tmp_path):
    from safetensors.torch import load_file, save_file

    from motus_core.models.motus.checkpoint import save_converted
    from motus_core.models.motus.convert import CheckpointError
    from motus_core.models.motus.loading import build_motus_model, build_vae, build_vlm
    from motus_core.models.motus.train.build import build_models, model_config

    c0 = config(tmp_path, tmp_path / "o")
    cfg = model_config(c0.model)
    model = build_motus_model(cfg, None, seed=3)
    save_converted(tmp_path / "conv", cfg, model.state_dict(), build_vae(cfg.vae, None).vae.state_dict(),
                   build_vlm(cfg.vlm, None).state_dict(), progress=False)
    c = config(tmp_path, tmp_path / "o", "init.source=converted", f"init.path={tmp_path / 'conv'}")
    built = build_models(c.model, c.init, torch.device("cpu"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in built.model.state_dict().items())
    assert all(p.requires_grad for p in built.model.parameters()) and built.model.training
    shard = next((tmp_path / "conv").glob("motus-*.safetensors"))
    sd = load_file(str(shard))
    sd.pop("action_expert.registers")
    sd["action_expert.extra"] = torch.zeros(1)
    save_file(sd, str(shard))
    with pytest.raises(CheckpointError, match=r"missing keys: action_expert.registers.*unexpected keys: action_expert.extra"):
        build_models(c.model, c.init, torch.device("cpu"))


def test_encoder_cache_encodes_each_sample_once_and_resumes_bit_exact(dataset, tmp_path):
    """train.encoder_cache_mb: a sample drawn again reuses its VAE latents and frozen-VLM features, which
    equal a fresh encode of that sample; the step's loss matches the uncached batch encode to float
    rounding; a resumed run (empty cache) ends bit for bit where the uninterrupted one does."""
    from motus_core.models.motus.train.data import collate
    from motus_core.models.motus.train.step import video_pixels, vlm_hidden
    from motus_core.models.motus.train.trainer import Trainer, train

    t = Trainer(config(dataset, tmp_path / "probe", "train.encoder_cache_mb=64"))
    t.setup()
    cache = t.loss.cache
    batch = collate([t.data.train[i] for i in range(4)], t.mcfg.text_len)
    enc = t.loss.encode(batch)
    assert cache.misses == 4 and len(cache.latents) == len(set(cache.keys(batch)))
    again = t.loss.encode(batch)
    assert cache.hits == 4 and torch.equal(enc["clean"], again["clean"]) and torch.equal(enc["vlm_hidden"], again["vlm_hidden"])
    with torch.no_grad():
        batched = t.loss.vae.encode_pixels(video_pixels(batch))
        one = t.loss.vae.encode_pixels(video_pixels(batch)[1:2])
    assert torch.equal(enc["clean"][1], one[0])  # a cached latent is the sample's own encode
    torch.testing.assert_close(enc["clean"], batched, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(enc["vlm_hidden"], vlm_hidden(t.loss.vlm, batch["vlm_inputs"]))
    # a full budget stops adding, it does not evict
    small = Trainer(config(dataset, tmp_path / "small", "train.encoder_cache_mb=0.001"))
    small.setup()
    small.loss.encode(batch)
    assert small.loss.cache.used <= small.loss.cache.max_bytes and len(small.loss.cache.latents) < 4

    full, part = tmp_path / "full", tmp_path / "part"
    assert train(config(dataset, full, "train.steps=6", "train.encoder_cache_mb=64")) == 0
    assert train(config(dataset, part, "train.steps=3", "train.encoder_cache_mb=64")) == 0
    assert train(config(dataset, part, "train.steps=6", "train.encoder_cache_mb=64")) == 0
    _same_final_weights(full, part)
    assert "encoder cache:" in (full / "train.log").read_text()
