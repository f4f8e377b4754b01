"""All-pairs neighbour list for small structures against the cell list (itself checked
against matscipy): the same edges, order and shifts; fresh random structures each run."""

import numpy as np
import pytest
import torch

from mace_fast.data.cell_list import neighbour_list_torch
from mace_fast.data.dense_neighbours import dense_images, neighbour_list_dense
from mace_fast.data.errors import InputError

from .structures import edge_set, named_structure, oracle_edges

NAMES = ["triclinic", "left_handed", "two_atoms_in_a_2.5_A_cube_cutoff_5", "triclinic_smaller_than_cutoff",
         "thinner_than_cutoff_in_one_direction", "big_cell_few_atoms", "molecule", "far_outside_the_cell"]


def _both(positions, cell, pbc, cutoff, device="cpu"):
    cell = np.zeros((3, 3)) if cell is None else cell
    images = dense_images(len(positions), cutoff, cell, pbc)
    assert images is not None
    pos = torch.tensor(positions, dtype=torch.float64, device=device)
    cell_t = torch.tensor(cell, dtype=torch.float64, device=device)
    dense = neighbour_list_dense(pos, cutoff, cell_t, images)
    ref = neighbour_list_torch(pos, cutoff, cell_t[None], torch.tensor(pbc, device=device)[None])
    return dense, ref


@pytest.mark.parametrize("name", NAMES)
def test_same_list_as_the_cell_list(name):
    rng = np.random.default_rng()
    for _ in range(3):
        positions, cell, pbc, cutoff = named_structure(name, rng)
        (ei, shifts, ptr), (ei_ref, shifts_ref, ptr_ref) = _both(positions, cell, pbc, cutoff)
        assert torch.equal(ei, ei_ref) and torch.equal(ptr, ptr_ref)
        assert torch.equal(shifts, shifts_ref)
        if cell is not None and len(positions) > 1:
            assert edge_set(ei[0], ei[1], shifts) == oracle_edges(positions, cell, pbc, cutoff)


def test_applies_only_to_small_fully_periodic_or_free_structures():
    cell = 10.0 * np.eye(3)
    assert dense_images(100, 4.0, cell, (True, True, True)).shape == (27, 3)
    assert dense_images(100, 4.0, cell, (False, False, False)).shape == (1, 3)
    assert dense_images(100, 4.0, cell, (True, True, False)) is None  # slabs: cell list
    assert dense_images(5000, 4.0, cell, (True, True, True)) is None  # too many pairs


def test_overlapping_atoms_are_named():
    rng = np.random.default_rng()
    positions = rng.uniform(0, 8, (20, 3))
    positions[7] = positions[3] + 1e-3
    images = dense_images(20, 4.0, 8.0 * np.eye(3), (True,) * 3)
    with pytest.raises(InputError, match="atoms 3 and 7"):
        neighbour_list_dense(torch.tensor(positions), 4.0, torch.tensor(8.0 * np.eye(3)), images)


@pytest.mark.gpu
def test_gpu_matches_the_cell_list_at_512_atoms():
    rng = np.random.default_rng()
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(4)
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    (ei, shifts, ptr), (ei_ref, shifts_ref, ptr_ref) = _both(
        atoms.positions, np.asarray(atoms.cell), (True,) * 3, 6.5, device="cuda"
    )
    assert ei.shape[1] > 20000
    assert torch.equal(ei, ei_ref) and torch.equal(ptr, ptr_ref) and torch.equal(shifts, shifts_ref)
