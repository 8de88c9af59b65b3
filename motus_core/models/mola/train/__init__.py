"""MoLA training: stage I (video model), stage II (MoIDM pretraining), stage III (policy).

One command per stage (``mola-train-stage1/2/3 --config config/mola/stageN.yaml [--set key=value ...]``),
torchrun for several GPUs. See :mod:`.common` for what the stages share and :mod:`.stages` for each.
"""
