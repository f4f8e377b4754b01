"""``mace-fast-train --config run.yaml [--set key=value ...] [--resume | --overwrite]``."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

EPILOG = """examples:
  mace-fast-train --config configs/quickstart.yaml
  mace-fast-train --config run.yaml --set optim.lr=0.005 --set data.batch_size=4
  mace-fast-train --config run.yaml --resume          # continue a killed run
  mace-fast-train --config run.yaml --print-config    # every key with its value, then exit
"""


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mace-fast-train",
        description="Train or fine-tune a MACE potential from a YAML config (see configs/example.yaml).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", required=True, help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. optim.lr=0.005 (repeatable; the value is YAML)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in run.output_dir from its latest checkpoint")
    group.add_argument("--overwrite", action="store_true", help="start over even if run.output_dir holds a run")
    parser.add_argument("--print-config", action="store_true", help="print the validated config and exit")
    args = parser.parse_args(argv)

    import yaml

    from mace_fast.data.errors import InputError
    from mace_fast.train.checkpoint import CheckpointError
    from mace_fast.train.config import ConfigError, load_config
    from mace_fast.train.run import RunError, run_training
    from mace_fast.train.trainer import NonFiniteLossError

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    try:
        run_training(cfg, resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, InputError) as error:
        print(f"data error: {error}" if isinstance(error, InputError) else f"config error: {error}", file=sys.stderr)
        return 2
    except (RunError, CheckpointError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
