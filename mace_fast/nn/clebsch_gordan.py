"""Wigner 3j tensors and Wigner D matrices in the real basis of the spherical harmonics.

The real basis is the one of :func:`~mace_fast.nn.spherical_harmonics.spherical_harmonics`
(e3nn's: textbook real harmonics without Condon-Shortley phase, components ``m = -l..l``,
in a frame whose polar axis is e3nn's *y*).

``wigner_3j`` couples complex Clebsch-Gordan coefficients (Racah's formula, exact
rational arithmetic) into that real basis, normalises to unit Frobenius norm and fixes
the sign with the convention of e3nn 0.4.4 (the version mace-torch pins; e3nn >= 0.5
computes its tensors differently and has the opposite overall sign for some triples,
e.g. ``(1, 2, 2)``):

* it is computed for ``l1 <= l2 <= l3``; other orders are axis permutations of it, with a
  factor ``(-1)^(l1+l2+l3)`` for odd permutations (the symmetry of the 3j symbols);
* for sorted degrees the central entry ``C[l1, l2, l3]`` (all ``m = 0``) is positive; when it
  vanishes (``l1+l2+l3`` odd) the first non-zero entry in C order is positive.

``wigner_D`` exponentiates the real-basis rotation generators, obtained from the angular
momentum matrices by the same change of basis.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import Optional

import torch

__all__ = ["wigner_3j", "wigner_D", "random_rotation"]

# Entries below this (for a unit-norm tensor) are rounding noise, not structure.
_ZERO_TOL = 1e-10


def _clebsch_gordan_complex(l1: int, m1: int, l2: int, m2: int, l3: int, m3: int) -> float:
    """<l1 m1 l2 m2 | l3 m3> (Condon-Shortley convention), by Racah's formula."""
    if m1 + m2 != m3 or abs(m1) > l1 or abs(m2) > l2 or abs(m3) > l3:
        return 0.0
    f = math.factorial
    prefactor = Fraction(
        (2 * l3 + 1) * f(l3 + l1 - l2) * f(l3 - l1 + l2) * f(l1 + l2 - l3), f(l1 + l2 + l3 + 1)
    ) * (f(l3 + m3) * f(l3 - m3) * f(l1 - m1) * f(l1 + m1) * f(l2 - m2) * f(l2 + m2))
    total = Fraction(0)
    for k in range(l1 + l2 - l3 + 1):
        args = (k, l1 + l2 - l3 - k, l1 - m1 - k, l2 + m2 - k, l3 - l2 + m1 + k, l3 - l1 - m2 + k)
        if min(args) >= 0:
            total += Fraction((-1) ** k, math.prod(f(a) for a in args))
    # Exact rationals up to here: one rounding each for the square root and the sum.
    return math.sqrt(prefactor) * float(total)


@lru_cache(maxsize=None)
def _real_from_complex(l: int) -> torch.Tensor:
    """Unitary ``Q[2l+1 (real m), 2l+1 (complex m)]`` with ``Y_real = Q @ Y_complex``.

    Real harmonics without Condon-Shortley phase: for ``m > 0``
    ``Y_m = sqrt(2) (-1)^m Re Y^m`` and ``Y_-m = sqrt(2) (-1)^m Im Y^m``, using
    ``Y^-m = (-1)^m conj(Y^m)``.
    """
    q = torch.zeros(2 * l + 1, 2 * l + 1, dtype=torch.complex128)
    s = 2**-0.5
    q[l, l] = 1
    for m in range(1, l + 1):
        q[l + m, l + m] = (-1) ** m * s
        q[l + m, l - m] = s
        q[l - m, l - m] = 1j * s
        q[l - m, l + m] = -1j * (-1) ** m * s
    return q


@lru_cache(maxsize=None)
def _wigner_3j_sorted(l1: int, l2: int, l3: int) -> torch.Tensor:
    """Real 3j tensor for ``l1 <= l2 <= l3`` in e3nn 0.4.4's sign convention (float64)."""
    cg = torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1, dtype=torch.complex128)
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            if abs(m1 + m2) <= l3:
                m3 = m1 + m2
                cg[l1 + m1, l2 + m2, l3 + m3] = _clebsch_gordan_complex(l1, m1, l2, m2, l3, m3)
    # Intertwiner V1 (x) V2 -> V3 in the real basis: inputs via Q^dagger, output via Q.
    q1, q2, q3 = _real_from_complex(l1), _real_from_complex(l2), _real_from_complex(l3)
    c = torch.einsum("abc,ia,jb,kc->ijk", cg, q1.conj(), q2.conj(), q3)
    # The result is real for even l1+l2+l3 and purely imaginary for odd.
    c = c.imag if (l1 + l2 + l3) % 2 else c.real
    c = c / c.norm()
    centre = c[l1, l2, l3]
    if abs(centre) > _ZERO_TOL:
        pivot = centre
    else:
        flat = c.flatten()
        pivot = flat[(flat.abs() > _ZERO_TOL).nonzero()[0, 0]]
    return c if pivot > 0 else -c


@lru_cache(maxsize=None)
def _wigner_3j64(l1: int, l2: int, l3: int) -> torch.Tensor:
    ls = (l1, l2, l3)
    order = sorted(range(3), key=lambda i: ls[i])  # stable: ties keep their order
    base = _wigner_3j_sorted(*(ls[i] for i in order))
    # base's axis j belongs to ls[order[j]]; bring the axes back to (l1, l2, l3).
    out = base.permute(*(order.index(i) for i in range(3)))
    odd = sum(order[i] > order[j] for i in range(3) for j in range(i + 1, 3)) % 2
    if odd and (l1 + l2 + l3) % 2:
        out = -out
    return out.contiguous()


def wigner_3j(l1: int, l2: int, l3: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Real Wigner 3j tensor ``C[2l1+1, 2l2+1, 2l3+1]``, unit Frobenius norm.

    Invariant: ``C[i,j,k] D1[i,a] D2[j,b] D3[k,c] = C[a,b,c]`` for every rotation, with
    ``D = wigner_D``; equal to e3nn 0.4.4's ``o3.wigner_3j(l1, l2, l3)`` including its sign.
    """
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(f"degrees ({l1}, {l2}, {l3}) violate the triangle rule")
    return _wigner_3j64(int(l1), int(l2), int(l3)).to(dtype=dtype, copy=True)


@lru_cache(maxsize=None)
def _generators(l: int) -> torch.Tensor:
    """Real antisymmetric ``G[3, 2l+1, 2l+1]``: ``D(exp(t L_a)) = exp(t G_a)``.

    ``a`` runs over the x, y, z axes of e3nn's frame and ``L_a`` are the 3x3 rotation
    generators, ``(L_a)_bc = -eps_abc``.
    """
    m = torch.arange(-l, l + 1, dtype=torch.float64)
    j_plus = torch.diag(torch.sqrt(l * (l + 1) - m[:-1] * (m[:-1] + 1)), -1).to(torch.complex128)
    j_x = (j_plus + j_plus.T) / 2
    j_y = (j_plus - j_plus.T) / 2j
    j_z = torch.diag(m).to(torch.complex128)
    q = _real_from_complex(l)
    # Y^m(R x) = conj(D(R)) Y^m(x) with D(R) = exp(-i t J_a), so the generator acting on
    # harmonics of rotated points is i conj(J_a); conjugate it into the real basis.
    gens = [(q @ (1j * ja.conj()) @ q.conj().T).real for ja in (j_x, j_y, j_z)]
    # Textbook axes (x', y', z') are e3nn's (z, x, y): e3nn's x-axis is the textbook y'.
    return torch.stack([gens[1], gens[2], gens[0]])


def _rotation_vector(rotation: torch.Tensor) -> torch.Tensor:
    """Axis times angle (angle in [0, pi]) of rotation matrices ``[..., 3, 3] -> [..., 3]``.

    Goes through the unit quaternion, taking its largest component from the square root
    and the others from off-diagonal sums (Shepperd's method) to stay accurate at all angles.
    """
    r = rotation
    r00, r11, r22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    a = r[..., 2, 1] - r[..., 1, 2]
    b = r[..., 0, 2] - r[..., 2, 0]
    c = r[..., 1, 0] - r[..., 0, 1]
    sxy = r[..., 0, 1] + r[..., 1, 0]
    sxz = r[..., 0, 2] + r[..., 2, 0]
    syz = r[..., 1, 2] + r[..., 2, 1]
    # Four unnormalised quaternions (w, x, y, z), each stable when its pivot is largest.
    cands = torch.stack(
        [
            torch.stack([1 + r00 + r11 + r22, a, b, c], -1),
            torch.stack([a, 1 + r00 - r11 - r22, sxy, sxz], -1),
            torch.stack([b, sxy, 1 - r00 + r11 - r22, syz], -1),
            torch.stack([c, sxz, syz, 1 - r00 - r11 + r22], -1),
        ],
        -2,
    )
    best = torch.diagonal(cands, dim1=-2, dim2=-1).argmax(-1)  # each candidate's pivot
    quat = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    quat = torch.where(quat[..., :1] < 0, -quat, quat)  # w >= 0: angle in [0, pi]
    w, v = quat[..., 0], quat[..., 1:]
    vn = v.norm(dim=-1)
    angle = 2 * torch.atan2(vn, w)
    # angle / |v| -> 2 / w as the rotation approaches the identity.
    scale = torch.where(vn > 1e-12, angle / vn.clamp_min(1e-300), 2 / w)
    return v * scale[..., None]


def wigner_D(l: int, rotation: torch.Tensor) -> torch.Tensor:
    """Real Wigner D matrix ``[..., 2l+1, 2l+1]`` of proper rotations ``[..., 3, 3]``.

    ``spherical_harmonics(R @ x)_l = wigner_D(l, R) @ spherical_harmonics(x)_l``; for
    ``l = 1`` it is ``R`` itself. Computed in float64, returned in ``rotation``'s dtype.
    """
    r64 = rotation.detach().to(torch.float64)
    if (torch.linalg.det(r64) < 0).any():
        raise ValueError("wigner_D needs proper rotations (det +1); handle inversion via parity")
    omega = _rotation_vector(r64)
    gen = torch.einsum("...a,aij->...ij", omega, _generators(l).to(r64.device))
    return torch.linalg.matrix_exp(gen).to(rotation.dtype)


def random_rotation(
    generator: Optional[torch.Generator] = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A Haar-random proper rotation matrix ``[3, 3]`` (from a normalised Gaussian quaternion)."""
    quat = torch.randn(4, generator=generator, dtype=torch.float64)
    w, x, y, z = quat / quat.norm()
    rot = torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
        ]
    )
    return rot.to(dtype)
