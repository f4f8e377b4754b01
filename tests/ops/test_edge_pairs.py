"""Pairing of an edge with its reverse for the per-pair radial weights (CPU).

Oracle: the graph itself. On matscipy full neighbour lists of fresh rattled structures,
every edge shorter than r_max must read the row of a pair made of itself and its true
reverse (nodes swapped, shift negated), each row exactly one such pair, edges beyond r_max
the zero row; a function of the edge length tabulated per pair and read back per edge must
equal the function evaluated per edge.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from mace_fast import keys as K
from mace_fast.data.graph import ElementTable, build_graph
from mace_fast.ops.channelwise_tp import edge_csr, symmetric_flag
from mace_fast.ops.edge_pairs import edge_pairs

R_BUILD = 4.6  # the list's cutoff (r_max + a Verlet skin)
R_MAX = 4.0


@pytest.fixture
def nrng():
    return np.random.default_rng()


def graph(nrng, reps=(3, 3, 3)):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(reps)
    atoms.numbers[nrng.random(len(atoms)) < 0.3] = 13
    atoms.positions += nrng.normal(0, 0.1, atoms.positions.shape)
    g = build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, R_BUILD,
                    ElementTable([13, 29]), torch.float64)
    sender, receiver = g[K.EDGE_INDEX]
    lengths = (g[K.POSITIONS][receiver] - g[K.POSITIONS][sender] + g[K.SHIFTS]).norm(dim=-1)
    csr = edge_csr(g[K.EDGE_INDEX], g[K.EDGE_PTR], len(atoms))
    return g, csr, lengths


def test_each_row_holds_one_edge_and_its_reverse(nrng):
    g, csr, lengths = graph(nrng)
    assert int(symmetric_flag(csr, g[K.UNIT_SHIFTS], lengths, R_MAX)) == 1
    num_edges = lengths.shape[0]
    pairs = edge_pairs(csr.sender_perm, lengths, R_MAX)
    rows, count = pairs.rows[:num_edges], int(pairs.rows[-1])
    near = lengths < R_MAX
    assert 0 < int(near.sum()) < num_edges  # both kinds present, or the test proves little
    assert pairs.num_rows == num_edges // 2 + 1
    assert count == int(near.sum()) // 2
    assert torch.equal(rows == 0, ~near)
    owners = (rows > 0).nonzero().squeeze(1)
    others = (rows < 0).nonzero().squeeze(1)
    assert len(owners) == len(others) == count
    # Each row 1..count: one owner, one reverse, in the owners' edge order.
    assert torch.equal(rows[owners], torch.arange(1, count + 1))
    partner = torch.empty(count + 1, dtype=torch.long)
    partner[-rows[others]] = others
    assert torch.equal(torch.sort(-rows[others]).values, torch.arange(1, count + 1))
    sender, receiver = g[K.EDGE_INDEX]
    rev = partner[rows[owners]]
    assert torch.equal(sender[owners], receiver[rev]) and torch.equal(receiver[owners], sender[rev])
    assert torch.equal(g[K.UNIT_SHIFTS][owners], -g[K.UNIT_SHIFTS][rev])
    assert bool((owners < rev).all())
    assert torch.equal(pairs.pair_edge[1 : count + 1], owners)
    assert bool((pairs.pair_edge[0] == num_edges) & (pairs.pair_edge[count + 1 :] == num_edges).all())


def test_a_table_per_pair_reads_back_per_edge(nrng):
    """As in the model: edge features that vanish beyond r_max, gathered per pair, mapped by
    a function that keeps zero at zero (the bias-free MLP), read back per edge."""
    g, csr, lengths = graph(nrng)
    pairs = edge_pairs(csr.sender_perm, lengths, R_MAX)
    freq = torch.tensor(nrng.normal(0, 2, 6))
    x = lengths.clone().requires_grad_(True)
    feats = torch.cos(x[:, None] * freq) * (x[:, None] < R_MAX)  # [E, 6]
    mlp = lambda f: f * torch.sin(f)  # noqa: E731
    table = mlp(pairs.gather(feats))  # [M, 6]: once per pair
    assert bool((table[0] == 0).all())
    per_edge = table[pairs.rows[:-1].abs()]
    torch.testing.assert_close(per_edge, mlp(feats), rtol=1e-15, atol=0)
    # The gradient of a row reaches its owner only; the owner's length stands for both.
    weights = torch.tensor(nrng.normal(size=table.shape))
    (grad,) = torch.autograd.grad((table * weights).sum(), x)
    rows = pairs.rows[:-1]
    assert bool((grad[rows <= 0] == 0).all())
    owners = rows > 0
    f = feats.detach()[owners]
    df = -torch.sin(lengths[owners, None] * freq) * freq
    want = ((torch.sin(f) + f * torch.cos(f)) * df * weights[rows[owners]]).sum(dim=1)
    torch.testing.assert_close(grad[owners], want, rtol=1e-12, atol=1e-12)


def test_an_asymmetric_graph_keeps_every_index_in_range(nrng):
    """Pairing is only valid on symmetric graphs (the caller checks); on others it must
    still index inside its tables, never outside."""
    g, _, lengths = graph(nrng)
    num_edges = lengths.shape[0]
    drop = torch.from_numpy(nrng.choice(num_edges, num_edges // 3, replace=False))
    keep = torch.ones(num_edges, dtype=torch.bool)
    keep[drop] = False
    edge_index = g[K.EDGE_INDEX][:, keep]
    n = g[K.POSITIONS].shape[0]
    edge_ptr = torch.zeros(n + 1, dtype=torch.long)
    edge_ptr[1:] = torch.cumsum(torch.bincount(edge_index[1], minlength=n), 0)
    csr = edge_csr(edge_index, edge_ptr, n)
    kept = lengths[keep]
    assert int(symmetric_flag(csr, g[K.UNIT_SHIFTS][keep], kept, R_MAX)) == 0
    pairs = edge_pairs(csr.sender_perm, kept, R_MAX)
    rows = pairs.rows[:-1]
    assert int(rows.abs().max()) < pairs.num_rows and 0 <= int(pairs.rows[-1]) < pairs.num_rows
    assert int(pairs.pair_edge.max()) <= rows.shape[0] and int(pairs.pair_edge.min()) >= 0


def test_no_edges():
    pairs = edge_pairs(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.float64), R_MAX)
    assert pairs.num_rows == 1 and torch.equal(pairs.rows, torch.zeros(1, dtype=torch.long))
    assert pairs.gather(torch.zeros(0, 3)).shape == (1, 3)
