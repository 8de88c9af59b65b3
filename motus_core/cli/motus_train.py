"""``motus-train``: fine-tune Motus (Stage 3) on Motus-layout demonstrations, or train a reduced model from scratch.

    motus-train --config config/motus/reduced_sim.yaml data.path=/data/sim output_dir=runs/sim
    torchrun --nproc_per_node 8 -m motus_core.cli.motus_train --config config/motus/finetune_ac_one.yaml ...

Overrides are ``dotted.key=value`` (YAML values); ``--list-params`` prints every parameter with its
default and meaning. Re-running the same command resumes from ``output_dir/latest``.
Exit codes: 0 finished, 130 interrupted (checkpoint saved), 3 non-finite loss, 2 bad config/data.
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="motus-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--config", help="recipe YAML (config/motus/<recipe>.yaml); default: the official Stage-3 defaults")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. train.steps=100")
    p.add_argument("--list-params", action="store_true", help="print every parameter (key = default  # meaning) and exit")
    p.add_argument("--export-official", metavar="OUT", help="write a policy/checkpoint dir's weights in the official DeepSpeed "
                   "layout (OUT/mp_rank_00_model_states.pt) and exit; the dir is --from (default output_dir/final)")
    p.add_argument("--from", dest="source", help="checkpoint directory for --export-official")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from motus_core.models.motus.train.config import TrainConfigError, describe, load_config

    if args.list_params:
        print("\n".join(describe()))
        return 0
    try:
        cfg = load_config(args.config, args.overrides)
    except TrainConfigError as exc:
        print(f"motus-train: {exc}", file=sys.stderr)
        return 2
    if args.export_official:
        from pathlib import Path

        from motus_core.models.motus.train.export import export_official

        src = Path(args.source) if args.source else Path(cfg.output_dir) / "final"
        out = export_official(src, args.export_official)
        print(f"wrote {out}")
        return 0
    from motus_core.data.motus_layout import DatasetError
    from motus_core.models.motus.convert import CheckpointError
    from motus_core.models.motus.train.trainer import train

    try:
        return train(cfg)
    except (TrainConfigError, DatasetError, CheckpointError) as exc:
        logging.getLogger("motus_train").error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
