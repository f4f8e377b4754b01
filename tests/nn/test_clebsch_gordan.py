"""Wigner 3j tensors and Wigner D matrices against e3nn and against their defining properties.

mace_fast's 3j signs are those of e3nn 0.4.4 (mace-torch's pin, the basis of converted
models); mace_fast never imports e3nn, so its numbers do not depend on the e3nn installed.
e3nn >= 0.5 computes its 3j tensors anew, "via a change of basis from the complex to real
basis" (its 0.5.0 changelog), which flips the overall sign of some triples, e.g. (1, 2, 2).
Each (l1, l2, l3) invariant is one-dimensional, so that sign is the only freedom: against
e3nn < 0.5 the tensors must be equal, against newer e3nn equal up to one sign per triple.
"""

import contextlib
import itertools
import math

import pytest
import torch

from mace_fast.nn.clebsch_gordan import random_rotation, wigner_3j, wigner_D
from mace_fast.nn.spherical_harmonics import spherical_harmonics


def _triples(lmax):
    return [t for t in itertools.product(range(lmax + 1), repeat=3) if abs(t[0] - t[1]) <= t[2] <= t[0] + t[1]]


def _axis_angle(axis, angle):
    """Rotation matrix by Rodrigues' formula (float64)."""
    n = axis / axis.norm()
    k = torch.tensor([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _e3nn_o3():
    """e3nn's ``o3`` and whether its 3j signs are 0.4.x's (skips without e3nn)."""
    o3 = pytest.importorskip("e3nn.o3")
    import e3nn

    major, minor = (int(part) for part in e3nn.__version__.split(".")[:2])
    return o3, (major, minor) < (0, 5)


def _assert_3j_matches(ours, ref, same_signs, triple):
    """Equal (e3nn < 0.5), or equal up to one overall sign for the triple (newer e3nn)."""
    err = (ours - ref).abs().max().item()
    if not same_signs:
        err = min(err, (ours + ref).abs().max().item())
    assert err < 1e-12, (triple, err)


@contextlib.contextmanager
def _default_dtype(dtype):
    """e3nn >= 0.5 builds its so(3) generators (hence ``D_from_matrix``) in the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def test_wigner_3j_matches_e3nn_all_orders():
    o3, same_signs = _e3nn_o3()
    for l1, l2, l3 in _triples(4):
        ours = wigner_3j(l1, l2, l3)
        assert ours.shape == (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1) and ours.dtype == torch.float64
        ref = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        assert ref.shape == ours.shape
        _assert_3j_matches(ours, ref, same_signs, (l1, l2, l3))


def test_wigner_3j_matches_e3nn_high_degrees():
    o3, same_signs = _e3nn_o3()
    for l1, l2, l3 in _triples(8):
        if l1 <= l2 <= l3 and l3 >= 5:
            ref = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
            _assert_3j_matches(wigner_3j(l1, l2, l3), ref, same_signs, (l1, l2, l3))


def test_wigner_3j_norm_dtype_and_cache_isolation():
    c = wigner_3j(2, 3, 4, dtype=torch.float32)
    assert c.dtype == torch.float32
    assert abs(c.double().norm().item() - 1) < 1e-6
    c64 = wigner_3j(2, 3, 4)
    c64.mul_(0)  # the caller owns its copy: the cache is untouched
    assert abs(wigner_3j(2, 3, 4).norm().item() - 1) < 1e-14
    with pytest.raises(ValueError):
        wigner_3j(1, 1, 3)


@pytest.mark.parametrize("l1,l2,l3", [(1, 1, 1), (1, 2, 3), (2, 2, 2), (2, 3, 4), (3, 3, 5), (4, 6, 8)])
def test_wigner_3j_invariance(rng, l1, l2, l3):
    c = wigner_3j(l1, l2, l3)
    for _ in range(3):
        rot = random_rotation(rng)
        d1, d2, d3 = wigner_D(l1, rot), wigner_D(l2, rot), wigner_D(l3, rot)
        rotated = torch.einsum("ijk,ia,jb,kc->abc", c, d1, d2, d3)
        assert (rotated - c).abs().max() < 1e-12


def _e3nn_wigner_D(o3, l, rng):
    """A random rotation and e3nn's ``D^l`` of it, where two routes through e3nn agree.

    e3nn goes through Euler angles, and for about 0.2 % of rotations (an Euler angle near
    0.05 rad with e3nn 0.6) its matrix is ~2e-10 off. So the oracle is taken only where
    ``D(R)`` and ``D(R Q^T) D(Q)`` (Q another random rotation) agree to 1e-12."""
    irrep = o3.Irrep(l, (-1) ** l)
    while True:
        rot, other = random_rotation(rng), random_rotation(rng)
        with _default_dtype(torch.float64):  # else e3nn >= 0.5 is float32-accurate only
            ref = irrep.D_from_matrix(rot)
            again = irrep.D_from_matrix(rot @ other.T) @ irrep.D_from_matrix(other)
        assert ref.dtype == torch.float64
        if (ref - again).abs().max() < 1e-12:
            return rot, ref


@pytest.mark.parametrize("l", [0, 1, 2, 3])
def test_wigner_D_matches_e3nn(rng, l):
    o3 = pytest.importorskip("e3nn.o3")
    for _ in range(4):
        rot, ref = _e3nn_wigner_D(o3, l, rng)
        torch.testing.assert_close(wigner_D(l, rot), ref, atol=1e-10, rtol=0)


def test_wigner_D_l1_is_the_rotation(rng):
    rot = random_rotation(rng)
    torch.testing.assert_close(wigner_D(1, rot), rot, atol=1e-14, rtol=0)
    assert torch.equal(wigner_D(0, rot), torch.ones(1, 1, dtype=torch.float64))


@pytest.mark.parametrize("l", [2, 5])
def test_wigner_D_is_an_orthogonal_representation(rng, l):
    r1, r2 = random_rotation(rng), random_rotation(rng)
    d1, d2, d12 = wigner_D(l, r1), wigner_D(l, r2), wigner_D(l, r1 @ r2)
    torch.testing.assert_close(d12, d1 @ d2, atol=1e-12, rtol=0)
    torch.testing.assert_close(d1 @ d1.T, torch.eye(2 * l + 1, dtype=torch.float64), atol=1e-13, rtol=0)
    batched = wigner_D(l, torch.stack([r1, r2]))
    assert batched.shape == (2, 2 * l + 1, 2 * l + 1)
    torch.testing.assert_close(batched[1], d2, atol=1e-14, rtol=0)


@pytest.mark.parametrize("angle", [0.0, 1e-11, 1e-6, 1.0, math.pi - 1e-9, math.pi])
def test_wigner_D_equivariance_at_awkward_angles(rng, angle):
    """Near the identity and near half-turns the rotation's axis is hard to recover."""
    rot = _axis_angle(torch.randn(3, generator=rng, dtype=torch.float64), angle)
    x = torch.randn(20, 3, generator=rng, dtype=torch.float64)
    y, y_rot = spherical_harmonics(x, 4), spherical_harmonics(x @ rot.T, 4)
    for l in range(5):
        block = slice(l * l, (l + 1) ** 2)
        torch.testing.assert_close(y_rot[:, block], y[:, block] @ wigner_D(l, rot).T, atol=1e-12, rtol=0)


def test_wigner_D_rejects_improper_rotations(rng):
    with pytest.raises(ValueError):
        wigner_D(2, -random_rotation(rng))


def test_random_rotation(rng):
    rot = random_rotation(rng)
    torch.testing.assert_close(rot @ rot.T, torch.eye(3, dtype=torch.float64), atol=1e-14, rtol=0)
    assert abs(torch.linalg.det(rot).item() - 1) < 1e-14
    assert random_rotation(dtype=torch.float32).dtype == torch.float32
    seeded = [random_rotation(torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(seeded[0], seeded[1])
