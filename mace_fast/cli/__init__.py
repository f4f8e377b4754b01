"""Command-line tools. Options the calculator-driven tools (md, relax) share live here."""

from __future__ import annotations

import argparse


def add_calculator_options(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype`` and ``--radial-table``: how the model is evaluated."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--radial-table", type=int, default=0, metavar="INTERVALS",
                        help="float32: radial MLPs from tables of this many intervals, e.g. 2048 "
                             "(faster; error below the float32 MLP's own); default 0: off")


def calculator_from_args(args: argparse.Namespace):
    """The :class:`~mace_fast.calculator.MaceFastCalculator` of ``args.model`` and the options
    of :func:`add_calculator_options`."""
    from mace_fast.calculator import MaceFastCalculator

    return MaceFastCalculator(args.model, device=args.device, default_dtype=args.dtype,
                              radial_table=args.radial_table)
