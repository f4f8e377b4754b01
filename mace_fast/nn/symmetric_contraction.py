"""MACE's product basis: symmetric contraction of a node's features with themselves.

For every channel ``c`` and every output irrep ``L`` of the hidden features,

    B[n, c, m] = sum_{nu=1..correlation} sum_k W_nu[z_n, k, c]
                 sum_{i_1..i_nu} U_nu[m, i_1, .., i_nu, k] x[n, c, i_1] ... x[n, c, i_nu]

where ``x [N, C, D]`` holds the ``D = sum_l (2l+1)`` components of channel ``c`` and
``U_nu`` is an orthonormal basis of the symmetric equivariant couplings
(:func:`~mace_fast.nn.coupling_basis.symmetric_coupling_basis`).

Because ``U_nu`` is symmetric in its ``i`` axes, only the ``binom(D+nu-1, nu)``
distinct monomials ``x_{i_1} .. x_{i_nu}`` (``i_1 <= .. <= i_nu``) are needed: the sum
over all index tuples becomes one dense matrix product of the monomials with ``U`` folded
onto them (each tuple's entry times its number of orderings). That is far less work and
memory than contracting the dense ``D^nu`` tensor.
"""

from __future__ import annotations

import itertools
import math
from typing import List

import torch
from torch import nn

from ..irreps import Irreps
from .coupling_basis import symmetric_coupling_basis
from .derived import derived

__all__ = ["SymmetricContraction", "monomial_indices"]


def monomial_indices(dim: int, degree: int) -> torch.Tensor:
    """``[M, degree]`` index tuples ``i_1 <= .. <= i_degree`` in lexicographic order."""
    combos = list(itertools.combinations_with_replacement(range(dim), degree))
    return torch.tensor(combos, dtype=torch.long).reshape(len(combos), degree)


def _folded_basis(u: torch.Tensor, degree: int) -> torch.Tensor:
    """``U [2L+1, D.., K]`` -> ``[M, (2L+1) * K]`` on the distinct monomials."""
    dim = u.shape[1]
    idx = monomial_indices(dim, degree)
    counts = torch.tensor(
        [math.factorial(degree) / math.prod(math.factorial(n) for n in _multiplicities(t)) for t in idx.tolist()],
        dtype=u.dtype,
    )
    picked = u[(slice(None),) + tuple(idx[:, j] for j in range(degree))]  # [2L+1, M, K]
    picked = picked * counts[None, :, None]
    return picked.permute(1, 0, 2).reshape(idx.shape[0], -1)


def _multiplicities(t: List[int]) -> List[int]:
    return [len(list(g)) for _, g in itertools.groupby(t)]


class SymmetricContraction(nn.Module):
    """``x [N, C, D], element [N] -> [N, irreps_out.dim]`` (``mul_ir`` layout).

    ``irreps_in`` lists the per-channel irreps of ``x`` (multiplicity one each, e.g.
    ``0e+1o+2e+3o``); every block of ``irreps_out`` must have ``C`` channels.
    ``weights[b * correlation + nu - 1]`` is ``[num_elements, K_nu, C]`` for output block
    ``b``; the folded bases are buffers computed at construction (not saved).
    """

    def __init__(
        self, irreps_in: Irreps, irreps_out: Irreps, correlation: int, num_elements: int
    ) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        self.correlation = correlation
        self.num_channels = self.irreps_out[0][0]
        dim = self.irreps_in.dim
        weights = []
        self.num_params: List[List[int]] = []
        folded = {}
        for b, (mul, ir) in enumerate(self.irreps_out):
            if mul != self.num_channels:
                raise ValueError(f"all output blocks need {self.num_channels} channels, got {self.irreps_out}")
            ks = []
            for degree in range(1, correlation + 1):
                u = symmetric_coupling_basis(self.irreps_in, ir, degree, dtype=torch.float64)
                k = u.shape[-1]
                ks.append(k)
                folded[b, degree] = _folded_basis(u, degree)
                weights.append(nn.Parameter(torch.randn(num_elements, k, mul) / max(k, 1)))
            self.num_params.append(ks)
        # Keep only the monomials some output uses: the basis is very sparse (for
        # 0e+1o+2e+3o inputs, 410 of the 968 monomials of degree <= 3 feed 0e+1o outputs).
        for degree in range(1, correlation + 1):
            used = torch.zeros(monomial_indices(dim, degree).shape[0], dtype=torch.bool)
            for b in range(len(self.irreps_out)):
                if folded[b, degree].shape[1]:
                    used |= folded[b, degree].abs().amax(dim=1) > 0
            self.register_buffer(f"monomials_{degree}", monomial_indices(dim, degree)[used], persistent=False)
            for b in range(len(self.irreps_out)):
                self.register_buffer(f"basis_{b}_{degree}", folded[b, degree][used], persistent=False)
        self.weights = nn.ParameterList(weights)
        self._kernel_key = None  # compiled CUDA kernels, on first use

    def monomials(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Distinct products of ``degree`` components: ``[N, C, M_degree]`` per degree."""
        out = []
        for degree in range(1, self.correlation + 1):
            idx = getattr(self, f"monomials_{degree}")
            prod = x[:, :, idx[:, 0]]
            for j in range(1, degree):
                prod = prod * x[:, :, idx[:, j]]
            out.append(prod)
        return out

    def forward(self, x: torch.Tensor, element: torch.Tensor, use_kernels: bool = False) -> torch.Tensor:
        if use_kernels:
            from ..ops.symmetric_contraction import compile_symmetric_contraction, symmetric_contraction

            if self._kernel_key is None:
                self._kernel_key = compile_symmetric_contraction(self)
            weight = derived(self, "weight", list(self.weights), lambda: torch.cat(list(self.weights), dim=1))
            return symmetric_contraction(x, element, weight, self._kernel_key)
        n, c, _ = x.shape
        monos = self.monomials(x)
        outs = []
        for b, (_, ir) in enumerate(self.irreps_out):
            acc = x.new_zeros(n, c, ir.dim)
            for degree in range(1, self.correlation + 1):
                k = self.num_params[b][degree - 1]
                if k == 0:
                    continue
                basis = getattr(self, f"basis_{b}_{degree}").to(x.dtype)  # [M, (2L+1) K]
                feats = (monos[degree - 1] @ basis).reshape(n, c, ir.dim, k)
                w = self.weights[b * self.correlation + degree - 1][element]  # [N, K, C]
                acc = acc + torch.einsum("ncmk,nkc->ncm", feats, w)
            outs.append(acc.reshape(n, c * ir.dim))
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
