"""MoLA (Mixture of Latent Actions) on diffusers/transformers: imagination with a video model, a
mixture of latent-action inverse-dynamics models, and an MDT-style action head. See docs/mola.md.

Import submodules directly (``motus_core.models.mola.model``, ``.policy``, ``.train``...); this package
file stays light so that importing the config does not import diffusers.
"""
from .config import HeadConfig, IdmConfig, MolaConfig, MolaConfigError, VideoConfig, VideoFormerConfig

__all__ = ["HeadConfig", "IdmConfig", "MolaConfig", "MolaConfigError", "VideoConfig", "VideoFormerConfig"]
