"""The three MoLA training stages on a tiny dataset read through the shared reader (CPU, tiny configs):
each runs a few steps and lowers its loss on a fixed evaluation batch; frozen parts get no gradient;
the VQ straight-through estimator passes gradient; resume continues bit for bit; the stage-III export
loads through the inference API."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from motus_core.models.mola.config import tiny_config
from motus_core.models.mola.testing import save_tiny_foundation, save_tiny_stage2_models
from motus_core.cli.mola_train import main as train_main
from motus_core.models.mola.train.run import prepare_stage
from motus_core.models.mola.train.common import CheckpointIO, step_generator
from motus_core.models.mola.data import collate
from motus_core.policy.base import Observation, PolicyRequest
from motus_core.policies import load_policy

from test.mola_helpers import INSTRUCTION, write_tiny_dataset

TRAIN = {"steps": 4, "batch_size": 2, "lr": 1e-3, "save_every": 2, "log_every": 1, "seed": 7}
STAGE2 = {"encoder_image_size": 32, "depth_input_size": 56, "rgb_size": 32, "rgb_patch": 8, "decoder_hidden": 32,
          "decoder_heads": 2, "rgb_layers": 1, "modality_layers": 1, "depth_grid": 16, "depth_patch": 4,
          "semantic_grid": 4, "flow_grid": 8, "flow_size": 32, "random_shift": 2}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("mola_train")
    data = write_tiny_dataset(root / "data")
    cfg = save_tiny_foundation(tiny_config(cameras=["high"]), root / "foundation")  # one camera keeps CPU time low
    return {"root": root, "data": str(data), "cfg": cfg, "stage2": save_tiny_stage2_models(cfg, root / "stage2_models")}


def raw_config(env, stage: int, out: str, model=None, **extra) -> dict:
    raw = {"model": (model or env["cfg"]).to_dict(), "data": {"root": env["data"], "num_workers": 0, "samples_per_episode": 20},
           "train": {**TRAIN, "out_dir": str(env["root"] / out)}}
    raw.update(extra)
    return raw


def eval_loss(module, batch, seed: int = 123) -> float:
    module.eval()
    with torch.no_grad():
        out = module(batch, step_generator(seed, 0, 0, torch.device("cpu")))
    module.train()
    return float(out["loss"])


def fixed_batch(prep):
    return collate([prep.dataset[i] for i in range(2)])


def frozen_snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def stage1(env):
    prep = prepare_stage(1, raw_config(env, 1, "stage1", stage1={"text_drop": 0.0}))
    video = prep.module.video
    batch = fixed_batch(prep)
    snap = {"vae": frozen_snapshot(video.vae), "text": frozen_snapshot(video.text_encoder)}
    before = eval_loss(prep.module, batch)
    prep.trainer.run()
    after = eval_loss(prep.module, batch)
    return prep, batch, snap, before, after, prep.export()


def test_stage1_video_finetune(env, stage1):
    prep, batch, snap, before, after, out = stage1
    video = prep.module.video
    assert batch["images"].shape[1:3] == (1, env["cfg"].video.num_frames)  # (B, V, F, 3, S, S)
    before_vae, before_text = snap["vae"], snap["text"]
    assert after < before
    assert all(p.grad is None for p in [*video.vae.parameters(), *video.text_encoder.parameters()])
    assert all(torch.equal(v, before_vae[k]) for k, v in video.vae.state_dict().items())
    assert all(torch.equal(v, before_text[k]) for k, v in video.text_encoder.state_dict().items())
    assert (out / "unet" / "config.json").is_file() and (out / "vae" / "config.json").is_file()


@pytest.fixture(scope="module")
def stage2(env):
    prep = prepare_stage(2, raw_config(env, 2, "stage2", stage2={**STAGE2, **env["stage2"]}))
    model = prep.module.model
    batch = fixed_batch(prep)
    snap = {"encoder": frozen_snapshot(model.encoder),
            "targets": {n: frozen_snapshot(t.model) for n, t in prep.module.targets.items() if hasattr(t, "model")}}
    before = eval_loss(prep.module, batch)
    prep.trainer.run()
    after = eval_loss(prep.module, batch)
    return prep, snap, before, after, prep.export()


def test_stage2_idm_pretraining(env, stage2):
    cfg = env["cfg"]
    prep, snap, before, after, out = stage2
    model = prep.module.model
    enc_before, targets_before = snap["encoder"], snap["targets"]
    assert after < before
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(torch.equal(v, enc_before[k]) for k, v in model.encoder.state_dict().items())
    for n, snap in targets_before.items():
        t = prep.module.targets[n].model
        assert all(p.grad is None for p in t.parameters())
        assert all(torch.equal(v, snap[k]) for k, v in t.state_dict().items())
    for name in cfg.idm.names:  # decoders and IDMs trained
        assert model.rgb_decoders[name].head.weight.grad is not None
        assert model.idms[name].m_former.embeddings.latent_motion_token.grad is not None
    idms = load_file(str(out))
    assert {k.split(".")[0] for k in idms} == set(cfg.idm.names)
    assert not any("decoder" in k for k in idms)  # decoders are dropped after stage II


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory):
    from motus_core.sim.dataset import SimDatasetOptions, generate

    root = tmp_path_factory.mktemp("mola_sim_data")
    summary = generate(root, SimDatasetOptions(episodes=1, height=48, width=64, ground_truth=("high",)), progress=False)
    assert summary["episodes"] == 1
    return root


def test_stage2_with_exact_simulator_targets(env, sim_data):
    """stage2.targets: sim - no target models are loaded, the batch carries dense simulator maps,
    the semantic decoder predicts one channel per class and the loss falls."""
    from motus_core.sim.ground_truth import SEMANTIC_CLASSES

    raw = raw_config(env, 2, "stage2_sim", stage2={**STAGE2, "targets": "sim", "encoder": env["stage2"]["encoder"]})
    raw["data"]["root"] = str(sim_data)
    prep = prepare_stage(2, raw)
    assert prep.module.targets == {}
    batch = fixed_batch(prep)
    maps, size = batch["sim_targets"], env["cfg"].video.image_size
    assert maps["depth"].shape == (2, 1, 2, 1, size, size) and maps["flow"].shape == (2, 1, 2, 2, size, size)
    assert maps["depth"].max() > 0.5  # inverse depth of the scene (m^-1): things are 0.6-1.3 m away
    assert set(maps["labels"].unique().tolist()) >= {0, SEMANTIC_CLASSES.index("cube")}
    modality = prep.module._sim_modality(batch, None)
    assert modality["semantic"][0].shape[1] == len(SEMANTIC_CLASSES)
    torch.testing.assert_close(modality["semantic"][0].sum(1), torch.ones_like(modality["semantic"][0][:, 0]))
    weight = modality["flow"][2]  # (N, 1, 8, 8): the 4:3 camera letterboxed into a square leaves 1 cell row of padding
    assert weight[:, :, [0, -1]].sum() == 0 and weight[:, :, 1:-1].mean() > 0.9
    before = eval_loss(prep.module, batch)
    prep.trainer.run()
    assert eval_loss(prep.module, batch) < before


def test_stage3_end_to_end_with_resume_and_inference(env, stage1, stage2, tmp_path):
    stage1_video, stage2_idms = str(stage1[-1]), str(stage2[-1].parent)
    data = env["cfg"].to_dict()
    data["video"]["pretrained"] = stage1_video
    from motus_core.models.mola.config import MolaConfig

    model_cfg = MolaConfig.from_dict(data)
    raw = raw_config(env, 3, "stage3", model=model_cfg, stage3={"idm_checkpoint": stage2_idms})
    cfg_file = tmp_path / "stage3.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))

    # the stage-II IDM weights are what stage III starts from
    prep = prepare_stage(3, raw)
    idms = load_file(stage2_idms + "/idms.safetensors")
    for k, v in prep.module.model.net.moidm.idms["flow"].state_dict().items():
        assert torch.equal(v, idms["flow." + k])
    batch = fixed_batch(prep)
    assert batch["images"].dim() == 5  # (B, V, 3, S, S): stage III reads the current frame only
    before = eval_loss(prep.module, batch)

    # one command per stage: the CLI trains, checkpoints, exports the policy directory
    assert train_main(["--config", str(cfg_file)], stage=3) == 0
    out = env["root"] / "stage3"
    ckpt = CheckpointIO(out, 2)
    final = ckpt.latest()
    assert final is not None and final.name == "step_00000004"
    trained = load_file(str(final / "trainable.safetensors"))
    prep.module.load_trainable_state_dict(trained)
    assert eval_loss(prep.module, batch) < before

    # resume from the step-2 checkpoint in a fresh directory: bit-identical weights at step 4
    resumed = env["root"] / "stage3_resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(out / "checkpoints" / "step_00000002", resumed / "checkpoints" / "step_00000002")
    (resumed / "checkpoints" / "latest").write_text("step_00000002")
    steps_seen = []
    raw_resume = raw_config(env, 3, "stage3_resumed", model=model_cfg, stage3={"idm_checkpoint": stage2_idms})
    from motus_core.models.mola.train.run import run_stage

    run_stage(3, raw_resume, on_step=lambda s, d: steps_seen.append(s))
    assert steps_seen == [3, 4]
    again = load_file(str(resumed / "checkpoints" / "step_00000004" / "trainable.safetensors"))
    assert all(torch.equal(again[k], trained[k]) for k in trained)

    # the exported policy directory loads through the registry and predicts a de-normalised chunk
    policy = load_policy(str(out / "policy"), profile="sim_aloha")
    rng = np.random.default_rng(0)
    imgs = {r: rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for r in ("high", "left_wrist", "right_wrist")}
    from motus_core.robot_profile import load_profile

    state = np.asarray(load_profile("sim_aloha").home, dtype=np.float64)
    chunk = policy.predict(PolicyRequest(observation=Observation(images=imgs, state=state, stamp=2.0), instruction=INSTRUCTION))
    assert chunk.actions.shape == (model_cfg.chunk_length, 14) and np.all(np.isfinite(chunk.actions))


def test_stage3_gradients_frozen_parts_and_straight_through(env):
    """Video model and the release's unused head parameters get no gradient; the action loss alone
    reaches the M-Former through the VQ's straight-through estimator; the codebook learns only from
    the commitment term."""
    from motus_core.models.mola.model import MolaModel, MolaNet
    from motus_core.models.mola.video import VideoModel

    cfg = tiny_config(cameras=["high"], commit_weight=0.0)
    torch.manual_seed(0)
    model = MolaModel(cfg, VideoModel.from_config(cfg.video), MolaNet(cfg)).train()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 3, 32, 32, generator=g)
    text = model.video.encode_text(["a", "b"])
    feats, _ = model.video_features(images, text, g)
    out = model.loss(feats, text.pooled, torch.rand(2, 14) * 2 - 1, torch.rand(2, cfg.chunk_length, 14) * 2 - 1, generator=g)
    out["loss"].backward()
    assert all(p.grad is None for p in model.video.parameters())
    head = model.net.head
    assert all(p.grad is None for p in [*head.goal_emb.parameters(), head.pos_emb])
    for idm in model.net.moidm.idms.values():
        g_mf = idm.m_former.embeddings.latent_motion_token.grad
        assert g_mf is not None and g_mf.abs().sum() > 0  # straight-through: action loss -> z_q -> z -> M-Former
        cb = idm.vector_quantizer.embedding.weight.grad
        assert cb is None or cb.abs().sum() == 0  # the commitment term is off here
    # with the commitment term the codebook does learn
    model.zero_grad()
    cfg_c = tiny_config(cameras=["high"])
    model_c = MolaModel(cfg_c, model.video, model.net)
    out = model_c.loss(feats, text.pooled, torch.rand(2, 14) * 2 - 1, torch.rand(2, cfg.chunk_length, 14) * 2 - 1, generator=g)
    out["loss"].backward()
    assert model.net.moidm.idms["flow"].vector_quantizer.embedding.weight.grad.abs().sum() > 0


def test_torchrun_two_processes_train_in_sync(env, tmp_path):
    """The documented multi-GPU route, on CPU: torchrun starts 2 ranks (gloo), DDP averages their
    gradients, rank 0 exports, and the trainer's end-of-run check finds both ranks' weights equal."""
    import os
    import subprocess
    import sys

    raw = raw_config(env, 1, "stage1_ddp", stage1={"text_drop": 0.0})
    raw["stage"] = 1
    raw["train"].update(steps=2, batch_size=1, save_every=2)
    cfg_path = tmp_path / "stage1_ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    env_vars = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "motus_core.cli.mola_train", "1", "--config", str(cfg_path)],
                          capture_output=True, text=True, timeout=300, env=env_vars)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 ranks in sync" in proc.stderr, proc.stderr[-3000:]
    out = env["root"] / "stage1_ddp"
    assert (out / "video_model" / "unet" / "config.json").is_file()
