"""Motus (thu-ml/Motus) on diffusers/transformers: model, converters, five modes, policy.

Modules: ``config`` (MotusConfig, presets), ``model`` (tri-stream transformer on diffusers' Wan),
``experts`` (action / understanding experts), ``attention`` (flash-attn or SDPA), ``sampler`` (one
Euler sampler for the five modes, RTC), ``vae`` / ``vlm`` / ``text_encoder`` (Wan2.2 VAE, Qwen3-VL,
umT5 + embedding cache), ``convert`` / ``checkpoint`` / ``convert_checkpoint`` (official files -> converted
directory), ``policy`` (the runtime Policy), ``motus_core.models.parity_fixture`` reads the parity fixtures.
Importing this package does not import the heavy sub-modules.
"""
