"""Real spherical harmonics in e3nn's basis ("component" normalisation).

Degree ``l`` has ``2l+1`` components, ``sum_m Y_lm(x)^2 = 2l+1`` on the unit sphere, and
the blocks ``l = 0..lmax`` are concatenated. The basis, component order and signs are
e3nn's: the *y* axis is the polar axis and the ``l = 1`` block is ``sqrt(3) * (x, y, z)``.
Equivalently, e3nn's harmonics are the textbook real harmonics (z polar, no
Condon-Shortley phase, components ``m = -l..l``) evaluated at the relabelled point
``(x', y', z') = (z, x, y)`` -- a cyclic (proper) relabelling, so all rotation
properties carry over unchanged.

The harmonics are built from the homogeneous Cartesian recurrences of the associated
Legendre functions, so they are polynomials in the normalised vector: plain torch ops,
differentiable to any order, and a zero vector gives ``Y_0 = 1`` and zeros elsewhere.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import List, Tuple

import torch
import torch.nn.functional as F

__all__ = ["spherical_harmonics"]


@lru_cache(maxsize=None)
def _norms(l: int) -> Tuple[float, ...]:
    """Prefactors ``sqrt((2l+1) (2 - delta_m0) (l-m)!/(l+m)!)`` for ``m = 0..l``."""
    return tuple(
        math.sqrt((2 * l + 1) * (1 if m == 0 else 2) * math.factorial(l - m) / math.factorial(l + m))
        for m in range(l + 1)
    )


def spherical_harmonics(vectors: torch.Tensor, lmax: int) -> torch.Tensor:
    """Real spherical harmonics of the directions of ``vectors``.

    vectors: ``[..., 3]`` (any length, normalised here; zero vectors are allowed).
    Returns ``[..., (lmax+1)**2]``: blocks ``l = 0..lmax``, each ``2l+1`` components,
    identical to ``e3nn.o3.spherical_harmonics(range(lmax+1), vectors, normalize=True,
    normalization="component")``.
    """
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    u = F.normalize(vectors, dim=-1)
    # Textbook (z-polar) coordinates of e3nn's frame: x' = z, y' = x, z' = y.
    x, y, z = u[..., 2], u[..., 0], u[..., 1]
    # |u|^2 (1, or 0 for a zero vector) keeps every term homogeneous of degree l, so a
    # zero vector gives exact zeros for l > 0 instead of the Legendre constants.
    r2 = x * x + y * y + z * z

    # cos_m + i sin_m = (x + i y)^m: the azimuthal factors times sin(theta)^m.
    cos_m: List[torch.Tensor] = [torch.ones_like(x)]
    sin_m: List[torch.Tensor] = [torch.zeros_like(x)]
    for m in range(1, lmax + 1):
        cm, sm = cos_m[-1], sin_m[-1]
        cos_m.append(x * cm - y * sm)
        sin_m.append(x * sm + y * cm)

    # q[l][m] = P_l^m(z) / sin(theta)^m (no Condon-Shortley phase), homogeneous in (z, r2).
    q: List[List[torch.Tensor]] = []
    for l in range(lmax + 1):
        row = []
        for m in range(l + 1):
            if m == l:  # P_m^m = (2m-1)!! sin^m
                row.append(torch.full_like(x, float(math.prod(range(1, 2 * m, 2)))))
            elif m == l - 1:  # P_{m+1}^m = (2m+1) z P_m^m
                row.append((2 * m + 1) * z * q[l - 1][m])
            else:  # (l-m) P_l^m = (2l-1) z P_{l-1}^m - (l+m-1) P_{l-2}^m
                row.append(((2 * l - 1) * z * q[l - 1][m] - (l + m - 1) * r2 * q[l - 2][m]) / (l - m))
        q.append(row)

    out: List[torch.Tensor] = []
    for l in range(lmax + 1):
        c = _norms(l)
        out.extend(c[-m] * q[l][-m] * sin_m[-m] for m in range(-l, 0))
        out.extend(c[m] * q[l][m] * cos_m[m] for m in range(0, l + 1))
    return torch.stack(out, dim=-1)
