"""Parity of the MoLA action head (MDT-style encoder-decoder DiT, EDM wrapper, DDIM sampler) with the
official code, through the real loading path (seed rule -> release key names incl. the unused
goal_emb / proprio_emb / pos_emb -> key map -> strict load).

The head runs with the release's quirks the fixture README documents: causal cross-attention
(top-left aligned) and AdaLN modulation ``shift + LN(x) * scale``. Every size comes from the manifest
(MOLA_HEAD_FIXTURE selects the folder), every random draw is injected from the fixture.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from motus_core.models.mola.checkpoint import load_strict, net_key_from_release
from motus_core.models.mola.config import HeadConfig
from motus_core.models.mola.head import ActionHead
from motus_core.models.mola.objectives import EdmObjective
from motus_core.models.parity_fixture import load_fixture
from test.helpers import FIXTURES, require_fixture

DEFAULT = FIXTURES / "mola_parity" / "action_head"
FOLDER = Path(os.environ.get("MOLA_HEAD_FIXTURE", DEFAULT))


@pytest.fixture(scope="module", autouse=True)
def _fixture_present():
    """Skipped on a developer machine without the fixture; a failure in CI (test.helpers.require_fixture)."""
    require_fixture(FOLDER / "manifest.json", "MoLA head fixture")


@pytest.fixture(scope="module")
def setup():
    fx = load_fixture(FOLDER, "action_head")
    c = fx.config
    weights = fx.weights("head")
    state = {}
    for k, v in weights.items():
        ours = net_key_from_release(k)
        assert ours.startswith("head."), ours
        state[ours[len("head."):]] = v
    sd = c["sigma_density"]
    assert sd["type"] == "loglogistic" and c["noise_schedule"] == "exponential" and c["sampler"].startswith("ddim")
    cfg = HeadConfig(embed_dim=c["embed_dim"], enc_layers=c["n_enc_layers"], dec_layers=c["n_dec_layers"],
                     heads=c["n_heads"], goal_dim=c["goal_dim"], proprio_dim=state["proprio_emb.0.weight"].shape[1],
                     use_proprio=False, causal_cross_attention=True, keep_release_unused=True, objective="edm",
                     sampling_steps=c["steps"], sigma_data=c["sigma_data"], sigma_min=sd["min"], sigma_max=sd["max"],
                     sample_sigma_min=c["sigma_min"])
    head = ActionHead(cfg, action_dim=c["A"], chunk_length=c["H"], video_token_dim=c["latent_dim"],
                      num_video_tokens=c["Nv"], latent_token_dim=c["latent_token_dim"])
    load_strict(head, state, f"fixture {FOLDER}")
    head.eval()
    edm = EdmObjective(cfg)
    assert abs(edm.loc - sd["loc"]) < 1e-12 and edm.scale == sd["scale"]
    ctx = head.encode(fx["in.lang_goal"], fx["in.video_tokens"], fx["in.latent_action_tokens"])
    net = lambda x, s: head.decode(ctx, x, s)  # noqa: E731
    return fx, c, head, edm, ctx, net


def _max_abs(a, b):
    return (a.float() - b.float()).abs().max().item()


@torch.no_grad()
def test_mola_parity_head_single_evaluation(setup):
    fx, c, head, edm, ctx, net = setup
    assert _max_abs(ctx, fx["ref.eval_context"]) <= 2e-6
    x, sigma = fx["in.eval_x"], fx["in.eval_sigma"]
    assert _max_abs(edm.inner(net, x, sigma), fx["ref.eval_F"]) <= 2e-6
    assert _max_abs(edm.denoise(net, x, sigma), fx["ref.eval_denoised"]) <= 1e-5


@torch.no_grad()
def test_mola_parity_head_training_loss(setup):
    fx, c, head, edm, ctx, net = setup
    sigma = edm.sigma_from_uniform(fx["rng.loss_u"])
    ref_sigma = fx["rng.loss_sigma"]
    assert ((sigma - ref_sigma).abs() / ref_sigma).max().item() <= 1e-6
    loss, out = edm.loss(net, fx["in.actions"], sigma=sigma, noise=fx["rng.loss_noise"])
    assert _max_abs(out, fx["ref.loss_model_output"]) <= 2e-6
    ref = fx["ref.loss"].item()
    assert abs(loss.item() - ref) <= 1e-5 * abs(ref)


@torch.no_grad()
def test_mola_parity_head_sampling(setup):
    fx, c, head, edm, ctx, net = setup
    sigmas = edm.sigmas(c["steps"], c["sigma_min"])
    ref = fx["ref.sample_sigmas"]
    assert ((sigmas - ref).abs() <= 1e-6 * ref.abs()).all()
    eps = fx["rng.sample_eps"]
    actions, steps = edm.sample(net, eps.shape, eps=eps, steps=c["steps"], sigma_min=c["sigma_min"], return_steps=True)
    assert _max_abs(steps, fx["ref.sample_denoised_steps"]) <= 1e-4
    assert _max_abs(actions, fx["ref.sample_actions"]) <= 1e-4


def test_mola_parity_head_unused_release_parameters_are_frozen(setup):
    fx, c, head, *_ = setup
    frozen = {n for n, p in head.named_parameters() if not p.requires_grad}
    assert frozen == {n for n in dict(head.named_parameters()) if n.split(".")[0] in ("goal_emb", "pos_emb", "proprio_emb")}
    assert head.pos_emb.shape[1] == 1 + c["Nv"] + c["H"]
