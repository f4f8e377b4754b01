"""Neighbour list against independent oracles (ASE, mace-torch) and its input checks."""

import numpy as np
import pytest

from mace_fast.data.errors import InputError
from mace_fast.data.neighbours import neighbour_list

from .structures import (
    brute_force_edges,
    edge_set,
    named_structure,
    oracle_edges,
    random_cell,
    random_positions,
)


CASES = [
    "triclinic",
    "left_handed",
    "cube_smaller_than_cutoff",
    "triclinic_smaller_than_cutoff",
    "slab",
    "slab_without_c",
    "slab_periodic_in_x_and_z",
    "wire",
    "wire_along_z_with_cell",
    "molecule",
    "molecule_with_cell",
]


@pytest.mark.parametrize("name", CASES)
def test_matches_oracles(name, np_rng):
    """Against brute force always, and ASE where its neighbour list is reliable."""
    for _ in range(3):
        positions, cell, pbc, cutoff = named_structure(name, np_rng)
        cell_before = None if cell is None else cell.copy()
        sender, receiver, unit_shifts = neighbour_list(positions, cutoff, cell, pbc)

        assert sender.dtype == receiver.dtype == np.int64
        assert unit_shifts.dtype == np.float64 and unit_shifts.shape == (len(sender), 3)
        edges = edge_set(sender, receiver, unit_shifts)
        assert len(edges) == len(sender)  # no duplicates
        assert edges == brute_force_edges(positions, cell, pbc, cutoff)
        if cell is None or abs(np.linalg.det(cell)) > 1e-6:  # see oracle_edges
            assert edges == oracle_edges(positions, cell, pbc, cutoff)
        if cell is not None:
            np.testing.assert_array_equal(cell, cell_before)  # caller's cell untouched

        # Edge vectors follow the documented convention and lie inside the cutoff.
        lattice = np.zeros((3, 3)) if cell is None else cell
        vectors = positions[receiver] - positions[sender] + unit_shifts @ lattice
        lengths = np.linalg.norm(vectors, axis=1)
        assert np.all(lengths < cutoff) and np.all(lengths > 0)
        assert np.all(unit_shifts[:, ~np.array(pbc)] == 0)
        assert np.all(unit_shifts == np.round(unit_shifts))

        # Sorted by receiver, then sender, then shift; and deterministic.
        keys = np.column_stack([receiver, sender, unit_shifts])
        assert all(tuple(a) < tuple(b) for a, b in zip(keys[:-1], keys[1:]))
        again = neighbour_list(positions, cutoff, cell, pbc)
        for first, second in zip((sender, receiver, unit_shifts), again):
            np.testing.assert_array_equal(first, second)


def test_small_cell_sees_many_images_of_itself():
    sender, receiver, unit_shifts = neighbour_list(
        np.zeros((1, 3)), 5.0, 2.0 * np.eye(3), (True, True, True)
    )
    # Lattice points of a 2 A cubic lattice within 5 A of the origin, minus the origin.
    grid = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    expected = {tuple(g) for g in grid if 0 < np.linalg.norm(2.0 * g) < 5.0}
    assert np.all(sender == 0) and np.all(receiver == 0)
    assert {tuple(s) for s in unit_shifts.astype(int).tolist()} == expected


@pytest.mark.parametrize("name", CASES)
def test_matches_mace_torch(name, np_rng):
    neighborhood = pytest.importorskip("mace.data.neighborhood")
    positions, cell, pbc, cutoff = named_structure(name, np_rng)
    sender, receiver, unit_shifts = neighbour_list(positions, cutoff, cell, pbc)
    # mace-torch overwrites the cell it is given, hence the copy.
    edge_index, _, mace_shifts, _ = neighborhood.get_neighborhood(
        positions, cutoff, pbc=pbc, cell=None if cell is None else cell.copy()
    )
    assert edge_set(sender, receiver, unit_shifts) == edge_set(*edge_index, mace_shifts)


def test_isolated_atoms_have_no_edges():
    for cell, pbc in [(None, (False,) * 3), (20.0 * np.eye(3), (True,) * 3)]:
        sender, receiver, unit_shifts = neighbour_list(np.ones((1, 3)), 5.0, cell, pbc)
        assert sender.shape == receiver.shape == (0,) and unit_shifts.shape == (0, 3)
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 10.0], [1.0, 0.0, 0.0]])
    sender, receiver, _ = neighbour_list(positions, 3.0, None, (False,) * 3)
    assert sender.tolist() == [2, 0] and receiver.tolist() == [0, 2]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_position_names_the_atom(value, np_rng):
    positions = random_positions(np_rng, 6, None, (False,) * 3)
    positions[3, 1] = value
    with pytest.raises(InputError, match=r"atom 3 is not finite"):
        neighbour_list(positions, 3.0, None, (False,) * 3)


def test_overlapping_atoms_are_named(np_rng):
    positions = random_positions(np_rng, 6, None, (False,) * 3)
    positions[5] = positions[2] + 1e-3
    with pytest.raises(InputError, match=r"atoms 2 and 5 are at the same place"):
        neighbour_list(positions, 3.0, None, (False,) * 3)


def test_atom_on_a_periodic_image_of_another_is_named(np_rng):
    cell = random_cell(np_rng)
    positions = random_positions(np_rng, 4, cell, (True,) * 3)
    positions[1] = positions[0] + cell[2] - cell[0]
    with pytest.raises(InputError, match=r"atoms 0 and 1 .* periodic image"):
        neighbour_list(positions, 3.0, cell, (True,) * 3)


def test_min_distance_is_a_parameter():
    positions = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    neighbour_list(positions, 3.0, None, (False,) * 3)
    with pytest.raises(InputError, match="atoms 0 and 1"):
        neighbour_list(positions, 3.0, None, (False,) * 3, min_distance=0.6)


@pytest.mark.parametrize(
    "cell, pbc",
    [
        ([[3, 0, 0], [0, 3, 0], [3, 3, 0]], (True, True, True)),  # coplanar rows
        ([[3, 0, 0], [0, 3, 0], [0, 0, 0]], (True, True, True)),  # zero row, periodic
        ([[3, 0, 0], [6, 0, 0], [0, 0, 4]], (True, True, False)),  # parallel periodic rows
        (np.zeros((3, 3)), (False, True, False)),
    ],
)
def test_singular_cell_with_periodic_direction(cell, pbc):
    with pytest.raises(InputError, match="singular"):
        neighbour_list(np.zeros((1, 3)), 3.0, np.array(cell, dtype=float), pbc)


def test_singular_cell_is_fine_along_non_periodic_directions():
    cell = np.array([[3.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    sender, _, unit_shifts = neighbour_list(positions, 3.5, cell, (True, False, False))
    # Each atom sees the other (1 A), its +-x images (3.16 A) and its own +-x images (3 A).
    assert len(sender) == 10
    assert np.all(unit_shifts[:, 1:] == 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cell=None, pbc=(True, False, False)), "no cell"),
        (dict(cell=np.eye(3)[:2], pbc=(False,) * 3), "shape"),
        (dict(cell=np.full((3, 3), np.nan), pbc=(False,) * 3), "non-finite"),
        (dict(cell=None, pbc=(1, 0, 0)), "three booleans"),
        (dict(cell=None, pbc=(True, False)), "three booleans"),
        (dict(cell=None, pbc=True), "three booleans"),
        (dict(cell=None, pbc=(False,) * 3, cutoff=0.0), "cutoff"),
        (dict(cell=None, pbc=(False,) * 3, cutoff=np.nan), "cutoff"),
        (dict(cell=None, pbc=(False,) * 3, positions=np.zeros((2, 2))), r"\[N, 3\]"),
        (dict(cell=None, pbc=(False,) * 3, positions=np.zeros((0, 3))), "no atoms"),
    ],
)
def test_malformed_arguments(kwargs, message):
    arguments = dict(positions=np.zeros((1, 3)), cutoff=3.0) | kwargs
    with pytest.raises(InputError, match=message):
        neighbour_list(**arguments)
