"""The Motus tri-stream diffusion transformer, driving diffusers' ``WanTransformer3DModel`` blocks.

The video stream IS a diffusers ``WanTransformer3DModel`` (``self.video``): its patch embedding,
condition embedder (time MLP, time projection, text projection), RoPE tables, blocks (q/k/v/o,
q/k RMS norms, cross-attention module, FFN, layer norms, modulation tables) and output head are
called as sub-modules. What Motus changes is the order of operations inside each layer, so the
layer loop is ours: the three streams (video | action | understanding) attend jointly, then the
video stream cross-attends to the umT5 context, then each stream runs its own FFN.

Numerics follow the official implementation (motus-spec §2.8-§2.11): timestep sinusoid
``[cos | sin]`` in float64 on the 0..1000 scale, modulation sums and gated residual adds in float32,
layer/RMS norms in float32, RoPE in float64 on video q/k only, one softmax attention over the
concatenated sequence without mask, the understanding stream without timestep conditioning.
All residual streams are kept in float32; matmuls run in the dtype of the weights (bf16 on GPU).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.utils.checkpoint
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

from .attention import attention
from .config import MotusConfig
from .experts import ActionExpert, UndExpert, layer_norm, run

# Parameters kept in float32 by ``set_precision``: timestep MLPs and projections, modulation tables,
# affine layer norms (the official code runs these in float32 under autocast; the diffusers Wan
# model lists the same modules in ``_keep_in_fp32_modules``).
FP32_PARAMS = re.compile(
    r"(condition_embedder\.time_(embedder|proj)|scale_shift_table|\.norm[123]\.|"
    r"action_expert\.(time_embedding|time_projection)|modulation|input_encoder\.pos_embedding)"
)


def timestep_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``[cos(t f) | sin(t f)]`` with ``f_k = 10000^(-k/half)``, computed in float64 (official Wan), float32 out."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    arg = t.to(torch.float64)[..., None] * freqs
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs ``(x[2j], x[2j+1])`` in float64. ``x [B, L, H, D]``; cos/sin ``[1, L, 1, D]``
    (diffusers' repeat-interleaved tables)."""
    xd = x.to(torch.float64)
    x1, x2 = xd[..., 0::2], xd[..., 1::2]
    c, s = cos[..., 0::2].to(torch.float64), sin[..., 0::2].to(torch.float64)
    out = torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)
    return out.to(x.dtype)


@dataclass
class MotusOutput:
    video_velocity: torch.Tensor  # [B, C, T, h, w] float32 (frame 0 included; callers ignore it)
    action_decoder_out: torch.Tensor  # [B, L_a, action_dim] float32 (state token, actions, registers)
    action_velocity: torch.Tensor  # [B, K, action_dim] float32
    layers: list = field(default_factory=list)  # per layer (video, action, und) tokens, when asked


@dataclass
class Conditioning:
    """Inputs that stay fixed during one denoising run (computed once per chunk)."""

    und: torch.Tensor  # [B, L_u, D_u] understanding tokens entering layer 0
    context_kv: list  # per layer (k, v) of the cross-attention to the text context


class MotusModel(nn.Module):
    """Video (diffusers Wan) + action expert + understanding expert, with joint attention."""

    def __init__(self, config: MotusConfig):
        super().__init__()
        self.config = config
        self.video = WanTransformer3DModel(**{**config.wan, "patch_size": tuple(config.wan["patch_size"])})
        self.action_expert = ActionExpert(config)
        self.und_expert = UndExpert(config)
        self.attention_backend = "auto"
        self._compiled_layer = None
        # training: recompute each layer's activations in backward instead of storing them
        self.activation_checkpointing = False

    # --------------------------------------------------------------------------------- precision
    def _apply(self, fn, recurse=True):
        # .to(dtype)/.half() would also round the RoPE tables (non-persistent float32 buffers of the
        # diffusers rope module, computed in float64): rebuild them on the new device afterwards.
        super()._apply(fn, recurse)
        rope = self.video.rope
        dev = rope.freqs_cos.device
        if dev.type != "meta" and rope.freqs_cos.dtype != torch.float32:
            fresh = WanRotaryPosEmbed(rope.attention_head_dim, rope.patch_size, rope.max_seq_len)
            rope.freqs_cos = fresh.freqs_cos.to(dev)
            rope.freqs_sin = fresh.freqs_sin.to(dev)
        return self

    def rebuild_rope(self, device=None) -> None:
        """Recompute the RoPE tables (after building on the meta device)."""
        rope = self.video.rope
        fresh = WanRotaryPosEmbed(rope.attention_head_dim, rope.patch_size, rope.max_seq_len)
        dev = device if device is not None else self.video.patch_embedding.weight.device
        rope.freqs_cos = fresh.freqs_cos.to(dev)
        rope.freqs_sin = fresh.freqs_sin.to(dev)

    def set_precision(self, dtype: torch.dtype) -> "MotusModel":
        """Cast matmul weights to ``dtype``; keep time MLPs, modulation tables and affine norms in float32."""
        for name, p in self.named_parameters():
            target = torch.float32 if FP32_PARAMS.search(name) else dtype
            if p.dtype != target:
                p.data = p.data.to(target)
        return self

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.video.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.video.patch_embedding.weight.device

    # --------------------------------------------------------------------------------- conditioning
    def text_context(self, t5: torch.Tensor | list | tuple) -> torch.Tensor:
        """umT5 embeddings -> cross-attention context ``[B, text_len, wan_dim]``.

        A list holds one un-padded ``[L_i, text_dim]`` tensor per sample; each is zero-padded or
        truncated to ``text_len`` rows (no mask: the zero rows are attended to, as officially).
        A tensor ``[B, L, text_dim]`` is padded/truncated the same way.
        """
        n = self.config.text_len
        emb = self.video.condition_embedder.text_embedder
        dev = self.device
        if isinstance(t5, torch.Tensor):
            items = list(t5.unbind(0))
        else:
            items = list(t5)
        rows = []
        for e in items:
            e = e.to(dev, torch.float32)
            if e.ndim != 2:
                raise ValueError(f"umT5 embedding must be [L, dim], got {tuple(e.shape)}")
            e = e[:n]
            if e.shape[0] < n:
                e = torch.cat([e, e.new_zeros(n - e.shape[0], e.shape[1])])
            rows.append(e)
        return run(emb, torch.stack(rows)).float()

    def context_kv(self, context: torch.Tensor) -> list:
        """Per layer (k, v) of the video cross-attention: fixed for a whole denoising run."""
        out = []
        h = self.config.num_heads
        for blk in self.video.blocks:
            a = blk.attn2
            c = context.to(a.to_k.weight.dtype)
            k = a.norm_k(a.to_k(c)).unflatten(2, (h, -1))
            v = a.to_v(c).unflatten(2, (h, -1))
            out.append((k, v))
        return out

    def und_tokens(self, vlm_hidden: torch.Tensor) -> torch.Tensor:
        """VLM last hidden state ``[B, L_u, vlm_dim]`` -> understanding tokens ``[B, L_u, D_u]``."""
        return run(self.und_expert.vlm_adapter, vlm_hidden.to(self.device)).float()

    def conditioning(self, vlm_hidden: torch.Tensor, t5) -> Conditioning:
        return Conditioning(und=self.und_tokens(vlm_hidden), context_kv=self.context_kv(self.text_context(t5)))

    def _time(self, t: torch.Tensor, stream: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Timestep ``[B]`` (0..1000) -> (embedding ``[B, D]``, six modulation vectors ``[B, 6, D]``), float32."""
        s = timestep_sinusoid(t, int(self.config.wan["freq_dim"]))
        if stream == "video":
            ce = self.video.condition_embedder
            e = run(ce.time_embedder, s).float()
            proj = run(ce.time_proj, ce.act_fn(e)).float()
        else:
            ae = self.action_expert
            e = run(ae.time_embedding, s).float()
            proj = run(ae.time_projection, e).float()
        return e, proj.unflatten(1, (6, -1))

    # --------------------------------------------------------------------------------- forward
    def forward(
        self,
        video_latent: torch.Tensor,
        t_video: torch.Tensor,
        action_latent: torch.Tensor,
        t_action: torch.Tensor,
        state: torch.Tensor | None,
        cond: Conditioning,
        return_layers: bool = False,
    ) -> MotusOutput:
        """One evaluation of both velocity fields.

        ``video_latent [B, C, T, h, w]`` (frame 0 = clean condition latent), ``t_video [B]`` and
        ``t_action [B]`` on the 0..1000 scale (per modality: the UniDiffuser-style modes pick them),
        ``action_latent [B, K, action_dim]``, ``state [B, state_dim]`` (finetune layout).
        """
        cfg = self.config
        b, _, nt, nh, nw = video_latent.shape
        pt, ph, pw = cfg.wan["patch_size"]
        cdt = self.compute_dtype
        dev = self.device
        t_video = torch.as_tensor(t_video, device=dev).reshape(-1).expand(b)
        t_action = torch.as_tensor(t_action, device=dev).reshape(-1).expand(b)

        rope_cos, rope_sin = self.video.rope(video_latent)
        x_v = self.video.patch_embedding(video_latent.to(dev, cdt)).flatten(2).transpose(1, 2).float()
        ae = self.action_expert
        x_a = ae.input_encoder(None if state is None else state.to(dev), action_latent.to(dev), ae.registers)
        x_u = cond.und
        e_v, mod_v = self._time(t_video, "video")
        e_a, mod_a = self._time(t_action, "action")

        layers = []
        for i in range(cfg.num_layers):
            fn = self._compiled_layer or self._layer
            args = (i, x_v, x_a, x_u, mod_v, mod_a, rope_cos, rope_sin, cond.context_kv[i])
            if self.activation_checkpointing and torch.is_grad_enabled():
                x_v, x_a, x_u = torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
            else:
                x_v, x_a, x_u = fn(*args)
            if return_layers:
                layers.append((x_v, x_a, x_u))

        # video head + unpatchify (diffusers' layout: [B, T', h', w', pt, ph, pw, C] -> [B, C, T, h, w])
        shift, scale = (self.video.scale_shift_table.float() + e_v[:, None]).chunk(2, dim=1)
        y = (self.video.norm_out(x_v) * (1 + scale) + shift).to(cdt)
        y = self.video.proj_out(y).float()
        y = y.reshape(b, nt // pt, nh // ph, nw // pw, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        video_velocity = y.flatten(6, 7).flatten(4, 5).flatten(2, 3)

        z = ae.decoder(x_a, e_a)
        k = action_latent.shape[1]
        first = 1 if cfg.has_state_token else 0
        return MotusOutput(video_velocity, z, z[:, first : first + k], layers)

    def _layer(self, i, x_v, x_a, x_u, mod_v, mod_a, rope_cos, rope_sin, ctx_kv):
        cfg = self.config
        blk = self.video.blocks[i]
        ab = self.action_expert.blocks[i]
        ub = self.und_expert.blocks[i]
        cdt = self.compute_dtype
        heads = cfg.num_heads
        m = (blk.scale_shift_table.float() + mod_v).chunk(6, dim=1)  # each [B, 1, D]
        n = (ab.modulation.float() + mod_a).chunk(6, dim=1)

        # 1. joint self-attention over [video | action | und]
        a1 = blk.attn1
        hv = (blk.norm1(x_v) * (1 + m[1]) + m[0]).to(cdt)
        qv = a1.norm_q(a1.to_q(hv)).unflatten(2, (heads, -1))
        kv = a1.norm_k(a1.to_k(hv)).unflatten(2, (heads, -1))
        vv = a1.to_v(hv).unflatten(2, (heads, -1))
        qv = apply_rope(qv, rope_cos, rope_sin)
        kv = apply_rope(kv, rope_cos, rope_sin)
        ha = layer_norm(x_a, ab.eps) * (1 + n[1]) + n[0]
        qa, ka, va = ab.project_qkv(ha.to(cdt))
        hu = layer_norm(x_u, ub.eps)
        qu, ku, vu = ub.project_qkv(hu.to(cdt))
        lv, la = qv.shape[1], qa.shape[1]
        o = attention(
            torch.cat([qv, qa.to(cdt), qu.to(cdt)], dim=1),
            torch.cat([kv, ka.to(cdt), ku.to(cdt)], dim=1),
            torch.cat([vv, va.to(cdt), vu.to(cdt)], dim=1),
            backend=self.attention_backend,
        )
        ov, oa, ou = o[:, :lv], o[:, lv : lv + la], o[:, lv + la :]
        x_v = x_v + a1.to_out[0](ov.flatten(2)).float() * m[2]
        x_a = x_a + ab.project_out(oa) * n[2]
        x_u = x_u + ub.project_out(ou)

        # 2. video cross-attention to the text context (no modulation, no gate)
        a2 = blk.attn2
        hc = blk.norm2(x_v).to(cdt)
        qc = a2.norm_q(a2.to_q(hc)).unflatten(2, (heads, -1))
        kc, vc = ctx_kv
        oc = attention(qc, kc, vc, backend=self.attention_backend)
        x_v = x_v + a2.to_out[0](oc.flatten(2)).float()

        # 3. per-stream FFNs
        hv = (blk.norm3(x_v) * (1 + m[4]) + m[3]).to(cdt)
        x_v = x_v + blk.ffn(hv).float() * m[5]
        ha = layer_norm(x_a, ab.eps) * (1 + n[4]) + n[3]
        x_a = x_a + run(ab.ffn, ha).float() * n[5]
        x_u = x_u + run(ub.ffn, layer_norm(x_u, ub.eps)).float()
        return x_v, x_a, x_u

    def compile(self, **kwargs) -> None:
        """Optional ``torch.compile`` of the per-layer function (the part that dominates the run time).

        Dynamo specialises the function per layer (its index selects the blocks), so the recompile
        limit is raised to cover every layer instead of silently falling back to eager after 8.
        """
        import torch._dynamo.config as dynamo_config

        need = 2 * self.config.num_layers + 8
        if getattr(dynamo_config, "recompile_limit", need) < need:
            dynamo_config.recompile_limit = need
        self._compiled_layer = torch.compile(self._layer, **kwargs)

    # --------------------------------------------------------------------------------- training
    def stage3_loss(
        self,
        clean_latent: torch.Tensor,
        cond_latent: torch.Tensor,
        actions: torch.Tensor,
        state: torch.Tensor | None,
        cond: Conditioning,
        *,
        video_index: torch.Tensor | None = None,
        video_noise: torch.Tensor | None = None,
        action_index: torch.Tensor | None = None,
        action_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict:
        """Stage-3 (supervised fine-tuning) flow-matching loss of the official ``training_step``.

        Video and action get independent timesteps drawn uniformly from the shift-5 1000-entry
        table; ``x_t = (1 - s) x + s * noise``, velocity target ``noise - x``; latent frame 0 is the
        clean condition latent (teacher forcing) with target 0 and a zeroed prediction, so it adds 0
        to the mean; ``total = w_v * video_loss + w_a * action_loss``. The four random draws (in
        the official order: video index, video noise, action index, action noise) can be injected.
        With ``config.vla_train_fraction`` > 0, that fraction of the drawn video timesteps is set to
        the table's first entry (pure noise, t = 1000: the VLA mode's condition); the Bernoulli draw
        comes after the official four, so a fraction of 0 leaves the official numerics untouched.
        """
        cfg = self.config
        b = clean_latent.shape[0]
        dev = clean_latent.device
        sig, tt = train_schedule(cfg.num_train_timesteps, cfg.train_shift, device=dev)
        vla_draw = video_index is None and cfg.vla_train_fraction > 0
        if video_index is None:
            video_index = torch.randint(0, cfg.num_train_timesteps, (b,), generator=generator, device=dev)
        if video_noise is None:
            video_noise = torch.randn(clean_latent.shape, generator=generator, device=dev, dtype=clean_latent.dtype)
        if action_index is None:
            action_index = torch.randint(0, cfg.num_train_timesteps, (b,), generator=generator, device=dev)
        if action_noise is None:
            action_noise = torch.randn(actions.shape, generator=generator, device=dev, dtype=actions.dtype)
        if vla_draw:
            vla = torch.rand((b,), generator=generator, device=dev) < cfg.vla_train_fraction
            video_index = torch.where(vla, torch.zeros_like(video_index), video_index)
        s_v = sig[video_index].view(b, 1, 1, 1, 1)
        noisy = (1 - s_v) * clean_latent + s_v * video_noise
        noisy[:, :, :1] = cond_latent
        target_v = video_noise - clean_latent
        target_v[:, :, 0] = 0
        s_a = sig[action_index].view(b, 1, 1)
        noisy_a = (1 - s_a) * actions + s_a * action_noise
        target_a = action_noise - actions
        out = self(noisy, tt[video_index], noisy_a, tt[action_index], state, cond)
        pred_v = out.video_velocity.clone()
        pred_v[:, :, 0] = 0
        video_loss = torch.mean((pred_v - target_v) ** 2)
        action_loss = torch.mean((out.action_velocity - target_a) ** 2)
        total = cfg.video_loss_weight * video_loss + cfg.action_loss_weight * action_loss
        return dict(video_loss=video_loss, action_loss=action_loss, total_loss=total, noisy_video_latent=noisy,
                    noisy_actions=noisy_a, t_video=tt[video_index], t_action=tt[action_index])


def train_schedule(num_steps: int = 1000, shift: float = 5.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The official training table: ``s = linspace(1, 0, N+1)[:-1]``, ``s' = shift s / (1 + (shift-1) s)``,
    timesteps ``N * s'`` (float32)."""
    s = torch.linspace(1.0, 0.0, num_steps + 1, device=device)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return s, s * num_steps


def init_random_(model: MotusModel, seed: int = 0) -> MotusModel:
    """Fill every parameter with scale-appropriate random values in place (on its device and dtype).

    Used for random-weight models (tests, benchmarks): gains ``1 + 0.1 r``, biases ``0.02 r``,
    expert q/k/v ``r / sqrt(D)``, other matrices ``r / sqrt(fan_in)`` - activations stay O(1) at any
    width. The action position table is recomputed; the RoPE tables are rebuilt.
    """
    from .experts import sincos_position_table

    gens: dict = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.device not in gens:  # draw on the parameter's device: no full-size fp32 copy on the CPU
                gens[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            r = torch.randn(p.shape, generator=gens[p.device], device=p.device, dtype=p.dtype)
            leaf = name.split(".")[-1]
            if p.ndim == 1 and (leaf == "weight" and "norm" in name):
                v = 1.0 + 0.1 * r
            elif p.ndim == 1:
                v = 0.02 * r
            elif name.endswith("_qkv"):
                v = r / math.sqrt(p.shape[2])
            else:
                v = r / math.sqrt(math.prod(p.shape[1:]))
            p.copy_(v)
        enc = model.action_expert.input_encoder
        pos = sincos_position_table(enc.pos_embedding.shape[1], enc.pos_embedding.shape[2])
        enc.pos_embedding = pos.to(enc.pos_embedding.device)
    model.rebuild_rope()
    return model
