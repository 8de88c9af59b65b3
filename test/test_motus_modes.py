"""The five Motus modes (one sampler, per-modality timesteps) and RTC prefix inpainting, on the tiny config."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from motus_core.policy.base import Observation, PolicyError


@pytest.fixture(scope="module")
def policy():
    from motus_core.models.motus.policy import create_tiny

    return create_tiny(profile="sim_aloha", seed=0)


@pytest.fixture(scope="module")
def scene(policy):
    rng = np.random.default_rng(0)
    prof = policy.profile

    def images():
        return {r: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for r, c in prof.cameras.items()}

    obs = Observation(images=images(), state=np.asarray(prof.home, dtype=np.float64), stamp=2.0)
    future_a = [images() for _ in range(policy.config.num_video_frames)]
    future_b = [images() for _ in range(policy.config.num_video_frames)]
    lo, hi = np.asarray(prof.position_lower), np.asarray(prof.position_upper)
    actions_a = lo + (hi - lo) * rng.uniform(0.3, 0.7, (policy.chunk_length, policy.dof))
    actions_b = lo + (hi - lo) * rng.uniform(0.3, 0.7, (policy.chunk_length, policy.dof))
    return dict(obs=obs, future_a=future_a, future_b=future_b, actions_a=actions_a, actions_b=actions_b, images=images)


def run(policy, scene, mode, seed=0, **kw):
    from motus_core.models.motus.policy import MotusRequest

    kw.setdefault("instruction", "stack the blocks")
    return policy.predict(MotusRequest(observation=kw.pop("obs", scene["obs"]), mode=mode, seed=seed, **kw))


def test_mode_outputs_and_shapes(policy, scene):
    k, dof, f = policy.chunk_length, policy.dof, policy.config.num_video_frames
    h, w = policy.config.video_height, policy.config.video_width
    expect = {  # mode -> (number of actions, frames returned)
        "vla": (k, False), "joint": (k, True), "world_model": (k, True), "idm": (k, False), "video": (0, True),
    }
    for mode, (n_act, has_frames) in expect.items():
        ch = run(policy, scene, mode, return_frames=True, actions=scene["actions_a"], future_images=scene["future_a"])
        assert ch.mode == mode and ch.actions.shape == (n_act, dof)
        assert np.all(np.isfinite(ch.actions))
        if has_frames:
            assert ch.frames.shape == (f, h, w, 3) and ch.frames.dtype == np.uint8
            assert len(ch.frame_offsets) == f and ch.frame_offsets[0] > 0
            assert "vae_decode" in ch.timing
        else:
            assert ch.frames is None
        for stage in ("preprocess", "text", "vlm", "vae_encode", "denoise", "total"):
            assert ch.timing[stage] >= 0


def test_modes_use_the_right_inputs(policy, scene):
    base = run(policy, scene, "vla").actions
    # VLA: actions from image + instruction + state; given future frames / actions are not used
    assert np.array_equal(base, run(policy, scene, "vla", future_images=scene["future_b"], actions=scene["actions_b"]).actions)
    assert not np.allclose(base, run(policy, scene, "vla", instruction="open the drawer").actions)
    other = Observation(images=scene["images"](), state=scene["obs"].state, stamp=2.0)
    assert not np.allclose(base, run(policy, scene, "vla", obs=other).actions)
    moved = Observation(images=scene["obs"].images, state=scene["obs"].state + 0.1, stamp=2.0)
    assert not np.allclose(base, run(policy, scene, "vla", obs=moved).actions)
    # IDM: actions depend on the observed future frames
    idm_a = run(policy, scene, "idm", future_images=scene["future_a"]).actions
    idm_b = run(policy, scene, "idm", future_images=scene["future_b"]).actions
    assert not np.allclose(idm_a, idm_b)
    # world model: predicted frames depend on the given actions; the given actions come back unchanged
    wm_a = run(policy, scene, "world_model", actions=scene["actions_a"], return_frames=True)
    wm_b = run(policy, scene, "world_model", actions=scene["actions_b"], return_frames=True)
    assert not np.array_equal(wm_a.frames, wm_b.frames)
    np.testing.assert_allclose(wm_a.actions, scene["actions_a"], atol=1e-5)
    # video generation: frames depend on the instruction, not on given actions
    v1 = run(policy, scene, "video", return_frames=True, actions=scene["actions_a"]).frames
    assert np.array_equal(v1, run(policy, scene, "video", return_frames=True, actions=scene["actions_b"]).frames)
    assert not np.array_equal(v1, run(policy, scene, "video", return_frames=True, instruction="wipe the table").frames)


def test_modes_are_deterministic_with_a_seed(policy, scene):
    for mode in ("vla", "joint", "idm"):
        a = run(policy, scene, mode, seed=7, future_images=scene["future_a"]).actions
        b = run(policy, scene, mode, seed=7, future_images=scene["future_a"]).actions
        c = run(policy, scene, mode, seed=8, future_images=scene["future_a"]).actions
        assert np.array_equal(a, b), mode
        assert not np.allclose(a, c), mode


def test_mode_inputs_missing_are_errors(policy, scene):
    with pytest.raises(PolicyError, match="actions"):
        run(policy, scene, "world_model")
    with pytest.raises(PolicyError, match="future observations"):
        run(policy, scene, "idm")
    with pytest.raises(PolicyError, match="prefix"):
        run(policy, scene, "world_model", actions=scene["actions_a"], prefix=scene["actions_a"][:4], expected_delay=2)


@pytest.fixture(scope="module")
def core(policy):
    """Model-level inputs for sampler checks."""
    g = torch.Generator().manual_seed(3)
    m = policy.model
    cfg = m.config
    cond = m.conditioning(torch.randn(1, 7, cfg.vlm_dim, generator=g), [torch.randn(4, cfg.wan["text_dim"], generator=g)])
    h, w = cfg.latent_hw
    return dict(m=m, cond=cond, cond_latent=torch.randn(1, 48, 1, h, w, generator=g),
                clean_video=torch.randn(1, 48, cfg.latent_frames, h, w, generator=g),
                clean_actions=torch.rand(1, cfg.action_chunk_size, cfg.action_dim, generator=g),
                state=torch.rand(1, cfg.state_dim, generator=g))


def test_clean_conditions_stay_clean_and_timesteps_per_modality(core):
    from motus_core.models.motus.sampler import MODE_SPECS, sample

    m = core["m"]
    n = 4
    g = torch.Generator().manual_seed(0)
    vn = torch.randn(core["clean_video"].shape, generator=g)
    an = torch.randn(core["clean_actions"].shape, generator=g)
    for mode, spec in MODE_SPECS.items():
        r = sample(m, core["cond"], core["cond_latent"], core["state"], mode=mode, num_steps=n, video_noise=vn,
                   action_noise=an, video_latent=core["clean_video"].clone(), actions=core["clean_actions"].clone(),
                   trace=True)
        assert torch.equal(r.video_latent[:, :, :1], core["cond_latent"]), mode  # teacher-forced frame 0
        expect_t = {"denoise": [1000.0 * (1 - i / n) for i in range(n)], "noise": [1000.0] * n, "clean": [0.0] * n}
        assert [float(s["t_video"][0]) for s in r.trace] == pytest.approx(expect_t[spec.video]), mode
        assert [float(s["t_action"][0]) for s in r.trace] == pytest.approx(expect_t[spec.action]), mode
        if spec.video == "clean":  # IDM: the observed frames are a condition, never modified
            assert torch.equal(r.video_latent, torch.cat([core["cond_latent"], core["clean_video"][:, :, 1:]], 2))
        if spec.video == "noise":  # VLA: the future video is held at its initial noise
            assert torch.equal(r.video_latent[:, :, 1:], vn[:, :, 1:])
        if spec.video == "denoise":
            assert not torch.equal(r.video_latent[:, :, 1:], vn[:, :, 1:])
        if spec.action == "clean":
            assert torch.equal(r.actions, core["clean_actions"])
        if spec.action == "noise":
            assert torch.equal(r.actions, an)
        if spec.action == "denoise":
            assert not torch.equal(r.actions, an)
        for s in r.trace:  # inputs of every step keep the clean parts clean
            if spec.action == "clean":
                assert torch.equal(s["action_latent_in"], core["clean_actions"])
            assert torch.equal(s["video_latent_in"][:, :, :1], core["cond_latent"])


def test_rtc_prefix_is_frozen_and_continued(policy, scene):
    """Real-time chunking: the first d actions equal the prefix; the chunk continues it without a jump."""
    d, overlap = 6, 16
    state = np.asarray(scene["obs"].state)
    ramp = np.linspace(0.0, 0.3, overlap)[:, None] * np.ones(policy.dof)
    prefix = state + ramp  # a smooth committed plan (joint units)
    free = run(policy, scene, "vla", seed=3).actions
    guided = run(policy, scene, "vla", seed=3, prefix=prefix, expected_delay=d)
    assert guided.prefix_length == overlap and guided.actions.shape == (policy.chunk_length, policy.dof)
    np.testing.assert_allclose(guided.actions[:d], prefix[:d], atol=1e-9)
    rng = np.asarray(policy.normalizer.range)
    jump_guided = np.abs(guided.actions[d] - prefix[d - 1]) / rng
    jump_free = np.abs(free[d] - prefix[d - 1]) / rng
    assert jump_guided.mean() < 0.3 * jump_free.mean()
    typical_step = (np.abs(np.diff(free, axis=0)) / rng).mean()
    assert jump_guided.mean() < 0.5 * typical_step
    # the soft-masked overlap is pulled towards the previous plan
    err_g = (np.abs(guided.actions[d:overlap] - prefix[d:overlap]) / rng).mean()
    err_f = (np.abs(free[d:overlap] - prefix[d:overlap]) / rng).mean()
    assert err_g < 0.6 * err_f
