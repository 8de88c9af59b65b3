"""Tiny MoLA configurations and tiny random foundation models saved to local directories.

Used by the CPU tests, the benchmark's reduced configs and ``VideoModel.from_config``: nothing here
downloads anything. The tiny SVD UNet keeps the release's geometry that matters (three resolution
levels, so ``up_blocks[0]`` is upsampled x2 before it is concatenated with ``up_blocks[1]``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import HeadConfig, IdmConfig, MolaConfig, VideoConfig, VideoFormerConfig, set_dotted

TINY_UNET = dict(
    sample_size=8, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=[32, 32, 64], addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
    layers_per_block=1, cross_attention_dim=32, transformer_layers_per_block=1, num_attention_heads=[2, 2, 4],
    num_frames=6,
)
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
                block_out_channels=[32, 32, 32], layers_per_block=1, latent_channels=4, sample_size=32,
                scaling_factor=0.18215)
TINY_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, projection_dim=24,
                 max_position_embeddings=32)


def tiny_config(**overrides) -> MolaConfig:
    """Tiny MoLA (``overrides``: ``head__objective="edm"`` style): 32x32 images -> 8x8 latents -> 8x8 tap grid
    (64 tokens/frame), 7 frames at a 2-step stride, IDM frames 0 and 5, chunk 10."""
    cfg = MolaConfig(
        video=VideoConfig(unet=dict(TINY_UNET), vae=dict(TINY_VAE), text=dict(TINY_TEXT), image_size=32,
                          num_frames=7, vae_scale_factor=4, text_max_length=8),
        video_former=VideoFormerConfig(dim=32, depth=1, heads=2, dim_head=16, latents_per_frame=2, ff_mult=2),
        idm=IdmConfig(input_dim=32, hidden=32, layers=1, heads=2, intermediate=64, queries=4, codebook_size=16,
                      code_dim=4),
        head=HeadConfig(embed_dim=32, enc_layers=1, dec_layers=1, heads=2, goal_dim=24, proprio_dim=14,
                        attn_pdrop=0.0, resid_pdrop=0.0, mlp_pdrop=0.0, sampling_steps=4),
        chunk_length=10, frame_stride=2,
    )
    data = cfg.to_dict()
    for key, value in overrides.items():  # head__objective="edm" -> data["head"]["objective"]
        set_dotted(data, key.replace("__", "."), value)
    return MolaConfig.from_dict(data)


def byte_level_clip_tokenizer():
    """A CLIP tokenizer with a byte-level vocabulary and no merges (514 tokens): no files needed."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


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
