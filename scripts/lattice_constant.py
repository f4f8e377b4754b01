#!/usr/bin/env python
"""Lattice constant of fcc copper from a mace_fast model, against EMT (the labelling potential).

Two independent routes, each run for the model and for ase's EMT calculator (which labelled
``configs/data``):

- **relax**: a conventional fcc cell (``--size``\\ ³ cubic cells, 32 atoms by default) is
  strained (random isotropic scale ± ``--strain`` and a random symmetric shear of size
  ``--shear``) and rattled (Gaussian, ``--rattle`` Å), then relaxed, positions and cell, with
  ase ``FrechetCellFilter`` + FIRE (what ``mace-fast-relax --cell`` and
  ``mace_fast.md.relax.relax_structures(cell=True)`` do) to ``--fmax`` (0.01 eV/Å; for the
  cell, the virial per atom). a0 = (4 V / N)^(1/3) of the relaxed cell; the spread of
  the relaxed cell's edge lengths and the deviation of its angles from 90° show that it went
  back to cubic.
- **eos**: energies of the unrattled primitive cell (1 atom) at ``--points`` volumes, lattice
  constant within ± ``--span`` of a first guess, fitted with ``ase.eos.EquationOfState``
  (Birch-Murnaghan); a second pass re-centres the grid on the first fit. a0 = (4 V0)^(1/3).

Usage::

    python scripts/lattice_constant.py --model runs/quickstart/model.pt --json runs/lattice.json

Without ``--model`` only EMT is measured (a check of the procedure). The model runs in
float64 by default (``--dtype``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# The cell filter calls scipy's expm/logm on 3x3 matrices ~10 times per step; with OpenBLAS
# threads on a busy machine each call costs ~10 ms of thread hand-off (measured: a 55-step
# EMT relaxation took 20-90 s instead of 2-5 s). Effective only before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from typing import Dict, Optional

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.eos import EquationOfState

A_GUESS = 3.61  # Å, ase's reference fcc Cu lattice constant: only the start of both routes


def strained_rattled_fcc(a: float, size: int, strain: float, shear: float, rattle: float,
                         rng: np.random.Generator, symbol: str = "Cu") -> Atoms:
    """``size``³ conventional fcc cells at ``a``, randomly strained and rattled."""
    atoms = bulk(symbol, "fcc", a=a, cubic=True).repeat((size, size, size))
    eps = np.eye(3) * (1.0 + rng.uniform(-strain, strain))
    off = rng.uniform(-shear, shear, (3, 3))
    eps += 0.5 * (off + off.T) * (1.0 - np.eye(3))
    atoms.set_cell(atoms.cell.array @ eps, scale_atoms=True)
    atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
    return atoms


def lattice_constant_from_volume(atoms: Atoms) -> float:
    """fcc a0 from the volume per atom (4 atoms per conventional cell)."""
    return float((4.0 * abs(atoms.cell.volume) / len(atoms)) ** (1.0 / 3.0))


def relax_lattice_constant(calc, rng: np.random.Generator, a_guess: float = A_GUESS, size: int = 2,
                           strain: float = 0.03, shear: float = 0.02, rattle: float = 0.05,
                           fmax: float = 0.01, steps: int = 2000, optimizer: str = "FIRE") -> Dict:
    """Relax a strained, rattled fcc cell (positions + cell); a0 and how the relaxation went.

    The same procedure as :func:`mace_fast.md.relax.relax_one` with ``cell=True`` (and
    ``mace-fast-relax --cell``): ase ``FrechetCellFilter`` and an ase optimizer run to
    ``fmax``, where the cell's "forces" are the virial per atom. It is written out with ase
    only so that checking the procedure with EMT does not need torch.
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE, LBFGS

    start = strained_rattled_fcc(a_guess, size, strain, shear, rattle, rng)
    atoms = start.copy()
    atoms.calc = calc
    target = FrechetCellFilter(atoms)
    opt = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}[optimizer](target, logfile=None)
    t0 = time.perf_counter()
    converged = bool(opt.run(fmax=fmax, steps=steps))
    seconds = time.perf_counter() - t0
    f = target.get_forces()  # atoms and cell: what fmax tests
    lengths = atoms.cell.lengths() / size
    angles = atoms.cell.angles()
    return {
        "a0": lattice_constant_from_volume(atoms),
        "a0_start": lattice_constant_from_volume(start),
        "converged": converged,
        "steps": int(opt.nsteps),
        "fmax_final": float(np.sqrt((f**2).sum(axis=1).max())),
        "fmax_target": fmax,
        "natoms": len(atoms),
        "edge_spread": float(lengths.max() - lengths.min()),  # Å, 0 for a cubic cell
        "angle_dev_deg": float(np.abs(angles - 90.0).max()),
        "max_stress_GPa": float(np.abs(atoms.get_stress()).max() / units.GPa),
        "energy_per_atom": float(atoms.get_potential_energy() / len(atoms)),
        "seconds": seconds,
    }


def _eos_pass(calc, a_center: float, span: float, points: int, eos: str, symbol: str):
    volumes, energies = [], []
    for a in a_center * np.linspace(1.0 - span, 1.0 + span, points):
        atoms = bulk(symbol, "fcc", a=float(a))  # primitive cell, 1 atom
        atoms.calc = calc
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    fit = EquationOfState(volumes, energies, eos=eos)
    v0, e0, b = fit.fit()
    return float(v0), float(e0), float(b), volumes, energies


def eos_lattice_constant(calc, a_guess: float = A_GUESS, span: float = 0.03, points: int = 11,
                         eos: str = "birchmurnaghan", symbol: str = "Cu") -> Dict:
    """E(V) fit of the unrattled primitive fcc cell: a0, E0 and bulk modulus.

    Two passes: ± ``span`` around ``a_guess``, then ± ``span``/2 around the first a0, so the
    minimum sits in the middle of the grid whatever the guess.
    """
    t0 = time.perf_counter()
    v0, _, _, _, _ = _eos_pass(calc, a_guess, span, points, eos, symbol)
    a1 = (4.0 * v0) ** (1.0 / 3.0)
    v0, e0, b, volumes, energies = _eos_pass(calc, a1, span / 2, points, eos, symbol)
    a0 = (4.0 * v0) ** (1.0 / 3.0)
    if not (min(volumes) < v0 < max(volumes)):
        raise RuntimeError(f"E(V) minimum {v0:.3f} Å^3 outside the sampled volumes: no fcc minimum near {a_guess} Å")
    return {"a0": float(a0), "e0_per_atom": e0, "bulk_modulus_GPa": b / units.GPa,
            "volumes": [float(v) for v in volumes], "energies": [float(e) for e in energies],
            "span": span / 2, "points": points, "eos": eos, "seconds": time.perf_counter() - t0}


def measure(calc, rng: np.random.Generator, **relax_kwargs) -> Dict:
    """Both routes for one calculator."""
    return {"relax": relax_lattice_constant(calc, rng, **relax_kwargs), "eos": eos_lattice_constant(calc)}


def rel_diff_percent(a: float, ref: float) -> float:
    return 100.0 * (a - ref) / ref


def format_table(results: Dict[str, Dict]) -> str:
    ref = results.get("EMT")
    head = ("| calculator | route | a0 (Å) | vs EMT same route (%) | relax: converged to fmax (steps, final fmax eV/Å) "
            "| cell after relax: edge spread (Å), max angle dev (°) | B (GPa) |")
    lines = [head, "|" + "---|" * 7]
    for name, r in results.items():
        rl, eo = r["relax"], r["eos"]
        d_rl = f"{rel_diff_percent(rl['a0'], ref['relax']['a0']):+.3f}" if ref and name != "EMT" else ""
        d_eo = f"{rel_diff_percent(eo['a0'], ref['eos']['a0']):+.3f}" if ref and name != "EMT" else ""
        conv = f"{'yes' if rl['converged'] else 'NO'} ({rl['steps']} steps, {rl['fmax_final']:.4f})"
        lines.append(f"| {name} | relax ({rl['natoms']} atoms) | {rl['a0']:.4f} | {d_rl} | {conv} "
                     f"| {rl['edge_spread']:.1e}, {rl['angle_dev_deg']:.1e} | |")
        lines.append(f"| {name} | E(V) fit | {eo['a0']:.4f} | {d_eo} | | | {eo['bulk_modulus_GPa']:.1f} |")
    for name, r in results.items():
        lines.append(f"\n{name}: relax vs E(V): {rel_diff_percent(r['relax']['a0'], r['eos']['a0']):+.4f} %")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="mace_fast model file (without it only EMT is measured)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--size", type=int, default=2, help="conventional cells per edge of the relaxed cell")
    p.add_argument("--strain", type=float, default=0.03, help="isotropic strain drawn from ±this")
    p.add_argument("--shear", type=float, default=0.02, help="shear components drawn from ±this")
    p.add_argument("--rattle", type=float, default=0.05, help="Å, Gaussian displacement of every atom")
    p.add_argument("--fmax", type=float, default=0.01, help="eV/Å (cell: virial per atom, FrechetCellFilter)")
    p.add_argument("--steps", type=int, default=2000, help="most optimizer steps")
    p.add_argument("--seed", type=int, default=0, help="strain/rattle draw (the same start for all calculators)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    from ase.calculators.emt import EMT

    calcs = {"EMT": EMT()}
    if args.model:
        import torch

        from mace_fast import MaceFastCalculator

        torch.set_num_threads(args.threads)
        calcs["mace_fast"] = MaceFastCalculator(args.model, device=args.device, default_dtype=args.dtype)
    kw = dict(size=args.size, strain=args.strain, shear=args.shear, rattle=args.rattle, fmax=args.fmax,
              steps=args.steps)
    results = {}
    for name, calc in calcs.items():
        results[name] = measure(calc, np.random.default_rng(args.seed), **kw)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0 if all(r["relax"]["converged"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
