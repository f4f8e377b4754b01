"""Spherical harmonics: e3nn's basis, normalisation, equivariance, derivatives."""

import pytest
import torch

from mace_fast.nn.clebsch_gordan import random_rotation, wigner_D
from mace_fast.nn.spherical_harmonics import spherical_harmonics


def _vectors(rng, n=64, dtype=torch.float64):
    """Random directions with lengths spread over orders of magnitude (never zero)."""
    x = torch.randn(n, 3, generator=rng, dtype=torch.float64)
    scale = 10 ** (4 * torch.rand(n, 1, generator=rng, dtype=torch.float64) - 2)
    return (x * scale).to(dtype)


def _e3nn_sh(x, lmax):
    o3 = pytest.importorskip("e3nn.o3")
    return o3.spherical_harmonics(list(range(lmax + 1)), x, normalize=True, normalization="component")


@pytest.mark.parametrize("lmax", [0, 1, 2, 3, 4, 6])
def test_matches_e3nn_float64(rng, lmax):
    x = _vectors(rng)
    ours = spherical_harmonics(x, lmax)
    assert ours.shape == (64, (lmax + 1) ** 2) and ours.dtype == torch.float64
    torch.testing.assert_close(ours, _e3nn_sh(x, lmax), atol=1e-12, rtol=0)


@pytest.mark.parametrize("lmax", [1, 3, 4])
def test_matches_e3nn_float32(rng, lmax):
    x = _vectors(rng, dtype=torch.float32)
    ours = spherical_harmonics(x, lmax)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, _e3nn_sh(x, lmax), atol=2e-5, rtol=1e-5)


def test_l1_is_sqrt3_times_unit_vector(rng):
    x = _vectors(rng)
    y = spherical_harmonics(x, 1)
    torch.testing.assert_close(y[:, 1:4], 3**0.5 * x / x.norm(dim=-1, keepdim=True), atol=1e-14, rtol=0)


def test_component_normalisation_and_parity(rng):
    x = _vectors(rng)
    lmax = 5
    y, y_neg = spherical_harmonics(x, lmax), spherical_harmonics(-x, lmax)
    for l in range(lmax + 1):
        block = slice(l * l, (l + 1) ** 2)
        torch.testing.assert_close((y[:, block] ** 2).sum(-1), torch.full((64,), 2.0 * l + 1, dtype=torch.float64))
        torch.testing.assert_close(y_neg[:, block], (-1) ** l * y[:, block], atol=1e-13, rtol=0)


def test_batch_shape_and_scale_invariance(rng):
    x = torch.randn(2, 5, 3, generator=rng, dtype=torch.float64)
    y = spherical_harmonics(x, 3)
    assert y.shape == (2, 5, 16)
    torch.testing.assert_close(spherical_harmonics(7.5 * x, 3), y, atol=1e-13, rtol=0)


def test_zero_vector_gives_constant_and_finite_gradient(rng):
    x = torch.cat([torch.zeros(1, 3, dtype=torch.float64), _vectors(rng, n=3)]).requires_grad_(True)
    y = spherical_harmonics(x, 4)
    assert torch.isfinite(y).all()
    expected = torch.zeros(25, dtype=torch.float64)
    expected[0] = 1.0
    assert torch.equal(y[0].detach(), expected)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("lmax", [1, 2, 3, 4])
def test_equivariance(rng, lmax):
    x = _vectors(rng)
    rot = random_rotation(rng)
    y, y_rot = spherical_harmonics(x, lmax), spherical_harmonics(x @ rot.T, lmax)
    for l in range(lmax + 1):
        block = slice(l * l, (l + 1) ** 2)
        torch.testing.assert_close(y_rot[:, block], y[:, block] @ wigner_D(l, rot).T, atol=1e-12, rtol=0)


def test_second_derivatives_match_e3nn(rng):
    """Hessian-vector products of a random functional, through double backward."""
    lmax = 4
    x0 = _vectors(rng, n=16)
    w = torch.randn(16, (lmax + 1) ** 2, generator=rng, dtype=torch.float64)
    v = torch.randn(16, 3, generator=rng, dtype=torch.float64)

    def hvp(fn):
        x = x0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((fn(x) * w).sum(), x, create_graph=True)
        (h,) = torch.autograd.grad((g * v).sum(), x)
        return g.detach(), h

    g_ours, h_ours = hvp(lambda x: spherical_harmonics(x, lmax))
    g_ref, h_ref = hvp(lambda x: _e3nn_sh(x, lmax))
    assert h_ours.abs().max() > 0
    torch.testing.assert_close(g_ours, g_ref, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(h_ours, h_ref, atol=1e-9, rtol=1e-9)
