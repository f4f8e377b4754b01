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
        if not brute_force_edges(positions, cell, pbc, min_separation):
            return positions


def brute_force_edges(positions, cell, pbc, cutoff) -> Set[Edge]:
    """Edge set {(i, j, S)} by trying every image that can possibly be in range."""
    periodic = [k for k in range(3) if pbc[k]]
    differences = positions[None, :, :] - positions[:, None, :]  # [i, j] -> pos[j] - pos[i]
    if periodic:
        lattice = cell[periodic]  # [P, 3]
        dual = np.linalg.pinv(lattice)  # [3, P]: x @ dual = lattice coordinates of x
        fractions = differences @ dual
        # |f + S| <= cutoff * |dual column| for every image within the cutoff.
        reach = np.abs(fractions).max() + cutoff * np.linalg.norm(dual, axis=0).max() + 1
        steps = np.arange(-int(np.ceil(reach)), int(np.ceil(reach)) + 1)
        grid = np.stack(np.meshgrid(*[steps] * len(periodic), indexing="ij"), -1)
        images = grid.reshape(-1, len(periodic))
    else:
        lattice, images = np.zeros((0, 3)), np.zeros((1, 0))
    vectors = differences[:, :, None, :] + (images @ lattice)[None, None]
    i, j, n = np.nonzero(np.linalg.norm(vectors, axis=-1) < cutoff)
    shifts = np.zeros((len(i), 3), dtype=int)
    shifts[:, periodic] = images[n]
    edges = edge_set(i, j, shifts)
    return {e for e in edges if not (e[0] == e[1] and e[2] == (0, 0, 0))}


def oracle_edges(positions, cell, pbc, cutoff) -> Set[Edge]:
    """ASE's edge set {(i, j, S)}, vector pos[j] - pos[i] + S @ cell, no zero self-edge.

    ASE misses edges (and is very slow) when a non-periodic row of the cell is zero
    and is followed by a periodic one; use :func:`brute_force_edges` for those.
    """
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


def named_structure(name: str, rng: np.random.Generator):
    """(positions, cell or None, pbc, cutoff) of one named kind, freshly drawn."""
    pbc = (True, True, True)
    if name == "triclinic":
        cell, cutoff, n = random_cell(rng), 4.0, 12
    elif name == "left_handed":
        cell, cutoff, n = random_cell(rng) * [[-1], [1], [1]], 4.0, 8
    elif name == "cube_smaller_than_cutoff":
        cell, cutoff, n = 2.0 * np.eye(3), 5.0, 3
    elif name == "two_atoms_in_a_2.5_A_cube_cutoff_5":
        cell, cutoff, n = 2.5 * np.eye(3), 5.0, 2
    elif name == "triclinic_smaller_than_cutoff":
        cell, cutoff, n = random_cell(rng, 1.5, 2.5), 4.5, 2
    elif name == "thinner_than_cutoff_in_one_direction":
        cell, cutoff, n = random_cell(rng, 6.0, 9.0) * [[1], [1], [0.3]], 4.0, 10
    elif name == "big_cell_few_atoms":  # vacuum: the bin count is capped
        cell, cutoff, n = random_cell(rng, 25.0, 40.0), 3.0, 6
    elif name == "slab":
        cell, pbc, cutoff, n = random_cell(rng), (True, True, False), 4.0, 10
    elif name == "slab_without_c":
        cell, pbc, cutoff, n = random_cell(rng), (True, True, False), 4.0, 10
        cell[2] = 0.0
    elif name == "slab_periodic_in_x_and_z":
        cell, pbc, cutoff, n = random_cell(rng), (True, False, True), 4.0, 10
        cell[1] = 0.0
    elif name == "wire":
        cell, pbc, cutoff, n = random_cell(rng), (True, False, False), 4.0, 8
        cell[1:] = 0.0
    elif name == "wire_along_z_with_cell":
        cell, pbc, cutoff, n = random_cell(rng), (False, False, True), 4.0, 8
    elif name == "molecule":
        cell, pbc, cutoff, n = None, (False, False, False), 3.0, 15
    elif name == "molecule_with_cell":
        cell, pbc, cutoff, n = random_cell(rng), (False, False, False), 3.0, 15
    elif name == "far_outside_the_cell":
        cell, cutoff, n = random_cell(rng), 4.0, 10
    else:
        raise KeyError(name)
    # random_positions already puts atoms outside the periodic cell (fractions -0.4..1.4)
    positions = random_positions(rng, n, cell, pbc)
    if name == "far_outside_the_cell":
        positions = positions + rng.integers(-50, 51, (n, 3)) @ cell
    return positions, cell, pbc, cutoff
