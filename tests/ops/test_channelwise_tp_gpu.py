"""CUDA kernels against the torch reference (GPU only; skipped without CUDA).

Forward and backward of the fused tensor product + aggregation, then whole models:
energies, forces and stresses of the CUDA backend against the torch backend, float64 to
1e-10, float32 no worse than twice the float32 reference's own error against float64,
and bit-identical forces from run to run.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk

from mace_fast import MACE, ModelConfig
from mace_fast import keys as K
from mace_fast.model import PAIRING_MIN_EDGES
from mace_fast.data.graph import ElementTable, build_graph
from mace_fast.irreps import Irreps
from mace_fast.nn.grouped_layout import GroupedLayout
from mace_fast.nn.linear import element_groups
from mace_fast.nn.interaction import scatter_sum
from mace_fast.nn.tensor_product import ChannelwiseTensorProduct

pytestmark = pytest.mark.gpu

CASES = {
    "scalars_in_l3": ("32x0e", 3),
    "l1_in_l3": ("32x0e+32x1o", 3),
    "l2_in_l3": ("16x0e+16x1o+16x2e", 3),
    "l1_in_l2_c24": ("24x0e+24x1o", 2),
}


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def _message_layout(tp, grouped):
    """The kernels' message layout: mul_ir [N, F] as is, or flattened to the grouped layout."""
    return GroupedLayout(tp.irreps_out).from_mul_ir if grouped else (lambda x: x)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_tp_aggregate_matches_reference(case, dtype, grouped):
    from mace_fast.ops.channelwise_tp import compile_tp, edge_csr, tp_aggregate

    hidden, lmax = CASES[case]
    irreps_in = Irreps(hidden)
    c = irreps_in[0][0]
    sh_irreps = Irreps.spherical_harmonics(lmax)
    target = Irreps([(c, ir) for _, ir in sh_irreps])
    tp = ChannelwiseTensorProduct(irreps_in, sh_irreps, target).cuda()
    key = compile_tp(tp, grouped)
    layout = _message_layout(tp, grouped)
    n, e = 57, 800
    dev = "cuda"
    receiver = torch.sort(torch.randint(0, n, (e,), device=dev)).values
    receiver[:3] = 5  # a node with several edges, and some nodes with none
    receiver = torch.sort(receiver).values
    sender = torch.randint(0, n, (e,), device=dev)
    edge_ptr = torch.zeros(n + 1, dtype=torch.long, device=dev)
    edge_ptr[1:] = torch.cumsum(torch.bincount(receiver, minlength=n), 0)
    csr = edge_csr(torch.stack([sender, receiver]), edge_ptr, n)
    h = torch.randn(n, irreps_in.dim, device=dev, dtype=torch.float64, requires_grad=True)
    sh = torch.randn(e, sh_irreps.dim, device=dev, dtype=torch.float64, requires_grad=True)
    w = torch.randn(e, tp.weight_numel, device=dev, dtype=torch.float64, requires_grad=True)
    ref = layout(scatter_sum(tp.to(torch.float64)(h[sender], sh, w), receiver, n))
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (h, sh, w), g)
    inputs = [t.detach().to(dtype).requires_grad_(True) for t in (h, sh, w)]
    out = tp_aggregate(*inputs, csr, key, c)
    grads = torch.autograd.grad(out, inputs, g.to(dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert rel(out, ref) < tol
    for got, want in zip(grads, ref_grads):
        assert rel(got, want) < tol
    again = tp_aggregate(*inputs, csr, key, c)
    assert torch.equal(out, again)

    # The backward that writes the weights' gradient over the weights gives the same bits
    # (the weights are a non-leaf here, as in the model: the radial MLP's output).
    w_in = (inputs[2] * 1.0).detach().requires_grad_(True)
    w_mid = w_in * 1.0
    out_into = tp_aggregate(inputs[0], inputs[1], w_mid, csr, key, c, grad_into_w=True)
    grads_into = torch.autograd.grad(out_into, (inputs[0], inputs[1], w_in), g.to(dtype))
    for got, want in zip(grads_into, grads):
        assert torch.equal(got, want)


def _symmetric_case(case, grouped, r_list):
    """A compiled product of ``case`` and a full neighbour list (cutoff ``r_list``) of a
    fresh rattled Cu cell: ``(tp, key, layout, rng, graph, vectors, csr)``."""
    from mace_fast.ops.channelwise_tp import compile_tp, edge_csr

    hidden, lmax = CASES[case]
    irreps_in = Irreps(hidden)
    c = irreps_in[0][0]
    sh_irreps = Irreps.spherical_harmonics(lmax)
    tp = ChannelwiseTensorProduct(irreps_in, sh_irreps, Irreps([(c, ir) for _, ir in sh_irreps])).cuda().double()
    key = compile_tp(tp, grouped)
    rng = np.random.default_rng()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    g = {k: v.cuda() for k, v in build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, r_list,
                                              ElementTable([29])).items()}
    sender, receiver = g[K.EDGE_INDEX]
    vec = g[K.POSITIONS][receiver] - g[K.POSITIONS][sender] + g[K.SHIFTS]
    csr = edge_csr(g[K.EDGE_INDEX], g[K.EDGE_PTR], len(atoms))
    return tp, key, _message_layout(tp, grouped), rng, g, vec, csr


def _paired_case(case, grouped, r_max):
    """:func:`_symmetric_case` with a list reaching past ``r_max`` and its edges paired
    (ops/edge_pairs.py): ``(tp, key, layout, rng, graph, vectors, csr, rows, count)``, with
    each edge's row and the number of rows in use; row 0 and spare rows are in use too."""
    from mace_fast.ops.channelwise_tp import symmetric_flag
    from mace_fast.ops.edge_pairs import edge_pairs

    tp, key, layout, rng, g, vec, csr = _symmetric_case(case, grouped, r_max + 0.6)
    length = vec.norm(dim=-1)
    csr.symmetric = symmetric_flag(csr, g[K.UNIT_SHIFTS], length, r_max)
    assert int(csr.symmetric) == 1
    csr.pairs = edge_pairs(csr.sender_perm, length, r_max)
    rows, count = csr.pairs.rows[:-1].abs(), int(csr.pairs.rows[-1])
    assert 0 < count < csr.pairs.num_rows - 1  # far edges present: row 0 and spare rows in use
    return tp, key, layout, rng, g, vec, csr, rows, count


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", ["l1_in_l3", "l2_in_l3"])
def test_symmetric_graph_one_pass_backward(case, dtype, grouped):
    """On a full neighbour list, with weights a function of the edge length and true
    harmonics, the one-pass backward (feature gradient from each receiver's incoming edges)
    matches autograd of the reference and the two-pass backward; when the flag is 0 the
    two-pass route runs."""
    from mace_fast.nn.spherical_harmonics import spherical_harmonics
    from mace_fast.ops.channelwise_tp import symmetric_flag, tp_aggregate

    r_max = 4.5
    tp, key, layout, rng, g, vec, csr = _symmetric_case(case, grouped, r_max)
    lmax, c, n = CASES[case][1], tp.irreps_in1[0][0], g[K.POSITIONS].shape[0]
    sender, receiver = g[K.EDGE_INDEX]
    length = vec.norm(dim=-1, keepdim=True)
    csr.symmetric = symmetric_flag(csr, g[K.UNIT_SHIFTS], length.squeeze(1), r_max)
    assert int(csr.symmetric) == 1
    freq = torch.tensor(rng.normal(0, 2, tp.weight_numel), device="cuda")
    phase = torch.tensor(rng.uniform(0, 6, tp.weight_numel), device="cuda")
    w = torch.cos(length * freq + phase)  # [E, P C]: the same on an edge and its reverse
    sh = spherical_harmonics(vec, lmax)
    h = torch.tensor(rng.normal(size=(n, tp.irreps_in1.dim)), device="cuda", requires_grad=True)
    sh, w = sh.detach().requires_grad_(True), w.detach().requires_grad_(True)
    ref = layout(scatter_sum(tp(h[sender], sh, w), receiver, n))
    grad = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (h, sh, w), grad)
    inputs = [t.detach().to(dtype).requires_grad_(True) for t in (h, sh, w)]
    one_pass = torch.autograd.grad(tp_aggregate(*inputs, csr, key, c), inputs, grad.to(dtype))
    csr.symmetric = torch.zeros_like(csr.symmetric)  # the flag says no: the two-pass route
    flagged_off = torch.autograd.grad(tp_aggregate(*inputs, csr, key, c), inputs, grad.to(dtype))
    csr.symmetric = None
    two_pass = torch.autograd.grad(tp_aggregate(*inputs, csr, key, c), inputs, grad.to(dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b, ref_grad in zip(one_pass, two_pass, want):
        assert rel(a, ref_grad) < tol and rel(b, ref_grad) < tol, (rel(a, ref_grad), rel(b, ref_grad))
    for a, b in zip(flagged_off, two_pass):
        assert torch.equal(a, b)
    close = 1e-14 if dtype == torch.float64 else 1e-6  # same functions, other summation order
    for a, b in zip(one_pass, two_pass):
        assert rel(a, b) < close, rel(a, b)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", ["l1_in_l3", "l2_in_l3"])
def test_weights_shared_by_pairs(case, dtype, grouped):
    """One weight row per pair of an edge and its reverse (ops/edge_pairs.py), on a list
    with edges beyond r_max: output and gradients match autograd of the reference reading
    each edge's weights from its row; the rows no edge owns get a zero gradient."""
    from mace_fast.nn.spherical_harmonics import spherical_harmonics
    from mace_fast.ops.channelwise_tp import tp_aggregate

    r_max = 4.0
    tp, key, layout, rng, g, vec, csr, rows, count = _paired_case(case, grouped, r_max)
    lmax, c, n = CASES[case][1], tp.irreps_in1[0][0], g[K.POSITIONS].shape[0]
    sender, receiver = g[K.EDGE_INDEX]
    w = torch.randn(csr.pairs.num_rows, tp.weight_numel, device="cuda", dtype=torch.float64)
    w[0] = 0
    w[count + 1 :] = 0
    sh = spherical_harmonics(vec, lmax).detach().requires_grad_(True)
    h = torch.tensor(rng.normal(size=(n, tp.irreps_in1.dim)), device="cuda", requires_grad=True)
    w.requires_grad_(True)
    ref = layout(scatter_sum(tp(h[sender], sh, w[rows]), receiver, n))
    grad = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (h, sh, w), grad)
    inputs = [t.detach().to(dtype).requires_grad_(True) for t in (h, sh, w)]
    out = tp_aggregate(*inputs, csr, key, c)
    got = torch.autograd.grad(out, inputs, grad.to(dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert rel(out, ref) < tol
    assert rel(got[0], want[0]) < tol and rel(got[1], want[1]) < tol
    assert rel(got[2][1 : count + 1], want[2][1 : count + 1]) < tol
    assert bool((got[2][0] == 0).all() and (got[2][count + 1 :] == 0).all())
    # The forward reads the same numbers as from weights written out per edge.
    pairs, csr.pairs = csr.pairs, None
    assert torch.equal(out, tp_aggregate(inputs[0], inputs[1], inputs[2][rows], csr, key, c))
    csr.pairs = pairs
    again = torch.autograd.grad(tp_aggregate(*inputs, csr, key, c), inputs, grad.to(dtype))
    for a, b in zip(again, got):
        assert torch.equal(a, b)


def _model(hidden, dtype, **kw):
    torch.manual_seed(int(np.random.default_rng().integers(1 << 30)))
    cfg = ModelConfig(atomic_numbers=[6, 8, 14], atomic_energies=[-1.0, -2.0, -3.0], r_max=5.0, num_bessel=8,
                      hidden_irreps=hidden, radial_mlp=[32, 32], avg_num_neighbors=20.0, scale=1.2, shift=0.1, **kw)
    return MACE(cfg).to(dtype).cuda()


def _graph(model, dtype, n=2):
    rng = np.random.default_rng()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((n, n, n))
    atoms.numbers = rng.choice([6, 8, 14], len(atoms))
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    g = build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, model.r_max,
                    ElementTable(model.config.atomic_numbers), dtype)
    return {k: v.cuda() for k, v in g.items()}


MODELS = {
    "mp_medium_like": dict(hidden="32x0e+32x1o"),
    "l2_hidden": dict(hidden="16x0e+16x1o+16x2e"),
    "density_zbl": dict(hidden="16x0e+16x1o", interaction="RealAgnosticDensityResidualInteractionBlock",
                        interaction_first="RealAgnosticDensityInteractionBlock", pair_repulsion=True),
    "plain_first": dict(hidden="16x0e+16x1o", interaction_first="RealAgnosticInteractionBlock"),
    # non-residual blocks after the first: their message stays mul_ir on the CUDA path
    "all_plain": dict(hidden="16x0e+16x1o", interaction="RealAgnosticInteractionBlock",
                      interaction_first="RealAgnosticInteractionBlock"),
}


def _count_pairings(monkeypatch):
    """A list that counts the model's calls of edge_pairs (in its one element)."""
    import mace_fast.ops.edge_pairs as module

    calls = [0]
    original = module.edge_pairs

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "edge_pairs", counted)
    return calls


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_cuda_backend_matches_torch(name, monkeypatch):
    spec = dict(MODELS[name])
    hidden = spec.pop("hidden")
    ref = _model(hidden, torch.float64, **spec)
    graph = _graph(ref, torch.float64)
    want = ref(graph, compute_stress=True)
    fast = copy.deepcopy(ref).set_backend("cuda")
    calls = _count_pairings(monkeypatch)
    got = fast(graph, compute_stress=True, symmetric_edges=True)  # a full list: MLPs once per pair
    per_edge = fast(graph, compute_stress=True)  # few edges: not paired unless asked
    assert calls == [1] and graph[K.EDGE_INDEX].shape[1] < PAIRING_MIN_EDGES
    for key in (K.ENERGY, K.FORCES, K.STRESS, K.NODE_ENERGY):
        assert rel(got[key], want[key]) < 1e-10, key
        assert rel(per_edge[key], want[key]) < 1e-10, key

    # float32: the kernels' error against float64 is within twice the reference's own, in
    # root mean square over four structures. One structure's error is a noisy estimate:
    # the stress of a single 64-atom cell passed 2x the reference's error in about 3 % of
    # random draws, with the tensor-product kernels before and after their shared partial
    # sums alike, while the median ratio was 0.9 (30 draws each).
    ref32 = copy.deepcopy(ref).float()
    fast32 = copy.deepcopy(ref).float().set_backend("cuda")
    squares = {key: [0.0, 0.0] for key in (K.ENERGY, K.FORCES, K.STRESS)}
    for draw in range(4):
        g64 = graph if draw == 0 else _graph(ref, torch.float64)
        exact = want if draw == 0 else ref(g64, compute_stress=True)
        g32 = {k: (v.float() if v.is_floating_point() else v) for k, v in g64.items()}
        r32, f32 = ref32(g32, compute_stress=True), fast32(g32, compute_stress=True, symmetric_edges=True)
        for key, sq in squares.items():
            sq[0] += rel(r32[key], exact[key]) ** 2 / 4
            sq[1] += rel(f32[key], exact[key]) ** 2 / 4
    for key, (ref_sq, fast_sq) in squares.items():
        assert fast_sq**0.5 <= 2 * ref_sq**0.5 + 1e-7, (key, fast_sq**0.5, ref_sq**0.5)

    # determinism: the same input gives bit-identical forces
    again = fast32(g32, compute_stress=True, symmetric_edges=True)
    assert torch.equal(again[K.FORCES], f32[K.FORCES])


def test_symmetric_edges_promise_is_checked():
    """``symmetric_edges=True`` on a list that is not symmetric: an error outside a capture
    (and the pairing is not used where a pair of atoms has several images)."""
    model = _model("16x0e+16x1o", torch.float64).set_backend("cuda")
    graph = _graph(model, torch.float64)
    keep = torch.ones(graph[K.EDGE_INDEX].shape[1], dtype=torch.bool, device="cuda")
    keep[int(np.random.default_rng().integers(keep.numel()))] = False
    broken = dict(graph)
    broken[K.EDGE_INDEX] = graph[K.EDGE_INDEX][:, keep]
    broken[K.UNIT_SHIFTS], broken[K.SHIFTS] = graph[K.UNIT_SHIFTS][keep], graph[K.SHIFTS][keep]
    n = graph[K.POSITIONS].shape[0]
    broken[K.EDGE_PTR] = torch.cat([torch.zeros(1, dtype=torch.long, device="cuda"),
                                    torch.cumsum(torch.bincount(broken[K.EDGE_INDEX][1], minlength=n), 0)])
    assert model.edges_symmetric(graph) and not model.edges_symmetric(broken)
    with pytest.raises(ValueError, match="symmetric_edges=True"):
        model(broken, symmetric_edges=True)
    assert torch.isfinite(model(broken)[K.FORCES]).all()


def test_broken_promise_in_a_captured_step_gives_nan():
    """A captured step cannot check ``symmetric_edges=True``: when the list it replays stops
    being symmetric, every force is NaN, not a wrong number; fixed again, the step is too."""
    from mace_fast.step import capture_cuda_graph

    model = _model("16x0e+16x1o", torch.float32).set_backend("cuda")
    static = _graph(model, torch.float32)
    groups = element_groups(static[K.ELEMENT_INDEX])
    run = lambda: model(static, groups=groups, symmetric_edges=True)[K.FORCES]  # noqa: E731
    graph, forces = capture_cuda_graph(run)
    graph.replay()
    good = forces.clone()
    assert torch.isfinite(good).all() and good.abs().max() > 0
    periodic = (static[K.UNIT_SHIFTS] != 0).any(dim=1).nonzero().squeeze(1)
    edge = int(periodic[int(np.random.default_rng().integers(len(periodic)))])
    static[K.UNIT_SHIFTS][edge] *= -1  # its reverse now comes from another image
    graph.replay()
    assert torch.isnan(forces).all()
    static[K.UNIT_SHIFTS][edge] *= -1
    graph.replay()
    assert torch.equal(forces, good)


def test_large_symmetric_batches_are_paired_by_default(monkeypatch):
    model = _model("8x0e+8x1o", torch.float32).set_backend("cuda")
    graph = _graph(model, torch.float32, n=7)  # 2744 atoms, ~77k edges
    assert graph[K.EDGE_INDEX].shape[1] >= PAIRING_MIN_EDGES
    calls = _count_pairings(monkeypatch)
    paired = model(graph)
    assert calls == [1]
    per_edge = model(graph, symmetric_edges=False)
    assert rel(paired[K.FORCES], per_edge[K.FORCES]) < 1e-5


def test_auto_backend_uses_kernels_and_training_falls_back():
    model = _model("16x0e+16x1o", torch.float64).set_backend("auto")
    graph = _graph(model, torch.float64, n=1)
    out = model(graph)
    assert model.interactions[0]._tp_key is not None  # the kernels ran
    with pytest.warns(UserWarning, match="training"):
        model(graph, training=True)
    strict = _model("16x0e+16x1o", torch.float64).set_backend("cuda")
    with pytest.raises(RuntimeError, match="double backward"):
        strict(graph, training=True)
    assert torch.isfinite(out[K.FORCES]).all()
