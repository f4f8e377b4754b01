"""Relax structures (positions, optionally the cell) with an ASE optimizer.

Every structure is relaxed independently; one that fails (unknown element, overlapping
atoms, a calculator error) is recorded in its result and the others still run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.neighborlist import neighbor_list
from ase.optimize import BFGS, FIRE, LBFGS

from ..data.errors import InputError

__all__ = ["OPTIMIZERS", "RelaxResult", "check_structure", "relax_structures"]

OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}

#: Atoms closer than this (Å) are taken as overlapping: no physical structure has them.
MIN_DISTANCE = 0.3


@dataclass
class RelaxResult:
    """Outcome of one relaxation; ``atoms`` carries a SinglePointCalculator when it succeeded."""

    index: int
    source: str
    atoms: Optional[Atoms] = None
    steps: int = 0
    fmax: float = float("nan")
    converged: bool = False
    energy: float = float("nan")
    error: Optional[str] = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def check_structure(atoms: Atoms, elements: Sequence[int], min_distance: float = MIN_DISTANCE) -> None:
    """Raise :class:`InputError` for elements outside ``elements`` or atoms closer than ``min_distance``."""
    unknown = sorted(set(atoms.get_chemical_symbols()) - {_sym(z) for z in elements})
    if unknown:
        known = ", ".join(_sym(z) for z in sorted(elements))
        raise InputError(f"element(s) {', '.join(unknown)} not in the model [{known}]")
    if len(atoms) > 1:
        i, j, d = neighbor_list("ijd", atoms, min_distance)
        if len(d):
            k = int(np.argmin(d))
            raise InputError(f"atoms {i[k]} and {j[k]} overlap ({d[k]:.3f} Å < {min_distance} Å)")


def _sym(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[int(z)]


def _max_force(obj) -> float:
    # For a cell filter this includes the (virial-scaled) cell "forces", i.e. what fmax tests.
    f = obj.get_forces()
    return float(np.sqrt((f**2).sum(axis=1).max())) if len(f) else 0.0


def relax_one(atoms: Atoms, calculator, optimizer: str = "FIRE", fmax: float = 0.01, steps: int = 500,
              cell: bool = False) -> RelaxResult:
    """Relax a copy of ``atoms``; raises on failure (see :func:`relax_structures`)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if cell and not atoms.pbc.all():
        raise InputError("--cell needs a structure periodic in all three directions")
    atoms = atoms.copy()
    atoms.calc = calculator
    target = FrechetCellFilter(atoms) if cell else atoms
    opt = OPTIMIZERS[optimizer](target, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    result = RelaxResult(index=-1, source="", steps=int(opt.nsteps), fmax=_max_force(target),
                         converged=converged, energy=float(atoms.get_potential_energy()))
    # Freeze the results on the atoms so writers see them without the live calculator.
    props = {"energy": result.energy, "forces": atoms.get_forces()}
    if atoms.pbc.any() and abs(atoms.cell.volume) > 1e-12:
        props["stress"] = atoms.get_stress()
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, **props)
    result.atoms = out
    return result


def relax_structures(atoms_list: Iterable[Atoms], calculator, optimizer: str = "FIRE", fmax: float = 0.01,
                     steps: int = 500, cell: bool = False, sources: Optional[Sequence[str]] = None,
                     progress: Optional[Callable[[RelaxResult], None]] = None) -> List[RelaxResult]:
    """Relax each structure; a failure becomes a result with ``error`` set, not an exception.

    ``sources`` names each structure (e.g. ``"in.xyz:3"``) for the report; ``progress`` is
    called after each structure (the CLI advances its progress bar with it).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    elements = getattr(getattr(calculator, "elements", None), "numbers", None)
    results = []
    for index, atoms in enumerate(atoms_list):
        source = sources[index] if sources is not None else f"structure {index}"
        try:
            if elements is not None:
                check_structure(atoms, elements)
            result = relax_one(atoms, calculator, optimizer, fmax, steps, cell)
        except Exception as err:  # noqa: BLE001 - one bad structure must not stop the batch
            result = RelaxResult(index=index, source=source, error=f"{type(err).__name__}: {err}")
        result.index, result.source = index, source
        if result.ok and not np.isfinite(result.energy):
            result.error = "energy is not finite"
        results.append(result)
        if progress is not None:
            progress(result)
    return results
