"""Channel-wise tensor product of sender features with edge spherical harmonics.

For every edge, channel ``u`` of an input block ``l1`` is coupled with the spherical
harmonics ``l2`` into every ``l3`` the target irreps contain, weighted by a per-edge,
per-channel weight from the radial MLP (e3nn's "uvu" mode):

    out[e, u, m3] = sqrt(2 l3 + 1) * sum_{m1 m2} C[m1, m2, m3] x[e, u, m1] Y[e, m2] w[e, u]

with ``C`` the unit-norm Wigner 3j symbol. Paths and output blocks are enumerated and
sorted exactly as mace-torch does (``tp_out_irreps_with_instructions``), so the flat
weight vector of a converted model keeps its meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import torch
from torch import nn

from ..irreps import Irrep, Irreps
from .clebsch_gordan import wigner_3j
from .linear import split_blocks

__all__ = ["Path", "channelwise_paths", "ChannelwiseTensorProduct"]


@dataclass(frozen=True)
class Path:
    """One coupling ``in1[i_in1] x sh[i_sh] -> out[i_out]``; ``mul`` channels."""

    i_in1: int
    i_sh: int
    i_out: int
    mul: int
    ir_out: Irrep


def channelwise_paths(
    irreps_in1: Irreps, irreps_sh: Irreps, target_irreps: Irreps
) -> Tuple[Irreps, List[Path]]:
    """Output irreps (sorted, one block per path) and the paths, sorted by output block."""
    blocks: List[Tuple[int, Irrep]] = []
    raw: List[Tuple[int, int, int]] = []
    for i1, (mul, ir1) in enumerate(irreps_in1):
        for i2, (_, ir2) in enumerate(irreps_sh):
            for ir_out in ir1 * ir2:
                if ir_out in target_irreps:
                    raw.append((i1, i2, len(blocks)))
                    blocks.append((mul, ir_out))
    # Stable sort of the output blocks by irrep; remember where each block went.
    order = sorted(range(len(blocks)), key=lambda k: blocks[k][1].sort_key)
    position = {k: pos for pos, k in enumerate(order)}
    irreps_out = Irreps([blocks[k] for k in order])
    paths = [
        Path(i1, i2, position[k], blocks[k][0], blocks[k][1]) for i1, i2, k in raw
    ]
    paths.sort(key=lambda p: p.i_out)
    return irreps_out, paths


class ChannelwiseTensorProduct(nn.Module):
    """``x [E, irreps_in1.dim], sh [E, irreps_sh.dim], w [E, weight_numel] -> [E, irreps_out.dim]``.

    ``weight_numel`` is the sum of the channel counts of all paths; the weights of a path
    are contiguous, paths in output order.
    """

    def __init__(self, irreps_in1: Irreps, irreps_sh: Irreps, target_irreps: Irreps) -> None:
        super().__init__()
        self.irreps_in1 = Irreps(irreps_in1)
        self.irreps_sh = Irreps(irreps_sh)
        self.irreps_out, self.paths = channelwise_paths(self.irreps_in1, self.irreps_sh, Irreps(target_irreps))
        self.weight_numel = sum(p.mul for p in self.paths)
        for k, p in enumerate(self.paths):
            l1 = self.irreps_in1[p.i_in1][1].l
            l2 = self.irreps_sh[p.i_sh][1].l
            l3 = p.ir_out.l
            cg = wigner_3j(l1, l2, l3) * math.sqrt(2 * l3 + 1)
            self.register_buffer(f"cg_{k}", cg, persistent=False)

    def forward(self, x: torch.Tensor, sh: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        x_blocks = split_blocks(x, self.irreps_in1)
        sh_slices = self.irreps_sh.slices()
        outs = []
        offset = 0
        for k, p in enumerate(self.paths):
            cg = getattr(self, f"cg_{k}").to(x.dtype)
            y = sh[:, sh_slices[p.i_sh]]  # [E, 2l2+1]
            w = weights[:, offset : offset + p.mul]  # [E, mul]
            offset += p.mul
            xb = x_blocks[p.i_in1]  # [E, mul, 2l1+1]
            if xb.shape[2] == 1:
                # Scalar input: the coupling is the identity up to its normalisation.
                out = (xb * w.unsqueeze(-1)) * torch.einsum("ijk,ej->ek", cg, y).unsqueeze(1)
            else:
                a = torch.einsum("ijk,ej->eik", cg, y)  # [E, 2l1+1, 2l3+1]
                out = torch.bmm(xb * w.unsqueeze(-1), a)  # [E, mul, 2l3+1]
            outs.append(out.reshape(out.shape[0], p.mul * p.ir_out.dim))
        return torch.cat(outs, dim=1)
