"""Stage II: MoIDM pretraining with RGB and modality reconstruction decoders.

The released MoLA trainers feed pixels (and modality maps) to Moto-style latent-motion tokenizers
whose model files were not released; this follows their data flow and Moto's decoder recipe:

* a **frozen ViT image encoder** (any transformers ViT / ViT-MAE / DINOv2 from a local directory)
  turns the current and the future RGB frame into token grids whose width and token count must equal
  the policy-time IDM input (``idm.input_dim`` channels, ``tokens_per_frame`` tokens), because the
  same M-Former (position table included) is reused in stage III;
* each IDM (:class:`~.idm.LatentActionIdm`, the very module the policy uses) quantises the change;
* an **RGB decoder** reconstructs the future frame from the current frame's patches plus the latent
  actions (flattened, projected, *added* to every patch embedding - Moto's ``query_fusion_mode: add``),
  a pixel-shuffle head on top; one per IDM (the IDMs are pretrained independently);
* a **modality decoder** per IDM does the same for its modality: current map + latent actions ->
  future map (depth / semantic embedding / flow).

Loss per IDM (paper Eq. 4-6 with Moto's weights): commitment + MSE(RGB) + MSE(modality) (flow: masked
by visibility). No LPIPS: Moto computes it without gradient and the package needs torchvision.
The decoders are dropped after stage II; only the IDM weights go on to stage III.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTConfig
from transformers.models.vit.modeling_vit import ViTLayer

from .config import IdmConfig, MolaConfigError
from .idm import LatentActionIdm
from .loading import check_loading_info, local_dir
from .targets import imagenet_normalize


class PatchDecoder(nn.Module):
    """ViT over a (C, G, G) map's patches with add-fused latent actions -> a (C_out, G, G) map."""

    def __init__(self, in_channels: int, out_channels: int, grid: int, patch: int, hidden: int, layers: int,
                 heads: int, latent_dim: int, queries: int):
        super().__init__()
        if grid % patch:
            raise MolaConfigError(f"decoder grid {grid} is not a multiple of its patch size {patch}")
        self.grid, self.patch, self.out_channels = grid, patch, out_channels
        n = (grid // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, hidden, patch, stride=patch)
        self.position = nn.Parameter(torch.randn(1, n, hidden) * 0.02)
        self.query_fusion = nn.Linear(queries * latent_dim, hidden)
        cfg = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * hidden,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12)
        cfg._attn_implementation = "sdpa"
        self.layers = nn.ModuleList([ViTLayer(cfg) for _ in range(layers)])
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.head = nn.Linear(hidden, patch * patch * out_channels)  # = 1x1 conv before PixelShuffle(patch)

    def forward(self, x: torch.Tensor, latent_actions: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = self.patch_embed(x).flatten(2).transpose(1, 2) + self.position
        h = h + self.query_fusion(latent_actions.flatten(1))[:, None]
        for layer in self.layers:
            h = layer(h)
        h = self.head(self.norm(h))  # (B, n, p*p*C)
        g, p, c = self.grid // self.patch, self.patch, self.out_channels
        h = h.view(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return h.reshape(b, c, g * p, g * p)


class FrozenImageEncoder(nn.Module):
    """A transformers vision backbone from a local directory -> the last ``tokens`` patch tokens."""

    def __init__(self, model, image_size: int, tokens: int):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.image_size = image_size
        self.tokens = tokens
        self.is_mae = model.config.model_type == "vit_mae"
        if self.is_mae and float(getattr(model.config, "mask_ratio", 0.0)) != 0.0:
            raise MolaConfigError("ViT-MAE encoder: set mask_ratio 0 (all patches visible)")

    @classmethod
    def from_pretrained(cls, path: str, image_size: int, tokens: int) -> "FrozenImageEncoder":
        from transformers import AutoModel

        root = local_dir(path, "stage-II image encoder")
        model, info = AutoModel.from_pretrained(str(root), local_files_only=True, output_loading_info=True)
        check_loading_info(info, str(root), unused_missing=("pooler.",))  # only patch tokens are used
        return cls(model, image_size, tokens)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        kwargs = {}
        if self.is_mae:
            # ViT-MAE shuffles patches on every call unless given the noise that sorts them back (identity order)
            n = (self.image_size // self.model.config.patch_size) ** 2
            kwargs["noise"] = torch.arange(n, dtype=torch.float32, device=x.device)[None].expand(x.shape[0], -1)
        hidden = self.model(pixel_values=imagenet_normalize(x), **kwargs).last_hidden_state
        if hidden.shape[1] < self.tokens:
            raise MolaConfigError(f"image encoder gives {hidden.shape[1]} tokens, the IDMs need {self.tokens} per frame")
        return hidden[:, -self.tokens:]


class IdmPretrainModel(nn.Module):
    """Encoder (frozen) + one IDM, RGB decoder and modality decoder per name."""

    def __init__(self, idm_cfg: IdmConfig, encoder: FrozenImageEncoder, tokens_per_frame: int,
                 modality_specs: dict[str, dict], *, rgb_size: int, rgb_patch: int, decoder_hidden: int,
                 rgb_layers: int, modality_layers: int, decoder_heads: int):
        super().__init__()
        if encoder.hidden_size != idm_cfg.input_dim:
            raise MolaConfigError(f"image encoder width {encoder.hidden_size} != idm.input_dim {idm_cfg.input_dim}: the "
                                  "M-Former's input projection is shared with stage III, so they must agree")
        self.encoder = encoder
        self.rgb_size = rgb_size
        self.idms = nn.ModuleDict({n: LatentActionIdm(idm_cfg, tokens_per_frame) for n in modality_specs})
        kw = dict(hidden=decoder_hidden, heads=decoder_heads, latent_dim=idm_cfg.hidden, queries=idm_cfg.queries)
        self.rgb_decoders = nn.ModuleDict({n: PatchDecoder(3, 3, rgb_size, rgb_patch, layers=rgb_layers, **kw)
                                           for n in modality_specs})
        self.modality_decoders = nn.ModuleDict({
            n: PatchDecoder(s["channels"], s["channels"], s["grid"], s["patch"], layers=modality_layers, **kw)
            for n, s in modality_specs.items()})

    def forward(self, cur: torch.Tensor, fut: torch.Tensor, modality: dict[str, tuple]) -> dict[str, torch.Tensor]:
        """cur/fut (N, 3, S, S) in [0, 1]; modality[name] = (current map, future map, future weight or None)."""
        tokens_cur, tokens_fut = self.encoder(cur), self.encoder(fut)
        rgb_in = imagenet_normalize(F.interpolate(cur.float(), size=(self.rgb_size,) * 2, mode="bilinear", align_corners=False))
        rgb_tgt = imagenet_normalize(F.interpolate(fut.float(), size=(self.rgb_size,) * 2, mode="bilinear", align_corners=False))
        losses: dict[str, torch.Tensor] = {}
        total = 0.0
        for name, idm in self.idms.items():
            o = idm(tokens_cur, tokens_fut)
            rgb_loss = F.mse_loss(self.rgb_decoders[name](rgb_in, o.tokens).float(), rgb_tgt)
            m_cur, m_fut, w = modality[name]
            pred = self.modality_decoders[name](m_cur, o.tokens).float()
            if w is None:
                m_loss = F.mse_loss(pred, m_fut)
            else:
                w = w.expand_as(pred)
                m_loss = ((pred - m_fut) ** 2 * w).sum() / w.sum().clamp_min(1.0)
            loss = o.commit_loss + rgb_loss + m_loss
            total = total + loss
            losses.update({f"{name}/loss": loss.detach(), f"{name}/commit": o.commit_loss.detach(),
                           f"{name}/rgb": rgb_loss.detach(), f"{name}/modality": m_loss.detach(),
                           f"{name}/active_codes": torch.tensor(float(o.indices.unique().numel()))})
        losses["loss"] = total
        return losses

    def idm_state_dict(self) -> dict[str, torch.Tensor]:
        """The IDM weights only (decoders dropped), keyed ``<name>.<our IDM key>``."""
        return {f"{n}.{k}": v for n, idm in self.idms.items() for k, v in idm.state_dict().items()}
