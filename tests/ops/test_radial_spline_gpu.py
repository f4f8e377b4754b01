"""The radial-spline kernels against the torch reference, and whole models with radial
tables on the CUDA path against float64 (GPU only; skipped without CUDA)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mace_fast import keys as K
from mace_fast.ops.radial_spline import radial_spline, radial_spline_reference, spline_order

from .test_channelwise_tp_gpu import CASES, MODELS, _graph, _model, _paired_case, _symmetric_case, rel

pytestmark = pytest.mark.gpu


def _table(intervals, width, dtype):
    return torch.randn(intervals, width, 4, dtype=torch.float64, device="cuda").to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [64, 1280, 37])  # 37: no 16-byte packs
@pytest.mark.parametrize("sorted_rows", [True, False])
def test_kernels_match_reference(dtype, width, sorted_rows):
    r_max, intervals, rows = 5.0, 300, 3001
    table = _table(intervals, width, dtype)
    r = torch.rand(rows, dtype=torch.float64, device="cuda") * 1.2 * r_max  # a sixth beyond r_max
    r[:3] = torch.tensor([0.0, r_max, r_max * (1 - 1e-7)])  # the ends of the table
    r = r.to(dtype).requires_grad_(True)
    order = spline_order(r) if sorted_rows else None
    got = radial_spline(r, table, r_max, order)
    want = radial_spline_reference(r, table, r_max)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert rel(got, want) < tol
    assert torch.all(got[r.detach() >= r_max] == 0)
    grad = torch.randn_like(got)
    (g_got,) = torch.autograd.grad(got, r, grad)
    (g_want,) = torch.autograd.grad(want, r, grad)
    assert rel(g_got, g_want) < tol
    assert torch.all(g_got[r.detach() >= r_max] == 0)
    # bit-identical from run to run
    again = radial_spline(r, table, r_max, order)
    assert torch.equal(again, got)
    assert torch.equal(torch.autograd.grad(again, r, grad)[0], g_got)


def test_nan_length_gives_nan():
    table = _table(64, 64, torch.float32)
    r = torch.tensor([1.0, float("nan"), 2.0], device="cuda", requires_grad=True)
    out = radial_spline(r, table, 5.0, spline_order(r))
    assert torch.isnan(out[1]).all() and torch.isfinite(out[[0, 2]]).all()
    (g,) = torch.autograd.grad(out, r, torch.ones_like(out))
    assert torch.isnan(g[1]) and torch.isfinite(g[[0, 2]]).all()


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", ["l1_in_l3", "l2_in_l3"])
def test_tensor_product_reads_the_table(case, dtype, grouped):
    """The tensor product evaluating a table at the pair rows' lengths (tp_aggregate_tabulated)
    against autograd of the reference: the spline's weights read per edge from its pair row,
    fed to the plain-torch product. The lengths' gradient is zero for rows beyond r_max (row 0,
    spare rows); results are bit-identical from run to run; a NaN length shows as NaN."""
    from mace_fast.nn.interaction import scatter_sum
    from mace_fast.nn.spherical_harmonics import spherical_harmonics
    from mace_fast.ops.channelwise_tp import tp_aggregate, tp_aggregate_tabulated

    r_max = 4.0
    tp, key, layout, rng, g, vec, csr, rows, count = _paired_case(case, grouped, r_max)
    lmax, c, n = CASES[case][1], tp.irreps_in1[0][0], g[K.POSITIONS].shape[0]
    sender, receiver = g[K.EDGE_INDEX]
    length = vec.norm(dim=-1)
    r = csr.pairs.gather(length.unsqueeze(-1)).squeeze(-1)
    r = torch.where(csr.pairs.pair_edge < length.shape[0], r, r_max).detach().requires_grad_(True)
    table = torch.randn(200, tp.weight_numel, 4, dtype=torch.float64, device="cuda")
    sh = spherical_harmonics(vec, lmax).detach().requires_grad_(True)
    h = torch.tensor(rng.normal(size=(n, tp.irreps_in1.dim)), device="cuda", requires_grad=True)
    w = radial_spline_reference(r, table, r_max)
    ref = layout(scatter_sum(tp(h[sender], sh, w[rows]), receiver, n))
    grad = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (h, sh, r), grad)

    inputs = [t.detach().to(dtype).requires_grad_(True) for t in (h, sh, r)]
    table_d = table.to(dtype)
    out = tp_aggregate_tabulated(*inputs[:2], inputs[2], table_d, r_max, csr, key, c)
    got = torch.autograd.grad(out, inputs, grad.to(dtype))
    # The yardstick in float32: the spline kernel's weights written out, then the product.
    r2 = inputs[2].detach().requires_grad_(True)
    two = tp_aggregate(inputs[0], inputs[1], radial_spline(r2, table_d, r_max, spline_order(r2)), csr, key, c)
    two_grads = torch.autograd.grad(two, (inputs[0], inputs[1], r2), grad.to(dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert rel(out, ref) < tol and rel(out, two) < tol
    for a, b, yardstick in zip(got, want, two_grads):
        assert rel(a, b) <= max(tol, 2 * rel(yardstick, b)), (rel(a, b), rel(yardstick, b))
    assert bool((got[2][0] == 0).all() and (got[2][count + 1:] == 0).all())
    assert bool((got[2][1 : count + 1] != 0).all())
    again = tp_aggregate_tabulated(*inputs[:2], inputs[2], table_d, r_max, csr, key, c)
    assert torch.equal(again, out)
    for a, b in zip(torch.autograd.grad(again, inputs, grad.to(dtype)), got):
        assert torch.equal(a, b)
    # A NaN length: NaN messages at both ends of its pair, the rest finite.
    bad = inputs[2].detach().clone()
    row = int(rng.integers(1, count + 1))
    bad[row] = float("nan")
    out = tp_aggregate_tabulated(inputs[0].detach(), inputs[1].detach(), bad, table_d, r_max, csr, key, c)
    ends = receiver[rows == row].unique()
    assert len(ends) >= 1 and bool(torch.isnan(out[ends]).any(dim=1).all())
    others = torch.ones(n, dtype=torch.bool, device="cuda")
    others[ends] = False
    assert bool(torch.isfinite(out[others]).all())


def test_tabulated_tensor_product_refuses_bad_input():
    from mace_fast.ops.channelwise_tp import tp_aggregate_tabulated

    tp, key, layout, rng, g, vec, csr = _symmetric_case("l1_in_l3", False, 4.0)
    n, c = g[K.POSITIONS].shape[0], tp.irreps_in1[0][0]
    h = torch.randn(n, tp.irreps_in1.dim, device="cuda", dtype=torch.float64)
    sh = torch.randn(vec.shape[0], 16, device="cuda", dtype=torch.float64)
    table = torch.randn(64, tp.weight_numel, 4, device="cuda", dtype=torch.float64)
    with pytest.raises(ValueError, match="csr.pairs"):  # no pair rows
        tp_aggregate_tabulated(h, sh, vec.norm(dim=-1), table, 4.0, csr, key, c)


@pytest.mark.parametrize("name", ["mp_medium_like", "l2_hidden", "density_zbl", "all_plain"])
def test_tabulated_model_within_twice_the_reference_error(name):
    """float32 with tables: energies, forces and stress no further from float64 than twice
    the float32 reference's own error (root mean square over four structures), paired and
    per edge; bit-identical forces from run to run."""
    spec = dict(MODELS[name])
    hidden = spec.pop("hidden")
    ref = _model(hidden, torch.float64, **spec)
    ref32 = copy.deepcopy(ref).float()
    tab32 = copy.deepcopy(ref).float().set_backend("cuda").tabulate_radial(2048)
    squares = {key: [0.0, 0.0, 0.0] for key in (K.ENERGY, K.FORCES, K.STRESS)}
    for _ in range(4):
        g64 = _graph(ref, torch.float64)
        exact = ref(g64, compute_stress=True)
        g32 = {k: (v.float() if v.is_floating_point() else v) for k, v in g64.items()}
        r32 = ref32(g32, compute_stress=True)
        paired = tab32(g32, compute_stress=True, symmetric_edges=True)
        per_edge = tab32(g32, compute_stress=True, symmetric_edges=False)
        for key, sq in squares.items():
            sq[0] += rel(r32[key], exact[key]) ** 2 / 4
            sq[1] += rel(paired[key], exact[key]) ** 2 / 4
            sq[2] += rel(per_edge[key], exact[key]) ** 2 / 4
        # the tables are in use: the results differ from the exact float32 path's
        assert not torch.equal(paired[K.FORCES], tab32.set_backend("cuda").tabulate_radial(0)(g32)[K.FORCES])
        tab32.tabulate_radial(2048)
    for key, (ref_sq, paired_sq, edge_sq) in squares.items():
        assert paired_sq**0.5 <= 2 * ref_sq**0.5 + 1e-7, (key, paired_sq**0.5, ref_sq**0.5)
        assert edge_sq**0.5 <= 2 * ref_sq**0.5 + 1e-7, (key, edge_sq**0.5, ref_sq**0.5)
    again = tab32(g32, compute_stress=True, symmetric_edges=True)
    assert torch.equal(again[K.FORCES], paired[K.FORCES])


def test_tables_follow_the_weights_and_skip_float64():
    ref = _model("16x0e+16x1o", torch.float64)
    g64 = _graph(ref, torch.float64)
    # float64 keeps the exact MLPs: bit-identical with and without tables
    fast64 = copy.deepcopy(ref).set_backend("cuda")
    exact64 = fast64(g64)[K.FORCES]
    assert torch.equal(fast64.tabulate_radial(2048)(g64)[K.FORCES], exact64)
    # new weights (in place, as an optimizer or load_state_dict writes them): new tables
    tab32 = copy.deepcopy(ref).float().set_backend("cuda").tabulate_radial(2048)
    g32 = {k: (v.float() if v.is_floating_point() else v) for k, v in g64.items()}
    before = tab32(g32)[K.FORCES]
    with torch.no_grad():
        for block in tab32.interactions:
            block.radial_mlp.layers[-1].mul_(0.5)
    after = tab32(g32)[K.FORCES]
    exact = copy.deepcopy(tab32).tabulate_radial(0)(g32)[K.FORCES]
    assert rel(after, exact) < 1e-5 and rel(before, exact) > 1e-3


def test_captured_step_with_tables():
    """The calculator's step (captured CUDA graph) with tables against the exact float64 step."""
    from ase.build import bulk

    from mace_fast.step import ModelStep

    ref = _model("16x0e+16x1o", torch.float64)
    rng = np.random.default_rng()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    exact = ModelStep(copy.deepcopy(ref).set_backend("cuda"), cuda_graph=False)
    tab = ModelStep(copy.deepcopy(ref).float().set_backend("cuda").tabulate_radial(2048), cuda_graph=True)
    plain = ModelStep(copy.deepcopy(ref).float().set_backend("cuda"), cuda_graph=True)
    for _ in range(3):
        atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
        args = (atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc)
        want, got, base = exact(*args), tab(*args), plain(*args)
        f_want, f_got, f_base = (np.asarray(x.forces) for x in (want, got, base))
        err, base_err = np.linalg.norm(f_got - f_want), np.linalg.norm(f_base - f_want)
        assert err <= 2 * base_err + 1e-6 * np.linalg.norm(f_want)
