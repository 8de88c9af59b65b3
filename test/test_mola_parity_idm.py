"""Parity of one MoLA inverse-dynamics model (input projection, M-Former, VQ, resamplers) with the
official code, through the real loading path (seed rule -> release key names -> key map -> strict load).

The fixture folder comes from MOLA_IDM_FIXTURE (default: the shared public fixture); every size is
read from its manifest, so other fixtures of the same format (other seeds, widths, layer and code
counts) run unchanged.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from motus_core.models.mola.checkpoint import load_strict, net_key_from_release
from motus_core.models.mola.config import IdmConfig
from motus_core.models.mola.idm import MoIDM
from motus_core.models.mola.model import MolaNet
from motus_core.models.parity_fixture import load_fixture
from test.helpers import FIXTURES, require_fixture

DEFAULT = FIXTURES / "mola_parity" / "idm"
FOLDER = Path(os.environ.get("MOLA_IDM_FIXTURE", DEFAULT))


@pytest.fixture(scope="module", autouse=True)
def _fixture_present():
    """Skipped on a developer machine without the fixture; a failure in CI (test.helpers.require_fixture)."""
    require_fixture(FOLDER / "manifest.json", "MoLA IDM fixture")


@pytest.fixture(scope="module")
def run():
    fx = load_fixture(FOLDER, "idm")
    c = fx.config
    weights = fx.weights("idm")  # regenerated + sha256-checked
    idm_names = sorted({k.split(".")[0][len("latent_"):-len("_motion_tokenizer")] for k in weights if k.startswith("latent_")})
    # the release calls the flow IDM latent_flow_/latent_cotracker_ and the semantic one latent_semantic_/latent_segment_
    names = tuple({"cotracker": "flow", "segment": "semantic"}.get(n, n) for n in idm_names)
    cfg = IdmConfig(names=names, input_dim=c["D_in"], hidden=c["hidden"], layers=c["layers"], heads=c["heads"],
                    intermediate=c["inter"], queries=c["query_num"], codebook_size=c["n_e"], code_dim=c["e_dim"],
                    beta=c["beta"], layer_norm_eps=c["lne"], frames=tuple(c["frames_used"]))
    assert c["legacy"] and c["vit_config"]["hidden_act"] == "gelu" and c["vit_config"]["qkv_bias"]
    moidm = MoIDM(cfg, feature_channels=c["C"], tokens_per_frame=c["h"] * c["w"])
    state = {}
    for k, v in weights.items():
        ours = net_key_from_release(k)
        assert ours.startswith("moidm."), ours
        state[ours[len("moidm."):]] = v
    load_strict(moidm, state, f"fixture {FOLDER}")
    moidm.eval()

    feats = fx["in.unet_features"]  # (2B, F, C, h, w): primary camera rows first, then gripper
    b = c["B"]
    feats = feats.view(2, b, *feats.shape[1:]).transpose(0, 1)  # (B, V=2, F, C, h, w), camera 0 = primary
    tokens = MolaNet.tokens(feats)  # (B, V, F, N, C)
    frames = tokens[:, [0]][:, :, list(cfg.frames)]  # IDMs on the primary camera, frames 0 and 5
    with torch.no_grad():
        proj = moidm.idm_input(frames.flatten(0, 1))
        la = moidm(frames)
    out = la.outputs[names[0]]
    return fx, proj, out


def _max_abs(a, b):
    return (a.float() - b.float()).abs().max().item()


def test_mola_parity_idm_input_projection(run):
    fx, proj, _ = run
    assert proj.shape == fx["ref.idm_input"].shape
    assert _max_abs(proj, fx["ref.idm_input"]) <= 1e-5


def test_mola_parity_idm_mformer(run):
    fx, _, out = run
    assert _max_abs(out.hidden_states, fx["ref.mformer_last_hidden_state"]) <= 1e-5
    assert _max_abs(out.queries, fx["ref.mformer_queries_out"]) <= 1e-5


def test_mola_parity_idm_vq_and_tokens(run):
    fx, _, out = run
    assert _max_abs(out.z, fx["ref.z"]) <= 1e-5
    assert torch.equal(out.indices.view_as(fx["ref.indices"]), fx["ref.indices"])
    assert _max_abs(out.z_q, fx["ref.z_q"]) <= 1e-5
    ref = fx["ref.commit_loss"].item()
    assert abs(out.commit_loss.item() - ref) <= 1e-5 * abs(ref)
    assert _max_abs(out.tokens, fx["ref.latent_action_tokens"]) <= 1e-5
