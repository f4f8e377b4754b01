"""``mace-fast-convert IN.model -o OUT.pt``: turn a mace-torch model into a mace_fast model file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mace-fast-convert",
        description="Convert a mace-torch model (a pickled module) into a mace_fast model file.",
    )
    parser.add_argument("input", type=Path, help="mace-torch model file (e.g. MACE-MP-0 medium.model)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="mace_fast model file to write")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="dtype of the written weights (default: the source's)")
    args = parser.parse_args(argv)

    from mace_fast.interop.mace_torch import ConversionError, convert_mace_model, load_mace_torch_model

    if not args.input.is_file():
        parser.error(f"{args.input} does not exist")
    print(
        f"warning: {args.input} is a pickled Python object; loading it runs code from the file. "
        "Only convert models from sources you trust.",
        file=sys.stderr,
    )
    try:
        model = convert_mace_model(load_mace_torch_model(args.input))
    except (ConversionError, ImportError) as err:
        print(f"error: cannot convert {args.input}: {err}", file=sys.stderr)
        return 1
    if args.dtype:
        import torch

        model = model.to(getattr(torch, args.dtype))
    model.save(args.output, metadata={"converted_from": args.input.name})
    cfg = model.config
    print(
        f"wrote {args.output}: {cfg.num_interactions} interactions, hidden {cfg.hidden_irreps}, "
        f"{len(cfg.atomic_numbers)} elements, r_max {cfg.r_max} Å"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
