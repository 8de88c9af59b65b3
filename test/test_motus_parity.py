"""Numerical parity of our Motus with the official code (fixtures in ../shared/fixtures/motus_parity).

Every fixture goes through the same path as a real checkpoint: the weights are regenerated with
the fixture's seed rule (every sha256 verified), written in the official file layouts
(``mp_rank_00_model_states.pt`` with aliases and fixed buffers, ``Wan2.2_VAE.pth``, Wan's umT5 file),
converted by ``motus-convert-checkpoint`` (its ``main``), and loaded by the policy factory
``load_policy(<converted dir>)``. Nothing is hard-coded that the manifests provide, so other
fixtures of the same format (``MOTUS_PARITY_FIXTURE``, ``MOTUS_VAE_FIXTURE``, ``MOTUS_T5_FIXTURE``)
run unchanged. Tolerances: the fixture README (atol = rtol = 1e-4; tables rtol 1e-6).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from test.helpers import FIXTURES, require_fixture

MODEL_DIR = Path(os.environ.get("MOTUS_PARITY_FIXTURE", FIXTURES / "motus_parity" / "model"))
VAE_DIR = Path(os.environ.get("MOTUS_VAE_FIXTURE", FIXTURES / "motus_parity" / "vae"))
T5_DIR = Path(os.environ.get("MOTUS_T5_FIXTURE", FIXTURES / "motus_parity" / "umt5"))
TOL = dict(atol=1e-4, rtol=1e-4)


def _require(path: Path):
    require_fixture(path / "manifest.json", "Motus parity fixture")


def close(got: torch.Tensor, ref: torch.Tensor, name: str, **tol):
    got = got.detach().float().cpu()
    assert tuple(got.shape) == tuple(ref.shape), f"{name}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
    torch.testing.assert_close(got, ref.float(), **(tol or TOL), msg=lambda m: f"{name}: {m}")


@pytest.fixture(scope="module")
def model_fixture():
    _require(MODEL_DIR)
    from motus_core.models.parity_fixture import load_fixture

    return load_fixture(MODEL_DIR)


@pytest.fixture(scope="module")
def official_dir(model_fixture, tmp_path_factory):
    """The fixture written in the official file layouts (as downloaded checkpoints would be)."""
    fx = model_fixture
    d = tmp_path_factory.mktemp("motus_official")
    # every group of the Motus state dict (the VAE group has its own file); sha256 of every key verified
    module = fx.official_state_dict(groups=tuple(g for g in fx.manifest["weights"] if g != "vae"))
    (d / "ckpt").mkdir()
    torch.save({"module": module, "global_steps": 1}, d / "ckpt" / "mp_rank_00_model_states.pt")
    torch.save(fx.weights("vae"), d / "Wan2.2_VAE.pth")
    cfg = fx.config
    (d / "config.json").write_text(json.dumps(cfg["wan"]))
    (d / "vlm").mkdir()
    (d / "vlm" / "config.json").write_text(json.dumps(cfg["vlm"]))
    inv = fx["vae.latents_inv_std"].double()
    (d / "vae.json").write_text(json.dumps({**cfg["vae"], "latents_mean": fx["vae.latents_mean"].tolist(),
                                            "latents_std": (1.0 / inv).tolist()}))
    motus = {**cfg["motus"], "num_inference_timesteps": cfg["num_inference_steps"],
             "video_loss_weight": cfg["loss_weights"]["video"], "action_loss_weight": cfg["loss_weights"]["action"]}
    (d / "motus.json").write_text(json.dumps(motus))
    return d, module


@pytest.fixture(scope="module")
def converted(official_dir, tmp_path_factory):
    """Run the conversion command exactly as a user would, then load the result as a policy."""
    from motus_core.cli.convert_checkpoint import main
    from motus_core.policies import load_policy

    d, _ = official_dir
    out = tmp_path_factory.mktemp("motus_converted") / "ckpt"
    rc = main(["--motus", str(d / "ckpt"), "--wan-config", str(d / "config.json"), "--vae", str(d / "Wan2.2_VAE.pth"),
               "--vae-config", str(d / "vae.json"), "--vlm", str(d / "vlm"), "--vlm-config-only",
               "--config", str(d / "motus.json"), "--no-text-encoder", "--out", str(out)])
    assert rc == 0
    meta = (out / "motus_policy.yaml").read_text()
    meta += "text_encoder_identity: parity-fixture-t5\n"  # embeddings are given by the fixture
    (out / "motus_policy.yaml").write_text(meta)
    policy = load_policy(str(out), device="cpu", profile="aloha_agilex_2")
    assert policy.model.compute_dtype == torch.float32
    return policy


def test_parity_loader_skips_aliases_and_is_strict(model_fixture, official_dir):
    from motus_core.models.motus.convert import CheckpointError, motus_core_from_official
    from motus_core.models.motus.model import MotusModel

    fx = model_fixture
    _, module = official_dir
    aliases = [a["key"] for a in fx.manifest["aliases"]]
    assert aliases and all(a in module for a in aliases if not a.startswith("vlm_model.lm_head"))
    core, vlm = motus_core_from_official(module)
    assert not any(k.startswith(("video_module", "und_module", "action_module")) for k in core)
    from motus_core.models.motus.config import from_fixture

    cfg = from_fixture(fx.config, fx["vae.latents_mean"], fx["vae.latents_inv_std"])
    from motus_core.models.motus.convert import load_strict

    fixed = fx.manifest["fixed"][0]
    assert torch.equal(core[fixed["key"]], fx[fixed["tensor"]])  # the stored bf16-rounded table is used
    with torch.device("meta"):
        model = MotusModel(cfg)
    broken = dict(core)
    victim = sorted(k for k in broken if k.startswith("action_expert.blocks"))[0]
    del broken[victim]
    broken["action_expert.not_a_weight"] = torch.zeros(1)
    shape_victim = "und_expert.vlm_adapter.0.weight"
    broken[shape_victim] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as err:
        load_strict(model, broken, "test")
    msg = str(err.value)
    assert victim in msg and "action_expert.not_a_weight" in msg and shape_victim in msg
    with pytest.raises(CheckpointError, match="outside the known prefixes"):
        motus_core_from_official({**module, "mystery.weight": torch.zeros(1)})


def test_parity_forward(model_fixture, converted):
    fx = model_fixture
    m = converted.model
    cfg = fx.config
    b = fx["inputs.state"].shape[0]
    t5 = [fx[f"inputs.t5_embeddings.{i}"] for i in range(b)]
    with torch.no_grad():
        und = m.und_tokens(fx["ref.vlm_hidden"])
        ctx = m.text_context(t5)
        close(und, fx["ref.und_features"], "ref.und_features")
        close(ctx, fx["ref.t5_context"], "ref.t5_context")
        close(m.text_context(fx["inputs.t5_embeddings_padded"]), fx["ref.t5_context"], "padded t5 context")
        ae = m.action_expert
        tokens = ae.input_encoder(fx["inputs.state"], fx["forward.action_latent_in"], ae.registers)
        close(tokens, fx["forward.action_tokens_in"], "forward.action_tokens_in")
        from motus_core.models.motus.model import Conditioning

        out = m(fx["forward.video_latent_in"], fx["forward.t_video"], fx["forward.action_latent_in"],
                fx["forward.t_action"], fx["inputs.state"], Conditioning(und, m.context_kv(ctx)), return_layers=True)
    assert len(out.layers) == cfg["motus"]["num_layers"]
    for i, (v, a, u) in enumerate(out.layers):
        close(v, fx[f"forward.layer{i}.video_tokens"], f"forward.layer{i}.video_tokens")
        close(a, fx[f"forward.layer{i}.action_tokens"], f"forward.layer{i}.action_tokens")
        close(u, fx[f"forward.layer{i}.und_tokens"], f"forward.layer{i}.und_tokens")
    close(out.video_velocity, fx["forward.video_velocity"], "forward.video_velocity")
    close(out.action_decoder_out, fx["forward.action_decoder_out"], "forward.action_decoder_out")
    close(out.action_velocity, fx["forward.action_velocity"], "forward.action_velocity")


def test_parity_inference_joint_mode(model_fixture, converted):
    """(b) the official inference = our 'joint' mode, with the two recorded noise draws injected."""
    from motus_core.flow.guidance import linear_timesteps
    from motus_core.models.motus.sampler import sample

    fx = model_fixture
    m, vae = converted.model, converted.vae
    n = fx.config["num_inference_steps"]
    b = fx["inputs.state"].shape[0]
    close(linear_timesteps(n), fx["infer.timesteps"], "infer.timesteps", atol=0, rtol=1e-6)
    cond_latent = vae.encode_image(fx["inputs.first_frame"])
    close(cond_latent, fx["ref.cond_latent"], "ref.cond_latent")
    cond = m.conditioning(fx["ref.vlm_hidden"], [fx[f"inputs.t5_embeddings.{i}"] for i in range(b)])
    r = sample(m, cond, cond_latent, fx["inputs.state"], mode="joint", num_steps=n,
               video_noise=fx["infer.rng.0.video_noise"], action_noise=fx["infer.rng.1.action_noise"], trace=True)
    assert len(r.trace) == n
    for i, s in enumerate(r.trace):
        close(s["t_video"], fx["infer.t_scaled"][i], f"infer.t_scaled[{i}] (video)", atol=0, rtol=1e-6)
        close(s["t_action"], fx["infer.t_scaled"][i], f"infer.t_scaled[{i}] (action)", atol=0, rtol=1e-6)
        for k in ("video_latent_in", "action_latent_in", "video_velocity", "action_decoder_out"):
            close(s[k], fx[f"infer.step{i}.{k}"], f"infer.step{i}.{k}")
    close(r.video_latent, fx["infer.final_video_latent"], "infer.final_video_latent")
    close(r.actions, fx["infer.predicted_actions"], "infer.predicted_actions")
    close(vae.decode_frames(r.video_latent), fx["infer.predicted_frames"], "infer.predicted_frames")


def test_parity_training_losses(model_fixture, converted):
    """(c) Stage-3 loss with the four recorded draws (video index, video noise, action index, action noise)."""
    from motus_core.models.motus.model import train_schedule

    fx = model_fixture
    m, vae = converted.model, converted.vae
    sched = fx.config["train_schedule"]
    sig, tt = train_schedule(sched["num_train_timesteps"], sched["shift"])
    close(sig, fx["schedule.train_sigmas"], "schedule.train_sigmas", atol=0, rtol=1e-6)
    close(tt, fx["schedule.train_timesteps"], "schedule.train_timesteps", atol=0, rtol=1e-6)
    clip = torch.cat([fx["inputs.first_frame"][:, :, None], fx["inputs.video_frames"].permute(0, 2, 1, 3, 4)], dim=2)
    clean = vae.encode_pixels(clip)
    cond_latent = vae.encode_image(fx["inputs.first_frame"])
    close(clean, fx["train.clean_latent"], "train.clean_latent")
    close(cond_latent, fx["train.cond_latent"], "train.cond_latent")
    cond = m.conditioning(fx["ref.vlm_hidden"], fx["inputs.t5_embeddings_padded"])
    with torch.no_grad():
        losses = m.stage3_loss(clean, cond_latent, fx["inputs.actions"], fx["inputs.state"], cond,
                               video_index=fx["train.rng.0.video_timestep_index"], video_noise=fx["train.rng.1.video_noise"],
                               action_index=fx["train.rng.2.action_timestep_index"],
                               action_noise=fx["train.rng.3.action_noise"])
    close(losses["noisy_video_latent"], fx["forward.video_latent_in"], "forward.video_latent_in (noisy latent)")
    close(losses["noisy_actions"], fx["forward.action_latent_in"], "forward.action_latent_in (noisy actions)")
    close(losses["t_video"], fx["forward.t_video"], "forward.t_video")
    close(losses["t_action"], fx["forward.t_action"], "forward.t_action")
    for k in ("video_loss", "action_loss", "total_loss"):
        close(losses[k], fx[f"train.{k}"], f"train.{k}")


def test_parity_wan_alone(model_fixture, converted):
    """(d) diffusers' WanTransformer3DModel.forward (video stream only) with the converted weights."""
    fx = model_fixture
    m = converted.model
    lat = fx["forward.video_latent_in"]
    b = lat.shape[0]
    t = fx["forward.t_video"][:, None].expand(b, m.config.video_tokens)
    with torch.no_grad():
        ctx = torch.stack([torch.nn.functional.pad(fx[f"inputs.t5_embeddings.{i}"],
                                                   (0, 0, 0, m.config.text_len - fx[f"inputs.t5_embeddings.{i}"].shape[0]))
                           for i in range(b)])
        out = m.video(hidden_states=lat, timestep=t, encoder_hidden_states=ctx).sample
    close(out, fx["wan_only.video_velocity"], "wan_only.video_velocity")


def test_parity_vlm_features(model_fixture, converted):
    fx = model_fixture
    vlm = converted.vlm.model
    with torch.no_grad():
        hidden = vlm(**{k: fx[f"inputs.vlm.{k}"] for k in
                        ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")}).last_hidden_state
    close(hidden, fx["ref.vlm_hidden"], "ref.vlm_hidden")
    close(converted.model.und_tokens(hidden), fx["ref.und_features"], "ref.und_features (through the VLM)")


def test_parity_vae(tmp_path):
    _require(VAE_DIR)
    from safetensors.torch import save_file

    from motus_core.models.motus.checkpoint import load_weights
    from motus_core.models.motus.config import vae_config_from_original
    from motus_core.models.motus.convert_checkpoint import convert_vae
    from motus_core.models.motus.loading import build_vae
    from motus_core.models.parity_fixture import load_fixture

    fx = load_fixture(VAE_DIR)
    torch.save(fx.weights("vae"), tmp_path / "Wan2.2_VAE.pth")
    cfg = vae_config_from_original(fx.config["vae"], fx["vae.latents_mean"].tolist(),
                                   (1.0 / fx["vae.latents_inv_std"].double()).tolist())
    save_file(convert_vae(tmp_path / "Wan2.2_VAE.pth", cfg), str(tmp_path / "vae.safetensors"))
    vae = build_vae(cfg, load_weights(tmp_path / "vae.safetensors"))
    assert list(fx["inputs.video"].shape) == fx.config["video_shape"]
    with torch.no_grad():
        mu = vae.vae.encode(fx["inputs.video"]).latent_dist.mean
        close(mu, fx["ref.mu_raw"], "ref.mu_raw")
        close(vae.encode_pixels((fx["inputs.video"] + 1) / 2), fx["ref.latent"], "ref.latent (pixels in [0,1])")
        dec = vae.decode_raw(fx["ref.latent"])
    close(dec, fx["ref.decoded"], "ref.decoded")
    inside = fx["ref.decoded_unclamped"].abs() < 1  # diffusers clamps like the official decode
    assert inside.any()
    close(dec[inside], fx["ref.decoded_unclamped"][inside], "ref.decoded_unclamped (unclamped region)")
    assert torch.equal(fx["ref.decoded_unclamped"].clamp(-1, 1), fx["ref.decoded"])


def test_parity_umt5(tmp_path):
    _require(T5_DIR)
    from motus_core.models.motus.convert_checkpoint import convert_umt5
    from motus_core.models.parity_fixture import load_fixture
    from motus_core.models.motus.text_encoder import load_text_encoder

    fx = load_fixture(T5_DIR)
    torch.save(fx.weights("t5"), tmp_path / "umt5.pth")
    t5cfg = {**fx.config["t5"], "relative_attention_max_distance": fx.config["relative_attention_max_distance"],
             "layer_norm_eps": fx.config["layer_norm_eps"]}
    convert_umt5(tmp_path / "umt5.pth", tmp_path / "te", config=t5cfg, tokenizer="bytes")
    enc = load_text_encoder(tmp_path / "te")
    assert enc.dim == fx.config["t5"]["dim"]
    ids, mask = fx["inputs.ids"], fx["inputs.mask"]
    assert mask.sum(1).tolist() == fx.config["lengths"]
    with torch.no_grad():
        out = enc.model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    close(out[real], fx["ref.last_hidden_state"][real], "ref.last_hidden_state (real tokens)")
