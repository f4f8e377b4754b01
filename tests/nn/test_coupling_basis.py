"""Symmetric coupling (product) basis: orthonormal, symmetric, O(3)-equivariant, complete.

Completeness is checked twice: against the multiplicity predicted by characters (the
dimension of the equivariant part of Sym^nu of the input representation) and, when
mace-torch is installed, against the span of its symmetrised ``U_matrix_real``.
Also holds the Irreps.sort/simplify comparison with e3nn (the irreps these bases index).
"""

import itertools
import math
import time

import pytest
import torch

from mace_fast.irreps import Irrep, Irreps
from mace_fast.nn.clebsch_gordan import random_rotation, wigner_D
from mace_fast.nn.coupling_basis import _symmetric_coupling_basis64, symmetric_coupling_basis

IRREPS_IN = ["0e+1o", "0e+1o+2e", "0e+1o+2e+3o"]
IRREPS_OUT = ["0e", "1o", "2e", "1e", "3o"]
CASES = list(itertools.product(IRREPS_IN, IRREPS_OUT, [1, 2, 3]))


def _max_abs(t):
    return t.abs().max().item() if t.numel() else 0.0


def _flat(u):
    return u.reshape(math.prod(u.shape[:-1]), u.shape[-1])


def _block_diag_D(irreps, rot):
    return torch.block_diag(*[wigner_D(ir.l, rot) for mul, ir in irreps for _ in range(mul)])


def _act(u, d_in, d_out):
    """``sum_i U[m', i..] prod_j d_in[i_j, i'_j]`` and ``d_out[m, m'] U[m', i'..]`` for all columns."""
    nu = u.dim() - 2
    x = u.movedim(-1, 0)  # [K, M, D, ..., D]
    lhs = x
    for _ in range(nu):  # contracts the first remaining input axis, appends the new one
        lhs = torch.tensordot(lhs, d_in, dims=([2], [0]))
    rhs = torch.einsum("mn,kn...->km...", d_out, x)
    return lhs, rhs


def _symmetrise(u, nu):
    perms = list(itertools.permutations(range(1, nu + 1)))
    return sum(u.permute((0,) + p + (nu + 1,)) for p in perms) / len(perms)


def _character_multiplicity(irreps, out, nu, points=512):
    """Multiplicity of ``out`` in Sym^nu(irreps) under O(3), by integrating characters.

    Class functions of SO(3) are trigonometric polynomials in the angle, so the mean over a
    uniform grid on [0, 2pi) with Haar weight (1 - cos) is exact. Improper elements are the
    inversion times a rotation; Sym^nu's character comes from power sums (Newton's identity).
    """
    theta = 2 * math.pi * torch.arange(points, dtype=torch.float64) / points

    def chi(l, angle):
        return sum(torch.cos(m * angle) for m in range(-l, l + 1))

    irs = [ir for mul, ir in irreps for _ in range(mul)]
    total = 0.0
    for inversion in (False, True):
        power = [None] + [
            sum((ir.p**k if inversion else 1) * chi(ir.l, k * theta) for ir in irs) for k in range(1, nu + 1)
        ]
        h = [torch.ones_like(theta)]
        for n in range(1, nu + 1):
            h.append(sum(power[k] * h[n - k] for k in range(1, n + 1)) / n)
        sign = out.p if inversion else 1
        total += sign * (h[nu] * chi(out.l, theta) * (1 - torch.cos(theta))).mean().item() / 2
    return round(total)


@pytest.mark.parametrize("irreps_in,ir_out,nu", CASES)
def test_orthonormal_symmetric_equivariant(rng, irreps_in, ir_out, nu):
    irreps, out = Irreps(irreps_in), Irrep.parse(ir_out)
    u = symmetric_coupling_basis(irreps, out, nu)
    k = u.shape[-1]
    assert u.shape == (out.dim,) + (irreps.dim,) * nu + (k,) and u.dtype == torch.float64
    a = _flat(u)
    torch.testing.assert_close(a.T @ a, torch.eye(k, dtype=torch.float64), atol=1e-12, rtol=0)
    for p in itertools.permutations(range(1, nu + 1)):
        assert _max_abs(u.permute((0,) + p + (nu + 1,)) - u) < 1e-13
    # Random rotations, the inversion, and an improper rotation (inversion times rotation).
    parity_in = torch.diag(torch.tensor([ir.p for mul, ir in irreps for _ in range(mul * ir.dim)], dtype=torch.float64))
    rot = random_rotation(rng)
    d_in, d_out = _block_diag_D(irreps, rot), wigner_D(out.l, rot)
    inversion = (parity_in, out.p * torch.eye(out.dim, dtype=torch.float64))
    for d_i, d_o in [(d_in, d_out), inversion, (parity_in @ d_in, out.p * d_out)]:
        lhs, rhs = _act(u, d_i, d_o)
        assert _max_abs(lhs - rhs) < 1e-12


@pytest.mark.parametrize("irreps_in,ir_out,nu", CASES + [("0e+1o+2e", "2e", 4), ("1o+1e", "0o", 3), ("2x0e+1o", "1o", 2)])
def test_dimension_matches_characters(irreps_in, ir_out, nu):
    irreps, out = Irreps(irreps_in), Irrep.parse(ir_out)
    k = symmetric_coupling_basis(irreps, out, nu).shape[-1]
    assert k == _character_multiplicity(irreps, out, nu)


# mace-torch needs ~3 s per lmax-3 correlation-3 basis: keep two of those (the character
# test above covers the rest exactly).
MACE_CASES = [c for c in CASES if not (c[0] == "0e+1o+2e+3o" and c[2] == 3 and c[1] not in ("1o", "2e"))]


@pytest.mark.parametrize("irreps_in,ir_out,nu", MACE_CASES)
def test_spans_mace_symmetrised_basis(irreps_in, ir_out, nu):
    pytest.importorskip("mace.tools.cg", reason="mace-torch not installed: no reference product basis")
    from e3nn import o3
    from mace.tools.cg import U_matrix_real

    ours = symmetric_coupling_basis(irreps_in, ir_out, nu)
    theirs = U_matrix_real(
        irreps_in=o3.Irreps(irreps_in), irreps_out=o3.Irreps(ir_out), correlation=nu, use_cueq_cg=False, dtype=torch.float64
    )[-1]
    if Irrep.parse(ir_out).l == 0:  # mace squeezes the size-1 output axis
        theirs = theirs.unsqueeze(0)
    assert theirs.shape[:-1] == ours.shape[:-1]
    rows = math.prod(ours.shape[:-1])
    a = ours.reshape(rows, -1)
    b = _symmetrise(theirs, nu).reshape(rows, -1)  # mace's columns are not symmetric
    sv = torch.linalg.svdvals(b)
    rank = int((sv > 1e-10 * sv.max()).sum()) if sv.numel() and sv.max() > 1e-12 else 0
    assert rank == a.shape[1]
    if rank:
        u_b = torch.linalg.svd(b, full_matrices=False).U[:, :rank]
        assert (b - a @ (a.T @ b)).norm() < 1e-10 * b.norm()  # theirs inside ours
        assert (a - u_b @ (u_b.T @ a)).norm() < 1e-10 * a.norm()  # ours inside theirs


def test_shapes_zero_columns_and_scalar_output_axis():
    empty = symmetric_coupling_basis("0e+1o", "2e", 1)
    assert empty.shape == (5, 4, 0)
    scalar = symmetric_coupling_basis("0e+1o+2e", "0e", 2)
    assert scalar.shape == (1, 9, 9, 3)  # leading axis kept for L = 0
    assert symmetric_coupling_basis("0e+1o", "1o", 1, dtype=torch.float32).dtype == torch.float32


def test_deterministic_and_cache_returns_copies():
    first = symmetric_coupling_basis("0e+1o+2e", "1o", 3)
    first.mul_(0)  # the caller owns its copy
    again = symmetric_coupling_basis("0e+1o+2e", "1o", 3)
    assert again.abs().max() > 0
    _symmetric_coupling_basis64.cache_clear()
    assert torch.equal(symmetric_coupling_basis("0e+1o+2e", "1o", 3), again)


def test_fast_enough_for_lmax3_correlation3():
    start = time.perf_counter()
    for ir in ("0e", "1o", "2e"):
        _symmetric_coupling_basis64.cache_clear()
        symmetric_coupling_basis("0e+1o+2e+3o", ir, 3)
    assert time.perf_counter() - start < 1.0


# Irreps helpers ------------------------------------------------------------------------

IRREPS_EXAMPLES = ["2x1o+0e", "1o+1o+1e+0e+0e+1o", "1o+2e+1o+1o+0e+0e", "2x0e+0x1o+3x0e"]
# Same l with both parities: e3nn orders them odd first (its Irrep sorts as the tuple (l, p)).
MIXED_PARITY = ["1e+1o+0o+0e", "3x2e+1x1o+2x1e+0e+4x0o", "0o+0e+2o+2e+1e+1o+3o+3e"]

@pytest.mark.parametrize("text", IRREPS_EXAMPLES + MIXED_PARITY)
def test_irreps_sort_matches_e3nn(text):
    o3 = pytest.importorskip("e3nn.o3")
    assert str(Irreps(text).sort()) == str(o3.Irreps(text).sort().irreps)


@pytest.mark.parametrize("text", IRREPS_EXAMPLES + MIXED_PARITY)
def test_irreps_simplify_matches_e3nn(text):
    o3 = pytest.importorskip("e3nn.o3")
    assert str(Irreps(text).simplify()) == str(o3.Irreps(text).simplify())
