"""Stage-3 fine-tuning (and from-scratch training of reduced models) of Motus: ``motus-train``.

See docs/motus.md (training section). Entry points: :func:`trainer.train` (a resolved
:class:`config.TrainConfig`), :func:`step.one_step` (one optimizer step; the GPU benchmark's hook).
"""
