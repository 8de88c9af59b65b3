"""MoLA behind the policy interface (tiny model, three cameras in one batched video call): a
de-normalised 14-dim chunk with per-stage timing and imagined frames, the RTC prefix with flow
matching, reproducible sampling, and clear errors for bad input and mismatched checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from motus_core.models.mola.checkpoint import write_policy_dir
from motus_core.models.mola.model import MolaNet
from motus_core.models.mola.config import tiny_config
from motus_core.models.mola.testing import save_tiny_foundation
from motus_core.policy.base import Observation, PolicyError, PolicyRequest
from motus_core.policies import load_policy
from motus_core.preprocessing import MinMaxNormalizer, write_stats
from motus_core.robot_profile import load_profile

PROFILE = load_profile("sim_aloha")
ROLES = ("high", "left_wrist", "right_wrist")


def make_policy_dir(root, cfg, stats=True):
    torch.manual_seed(0)
    net = MolaNet(cfg)
    root.mkdir(parents=True, exist_ok=True)
    if stats:
        write_stats(root / "stat.json", "sim_aloha", MinMaxNormalizer(PROFILE.position_lower, PROFILE.position_upper, "sim_aloha"))
    return write_policy_dir(root / "policy", cfg, net.state_dict(), stats_file="../stat.json" if stats else None,
                            stats_key="sim_aloha")


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    root = tmp_path_factory.mktemp("mola_policy")
    return root, save_tiny_foundation(tiny_config(), root / "foundation")


@pytest.fixture(scope="module")
def policy(found):
    root, cfg = found
    return load_policy(str(make_policy_dir(root, cfg)), profile=PROFILE)


def observation(state=None, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    images = {r: rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for r in ROLES}
    images.update(overrides)
    return Observation(images=images, state=np.asarray(PROFILE.home if state is None else state, dtype=np.float64), stamp=5.0)


def test_predict_chunk_timing_frames(policy):
    cfg = policy.cfg
    assert cfg.cameras == ROLES and policy.supports_prefix
    policy.warmup()
    chunk = policy.predict(PolicyRequest(observation=observation(), instruction="pick up the cube", return_frames=True, seed=1))
    assert chunk.actions.shape == (cfg.chunk_length, 14) and chunk.actions.dtype == np.float64
    lo, hi = np.asarray(PROFILE.position_lower), np.asarray(PROFILE.position_upper)
    # de-normalised: joint units (the statistics span the joint limits; a tiny random model stays near them)
    assert np.all(chunk.actions > lo - 3 * (hi - lo)) and np.all(chunk.actions < hi + 3 * (hi - lo))
    assert chunk.step_period == pytest.approx(1 / 30)
    assert {"text", "video", "moidm", "video_former", "head", "total"} <= set(chunk.timing)
    s = cfg.video.image_size
    assert chunk.frames.shape == (cfg.video.num_frames, s, 3 * s, 3) and chunk.frames.dtype == np.uint8
    assert chunk.frame_offsets[5] == pytest.approx(5 * cfg.frame_stride / 30)
    assert chunk.condition_image.shape == (s, 3 * s, 3)
    assert set(chunk.info["latent_actions"]) == set(cfg.idm.names)
    again = policy.predict(PolicyRequest(observation=observation(), instruction="pick up the cube", seed=1))
    assert np.array_equal(again.actions, chunk.actions)  # same seed, same chunk


def test_rtc_prefix_is_honoured(policy):
    free = policy.predict(PolicyRequest(observation=observation(), instruction="pick up the cube", seed=2))
    prefix = free.actions[:6] + 0.05
    guided = policy.predict(PolicyRequest(observation=observation(), instruction="pick up the cube", seed=2,
                                          prefix=prefix, expected_delay=3))
    assert np.allclose(guided.actions[:3], prefix[:3])  # committed actions are kept exactly
    assert guided.prefix_length == 6
    # the soft-masked part is pulled towards the prefix
    assert np.abs(guided.actions[3:6] - prefix[3:6]).mean() < np.abs(free.actions[3:6] - prefix[3:6]).mean()


def test_bad_input_gives_clear_errors(policy):
    req = lambda obs, **kw: PolicyRequest(observation=obs, instruction="x", **kw)  # noqa: E731
    with pytest.raises(PolicyError, match="profile"):
        policy.predict(req(observation(high=np.zeros((120, 160, 3), np.uint8))))
    with pytest.raises(PolicyError, match="uint8"):
        policy.predict(req(observation(high=np.zeros((240, 320, 3), np.float32))))
    with pytest.raises(PolicyError, match="missing camera"):
        obs = observation()
        obs.images = {"high": obs.images["high"]}
        policy.predict(req(obs))
    with pytest.raises(PolicyError, match="shape"):
        policy.predict(req(observation(state=np.zeros(7))))
    with pytest.raises(PolicyError, match="NaN"):
        policy.predict(req(observation(state=np.full(14, np.nan))))
    with pytest.raises(PolicyError, match="prefix"):
        policy.predict(req(observation(), prefix=np.full((3, 14), np.nan), expected_delay=1))


def test_checkpoint_problems_give_clear_errors(found, tmp_path):
    _, cfg = found
    with pytest.raises(PolicyError, match="statistics"):
        load_policy(str(make_policy_dir(tmp_path / "nostats", cfg, stats=False)), profile=PROFILE)
    d = make_policy_dir(tmp_path / "mismatch", cfg)
    other = tiny_config(idm__queries=3, video__pretrained=cfg.video.pretrained, video__text_encoder=cfg.video.text_encoder)
    other.save(d / "mola_config.yaml")  # weights were written for 4 queries
    with pytest.raises(PolicyError, match="does not match"):
        load_policy(str(d), profile=PROFILE)
    raw = yaml.safe_load((d / "mola_config.yaml").read_text())
    raw["head"]["num_layers"] = 3
    (d / "mola_config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(PolicyError, match="unknown keys"):
        load_policy(str(d), profile=PROFILE)
    d = make_policy_dir(tmp_path / "novideo", tiny_config(video__pretrained=str(tmp_path / "missing"), video__text_encoder="x"))
    with pytest.raises(PolicyError, match="not found"):
        load_policy(str(d), profile=PROFILE)
    d = make_policy_dir(tmp_path / "random_video", tiny_config())
    with pytest.raises(PolicyError, match="random video weights"):
        load_policy(str(d), profile=PROFILE)
    edm = make_policy_dir(tmp_path / "edm", tiny_config(head__objective="edm", video__pretrained=cfg.video.pretrained,
                                                        video__text_encoder=cfg.video.text_encoder))
    p = load_policy(str(edm), profile=PROFILE)
    assert not p.supports_prefix
    assert p.predict(PolicyRequest(observation=observation(), instruction="x")).actions.shape == (cfg.chunk_length, 14)
    with pytest.raises(PolicyError, match="prefix"):
        p.predict(PolicyRequest(observation=observation(), instruction="x", prefix=np.zeros((2, 14)), expected_delay=1))


def test_release_checkpoint_converts_strictly_and_predicts_the_same(found, tmp_path):
    from motus_core.models.mola.checkpoint import net_key_to_release
    from motus_core.cli.mola_convert_checkpoint import main as convert_main
    from motus_core.models.mola.video import VideoModel

    _, base = found
    cfg = tiny_config(head__objective="edm", head__causal_cross_attention=True, head__use_proprio=False,
                      video__pretrained=base.video.pretrained, video__text_encoder=base.video.text_encoder)
    direct = make_policy_dir(tmp_path / "direct", cfg)
    net_state = load_policy(str(direct), profile=PROFILE).model.net.state_dict()
    video = VideoModel.from_pretrained(cfg.video)
    release = {net_key_to_release(k): v for k, v in net_state.items()}
    release.update({f"TVP_encoder.pipeline.unet.{k}": v for k, v in video.unet.state_dict().items()})
    release.update({f"TVP_encoder.pipeline.vae.{k}": v for k, v in video.vae.state_dict().items()})
    release.update({f"TVP_encoder.text_encoder.{k}": v for k, v in video.text_encoder.state_dict().items()})
    release["TVP_encoder.pipeline.image_encoder.visual_projection.weight"] = torch.zeros(2, 2)
    release["language_goal.clip_rn50.token_embedding.weight"] = torch.zeros(2, 2)
    torch.save({"model": release}, tmp_path / "release.pt")
    cfg.save(tmp_path / "cfg.yaml")
    args = ["--release", str(tmp_path / "release.pt"), "--config", str(tmp_path / "cfg.yaml"), "--video", cfg.video.pretrained,
            "--text-encoder", cfg.video.text_encoder, "--stats", str(tmp_path / "direct" / "stat.json"),
            "--stats-key", "sim_aloha", "--out", str(tmp_path / "converted")]
    assert convert_main(args) == 0
    req = PolicyRequest(observation=observation(), instruction="stack the blocks", seed=4)
    a = load_policy(str(direct), profile=PROFILE).predict(req).actions
    b = load_policy(str(tmp_path / "converted" / "policy"), profile=PROFILE).predict(req).actions
    assert np.array_equal(a, b)
    release["Video_Former.extra.weight"] = torch.zeros(1)
    torch.save({"model": release}, tmp_path / "bad.pt")
    assert convert_main([*args[:1], str(tmp_path / "bad.pt"), *args[2:-1], str(tmp_path / "bad_out")]) == 1
