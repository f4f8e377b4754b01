"""Basis of symmetric, O(3)-equivariant tensors: MACE's product basis.

MACE's symmetric contraction multiplies one channel's feature vector ``x`` (irreps such as
``0e+1o+2e+3o``, dimension ``D``) ``nu`` times with itself and maps the product to an
output irrep ``L``. The maps that can do this are the tensors ``T[2L+1, D, ..., D]`` that are
equivariant under O(3) and (because the ``nu`` factors are the same vector) symmetric in the
``nu`` input axes; :func:`symmetric_coupling_basis` returns an orthonormal basis of that space.

Construction, block by block: every non-zero block of such a tensor is indexed by a tuple of
input irreps, and a symmetric tensor is fixed by its blocks for *sorted* tuples. For one sorted
tuple ``(a_1 <= ... <= a_nu)`` whose parities multiply to the output parity:

1. couple left to right with Wigner 3j tensors, ``l_a1 x l_a2 -> l_12``, ``l_12 x l_a3 -> ...``,
   over every intermediate degree, ending in ``L``; these paths span all equivariant maps on
   the block;
2. average each path over the permutations of axes that carry the same irrep (the block's
   share of the full symmetrisation; it may vanish or become dependent);
3. Gram-Schmidt in path order (so the result is deterministic) with a rank tolerance;
4. copy each basis block to every distinct rearrangement of the tuple, scaled by
   ``1/sqrt(#rearrangements)`` so the full tensor has unit norm.

Blocks of different tuples do not overlap, so the columns are orthonormal overall.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import List, Sequence, Tuple, Union

import torch

from ..irreps import Irrep, Irreps
from .clebsch_gordan import wigner_3j

__all__ = ["symmetric_coupling_basis"]

# A symmetrised path keeps a direction only if this much of its norm is new (relative to
# the path's norm before symmetrisation); genuine directions are O(0.1), noise O(1e-15).
_RANK_TOL = 1e-8


def _coupling_paths(ls: Sequence[int], l_out: int) -> List[torch.Tensor]:
    """Equivariant maps ``[2l_out+1, 2ls[0]+1, ..., 2ls[-1]+1]``, one per coupling path.

    Paths are ordered by their intermediate degrees (lexicographically, smallest first).
    """
    # Each partial path is (current degree, tensor [2l+1, d_1, ..., d_j]).
    partial: List[Tuple[int, torch.Tensor]] = [(ls[0], torch.eye(2 * ls[0] + 1, dtype=torch.float64))]
    for j, l_next in enumerate(ls[1:], start=1):
        budget = sum(ls[j + 1 :])  # later factors can shift the degree by at most this
        grown = []
        for l_cur, t in partial:
            for l_new in range(abs(l_cur - l_next), l_cur + l_next + 1):
                if abs(l_new - l_out) > budget:
                    continue
                c = wigner_3j(l_cur, l_next, l_new)  # [cur, next, new]
                grown.append((l_new, torch.einsum("a...,abc->c...b", t, c)))
        partial = grown
    return [t for l, t in partial if l == l_out]


def _stabiliser(key: Sequence[int]) -> List[Tuple[int, ...]]:
    """Permutations of positions that leave the tuple ``key`` unchanged."""
    perms = itertools.permutations(range(len(key)))
    return [p for p in perms if all(key[i] == key[j] for i, j in enumerate(p))]


def _block_basis(ls: Sequence[int], key: Sequence[int], l_out: int) -> List[torch.Tensor]:
    """Orthonormal stabiliser-symmetric equivariant blocks for one sorted tuple."""
    perms = _stabiliser(key)
    basis: List[torch.Tensor] = []
    for path in _coupling_paths(ls, l_out):
        ref = path.norm()
        v = sum(path.permute(0, *(1 + i for i in p)) for p in perms) / len(perms)
        for _ in range(2):  # second pass removes what rounding left of earlier directions
            for b in basis:
                v = v - (b * v).sum() * b
        if v.norm() > _RANK_TOL * ref:
            basis.append(v / v.norm())
    return basis


@lru_cache(maxsize=None)
def _symmetric_coupling_basis64(irreps_in: str, irrep_out: str, nu: int) -> torch.Tensor:
    irreps = Irreps(irreps_in)
    out = Irrep.parse(irrep_out)
    # One entry per irrep copy: a block of multiplicity m is m consecutive copies.
    irs = [ir for mul, ir in irreps for _ in range(mul)]
    starts = [0]
    for ir in irs:
        starts.append(starts[-1] + ir.dim)
    dim = starts[-1]

    # (tuple, its orthonormal blocks) for every sorted tuple that contributes.
    found = []
    for key in itertools.combinations_with_replacement(range(len(irs)), nu):
        if math.prod(irs[i].p for i in key) == out.p:
            blocks = _block_basis([irs[i].l for i in key], key, out.l)
            if blocks:
                found.append((key, blocks))

    num = sum(len(blocks) for _, blocks in found)
    basis = torch.zeros((num, out.dim) + (dim,) * nu, dtype=torch.float64)
    k = 0
    for key, blocks in found:
        # Distinct rearrangements of the tuple, each with a permutation producing it.
        arrangements = {}
        for p in itertools.permutations(range(nu)):
            arrangements.setdefault(tuple(key[i] for i in p), p)
        scale = 1 / math.sqrt(len(arrangements))
        for b in blocks:
            for target, p in arrangements.items():
                index = (k, slice(None)) + tuple(slice(starts[i], starts[i + 1]) for i in target)
                basis[index] = scale * b.permute(0, *(1 + i for i in p))
            k += 1
    return basis.movedim(0, -1).contiguous()


def symmetric_coupling_basis(
    irreps_in: Union[Irreps, str],
    irrep_out: Union[Irrep, str],
    correlation: int,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Orthonormal basis ``U[2L+1, D, ..., D, K]`` (``correlation`` D-axes) of symmetric tensors.

    The columns ``U[..., k]`` span exactly the tensors ``T[m, i_1..i_nu]`` that are
    O(3)-equivariant from ``irreps_in``^(x nu) to ``irrep_out`` (output parity = product of the
    input parities) and symmetric under permutations of the ``nu`` input axes. Columns are
    orthonormal when flattened, ordered deterministically (by sorted irrep tuple, then
    coupling path); ``K`` may be 0. ``irreps_in`` is the per-channel list, normally of
    multiplicity one (``"0e+1o+2e+3o"``); input components are ordered block by block.
    """
    if correlation < 1:
        raise ValueError(f"correlation must be >= 1, got {correlation}")
    irreps_in = Irreps(irreps_in)
    irrep_out = Irrep.parse(irrep_out) if isinstance(irrep_out, str) else irrep_out
    u = _symmetric_coupling_basis64(str(irreps_in), str(irrep_out), int(correlation))
    return u.to(dtype=dtype, copy=True)
