"""Command-line entry points: ``mola-train-stage1``, ``mola-train-stage2``, ``mola-train-stage3``.

    mola-train-stage3 --config config/mola/stage3.yaml --set train.steps=2000 --set data.root=/data/cube
    torchrun --nproc_per_node 8 -m motus_core.models.mola.train.cli 3 --config config/mola/stage3.yaml

Relative paths inside a config file are taken as written (relative to the working directory), except
``model: <file>`` which is read relative to the config file.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from ..data import MolaDataset
from .common import DistInfo, StageModule, Trainer, dataclass_to_dict, load_yaml_config, seed_everything, setup_distributed
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
    import torch.distributed as dist

    p = prepare_stage(stage, raw)
    p.trainer.run(on_step=on_step)
    result = Path(p.setup.train.out_dir)
    if p.dist.main:
        result = p.export()
        log.info("stage %d finished; exported %s", stage, result)
    if p.dist.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def main(argv: list[str] | None = None, stage: int | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train one stage of MoLA on a Motus-layout dataset.")
    if stage is None:
        parser.add_argument("stage", type=int, choices=(1, 2, 3))
    parser.add_argument("--config", required=True, help="YAML config (config/mola/stageN.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=100 (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = stage if stage is not None else args.stage
    raw = load_yaml_config(args.config, args.set)
    if raw.get("stage", s) != s:
        parser.error(f"{args.config} is a stage-{raw['stage']} config, not stage {s}")
    run_stage(s, raw)
    return 0


def stage1_main() -> int:
    return main(sys.argv[1:], stage=1)


def stage2_main() -> int:
    return main(sys.argv[1:], stage=2)


def stage3_main() -> int:
    return main(sys.argv[1:], stage=3)


if __name__ == "__main__":
    sys.exit(main())
