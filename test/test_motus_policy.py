"""Motus policy API (tiny config), text-encoder API and embedding cache, input validation, model sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from motus_core.policy.base import Observation, PolicyError, PolicyRequest, check_chunk


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from motus_core.policies import load_policy

    cache = tmp_path_factory.mktemp("embeddings")
    return load_policy("tiny_motus", profile=None, options={"embedding_cache": str(cache), "seed": 1})


def observation(policy, seed=0, **override):
    rng = np.random.default_rng(seed)
    images = {r: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for r, c in policy.profile.cameras.items()}
    images.update(override.pop("images", {}))
    state = override.pop("state", np.asarray(policy.profile.home))
    return Observation(images=images, state=state, stamp=5.0)


def test_tiny_policy_chunk(tiny):
    assert tiny.profile.name == "sim_aloha" and tiny.supports_prefix
    ch = tiny.predict(PolicyRequest(observation=observation(tiny), instruction="pick the cube", seed=0))
    assert ch.actions.shape == (48, 14) and ch.actions.dtype == np.float64
    assert check_chunk(ch, 14) is None
    assert ch.step_period == pytest.approx(1.0 / tiny.profile.action_rate_hz)
    assert ch.stamp == 5.0 and ch.mode == "vla" and ch.model == "tiny_motus"
    assert ch.condition_image.shape == (tiny.config.video_height, tiny.config.video_width, 3)
    assert set(ch.timing) >= {"preprocess", "text", "vlm", "vae_encode", "denoise", "total"}
    # de-normalised with the profile's joint limits (the tiny policy's statistics)
    np.testing.assert_allclose(tiny.normalizer.min, tiny.profile.position_lower)
    np.testing.assert_allclose(tiny.normalizer.max, tiny.profile.position_upper)


def test_set_instruction_uses_the_disk_cache(tiny, tmp_path):
    from motus_core.models.motus.policy import create_tiny

    assert tiny.set_instruction("fold the towel") is False
    assert tiny.set_instruction("fold the towel") is True
    other = create_tiny(seed=1, options={"embedding_cache": str(tiny.cache.directory)})
    assert other.set_instruction("fold the towel") is True  # computed by another process/policy before
    assert other.set_instruction("never seen") is False
    # the set instruction is used when the request has none
    obs = observation(tiny)
    a = tiny.predict(PolicyRequest(observation=obs, seed=2)).actions
    b = tiny.predict(PolicyRequest(observation=obs, instruction="fold the towel", seed=2)).actions
    assert np.array_equal(a, b)


def test_text_encoder_api_and_cache(tmp_path):
    from motus_core.models.motus.text_encoder import EmbeddingCache, build_tiny_text_encoder, load_text_encoder, save_text_encoder

    enc = build_tiny_text_encoder(seed=0)
    texts = ["ab", "héllo  world", "&amp; x"]
    out = enc.encode(texts)
    # trimmed to the true token count: UTF-8 bytes of the cleaned text + </s>
    assert [o.shape for o in out] == [(3, enc.dim), (len("héllo world".encode()) + 1, enc.dim), (4, enc.dim)]
    assert torch.allclose(enc.encode(["ab"])[0], out[0], atol=1e-6)  # independent of batch padding
    assert enc.identity and enc.identity != build_tiny_text_encoder(seed=1).identity
    cache = EmbeddingCache(tmp_path / "cache")
    e1, hit1 = cache.get_or_compute("ab", enc)
    e2, hit2 = cache.get_or_compute("ab", enc)
    assert (hit1, hit2) == (False, True) and torch.equal(e1, e2)
    assert cache.get("ab", "another encoder") is None
    cache.path_for("ab", enc.identity).write_bytes(b"garbage")  # a corrupt entry is a miss, then replaced
    assert cache.get_or_compute("ab", enc)[1] is False and cache.get("ab", enc.identity) is not None
    # round trip through the converted-directory format
    d = save_text_encoder(enc, tmp_path / "te")
    again = load_text_encoder(d)
    assert again.identity == enc.identity
    torch.testing.assert_close(again.encode(texts)[1], out[1])


def test_bad_input_is_a_clear_error(tiny):
    obs = observation(tiny)
    h, w = tiny.profile.cameras["high"].height, tiny.profile.cameras["high"].width
    cases = {
        "state must have shape": dict(state=np.zeros(13)),
        "NaN": dict(state=np.full(14, np.nan)),
        "dtype uint8": dict(images={"high": np.zeros((h, w, 3), dtype=np.float32)}),
        "robot profile": dict(images={"left_wrist": np.zeros((h + 10, w, 3), dtype=np.uint8)}),
        "shape \\(H, W, 3\\)": dict(images={"right_wrist": np.zeros((h, w), dtype=np.uint8)}),
    }
    for match, override in cases.items():
        with pytest.raises(PolicyError, match=match):
            tiny.predict(PolicyRequest(observation=observation(tiny, **override), instruction="x"))
    missing = Observation(images={k: v for k, v in obs.images.items() if k != "high"}, state=obs.state, stamp=0.0)
    with pytest.raises(PolicyError, match="missing camera"):
        tiny.predict(PolicyRequest(observation=missing, instruction="x"))
    with pytest.raises(PolicyError, match="mode"):
        tiny.predict(PolicyRequest(observation=obs, instruction="x", mode="dance"))
    with pytest.raises(PolicyError, match="prefix"):
        tiny.predict(PolicyRequest(observation=obs, instruction="x", prefix=np.zeros((3, 5))))


def test_unknown_instruction_without_encoder_and_missing_stats(tiny, tmp_path):
    from motus_core.models.motus.policy import MotusPolicy, _normalizer_from
    from motus_core.models.motus.text_encoder import EmbeddingCache

    no_encoder = MotusPolicy(tiny.model, tiny.vae, tiny.vlm, normalizer=tiny.normalizer, step_period=0.1,
                             cache=EmbeddingCache(tmp_path / "empty"), text_identity=tiny.text_identity,
                             profile=tiny.profile)
    with pytest.raises(PolicyError, match="not in the embedding cache"):
        no_encoder.set_instruction("unknown words")
    with pytest.raises(PolicyError, match="not in the embedding cache"):
        no_encoder.predict(PolicyRequest(observation=observation(tiny), instruction="unknown words"))
    # a real checkpoint needs the robot's statistics: sim_aloha has none in the official stat.json
    with pytest.raises(PolicyError, match="sim_aloha"):
        _normalizer_from({}, tiny.profile, None, allow_limits=False)
    from motus_core.robot_profile import load_profile

    agilex = _normalizer_from({}, load_profile("aloha_agilex_2"), None, allow_limits=False)
    assert agilex.name == "aloha_agilex_2" and agilex.dim == 14


def test_strict_loading_names_keys():
    from motus_core.models.motus.config import tiny_config
    from motus_core.models.motus.convert import CheckpointError
    from motus_core.models.motus.loading import build_motus_model

    cfg = tiny_config(vlm=False)
    sd = build_motus_model(cfg, None).state_dict()
    ok = build_motus_model(cfg, sd)
    assert torch.equal(ok.state_dict()["video.proj_out.weight"], sd["video.proj_out.weight"])
    bad = dict(sd)
    del bad["video.blocks.1.attn2.to_k.weight"]
    bad["action_expert.registers"] = torch.zeros(1, 3, cfg.action_expert_dim)
    with pytest.raises(CheckpointError) as err:
        build_motus_model(cfg, bad)
    assert "video.blocks.1.attn2.to_k.weight" in str(err.value) and "action_expert.registers" in str(err.value)


def test_full_size_architecture_on_meta():
    """The released sizes (README: Wan 5.00B, action expert 641.5M, und expert 253.5M), no memory used."""
    from motus_core.models.motus.config import full_config
    from motus_core.models.motus.model import MotusModel

    with torch.device("meta"):
        m = MotusModel(full_config())
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(m.video) == 4_999_787_712
    assert count(m.action_expert) == 641_527_822
    assert count(m.und_expert) == 253_493_760
    assert m.action_expert.input_encoder.pos_embedding.shape == (1, 48 + 2 + 4, 1024)
    # one joint-mode step at full size on meta tensors: the shapes of the real run (no compute, no memory)
    from motus_core.models.motus.sampler import sample

    cfg = m.config
    with torch.device("meta"):
        cond = m.eval().conditioning(torch.randn(1, 150, 2048), [torch.randn(20, 4096)])
        r = sample(m, cond, torch.randn(1, 48, 1, *cfg.latent_hw), torch.randn(1, 14), mode="joint", num_steps=1)
    assert tuple(r.video_latent.shape) == (1, 48, 3, 24, 20) and tuple(r.actions.shape) == (1, 48, 14)
    assert cfg.video_tokens == 360 and cfg.action_tokens == 53


def test_bf16_precision_split():
    """bf16 matmuls, float32 time MLPs / modulation / norms / RoPE tables; close to the fp32 model."""
    import copy

    from motus_core.models.motus.config import tiny_config
    from motus_core.models.motus.loading import build_motus_model

    ref = build_motus_model(tiny_config(vlm=False), None)
    m = copy.deepcopy(ref).set_precision(torch.bfloat16)
    dtypes = {n: p.dtype for n, p in m.named_parameters()}
    assert dtypes["video.blocks.0.attn1.to_q.weight"] == torch.bfloat16
    assert dtypes["action_expert.blocks.0.wan_action_qkv"] == torch.bfloat16
    for kept in ("video.condition_embedder.time_embedder.linear_1.weight", "video.blocks.0.scale_shift_table",
                 "action_expert.time_embedding.0.weight", "action_expert.blocks.0.modulation"):
        assert dtypes[kept] == torch.float32, kept
    assert copy.deepcopy(m).to(torch.bfloat16).video.rope.freqs_cos.dtype == torch.float32  # never rounded
    g = torch.Generator().manual_seed(0)
    cfg = ref.config
    h, w = cfg.latent_hw
    args = (torch.randn(1, 48, cfg.latent_frames, h, w, generator=g), torch.tensor([500.0]),
            torch.randn(1, cfg.action_chunk_size, 14, generator=g), torch.tensor([300.0]), torch.rand(1, 14, generator=g))
    und, t5 = torch.randn(1, 5, cfg.vlm_dim, generator=g), [torch.randn(3, 32, generator=g)]
    with torch.no_grad():
        o32 = ref(*args, ref.conditioning(und, t5))
        o16 = m(*args, m.conditioning(und, t5))
    assert o16.video_velocity.dtype == torch.float32
    for a, b in ((o16.video_velocity, o32.video_velocity), (o16.action_velocity, o32.action_velocity)):
        assert ((a - b).norm() / b.norm()) < 0.05


def test_official_yaml_fields_and_raw_normalisation():
    """The official training yaml maps to our config; RoboTwin's raw-qpos checkpoints skip normalisation."""
    import yaml

    from motus_core.models.motus.config import from_official
    from motus_core.models.motus.convert_checkpoint import motus_fields
    from motus_core.models.motus.policy import _normalizer_from
    from motus_core.robot_profile import load_profile

    official = yaml.safe_load("""
common: {action_dim: 14, state_dim: 14, num_video_frames: 8, video_height: 384, video_width: 320,
         global_downsample_rate: 3, video_action_freq_ratio: 2, action_normalization: "none"}
model:
  action_expert: {hidden_size: 1024, ffn_dim_multiplier: 4, norm_eps: 1e-5}
  und_expert: {hidden_size: 512, ffn_dim_multiplier: 4, norm_eps: 1e-5, vlm: {input_dim: 2048, projector_type: mlp3x_silu}}
  inference: {num_inference_timesteps: 10}
  loss_weights: {video_loss_weight: 1.0, action_loss_weight: 1.0}
""")
    fields = motus_fields(official)
    assert fields["action_normalization"] == "none" and fields["global_downsample_rate"] == 3
    fields = {k: v for k, v in fields.items() if k not in ("action_normalization", "global_downsample_rate")}
    wan = {"dim": 3072, "num_heads": 24, "num_layers": 30, "ffn_dim": 14336, "in_dim": 48, "out_dim": 48,
           "freq_dim": 256, "text_len": 512, "eps": 1e-6, "model_type": "ti2v"}
    cfg = from_official(wan, fields)
    assert cfg.action_chunk_size == 16 and cfg.action_expert_ffn_dim == 4096 and cfg.action_expert_norm_eps == 1e-5
    assert cfg.pos_embedding_length == 16 + 2 + 4 and cfg.video_tokens == 360
    prof = load_profile("aloha_agilex_2")
    raw = _normalizer_from({"normalization": "none"}, prof, None, allow_limits=False)
    q = np.linspace(-1, 1, 14)
    np.testing.assert_array_equal(raw.normalize(q), q)


def test_pretrain_layout_has_no_state_token_or_registers():
    """Stage-2 (latent action) checkpoints: no state encoder, no registers, table of K rows."""
    from motus_core.models.motus.config import tiny_config
    from motus_core.models.motus.loading import build_motus_model
    from motus_core.models.motus.sampler import sample

    cfg = tiny_config(vlm=False)
    cfg.training_mode = "pretrain"
    m = build_motus_model(cfg, None)
    keys = m.state_dict()
    assert "action_expert.registers" not in keys and not any("state_encoder" in k for k in keys)
    assert keys["action_expert.input_encoder.pos_embedding"].shape[1] == cfg.action_chunk_size
    cond = m.conditioning(torch.randn(1, 4, cfg.vlm_dim), [torch.randn(3, 32)])
    r = sample(m, cond, torch.randn(1, 48, 1, *cfg.latent_hw), None, mode="vla", num_steps=2,
               generator=torch.Generator().manual_seed(0))
    assert r.actions.shape == (1, cfg.action_chunk_size, 14) and torch.isfinite(r.actions).all()
