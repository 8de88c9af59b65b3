"""The ``tiny_motus`` policy kind: a tiny random-weight Motus (the real implementation, small widths).

For tests, CPU demos and the closed loop without a GPU: 48 actions x the profile's joints per chunk,
RTC prefixes honoured, statistics from the profile's joint limits unless ``options['stats']`` is given.
Options: ``seed``, ``num_steps`` (default 10) and those of
``motus_core.models.motus.policy.create_tiny``.
"""
from __future__ import annotations


def create(checkpoint_dir=None, *, device: str = "cpu", profile=None, options: dict | None = None):
    from motus_core.models.motus.policy import create_tiny

    options = dict(options or {})
    return create_tiny(profile=profile, seed=int(options.pop("seed", 0)), device=device,
                       num_steps=int(options.pop("num_steps", 10)), options=options)
