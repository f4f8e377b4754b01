"""morton_order: a permutation along the Z-curve of positions, checked against a bit-by-bit
Morton code written out here, and the locality it is for (neighbour pairs close in index)."""

import numpy as np
import pytest
from ase.build import bulk, molecule
from matscipy.neighbours import neighbour_list

from mace_fast.data.ordering import morton_order


def naive_codes(positions, cell, pbc, bits=10):
    """Morton codes the slow way: grid cell per axis, then bit b of axis d at bit 3 b + d."""
    pos = np.asarray(positions, dtype=np.float64)
    periodic = np.asarray(pbc, dtype=bool)
    if periodic.any():
        frac = pos @ np.linalg.inv(cell)
        unit = np.where(periodic, frac - np.floor(frac), pos)
    else:
        unit = pos.copy()
    for d in range(3):
        if not periodic[d]:
            lo, hi = unit[:, d].min(), unit[:, d].max()
            unit[:, d] = (unit[:, d] - lo) / (hi - lo if hi > lo else 1.0)
    q = np.clip(np.floor(unit * 2**bits), 0, 2**bits - 1).astype(np.int64)
    codes = []
    for row in q:
        code = 0
        for b in range(bits):
            for d in range(3):
                code |= ((int(row[d]) >> b) & 1) << (3 * b + d)
        codes.append(code)
    return np.array(codes)


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False, False, False)])
def test_order_is_the_z_curve(pbc):
    rng = np.random.default_rng()
    atoms = bulk("Cu", "fcc", a=3.61) * (4, 3, 5)
    atoms.positions += rng.normal(0, 0.3, atoms.positions.shape)  # some atoms leave the cell
    atoms.pbc = pbc
    perm = morton_order(atoms.positions, atoms.cell.array, atoms.pbc)
    assert perm.dtype == np.int64 and np.array_equal(np.sort(perm), np.arange(len(atoms)))
    codes = naive_codes(atoms.positions, atoms.cell.array, pbc)
    assert np.all(np.diff(codes[perm]) >= 0)
    assert len(np.unique(codes)) > len(atoms) // 2  # the codes do order, not tie


def test_order_depends_on_positions_only():
    rng = np.random.default_rng()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (3, 3, 3)
    atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
    shuffle = rng.permutation(len(atoms))
    a = atoms.positions[morton_order(atoms.positions, atoms.cell.array, atoms.pbc)]
    b_pos = atoms.positions[shuffle]
    b = b_pos[morton_order(b_pos, atoms.cell.array, atoms.pbc)]
    np.testing.assert_array_equal(a, b)


def test_neighbours_become_close_in_index():
    rng = np.random.default_rng()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (8, 8, 8)  # 4096 atoms
    atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
    shuffled = atoms[rng.permutation(len(atoms))]
    ordered = shuffled[morton_order(shuffled.positions, shuffled.cell.array, shuffled.pbc)]

    def median_gap(a):
        i, j = neighbour_list("ij", a, 5.0)
        return np.median(np.abs(i - j))

    assert median_gap(shuffled) > 1000  # about N / 3 for a random order
    assert median_gap(ordered) < 100


def test_molecule_and_empty():
    mol = molecule("CH3CH2OH")
    perm = morton_order(mol.positions, np.zeros((3, 3)), (False, False, False))
    assert np.array_equal(np.sort(perm), np.arange(len(mol)))
    assert morton_order(np.zeros((0, 3)), np.eye(3), (True, True, True)).shape == (0,)
