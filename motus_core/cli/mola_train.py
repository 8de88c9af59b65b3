"""``mola-train-stage1``, ``mola-train-stage2``, ``mola-train-stage3``: train one stage of MoLA.

    mola-train-stage3 --config config/mola/stage3.yaml --set train.steps=2000 --set data.root=/data/cube
    torchrun --nproc_per_node 8 -m motus_core.cli.mola_train 3 --config config/mola/stage3.yaml

Relative paths inside a config file are taken as written (relative to the working directory), except
``model: <file>`` which is read relative to the config file. The library is
:mod:`motus_core.models.mola.train` (``run.run_stage``).
"""
from __future__ import annotations

import argparse
import logging
import sys

from motus_core.models.mola.train.common import load_yaml_config
from motus_core.models.mola.train.run import run_stage


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
