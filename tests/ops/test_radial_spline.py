"""Radial tables (mace_fast/ops/radial_spline.py) on the CPU: the spline against exact
functions, the tabulated MLPs against float64, and models with tables against float64."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk

from mace_fast import MACE, ModelConfig
from mace_fast import keys as K
from mace_fast.data.graph import ElementTable, build_graph
from mace_fast.ops.radial_spline import interpolation_error, radial_spline, radial_spline_reference, tabulate


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def _seed():
    torch.manual_seed(int(np.random.default_rng().integers(1 << 30)))


def test_cubics_are_reproduced_and_the_ends_are_zero():
    """A cubic Hermite spline is exact on cubics: random cubics, float64, to rounding; zero
    at and beyond r_max; NaN in, NaN out."""
    r_max = 4.0
    coef = torch.randn(4, 7, dtype=torch.float64)

    def cubic(r):  # [M, 1] -> [M, 7]
        return coef[0] + r * (coef[1] + r * (coef[2] + r * coef[3]))

    table = tabulate(cubic, r_max, 37, torch.float64)
    r = torch.rand(500, dtype=torch.float64) * r_max
    exact = cubic(r.unsqueeze(-1))
    assert rel(radial_spline(r, table, r_max), exact) < 1e-11
    out = radial_spline(torch.tensor([r_max, 2 * r_max, float("nan"), 1.0], dtype=torch.float64), table, r_max)
    assert torch.all(out[:2] == 0) and torch.isnan(out[2]).all() and torch.isfinite(out[3]).all()


def test_slope_is_the_derivative():
    """The spline's gradient in r against central finite differences of the spline itself,
    and against the exact derivative of a smooth function."""
    r_max = 5.0
    freq = torch.rand(9, dtype=torch.float64) * 3

    def fn(r):
        return torch.sin(freq * r) * (r_max - r) ** 3

    table = tabulate(fn, r_max, 2048, torch.float64)
    r = (0.2 + torch.rand(300, dtype=torch.float64) * (r_max - 0.4)).requires_grad_(True)
    out = radial_spline(r, table, r_max)
    weights = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * weights).sum(), r)
    eps = 1e-6
    with torch.no_grad():
        fd = ((radial_spline(r + eps, table, r_max) - radial_spline(r - eps, table, r_max)) * weights).sum(-1) / (2 * eps)
    assert rel(grad, fd) < 1e-7
    rr = r.detach().unsqueeze(-1)
    exact = (freq * torch.cos(freq * rr) * (r_max - rr) ** 3 - 3 * torch.sin(freq * rr) * (r_max - rr) ** 2)
    assert rel(grad, (exact * weights).sum(-1)) < 1e-8


def _mp_medium_like(dtype=torch.float64, **kw):
    _seed()
    cfg = ModelConfig(atomic_numbers=[6, 8, 14], atomic_energies=[-1.0, -2.0, -3.0], r_max=5.0, num_bessel=10,
                      hidden_irreps="16x0e+16x1o", radial_mlp=[64, 64, 64], avg_num_neighbors=20.0, **kw)
    return MACE(cfg).to(dtype)


def _radial_fn(model, block, hidden):
    def fn(r):
        feats, cutoff = model.radial_embedding(r, None, None)
        out = block.radial_mlp.hidden(feats) if hidden else block.radial_mlp(feats)
        return out if cutoff is None else out * cutoff
    return fn


@pytest.mark.parametrize("apply_cutoff", [True, False])
def test_tabulated_mlps_beat_the_float32_mlp(apply_cutoff):
    """With 2048 intervals, the float32 table's values and slopes (float32 arithmetic) are no
    further from the float64 MLP than the float32 MLP's own (MP-medium's radial sizes)."""
    model = _mp_medium_like(apply_cutoff=apply_cutoff)
    model32 = copy.deepcopy(model).float()
    r = 0.5 + 4.5 * torch.rand(4000, dtype=torch.float64)
    for block, block32 in zip(model.interactions, model32.interactions):
        for hidden in (True, False):
            fn, fn32 = _radial_fn(model, block, hidden), _radial_fn(model32, block32, hidden)
            assert interpolation_error(fn, tabulate(fn, model.r_max, 2048, torch.float64), model.r_max) < 1e-8
            table = tabulate(fn, model.r_max, 2048, torch.float32)
            ones = torch.ones_like(r.unsqueeze(-1))
            exact, slope = torch.func.jvp(fn, (r.unsqueeze(-1),), (ones,))
            mlp32, slope32 = torch.func.jvp(fn32, (r.float().unsqueeze(-1),), (ones.float(),))
            spline, spline_slope = torch.func.jvp(lambda x: radial_spline(x, table, model.r_max), (r.float(),),
                                                  (ones[:, 0].float(),))
            assert rel(spline, exact) <= 2 * rel(mlp32, exact), hidden
            assert rel(spline_slope, slope) <= 2 * rel(slope32, slope), hidden


def _structure(model, dtype):
    rng = np.random.default_rng()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    atoms.numbers = rng.choice([6, 8, 14], len(atoms))
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    return build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, model.r_max,
                       ElementTable(model.config.atomic_numbers), dtype)


def test_model_with_tables_within_twice_the_reference_error():
    """float32 energies, forces and stress with tables against float64: within twice the
    float32 reference's own error (root mean square over three structures)."""
    ref = _mp_medium_like()
    ref32 = copy.deepcopy(ref).float()
    tab32 = copy.deepcopy(ref).float().tabulate_radial(2048)
    squares = {key: [0.0, 0.0] for key in (K.ENERGY, K.FORCES, K.STRESS)}
    for _ in range(3):
        g64 = _structure(ref, torch.float64)
        g32 = {k: (v.float() if v.is_floating_point() else v) for k, v in g64.items()}
        exact, r32, t32 = ref(g64, compute_stress=True), ref32(g32, compute_stress=True), tab32(g32, compute_stress=True)
        assert not torch.equal(t32[K.FORCES], r32[K.FORCES])  # the tables are in use
        for key, sq in squares.items():
            sq[0] += rel(r32[key], exact[key]) ** 2 / 3
            sq[1] += rel(t32[key], exact[key]) ** 2 / 3
    for key, (ref_sq, tab_sq) in squares.items():
        assert tab_sq**0.5 <= 2 * ref_sq**0.5 + 1e-7, (key, tab_sq**0.5, ref_sq**0.5)


def test_tables_stay_out_of_training_and_float64():
    """Training, parameter gradients and float64 run the exact MLPs (bit-identical to a
    model without tables); the radial MLP still gets its gradient."""
    ref = _mp_medium_like()
    g64 = _structure(ref, torch.float64)
    plain = ref(g64)
    assert torch.equal(copy.deepcopy(ref).tabulate_radial(2048)(g64)[K.FORCES], plain[K.FORCES])
    model32, tab32 = copy.deepcopy(ref).float(), copy.deepcopy(ref).float().tabulate_radial(2048)
    g32 = {k: (v.float() if v.is_floating_point() else v) for k, v in g64.items()}
    out, out_tab = model32(g32, training=True), tab32(g32, training=True)
    assert torch.equal(out[K.FORCES], out_tab[K.FORCES])
    out_tab[K.ENERGY].sum().backward()
    assert tab32.interactions[1].radial_mlp.layers[-1].grad.abs().sum() > 0
    # energy only, parameters wanting gradients: the exact MLPs
    assert torch.equal(model32(g32, compute_forces=False)[K.ENERGY], tab32(g32, compute_forces=False)[K.ENERGY])


def test_tables_follow_new_weights():
    tab32 = _mp_medium_like(torch.float32).tabulate_radial(2048)
    g32 = _structure(tab32, torch.float32)
    before = tab32(g32)[K.FORCES]
    state = {k: v * 0.5 if "radial_mlp" in k else v for k, v in tab32.state_dict().items()}
    tab32.load_state_dict(state)  # writes in place, as a checkpoint load does
    exact = copy.deepcopy(tab32).tabulate_radial(0)(g32)[K.FORCES]
    after = tab32(g32)[K.FORCES]
    assert rel(after, exact) < 1e-5 and rel(before, exact) > 1e-3


def test_bad_settings_are_refused():
    model = _mp_medium_like(distance_transform="Agnesi")
    with pytest.raises(ValueError, match="Agnesi"):
        model.tabulate_radial(2048)
    with pytest.raises(ValueError, match="at least 2 intervals"):
        _mp_medium_like().tabulate_radial(1)
    with pytest.raises(ValueError, match="table"):
        radial_spline(torch.ones(3), torch.ones(4, 3, 2), 5.0)
    with pytest.raises(TypeError, match="dtype"):
        radial_spline(torch.ones(3), torch.ones(4, 2, 4, dtype=torch.float64), 5.0)
