"""The grouped layout of node features: the CUDA path's layout of the aggregated message.

In the ``mul_ir`` layout (:mod:`mace_fast.irreps`) a block ``[N, mul, 2l+1]`` must be
transposed before a linear map can multiply it, and its result transposed back: at 32k
atoms of MP-medium those copies cost more than the products themselves. In the grouped
layout each row ``[irreps.dim]`` holds, for every distinct irrep (in order of first
appearance), one group ``[2l+1, F]``: component-major, ``F`` the irrep's total multiplicity
(its blocks' channels side by side, in block order). Component ``m`` of a group is then an
``[N, F]`` matrix with leading dimension ``irreps.dim``, and the group's linear map one
batched matrix product over its ``2l+1`` components, read and written in place.

Rows stay whole, as in ``mul_ir``: the kernels that gather a sender's row touch one
contiguous stretch of memory. ``(block b, channel c, component m)`` of node ``n`` is at
column ``column_g + m F_g + first_b + c`` (``first_b``: the channels of the group's blocks
before ``b``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch

from ..irreps import Irrep, Irreps

__all__ = ["Group", "GroupedLayout"]


@dataclass(frozen=True)
class Group:
    """The blocks of one irrep: ``blocks`` (indices into the irreps), ``channels`` ``F`` and
    ``column`` (where the group starts in a row)."""

    ir: Irrep
    blocks: Tuple[int, ...]
    channels: int
    column: int


class GroupedLayout:
    """The grouped layout of ``irreps`` (see the module docstring)."""

    def __init__(self, irreps: Irreps) -> None:
        self.irreps = Irreps(irreps)
        order: List[Irrep] = []
        for _, ir in self.irreps:
            if ir not in order:
                order.append(ir)
        self.groups: List[Group] = []
        self.group_of: List[int] = [0] * len(self.irreps)  # block -> group
        self.first_channel: List[int] = [0] * len(self.irreps)  # block -> its first channel in the group
        column = 0
        for g, ir in enumerate(order):
            blocks = tuple(b for b, (_, ir_b) in enumerate(self.irreps) if ir_b == ir)
            channels = 0
            for b in blocks:
                self.group_of[b], self.first_channel[b] = g, channels
                channels += self.irreps[b][0]
            self.groups.append(Group(ir, blocks, channels, column))
            column += ir.dim * channels

    def column(self, block: int, component: int) -> int:
        """The column of channel 0 of ``(block, component)``; channel ``c`` is ``c`` further."""
        g = self.groups[self.group_of[block]]
        return g.column + component * g.channels + self.first_channel[block]

    def components(self, x: torch.Tensor, group: int) -> torch.Tensor:
        """Group ``group`` of ``x [N, irreps.dim]`` as a ``[2l+1, N, F]`` view."""
        g = self.groups[group]
        part = x[:, g.column : g.column + g.ir.dim * g.channels]
        return part.view(x.shape[0], g.ir.dim, g.channels).transpose(0, 1)

    def from_mul_ir(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, irreps.dim]``: ``mul_ir`` -> grouped; differentiable."""
        n = x.shape[0]
        sizes = [mul * ir.dim for mul, ir in self.irreps]
        blocks = [p.reshape(n, mul, ir.dim) for p, (mul, ir) in zip(x.split(sizes, 1), self.irreps)]
        parts = [torch.cat([blocks[b] for b in g.blocks], dim=1).transpose(1, 2).reshape(n, -1) for g in self.groups]
        return torch.cat(parts, dim=1) if parts else x

    def to_mul_ir(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`from_mul_ir`."""
        out = []
        for b, (mul, ir) in enumerate(self.irreps):
            first = self.first_channel[b]
            comps = self.components(x, self.group_of[b])[:, :, first : first + mul]  # [2l+1, N, mul]
            out.append(comps.permute(1, 2, 0).reshape(x.shape[0], mul * ir.dim))
        return torch.cat(out, dim=1) if out else x
