"""The symmetric-graph flag that lets the tensor product's backward take one pass (CPU).

Graphs from matscipy full neighbour lists are symmetric; the flag must say so, and must
say 0 as soon as one weighted edge lacks its reverse (or when a pair has several images,
which the one-pass route does not handle). Fresh random structures each run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from mace_fast import keys as K
from mace_fast.data.graph import ElementTable, build_graph
from mace_fast.ops.channelwise_tp import edge_csr, symmetric_flag

R_MAX = 4.0


def graph_of(atoms):
    g = build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, R_MAX, ElementTable([13, 29]))
    return g


def flag(g, edge_index=None, shifts=None, edge_ptr=None):
    edge_index = g[K.EDGE_INDEX] if edge_index is None else edge_index
    shifts = g[K.UNIT_SHIFTS] if shifts is None else shifts
    edge_ptr = g[K.EDGE_PTR] if edge_ptr is None else edge_ptr
    n = g[K.POSITIONS].shape[0]
    csr = edge_csr(edge_index, edge_ptr, n)
    pos = g[K.POSITIONS]
    vec = pos[edge_index[1]] - pos[edge_index[0]] + shifts @ g[K.CELL][0]
    return int(symmetric_flag(csr, shifts, vec.norm(dim=-1), R_MAX))


def rattled(rng, reps=(3, 3, 3)):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(reps)
    atoms.numbers[rng.random(len(atoms)) < 0.3] = 13
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    return atoms


@pytest.fixture
def nrng():
    return np.random.default_rng()


def test_full_neighbour_list_is_symmetric(nrng):
    g = graph_of(rattled(nrng))
    assert g[K.EDGE_INDEX].shape[1] > 1000
    assert flag(g) == 1


def test_a_missing_reverse_edge_is_caught(nrng):
    g = graph_of(rattled(nrng))
    e = g[K.EDGE_INDEX].shape[1]
    drop = int(nrng.integers(e))
    keep = torch.arange(e) != drop
    edge_index = g[K.EDGE_INDEX][:, keep]
    n = g[K.POSITIONS].shape[0]
    edge_ptr = torch.zeros(n + 1, dtype=torch.long)
    edge_ptr[1:] = torch.cumsum(torch.bincount(edge_index[1], minlength=n), 0)
    assert flag(g, edge_index, g[K.UNIT_SHIFTS][keep], edge_ptr) == 0


def test_a_wrong_shift_is_caught(nrng):
    g = graph_of(rattled(nrng))
    shifts = g[K.UNIT_SHIFTS].clone()
    periodic = (shifts != 0).any(dim=1).nonzero().squeeze(1)
    shifts[periodic[int(nrng.integers(len(periodic)))]] *= -1  # j -> i now comes from the other image
    assert flag(g, shifts=shifts) == 0


def test_pairs_with_several_images_take_the_general_route(nrng):
    g = graph_of(rattled(nrng, reps=(1, 1, 1)))  # 3.6 A cell, 4 A cutoff: pairs recur
    assert flag(g) == 0


def test_edges_beyond_the_cutoff_are_exempt(nrng):
    # Like the padding of ModelStep: one-way edges between far-apart ghost atoms.
    g = graph_of(rattled(nrng))
    n, e = g[K.POSITIONS].shape[0], g[K.EDGE_INDEX].shape[1]
    ghosts = 3
    pos = torch.cat([g[K.POSITIONS], 100.0 + 10 * R_MAX * torch.arange(ghosts, dtype=torch.float64)[:, None].expand(ghosts, 3)])
    pad = 7
    k = torch.arange(pad) * ghosts // pad
    padding = torch.stack([n + (k + 1) % ghosts, n + k])
    edge_index = torch.cat([g[K.EDGE_INDEX], padding], dim=1)
    shifts = torch.cat([g[K.UNIT_SHIFTS], torch.zeros(pad, 3, dtype=torch.float64)])
    edge_ptr = torch.zeros(n + ghosts + 1, dtype=torch.long)
    edge_ptr[1:] = torch.cumsum(torch.bincount(edge_index[1], minlength=n + ghosts), 0)
    padded = dict(g, **{K.POSITIONS: pos})
    assert flag(padded, edge_index, shifts, edge_ptr) == 1
    # ... but not when the one-way edges are within the cutoff.
    padded[K.POSITIONS] = torch.cat([g[K.POSITIONS], 100.0 + 0.5 * torch.arange(ghosts, dtype=torch.float64)[:, None].expand(ghosts, 3)])
    assert flag(padded, edge_index, shifts, edge_ptr) == 0
