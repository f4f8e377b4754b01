"""``mace-fast-md STRUCTURE --model M --ensemble nve|nvt-langevin|nvt-bussi|npt ...``: run MD."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from mace_fast.cli import add_calculator_options, calculator_from_args

ENSEMBLES = ("nve", "nvt-langevin", "nvt-bussi", "npt")  # mirrors mace_fast.md.ENSEMBLES, kept import-free


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mace-fast-md", description="Molecular dynamics with a mace_fast model.")
    parser.add_argument("structure", type=Path, help="structure file, any ASE format (the last frame is used)")
    parser.add_argument("--model", type=Path, required=True, help="mace_fast model file")
    parser.add_argument("--ensemble", choices=ENSEMBLES, default="nve")
    parser.add_argument("--temperature", type=float, default=300.0, help="K; initial velocities and thermostat")
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    parser.add_argument("--pressure", type=float, default=0.0, help="npt pressure, GPa")
    parser.add_argument("--traj", type=Path, default=None, help="trajectory: .traj or extxyz")
    parser.add_argument("--interval", type=int, default=10, help="log and trajectory every k steps")
    parser.add_argument("--log", type=Path, default=None, help="thermo log (text)")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of energy/temperature/pressure")
    parser.add_argument("--seed", type=int, default=None, help="seed of the initial velocities and thermostat")
    add_calculator_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.timestep <= 0 or args.steps < 0 or args.interval < 1 or args.temperature < 0:
        parser.error("need --timestep > 0, --steps >= 0, --interval >= 1, --temperature >= 0")

    import ase.io

    from mace_fast.md.dynamics import run_md
    from mace_fast.md.relax import check_structure

    try:
        atoms = ase.io.read(args.structure)
    except Exception as err:  # noqa: BLE001 - any reader error
        print(f"error: cannot read {args.structure}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    try:
        calc = calculator_from_args(args)
        check_structure(atoms, calc.elements.numbers)
        result = run_md(atoms, calc, args.ensemble, args.temperature, args.timestep, args.steps,
                        friction=args.friction, pressure_GPa=args.pressure, traj=args.traj,
                        interval=args.interval, log=args.log, plot=args.plot, seed=args.seed,
                        progress=not args.no_progress)
    except (OSError, ValueError) as err:
        print(f"error: {args.structure}: {err}", file=sys.stderr)
        return 1
    e = result.array("etot_eV")
    t = result.array("temperature_K")
    print(f"{args.steps} steps of {args.timestep} fs ({args.ensemble}): {result.steps_per_second:.1f} steps/s, "
          f"{result.ns_per_day:.3g} ns/day; Etot {e[0]:.6f} -> {e[-1]:.6f} eV, mean T {t.mean():.1f} K")
    return 0


if __name__ == "__main__":
    sys.exit(main())
