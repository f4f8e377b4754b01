"""The atomic-base kernel against its torch version (GPU only; skipped without CUDA).

Forward and backward for several radial widths (also ones that are not a multiple of the
warp size), numbers of harmonics and element slots, on receiver-sorted edges with atoms
that receive none; determinism and CUDA-graph capture. Whole models through this path are
tested in ``test_channelwise_tp_gpu.py`` (the first interaction of every CUDA model).
"""

from __future__ import annotations

import pytest
import torch

from mace_fast.ops.atomic_base import atomic_base, atomic_base_reference
from mace_fast.step import capture_cuda_graph

pytestmark = pytest.mark.gpu


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def _edges(rng, n, e):
    receiver = torch.sort(torch.randint(0, n - 3, (e,), generator=rng)).values  # the last atoms get none
    sender = torch.randint(0, n, (e,), generator=rng)
    edge_ptr = torch.zeros(n + 1, dtype=torch.long)
    edge_ptr[1:] = torch.cumsum(torch.bincount(receiver, minlength=n), 0)
    return sender.cuda(), receiver.cuda(), edge_ptr.cuda()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("width, num_sh, slots", [(64, 16, 1), (64, 16, 3), (40, 9, 2), (128, 4, 5), (8, 1, 1)])
def test_matches_reference(rng, dtype, width, num_sh, slots):
    n, e = 301, 6007
    sender, receiver, edge_ptr = _edges(rng, n, e)
    slot = torch.randint(0, slots, (n,), generator=rng, dtype=torch.int32).cuda()
    radial = torch.randn(e, width, generator=rng, dtype=torch.float64).cuda().requires_grad_(True)
    sh = torch.randn(e, num_sh, generator=rng, dtype=torch.float64).cuda().requires_grad_(True)
    want = atomic_base_reference(radial, sh, sender, receiver, slot, n, slots)
    g = torch.randn(want.shape, generator=rng, dtype=torch.float64).cuda()
    want_grads = torch.autograd.grad(want, (radial, sh), g)

    inputs = [t.detach().to(dtype).requires_grad_(True) for t in (radial, sh)]
    got = atomic_base(*inputs, sender, edge_ptr, slot, slots)
    got_grads = torch.autograd.grad(got, inputs, g.to(dtype))
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    assert got.dtype == dtype and got.shape == want.shape
    assert rel(got, want) < tol
    for a, b in zip(got_grads, want_grads):
        assert rel(a, b) < tol

    again = atomic_base(*inputs, sender, edge_ptr, slot, slots)
    again_grads = torch.autograd.grad(again, inputs, g.to(dtype))
    assert torch.equal(got, again)
    assert all(torch.equal(a, b) for a, b in zip(got_grads, again_grads))


def test_cuda_graph(rng):
    n, e, width, num_sh = 97, 2001, 64, 16
    sender, receiver, edge_ptr = _edges(rng, n, e)
    slot = torch.randint(0, 2, (n,), generator=rng, dtype=torch.int32).cuda()
    radial = torch.randn(e, width, generator=rng).cuda()
    sh = torch.randn(e, num_sh, generator=rng).cuda()
    g = torch.randn(num_sh, n, 2 * width, generator=rng).cuda()

    def step():
        r, y = radial.detach().requires_grad_(True), sh.detach().requires_grad_(True)
        base = atomic_base(r, y, sender, edge_ptr, slot, 2)
        return (base, *torch.autograd.grad(base, (r, y), g))

    graph, out = capture_cuda_graph(step)
    radial.copy_(torch.randn(e, width, generator=rng).cuda())
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(out, step()):
        assert torch.equal(a, b)


def test_rejects_bad_inputs(rng):
    sender, _, edge_ptr = _edges(rng, 10, 30)
    radial, sh = torch.randn(30, 16).cuda(), torch.randn(30, 16).cuda()
    slot = torch.zeros(10, dtype=torch.int32).cuda()
    with pytest.raises(ValueError, match="CUDA"):
        atomic_base(radial.cpu(), sh.cpu(), sender, edge_ptr, slot, 1)
    with pytest.raises(TypeError, match="int32"):
        atomic_base(radial, sh, sender, edge_ptr, slot.long(), 1)
    with pytest.raises(ValueError, match="same edges"):
        atomic_base(radial, sh[:29], sender, edge_ptr, slot, 1)
    with pytest.raises(ValueError, match="num_slots"):
        atomic_base(radial, sh, sender, edge_ptr, slot, 9)


def test_captured_tables_survive_other_compositions(rng, monkeypatch):
    """A CUDA graph captured with one element set keeps reading its tables while eager calls
    on other element sets push the cache past its bound."""
    import numpy as np
    from ase.build import bulk

    import mace_fast.ops.atomic_base as ab
    from mace_fast import MACE, ModelConfig
    from mace_fast import keys as K
    from mace_fast.data.graph import ElementTable, build_graph
    from mace_fast.nn.linear import element_groups

    monkeypatch.setattr(ab, "TABLES_KEPT", 1)
    torch.manual_seed(int(torch.randint(1 << 30, (1,), generator=rng)))
    numbers = [1, 6, 8, 14]
    cfg = ModelConfig(atomic_numbers=numbers, atomic_energies=[0.0] * 4, r_max=4.5, hidden_irreps="8x0e+8x1o",
                      radial_mlp=[16, 16], avg_num_neighbors=10.0)
    model = MACE(cfg, backend="cuda").double().cuda().requires_grad_(False)

    def graph_of(elements):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.numbers = [elements[i % len(elements)] for i in range(len(atoms))]
        atoms.positions += np.random.default_rng(0).normal(0, 0.1, atoms.positions.shape)
        g = build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, 4.5,
                        ElementTable(numbers), torch.float64)
        return {k: v.cuda() for k, v in g.items()}

    static = graph_of([14, 8])
    groups = element_groups(static[K.ELEMENT_INDEX])
    want = model(static, groups=groups)[K.FORCES].clone()
    captured, forces = capture_cuda_graph(lambda: model(static, groups=groups)[K.FORCES])
    for elements in ([1], [6, 1], [8], [6, 14, 1]):  # evict everything not pinned
        model(graph_of(elements))
    captured.replay()
    torch.cuda.synchronize()
    # cuBLAS may pick other algorithms inside a capture: close, not necessarily equal bits
    assert rel(forces, want) < 1e-12


@pytest.mark.parametrize("n", [1, 37])
def test_edges_outside_every_range_get_zero_gradients(rng, n):
    """Edges before the first receiver's range and after the last one's carry no gradient
    (the kernel writes them; the outputs are not zero-filled first). Freed NaN blocks of the
    same size are left in the allocator's cache so that stale memory would show."""
    e, width, num_sh, before, after = 500, 40, 9, 5, 7
    inside = torch.sort(torch.randint(0, n, (e - before - after,), generator=rng)).values
    edge_ptr = torch.full((n + 1,), before, dtype=torch.long)
    edge_ptr[1:] += torch.cumsum(torch.bincount(inside, minlength=n), 0)
    receiver = torch.cat([inside.new_zeros(before), inside, inside.new_full((after,), n - 1)])
    sender = torch.randint(0, n, (e,), generator=rng)
    slot = torch.zeros(n, dtype=torch.int32)
    radial = torch.randn(e, width, generator=rng, dtype=torch.float64).cuda().requires_grad_(True)
    sh = torch.randn(e, num_sh, generator=rng, dtype=torch.float64).cuda().requires_grad_(True)
    sender, receiver, edge_ptr, slot = sender.cuda(), receiver.cuda(), edge_ptr.cuda(), slot.cuda()
    keep = torch.zeros(e, 1, dtype=torch.float64, device="cuda")
    keep[before : e - after] = 1
    want = atomic_base_reference(radial * keep, sh, sender, receiver, slot, n, 1)
    g = torch.randn(want.shape, generator=rng, dtype=torch.float64).cuda()
    want_grads = torch.autograd.grad(want, (radial, sh), g)
    stale = [torch.full_like(radial, float("nan")), torch.full_like(sh, float("nan"))]
    del stale
    got = atomic_base(radial, sh, sender, edge_ptr, slot, 1)
    got_grads = torch.autograd.grad(got, (radial, sh), g)
    assert rel(got, want) < 1e-13
    for a, b in zip(got_grads, want_grads):
        assert torch.isfinite(a).all() and rel(a, b) < 1e-13
        assert (a[:before] == 0).all() and (a[e - after :] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("slots", [1, 2])
def test_shared_rows_match_per_edge_rows(rng, dtype, slots):
    """Radial rows shared by an edge and its reverse (``rows``, ops/edge_pairs.py): on a
    rattled periodic structure with edges beyond r_max (zero row) and spare rows, the base
    and the gradients equal the per-edge op's, the row gradient being the sum over the two
    edges of the pair; rows no edge owns get exact zeros (the outputs are not zero-filled
    first: freed NaN blocks of the same size stay in the allocator's cache)."""
    import numpy as np
    from ase.build import bulk

    from mace_fast import keys as K
    from mace_fast.data.graph import ElementTable, build_graph
    from mace_fast.ops.channelwise_tp import edge_csr, symmetric_flag
    from mace_fast.ops.edge_pairs import edge_pairs

    nrng = np.random.default_rng(int(torch.randint(1 << 30, (1,), generator=rng)))
    # Cells wider than twice the list's cutoff: no pair of atoms has two images in the list.
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    atoms.positions += nrng.normal(0, 0.1, atoms.positions.shape)
    r_max, width, num_sh = 4.0, 40, 16
    g = build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, r_max + 0.6,
                    ElementTable([29]), torch.float64)
    g = {k: v.cuda() for k, v in g.items()}
    sender, receiver = g[K.EDGE_INDEX]
    n, e = len(atoms), sender.shape[0]
    lengths = (g[K.POSITIONS][receiver] - g[K.POSITIONS][sender] + g[K.SHIFTS]).norm(dim=-1)
    csr = edge_csr(g[K.EDGE_INDEX], g[K.EDGE_PTR], n)
    assert int(symmetric_flag(csr, g[K.UNIT_SHIFTS], lengths, r_max)) == 1  # pairing is valid
    pairs = edge_pairs(csr.sender_perm, lengths, r_max)
    rows = pairs.rows
    count = int(rows[-1])
    assert 0 < 2 * count < e and pairs.num_rows > count + 1  # beyond-cutoff edges and spare rows present

    slot = torch.randint(0, slots, (n,), generator=rng, dtype=torch.int32).cuda()
    shared = torch.randn(pairs.num_rows, width, generator=rng, dtype=torch.float64).cuda()
    shared[0] = 0  # the zero row of edges beyond r_max (and spare rows, as the trunk gives them)
    shared[count + 1 :] = 0
    shared = shared.to(dtype).requires_grad_(True)
    sh = torch.randn(e, num_sh, generator=rng, dtype=torch.float64).cuda().to(dtype).requires_grad_(True)
    per_edge = shared.detach()[rows[:-1].abs()].requires_grad_(True)
    want = atomic_base(per_edge, sh, sender, csr.edge_ptr, slot, slots)
    grad = torch.randn(want.shape, generator=rng, dtype=torch.float64).cuda().to(dtype)
    want_edge, want_sh = torch.autograd.grad(want, (per_edge, sh), grad)
    want_rows = torch.zeros_like(shared).index_add_(0, rows[:-1].abs(), want_edge)
    want_rows[0] = 0  # no gradient for the zero row

    stale = [torch.full((2,) + tuple(shared.shape), float("nan"), dtype=dtype, device="cuda")]
    del stale
    got = atomic_base(shared, sh, sender, csr.edge_ptr, slot, slots, rows=rows)
    got_rows, got_sh = torch.autograd.grad(got, (shared, sh), grad)
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    assert torch.equal(got, want)  # same reads, same order
    assert torch.equal(got_sh, want_sh)
    assert torch.isfinite(got_rows).all()
    assert (got_rows[0] == 0).all() and (got_rows[count + 1 :] == 0).all()
    assert rel(got_rows, want_rows) < tol
    again_rows, again_sh = torch.autograd.grad(atomic_base(shared, sh, sender, csr.edge_ptr, slot, slots, rows=rows),
                                               (shared, sh), grad)
    assert torch.equal(again_rows, got_rows) and torch.equal(again_sh, got_sh)
    with pytest.raises(ValueError, match="same edges"):
        atomic_base(shared, sh, sender, csr.edge_ptr, slot, slots, rows=rows[:-1])
