"""Run one MoLA training stage from a parsed config (``prepare_stage`` / ``run_stage``).

The commands ``mola-train-stage{1,2,3}`` are :mod:`motus_core.cli.mola_train`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from motus_core.models.training import end_distributed_rank

from ..data import MolaDataset
from .common import DistInfo, StageModule, Trainer, dataclass_to_dict, seed_everything, setup_distributed
from .stages import StageSetup, build_dataset, build_stage, collate, export_stage, parse_stage_config

log = logging.getLogger("motus_core.mola.train")


@dataclass
class PreparedStage:
    stage: int
    setup: StageSetup
    dist: DistInfo
    dataset: MolaDataset
    module: StageModule
    trainer: Trainer

    def export(self) -> Path:
        return export_stage(self.module, self.setup, self.dataset, self.stage)


def prepare_stage(stage: int, raw: dict) -> PreparedStage:
    """Parse the config, set up torchrun/DDP, build the dataset, the stage module and its trainer."""
    import yaml

    setup = parse_stage_config(raw, stage)
    di = setup_distributed(setup.train.device)
    out = Path(setup.train.out_dir)
    if di.main:
        out.mkdir(parents=True, exist_ok=True)
        resolved = {"stage": stage, "model": setup.model.to_dict(), "data": dataclass_to_dict(setup.data),
                    "train": dataclass_to_dict(setup.train), f"stage{stage}": dataclass_to_dict(setup.extra)}
        (out / f"stage{stage}_config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    seed_everything(setup.train.seed)  # model initialisation is reproducible too
    dataset = build_dataset(setup, stage, seed=setup.train.seed)
    module = build_stage(setup, stage, device=di.device)
    trainer = Trainer(module, dataset, collate, setup.train, setup.data, di, f"mola_stage{stage}")
    return PreparedStage(stage, setup, di, dataset, module, trainer)


def run_stage(stage: int, raw: dict, on_step=None) -> Path:
    """Train one stage from a parsed config dict; returns the exported artefact's path."""
    p = prepare_stage(stage, raw)
    p.trainer.run(on_step=on_step)
    result = Path(p.setup.train.out_dir)
    if p.dist.main:
        result = p.export()
        log.info("stage %d finished; exported %s", stage, result)
    if p.dist.world > 1:
        end_distributed_rank(0)  # the stage is exported; never return into DDP's process-group teardown (deadlocks)
    return result
