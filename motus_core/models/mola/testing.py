"""Tiny random foundation models saved to local directories, for the CPU tests (nothing is downloaded).

Test support only: production code never imports this module (the tiny configuration itself is
``MolaConfig.tiny`` / :func:`motus_core.models.mola.config.tiny_config`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import MolaConfig


def save_tiny_foundation(cfg: MolaConfig, root: str | Path, seed: int = 0) -> MolaConfig:
    """Save a random tiny SVD (unet/, vae/) and CLIP text model under ``root``; return cfg pointing at them."""
    from .video import VideoModel

    root = Path(root)
    torch.manual_seed(seed)
    vm = VideoModel.from_config(cfg.video)
    (root / "svd").mkdir(parents=True, exist_ok=True)
    vm.unet.save_pretrained(root / "svd" / "unet")
    vm.vae.save_pretrained(root / "svd" / "vae")
    vm.text_encoder.save_pretrained(root / "clip")
    vm.tokenizer.save_pretrained(root / "clip")
    data = cfg.to_dict()
    data["video"].update(pretrained=str(root / "svd"), text_encoder=str(root / "clip"))
    return MolaConfig.from_dict(data)


TINY_DEPTH = dict(backbone_config=dict(model_type="dinov2", hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                       intermediate_size=32, image_size=56, patch_size=14,
                                       out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False),
                  patch_size=14, reassemble_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[8, 8, 16, 16],
                  fusion_hidden_size=8, head_in_index=-1, head_hidden_size=8, depth_estimation_type="relative", max_depth=1)
TINY_SAM2 = dict(
    vision_config=dict(model_type="sam2_vision_model",
                       backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=16, num_attention_heads=1,
                                            image_size=[64, 64], blocks_per_stage=[1, 1, 2, 1],
                                            embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
                                            window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3],
                                            window_positional_embedding_background_size=[4, 4]),
                       backbone_channel_list=[128, 64, 32, 16], backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
                       fpn_hidden_size=16),
    prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4),
    mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=16))


def save_tiny_stage2_models(cfg: MolaConfig, root: str | Path, seed: int = 0) -> dict[str, str]:
    """Tiny random stage-II models in local dirs: image encoder (ViT with the IDM input width and the tap
    grid), Depth Anything V2 and SAM2. Returns ``{"encoder", "depth_model", "semantic_model"}`` paths."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Sam2Config, Sam2Model, ViTConfig, ViTModel

    root = Path(root)
    torch.manual_seed(seed)
    side = cfg.video.feature_hw
    patch = 4
    enc = ViTModel(ViTConfig(hidden_size=cfg.idm.input_dim, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=2 * cfg.idm.input_dim, image_size=side * patch, patch_size=patch),
                   add_pooling_layer=False)
    paths = {"encoder": root / "encoder", "depth_model": root / "depth", "semantic_model": root / "sam2"}
    enc.save_pretrained(paths["encoder"])
    DepthAnythingForDepthEstimation(DepthAnythingConfig(**TINY_DEPTH)).save_pretrained(paths["depth_model"])
    Sam2Model(Sam2Config(**TINY_SAM2)).save_pretrained(paths["semantic_model"])
    return {k: str(v) for k, v in paths.items()}
