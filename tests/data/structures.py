"""Random test structures and an independent neighbour-list oracle (ASE)."""

from typing import Optional, Set, Tuple

import numpy as np
from ase.neighborlist import primitive_neighbor_list

Edge = Tuple[int, int, Tuple[int, int, int]]


def random_cell(rng: np.random.Generator, low: float = 3.0, high: float = 6.0) -> np.ndarray:
    """[3, 3] triclinic cell: a scaled identity with random skew, randomly rotated."""
    while True:
        cell = np.diag(rng.uniform(low, high, 3)) + rng.uniform(-0.4, 0.4, (3, 3)) * low
        volume = abs(np.linalg.det(cell))
        if volume / np.prod(np.linalg.norm(cell, axis=1)) > 0.3:  # not too flat
            return cell @ random_rotation(rng)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def random_positions(
    rng: np.random.Generator,
    num_atoms: int,
    cell: Optional[np.ndarray],
    pbc,
    spread: float = 3.0,
    min_separation: float = 0.5,
) -> np.ndarray:
    """Atoms spread over (and past) the periodic cell plus Cartesian noise, redrawn until
    no two atoms or images are closer than ``min_separation``."""
    periodic = [k for k in range(3) if pbc[k]]
    while True:
        positions = rng.uniform(-spread, spread, (num_atoms, 3))
        if periodic:
            # Fractions outside [0, 1) check that atoms outside the cell are handled.
            fractions = rng.uniform(-0.4, 1.4, (num_atoms, len(periodic)))
            positions = positions + fractions @ cell[periodic]
        close = oracle_distances(positions, cell, pbc, min_separation)
        if close.size == 0:
            return positions


def oracle_distances(positions, cell, pbc, cutoff) -> np.ndarray:
    cell = np.zeros((3, 3)) if cell is None else cell
    return primitive_neighbor_list(
        "d", pbc, cell, positions, cutoff, self_interaction=False
    )


def oracle_edges(positions, cell, pbc, cutoff) -> Set[Edge]:
    """ASE's edge set {(i, j, S)}, vector pos[j] - pos[i] + S @ cell, no zero self-edge."""
    cell = np.zeros((3, 3)) if cell is None else cell
    i, j, S = primitive_neighbor_list(
        "ijS", pbc, cell, positions, cutoff, self_interaction=False
    )
    return edge_set(i, j, S)


def edge_set(sender, receiver, unit_shifts) -> Set[Edge]:
    shifts = np.asarray(unit_shifts).round().astype(int).tolist()
    return {
        (int(s), int(r), tuple(S))
        for s, r, S in zip(np.asarray(sender).tolist(), np.asarray(receiver).tolist(), shifts)
    }
