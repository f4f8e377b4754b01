#!/usr/bin/env python
"""Label a small, varied training set with a reference potential shipped with ASE (EMT).

Structures of fcc metals (pure or random alloys): strained and rattled bulk cells,
vacancies, surfaces (slabs), molecular-dynamics snapshots at several temperatures, small
clusters (optional, off by default), and one isolated atom per element (for E0s). Labels
are written as ``REF_energy`` (eV), ``REF_forces`` (eV/Å) and ``REF_stress`` (eV/Å^3, ASE
sign, Voigt; only for fully periodic cells) with a ``config_type``. Everything is drawn
from one seed, so the same command writes the same files (with the same ASE version).

    python scripts/make_dataset.py --elements Cu --out configs/data --seed 0

writes ``<out>/<name>_train.xyz`` and ``<out>/<name>_test.xyz`` (test frames come from
independent draws of the same recipe).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import ase
import ase.io
import numpy as np
from ase.build import bulk, fcc100, fcc110, fcc111
from ase.calculators.emt import EMT, parameters as EMT_PARAMETERS
from ase.cluster import Icosahedron
from ase.data import atomic_numbers, reference_states
from ase.md.langevin import Langevin
import ase.md.velocitydistribution as velocities
from ase import units

FCC_METALS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")


def lattice_constant(elements: Sequence[str]) -> float:
    """Vegard's-law fcc lattice constant of an equal mix (ASE reference states)."""
    return float(np.mean([reference_states[atomic_numbers[e]]["a"] for e in elements]))


def decorate(atoms: ase.Atoms, elements: Sequence[str], rng: np.random.Generator) -> ase.Atoms:
    """Random occupation of the sites by ``elements`` (a random alloy; pure for one element)."""
    atoms.set_chemical_symbols(list(rng.choice(list(elements), size=len(atoms))))
    return atoms


def rattle(atoms: ase.Atoms, sigma: float, rng: np.random.Generator) -> ase.Atoms:
    atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
    return atoms


def strain(atoms: ase.Atoms, isotropic: float, shear: float, rng: np.random.Generator) -> ase.Atoms:
    """Scale the cell by ``1 + U(-iso, iso)`` and add a random symmetric shear of size ``shear``."""
    eps = np.eye(3) * (1.0 + rng.uniform(-isotropic, isotropic))
    off = rng.uniform(-shear, shear, (3, 3))
    eps += 0.5 * (off + off.T) * (1.0 - np.eye(3))
    atoms.set_cell(atoms.cell.array @ eps, scale_atoms=True)
    return atoms


def make_bulk(elements, rng) -> ase.Atoms:
    a = lattice_constant(elements)
    reps = [(1, 1, 1), (2, 1, 1), (2, 2, 1)][rng.integers(3)]
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(reps)
    decorate(atoms, elements, rng)
    strain(atoms, 0.05, 0.03, rng)
    return rattle(atoms, rng.uniform(0.02, 0.15), rng)


def make_vacancy(elements, rng) -> ase.Atoms:
    a = lattice_constant(elements)
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 1))
    decorate(atoms, elements, rng)
    del atoms[int(rng.integers(len(atoms)))]
    strain(atoms, 0.02, 0.01, rng)
    return rattle(atoms, rng.uniform(0.02, 0.1), rng)


def make_surface(elements, rng) -> ase.Atoms:
    a = lattice_constant(elements)
    build = [fcc111, fcc100, fcc110][rng.integers(3)]
    atoms = build("Cu", size=(2, 2, 3), a=a, vacuum=4.0, periodic=False)
    atoms.pbc = (True, True, False)
    decorate(atoms, elements, rng)
    return rattle(atoms, rng.uniform(0.02, 0.12), rng)


def make_cluster(elements, rng) -> ase.Atoms:
    a = lattice_constant(elements)
    atoms = Icosahedron("Cu", noshells=2, latticeconstant=a * rng.uniform(0.96, 1.04))
    atoms.center(vacuum=5.0)
    atoms.pbc = False
    decorate(atoms, elements, rng)
    return rattle(atoms, rng.uniform(0.03, 0.15), rng)


def md_snapshots(elements, rng, temperature: float, count: int, interval: int = 10) -> List[ase.Atoms]:
    """Langevin MD in a 16-atom cell; ``count`` snapshots ``interval`` steps apart."""
    a = lattice_constant(elements) * (1.0 + 1e-5 * temperature)  # rough thermal expansion
    atoms = decorate(bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 1)), elements, rng)
    atoms.calc = EMT()
    # thermalize_momenta replaces MaxwellBoltzmannDistribution in newer ASE; same arguments.
    thermalize = getattr(velocities, "thermalize_momenta", None) or velocities.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 4.0 * units.fs, temperature_K=temperature, friction=0.02, rng=rng, fixcm=False)
    dyn.run(40)  # equilibrate
    frames = []
    for _ in range(count):
        dyn.run(interval)
        frames.append(atoms.copy())
    return frames


def label(atoms: ase.Atoms, config_type: str) -> ase.Atoms:
    """Attach EMT energy/forces (and stress for fully periodic cells) as REF_* labels."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=True) if atoms.pbc.all() else None
    atoms.calc = None
    atoms.info = {"REF_energy": float(energy), "config_type": config_type}
    if stress is not None:
        atoms.info["REF_stress"] = np.asarray(stress, dtype=float)
    atoms.arrays["REF_forces"] = np.asarray(forces, dtype=float)
    atoms.arrays.pop("momenta", None)
    return atoms


RECIPES: Dict[str, Callable] = {"bulk": make_bulk, "vacancy": make_vacancy, "surface": make_surface, "cluster": make_cluster}


def generate(elements: Sequence[str], counts: Dict[str, int], temperatures: Sequence[float], md_count: int,
             rng: np.random.Generator, isolated: bool) -> List[ase.Atoms]:
    frames = []
    for kind, n in counts.items():
        frames += [label(RECIPES[kind](elements, rng), kind) for _ in range(n)]
    for t in temperatures:
        frames += [label(f, f"md_{int(t)}K") for f in md_snapshots(elements, rng, t, md_count)]
    if isolated:
        for e in elements:
            frames.append(label(ase.Atoms(e, positions=[[0.0, 0.0, 0.0]], pbc=False), "IsolatedAtom"))
    return frames


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", default="Cu", help=f"comma-separated, from {', '.join(FCC_METALS)}")
    parser.add_argument("--out", type=Path, default=Path("configs/data"))
    parser.add_argument("--name", default=None, help="file name stem (default: the elements, e.g. 'cu')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bulk", type=int, default=80)
    parser.add_argument("--vacancy", type=int, default=30)
    parser.add_argument("--surface", type=int, default=30)
    parser.add_argument("--cluster", type=int, default=0, help="icosahedral clusters (off in the bundled set)")
    parser.add_argument("--temperatures", default="300,800,1400", help="MD temperatures in K")
    parser.add_argument("--md-snapshots", type=int, default=25, help="snapshots per temperature")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="size of the test set relative to train")
    args = parser.parse_args(argv)

    elements = [e.strip() for e in args.elements.split(",") if e.strip()]
    bad = [e for e in elements if e not in FCC_METALS or e not in EMT_PARAMETERS]
    if bad or not elements:
        parser.error(f"--elements: {bad or elements} not supported; choose from {', '.join(FCC_METALS)}")
    temperatures = [float(t) for t in args.temperatures.split(",") if t.strip()]
    counts = {"bulk": args.bulk, "vacancy": args.vacancy, "surface": args.surface, "cluster": args.cluster}
    stem = args.name or "".join(e.lower() for e in elements)
    args.out.mkdir(parents=True, exist_ok=True)
    # Independent streams for train and test, both derived from the one seed.
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(2))
    train = generate(elements, counts, temperatures, args.md_snapshots, train_rng, isolated=True)
    f = args.test_fraction
    test_counts = {k: max(1, int(round(f * n))) if n else 0 for k, n in counts.items()}
    test = generate(elements, test_counts, temperatures, max(1, int(round(f * args.md_snapshots))), test_rng,
                    isolated=False)
    for split, frames in (("train", train), ("test", test)):
        path = args.out / f"{stem}_{split}.xyz"
        ase.io.write(path, frames, format="extxyz")
        atoms = sum(len(a) for a in frames)
        forces = np.concatenate([a.arrays["REF_forces"] for a in frames])
        print(f"wrote {path}: {len(frames)} frames, {atoms} atoms, RMS force {np.sqrt(np.mean(forces**2)):.3f} eV/Å")
    return 0


if __name__ == "__main__":
    sys.exit(main())
