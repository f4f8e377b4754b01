"""``mace-fast-relax STRUCTURES... --model M``: relax structures and write them to extxyz.

With FIRE (the default) the structures are relaxed together, many per model batch
(:func:`mace_fast.md.batch_relax.relax_batch`; each structure follows the trajectory ASE's
FIRE would give it alone). ``--one-by-one`` relaxes them one after another with ASE's FIRE
instead; BFGS and LBFGS always run one by one through ASE.

Exit code 1 if any structure could not be read or relaxed (the others are still written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from mace_fast.cli import add_calculator_options, calculator_from_args


def read_all(paths: List[Path]) -> Tuple[list, list, list]:
    """All frames of every file: (atoms list, their sources, [(source, error)] for unreadable files)."""
    import ase.io

    atoms_list, sources, failures = [], [], []
    for path in paths:
        try:
            frames = ase.io.read(path, index=":")
        except Exception as err:  # noqa: BLE001 - any reader error means "cannot read this file"
            failures.append((f"{path} (file)", f"cannot read: {type(err).__name__}: {err}"))
            continue
        if not isinstance(frames, list):
            frames = [frames]
        for frame, atoms in enumerate(frames):
            atoms_list.append(atoms)
            sources.append(f"{path}, frame {frame}")
    return atoms_list, sources, failures


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mace-fast-relax", description="Relax structures with a mace_fast model.")
    parser.add_argument("structures", nargs="+", type=Path, help="structure files, any ASE format (all frames)")
    parser.add_argument("--model", type=Path, required=True, help="mace_fast model file")
    parser.add_argument("-o", "--output", type=Path, default=Path("relaxed.extxyz"), help="extxyz to write")
    parser.add_argument("--optimizer", choices=["FIRE", "BFGS", "LBFGS"], default="FIRE")
    parser.add_argument("--fmax", type=float, default=0.01, help="force tolerance, eV/Å")
    parser.add_argument("--steps", type=int, default=500, help="maximum optimizer steps per structure")
    parser.add_argument("--cell", action="store_true", help="relax the cell too (FrechetCellFilter)")
    parser.add_argument("--one-by-one", action="store_true",
                        help="FIRE: relax structures one after another with ASE instead of batched")
    parser.add_argument("--max-atoms-per-batch", type=int, default=4096,
                        help="batched FIRE: atoms per model batch at most (default 4096)")
    add_calculator_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.fmax <= 0 or args.steps < 0:
        parser.error("--fmax must be > 0 and --steps >= 0")
    if args.max_atoms_per_batch < 1:
        parser.error("--max-atoms-per-batch must be >= 1")
    batched = args.optimizer == "FIRE" and not args.one_by_one

    import ase.io
    from tqdm import tqdm

    from mace_fast.md.batch_relax import relax_batch
    from mace_fast.md.relax import relax_structures

    try:
        calc = calculator_from_args(args)
    except (OSError, ValueError) as err:
        print(f"error: cannot load model {args.model}: {err}", file=sys.stderr)
        return 1

    atoms_list, sources, read_failures = read_all(args.structures)
    with tqdm(total=len(atoms_list), desc="relax", unit="struct", disable=args.no_progress, file=sys.stderr) as bar:
        if batched:
            results = relax_batch(atoms_list, calc.model, args.fmax, args.steps, args.cell,
                                  max_atoms_per_batch=args.max_atoms_per_batch, sources=sources,
                                  progress=lambda r: bar.update(1))
        else:
            results = relax_structures(atoms_list, calc, args.optimizer, args.fmax, args.steps, args.cell,
                                       sources=sources, progress=lambda r: bar.update(1))

    done = [r.atoms for r in results if r.ok]
    if done:
        ase.io.write(args.output, done, format="extxyz")

    print(f"{'idx':>4}  {'source':<30} {'formula':<12} {'steps':>5} {'fmax':>10} {'conv':>5} {'energy (eV)':>16}")
    for r in results:
        if r.ok:
            print(f"{r.index:>4}  {r.source:<30} {r.atoms.get_chemical_formula():<12} {r.steps:>5} "
                  f"{r.fmax:>10.4g} {str(r.converged):>5} {r.energy:>16.6f}")
        else:
            print(f"{r.index:>4}  {r.source:<30} FAILED: {r.error}")
    for source, error in read_failures:
        print(f"{'-':>4}  {source:<30} FAILED: {error}")
    failed = [r for r in results if not r.ok]
    n_conv = sum(r.converged for r in results if r.ok)
    print(f"{len(done)} relaxed ({n_conv} converged), {len(failed) + len(read_failures)} failed; "
          + (f"wrote {args.output}" if done else "nothing written"))
    for r in failed:
        print(f"error: {r.source}: {r.error}", file=sys.stderr)
    for source, error in read_failures:
        print(f"error: {source}: {error}", file=sys.stderr)
    return 1 if failed or read_failures else 0


if __name__ == "__main__":
    sys.exit(main())
