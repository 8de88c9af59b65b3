"""MoLA assembled: frozen video model -> Video Former + MoIDM -> action head.

:class:`MolaNet` holds every part that stage III trains (IDM input projection, the IDMs, the Video
Former, the head); :class:`MolaModel` adds the frozen :class:`~.video.VideoModel` and the objective and
runs the whole policy computation. Shapes (B batch, V cameras, F frames, N tokens per frame, C feature
channels):

    images (B, V, 3, S, S) --video.features (one batched call over B*V)--> (B, V, F, N, C)
    Video Former on (B, F, V*N, C)                                -> video tokens (B, F*q, d_vf)
    IDM input projection on frames ``idm.frames`` of ``idm.cameras`` -> (B*Vi, 2, N, D_in)
    each IDM -> (B, Vi*Q, W) [+ camera embedding]; concatenated in ``idm.names`` order
    head: context [lang | video | (state) | latent actions] -> chunk (B, H, A) in model space [-1, 1]
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .config import MolaConfig, MolaConfigError
from .head import ActionHead
from .idm import LatentActions, MoIDM
from .objectives import make_objective
from .video import TextEmbedding, VideoModel
from .video_former import VideoFormer


class MolaNet(nn.Module):
    """The trainable part of the MoLA policy (release names: goal_emb/time_pos_emb, latent_*, Video_Former, model)."""

    def __init__(self, cfg: MolaConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        v = cfg.video
        self.video_former = VideoFormer(cfg.video_former, v.feature_channels, v.num_frames)
        self.moidm = MoIDM(cfg.idm, v.feature_channels, v.tokens_per_frame, attn_implementation)
        self.head = ActionHead(cfg.head, action_dim=cfg.action_dim, chunk_length=cfg.chunk_length,
                               video_token_dim=cfg.video_former.dim, num_video_tokens=cfg.num_video_tokens,
                               latent_token_dim=cfg.idm.hidden)
        self.idm_camera_index = [cfg.cameras.index(c) for c in cfg.idm.cameras]

    @staticmethod
    def tokens(features: torch.Tensor) -> torch.Tensor:
        """(B, V, F, C, h, w) -> (B, V, F, h*w, C): row-major over (h, w), channels last (the release's order)."""
        return features.flatten(-2).transpose(-1, -2)

    def video_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        b, v, f, n, c = tokens.shape
        return self.video_former(tokens.permute(0, 2, 1, 3, 4).reshape(b, f, v * n, c))

    def latent_actions(self, tokens: torch.Tensor) -> LatentActions:
        """tokens (B, V, F, N, C) -> the IDMs on frames ``idm.frames`` of cameras ``idm.cameras``."""
        return self.moidm(tokens[:, self.idm_camera_index][:, :, list(self.cfg.idm.frames)])

    def context(self, features: torch.Tensor, lang: torch.Tensor, state: torch.Tensor | None):
        """features (B, V, F, C, h, w), lang (B, goal_dim), state (B, A) model space -> (context, LatentActions)."""
        tokens = self.tokens(features.float() if features.dtype == torch.float16 else features)
        la = self.latent_actions(tokens)
        ctx = self.head.encode(lang[:, None], self.video_tokens(tokens), la.tokens,
                               state if self.cfg.head.use_proprio else None)
        return ctx, la


class MolaModel(nn.Module):
    def __init__(self, cfg: MolaConfig, video: VideoModel, net: MolaNet | None = None):
        super().__init__()
        self.cfg = cfg.validate()
        self.video = video
        self.net = net if net is not None else MolaNet(cfg)
        self.objective = make_objective(cfg.head)
        if video.goal_dim != cfg.head.goal_dim:
            raise MolaConfigError(f"CLIP projection width {video.goal_dim} != head.goal_dim {cfg.head.goal_dim}")
        if video.cfg.feature_channels != cfg.video.feature_channels:
            raise MolaConfigError("video model and config disagree on the feature channels")
        self.video.requires_grad_(False)
        self.video.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.video.eval()  # frozen from stage III on
        return self

    # ------------------------------------------------------------------ video part
    def video_features(self, images: torch.Tensor, text: TextEmbedding, generator: torch.Generator | None = None,
                       imagine_steps: int = 0):
        """images (B, V, 3, S, S) in [0, 1] -> features (B, V, F, C, h, w) [+ frames (B, V, F, 3, S, S)]."""
        b, v = images.shape[:2]
        text_tokens = text.tokens.repeat_interleave(v, dim=0)
        flat = images.flatten(0, 1)
        if imagine_steps > 0:
            feats, frames = self.video.features_and_frames(flat, text_tokens, imagine_steps, generator)
            frames = frames.view(b, v, *frames.shape[1:])
        else:
            feats, frames = self.video.features(flat, text_tokens, generator), None
        return feats.view(b, v, *feats.shape[1:]), frames

    # ------------------------------------------------------------------ stage III loss
    def loss(self, features: torch.Tensor, lang: torch.Tensor, state: torch.Tensor | None, actions: torch.Tensor,
             generator: torch.Generator | None = None, **draws) -> dict[str, torch.Tensor]:
        ctx, la = self.net.context(features, lang, state)
        action_loss, _ = self.objective.loss(lambda x, s: self.net.head.decode(ctx, x, s), actions,
                                             generator=generator, **draws)
        total = action_loss + self.cfg.commit_weight * la.commit_loss
        out = {"loss": total, "action_loss": action_loss.detach(), "commit_loss": la.commit_loss.detach()}
        for name, c in la.commit_losses.items():
            out[f"commit_{name}"] = c.detach()
            out[f"active_codes_{name}"] = torch.tensor(float(la.indices[name].unique().numel()))
        return out

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample(self, features: torch.Tensor, lang: torch.Tensor, state: torch.Tensor | None, *,
               generator: torch.Generator | None = None, prefix: torch.Tensor | None = None, delay: int = 0,
               steps: int | None = None, max_guidance: float = 5.0, timer=None):
        """-> (chunk (B, H, A) in model space, LatentActions). ``timer(stage)``: a context manager per stage
        (``moidm``, ``video_former``, ``head``), e.g. the policy's per-stage timing."""
        timer = timer or (lambda stage: contextlib.nullcontext())
        net = self.net
        with timer("moidm"):
            tokens = net.tokens(features.float() if features.dtype == torch.float16 else features)
            la = net.latent_actions(tokens)
        with timer("video_former"):
            video_tokens = net.video_tokens(tokens)
        with timer("head"):
            ctx = net.head.encode(lang[:, None], video_tokens, la.tokens, state if self.cfg.head.use_proprio else None)
            shape = (features.shape[0], self.cfg.chunk_length, self.cfg.action_dim)
            chunk = self.objective.sample(lambda x, s: net.head.decode(ctx, x.to(ctx.dtype), s).float(), shape,
                                          generator=generator, device=features.device, steps=steps, prefix=prefix,
                                          delay=delay, max_guidance=max_guidance)
        return chunk, la
