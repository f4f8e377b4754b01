"""Statistics of the training set that fix the model's normalisation.

* E0s (eV per element): a least-squares fit of total energies on composition, the
  energies of isolated-atom frames, given values, or a foundation model's.
* ``avg_num_neighbors``: edges per atom over the training graphs (normalises the
  message sum).
* ``scale``/``shift`` of the per-atom interaction energy: RMS of the force components or
  standard deviation of the per-atom interaction energy; the shift is its mean (or 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import ase.data
import numpy as np

from ..data.configuration import Configuration
from ..data.errors import InputError
from ..data.graph import ElementTable

__all__ = [
    "Statistics", "fit_e0s", "isolated_e0s", "resolve_e0s", "average_num_neighbors", "scale_and_shift",
]  # fmt: skip

log = logging.getLogger("mace_fast.train")


@dataclass
class Statistics:
    e0s: List[float]  # [S] eV, in element-table order
    avg_num_neighbors: float
    scale: float
    shift: float


def _composition(configs: Sequence[Configuration], elements: ElementTable) -> np.ndarray:
    """[M, S] counts of each element in each configuration."""
    counts = np.zeros((len(configs), len(elements)))
    for row, c in enumerate(configs):
        np.add.at(counts[row], elements.index(c.atomic_numbers), 1.0)
    return counts


def fit_e0s(configs: Sequence[Configuration], elements: ElementTable) -> np.ndarray:
    """Least-squares E0s ``[S]``: minimise ``sum_m (E_m - sum_s n_ms E0_s)^2`` over frames with energy.

    Elements whose E0 the data cannot separate (e.g. always in the same ratio) get the
    minimum-norm solution, with a warning.
    """
    with_energy = [c for c in configs if c.energy is not None]
    if not with_energy:
        raise InputError("data.e0s='fit': no training frame has an energy")
    counts = _composition(with_energy, elements)
    energies = np.array([c.energy for c in with_energy])
    e0s, _, rank, _ = np.linalg.lstsq(counts, energies, rcond=None)
    if rank < len(elements):
        log.warning(
            "E0 fit: the compositions determine only %d of %d E0s (elements %s); using the minimum-norm "
            "solution. Add isolated-atom frames or give data.e0s per element.", rank, len(elements), elements.symbols,
        )  # fmt: skip
    return e0s


def isolated_e0s(isolated: Sequence[Configuration], elements: ElementTable) -> Dict[int, float]:
    """E0 per atomic number from single-atom frames (the last frame wins for duplicates)."""
    found = {}
    for c in isolated:
        if len(c.atomic_numbers) != 1:
            raise InputError(f"{c.where}: an isolated-atom frame must hold one atom, it holds {len(c.atomic_numbers)}")
        if c.energy is None:
            raise InputError(f"{c.where}: the isolated-atom frame has no energy")
        found[int(c.atomic_numbers[0])] = float(c.energy)
    return found


def _symbol(z: int) -> str:
    return ase.data.chemical_symbols[z]


def resolve_e0s(
    spec: Union[str, Dict[str, float]],
    train: Sequence[Configuration],
    isolated: Sequence[Configuration],
    elements: ElementTable,
    foundation: Optional[Dict[int, float]] = None,
) -> np.ndarray:
    """E0s ``[S]`` for ``elements`` from ``spec``: "fit", "isolated", "foundation" or ``{symbol: eV}``.

    "foundation" keeps the foundation model's E0s and fits only the elements it lacks (on
    the energies left after subtracting the known E0s). A dict may omit elements the
    foundation model knows.
    """
    numbers = elements.numbers
    if spec == "fit":
        return fit_e0s(train, elements)
    if spec == "isolated":
        found = isolated_e0s(isolated, elements)
        missing = [_symbol(z) for z in numbers if z not in found]
        if missing:
            raise InputError(
                f"data.e0s='isolated': no isolated-atom frame for {', '.join(missing)} "
                f"(frames with config_type IsolatedAtom, or single non-periodic atoms)"
            )
        return np.array([found[z] for z in numbers])
    known: Dict[int, float] = dict(foundation or {})
    if isinstance(spec, dict):
        known.update({ase.data.atomic_numbers[s]: float(v) for s, v in spec.items()})
        missing = [_symbol(z) for z in numbers if z not in known]
        if missing:
            raise InputError(f"data.e0s: no E0 given for {', '.join(missing)}")
        return np.array([known[z] for z in numbers])
    if spec != "foundation":  # pragma: no cover - the config schema allows nothing else
        raise ValueError(f"unknown E0 source {spec!r}")
    new = [z for z in numbers if z not in known]
    e0s = np.array([known.get(z, 0.0) for z in numbers])
    if new:
        table = ElementTable(new)
        residual = []
        for c in train:
            if c.energy is not None and any(int(z) in new for z in c.atomic_numbers):
                residual.append((c, c.energy - sum(known.get(int(z), 0.0) for z in c.atomic_numbers)))
        if not residual:
            raise InputError(f"data.e0s='foundation': no training energies to fit the new elements {table.symbols}")
        counts = np.zeros((len(residual), len(new)))
        for row, (c, _) in enumerate(residual):
            for z in c.atomic_numbers:
                if int(z) in new:
                    counts[row, new.index(int(z))] += 1
        fitted = np.linalg.lstsq(counts, np.array([r for _, r in residual]), rcond=None)[0]
        for z, value in zip(new, fitted):
            e0s[numbers.index(z)] = value
        log.info("E0s fitted for elements new to the foundation model: %s",
                 {_symbol(z): round(float(v), 4) for z, v in zip(new, fitted)})  # fmt: skip
    return e0s


def average_num_neighbors(graphs: Sequence[Dict]) -> float:
    """Mean number of edges per atom (atoms without neighbours count as 0)."""
    edges = sum(int(g["edge_index"].shape[1]) for g in graphs)
    atoms = sum(int(g["positions"].shape[0]) for g in graphs)
    return edges / atoms


def scale_and_shift(
    configs: Sequence[Configuration], elements: ElementTable, e0s: np.ndarray, scaling: str, shift: str
) -> tuple:
    """``(scale, shift)`` of the per-atom interaction energy ``(E - sum E0) / N``.

    ``scaling``: "rms_forces" (RMS of all force components), "std_energy" (standard
    deviation of the per-atom interaction energy) or "none" (1). ``shift``: "mean" or "zero".
    A zero or undefined scale falls back to 1 with a warning.
    """
    per_atom = np.array([
        (c.energy - float(e0s[elements.index(c.atomic_numbers)].sum())) / len(c.atomic_numbers)
        for c in configs if c.energy is not None
    ])  # fmt: skip
    mean = float(per_atom.mean()) if per_atom.size else 0.0
    if scaling == "rms_forces":
        forces = [c.forces for c in configs if c.forces is not None]
        value = float(np.sqrt(np.mean(np.concatenate(forces) ** 2))) if forces else float("nan")
    elif scaling == "std_energy":
        value = float(per_atom.std()) if per_atom.size > 1 else float("nan")
    else:
        value = 1.0
    if not np.isfinite(value) or value <= 1e-12:
        log.warning("scaling=%s gives %r on the training set; using scale 1", scaling, value)
        value = 1.0
    return value, (mean if shift == "mean" else 0.0)
