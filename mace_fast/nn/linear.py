"""Equivariant linear maps on irreps features (``mul_ir`` layout, see :mod:`mace_fast.irreps`).

A linear map can only mix channels of the same irrep. Every output block gets one weight
``[fan_in, mul_out]`` over all input channels of its irrep (input blocks of that irrep
concatenated in order), scaled by ``1/sqrt(fan_in)`` — e3nn's "element" path
normalisation, so weights are standard-normal at initialisation.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import nn

from ..irreps import Irrep, Irreps
from .derived import derived
from .grouped_layout import GroupedLayout

__all__ = ["EquivariantLinear", "ElementLinear", "ElementEmbedding", "element_groups", "split_blocks"]

ElementGroups = List[Tuple[int, torch.Tensor]]


def split_blocks(x: torch.Tensor, irreps: Irreps) -> List[torch.Tensor]:
    """``[N, irreps.dim]`` -> one ``[N, mul, 2l+1]`` view per block.

    One ``split`` rather than a slice per block: its backward is a single concatenation,
    where slices each allocate a zero tensor and add into it.
    """
    parts = torch.split(x, [mul * ir.dim for mul, ir in irreps], dim=1)
    return [p.reshape(x.shape[0], mul, ir.dim) for p, (mul, ir) in zip(parts, irreps)]


def _inputs_by_irrep(irreps_in: Irreps, ir: Irrep) -> Tuple[List[int], int]:
    idx = [i for i, (_, ir_in) in enumerate(irreps_in) if ir_in == ir]
    return idx, sum(irreps_in[i][0] for i in idx)


def _merged_split(irreps_in: Irreps, sources: List[List[int]]) -> Optional[Tuple[List[int], List[Optional[int]]]]:
    """Column sizes splitting ``x`` so that each output's input blocks are one part, and
    each output's part index; None unless every output's blocks are adjacent and no block
    feeds two outputs. Adjacent blocks ``[C1, d]`` and ``[C2, d]`` of a ``mul_ir`` row are
    one ``[C1 + C2, d]`` view, so the inputs need no concatenation (a copy of ``x``)."""
    owner: List[Optional[int]] = [None] * len(irreps_in)
    for k, idx in enumerate(sources):
        if idx and idx != list(range(idx[0], idx[0] + len(idx))):
            return None
        for i in idx:
            if owner[i] is not None:
                return None
            owner[i] = k
    sizes: List[int] = []
    part_of: List[Optional[int]] = [None] * len(sources)
    previous: Optional[int] = None
    for i, (mul, ir) in enumerate(irreps_in):
        if owner[i] is not None and owner[i] == previous:
            sizes[-1] += mul * ir.dim
        else:
            sizes.append(mul * ir.dim)
            if owner[i] is not None:
                part_of[owner[i]] = len(sizes) - 1
        previous = owner[i]
    return sizes, part_of


def _inputs(x: torch.Tensor, irreps_in: Irreps, sources: List[List[int]], fan_ins: List[int], merged) -> List[Optional[torch.Tensor]]:
    """Per output block, its input channels ``[N, fan_in, 2l+1]`` (None without inputs)."""
    n = x.shape[0]
    if merged is not None:
        parts = torch.split(x, merged[0], dim=1)
        return [
            None if j is None else parts[j].reshape(n, fan_in, irreps_in[idx[0]][1].dim)
            for j, fan_in, idx in zip(merged[1], fan_ins, sources)
        ]
    blocks = split_blocks(x, irreps_in)
    return [
        None if not idx else (torch.cat([blocks[i] for i in idx], dim=1) if len(idx) > 1 else blocks[idx[0]])
        for idx in sources
    ]


class EquivariantLinear(nn.Module):
    """``[N, irreps_in.dim] -> [N, irreps_out.dim]``; output irreps absent from the input are zero.

    ``weights[k]`` is ``[fan_in_k, mul_out_k]`` for output block ``k`` (empty if fan_in is 0).
    """

    def __init__(self, irreps_in: Irreps, irreps_out: Irreps) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        self.sources: List[List[int]] = []
        weights = []
        for mul_out, ir in self.irreps_out:
            idx, fan_in = _inputs_by_irrep(self.irreps_in, ir)
            self.sources.append(idx)
            weights.append(nn.Parameter(torch.randn(fan_in, mul_out)))
        self.weights = nn.ParameterList(weights)
        self._fan_ins = [w.shape[0] for w in weights]
        self._merged = _merged_split(self.irreps_in, self.sources)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``scale``: a constant factor on the output, folded into the (cached) weights."""
        inputs = _inputs(x, self.irreps_in, self.sources, self._fan_ins, self._merged)
        outs = []
        for k, ((mul_out, ir), xin, w) in enumerate(zip(self.irreps_out, inputs, self.weights)):
            if xin is None:
                outs.append(x.new_zeros(x.shape[0], mul_out * ir.dim))
                continue
            out = torch.einsum("nid,io->nod", xin, self._scaled_weight(k, scale))
            outs.append(out.reshape(x.shape[0], mul_out * ir.dim))
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]

    def _scaled_weight(self, k: int, scale: float) -> torch.Tensor:
        """``weights[k] * scale / sqrt(fan_in)`` (cached; empty where the block has no input)."""
        w = self.weights[k]
        name = f"w{k}" if scale == 1.0 else f"w{k}*{scale!r}"
        return derived(self, name, [w], lambda: w * (scale / math.sqrt(max(w.shape[0], 1))))

    def forward_grouped(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The same map from the grouped layout (:mod:`~mace_fast.nn.grouped_layout`), for
        output blocks of equal multiplicity ``C``: ``x [N, irreps_in.dim] -> [D, N, C]``,
        ``D = irreps_out.dim / C``. Output block ``k`` is rows ``[2l+1, N, C]`` of the result,
        so ``result.permute(1, 2, 0)`` is the per-channel ``[N, C, D]``.

        One batched matrix product per output block, on views: no copy of the input or the
        output. Its backward gives the input's gradient in the grouped layout and is not
        itself differentiable (the CUDA path is differentiated once).
        """
        if "_grouped_plan" not in self.__dict__:
            if len({mul for mul, _ in self.irreps_out}) != 1:
                raise ValueError(f"forward_grouped needs output blocks of equal multiplicity, got {self.irreps_out}")
            layout = GroupedLayout(self.irreps_in)
            plan = []  # per output block: (its group or None, first row, 2l+1)
            row = 0
            for _, ir in self.irreps_out:
                plan.append((next((g for g, grp in enumerate(layout.groups) if grp.ir == ir), None), row, ir.dim))
                row += ir.dim
            self.__dict__["_grouped_plan"] = (layout, plan)
        layout, plan = self.__dict__["_grouped_plan"]
        weights = [self._scaled_weight(k, scale) for k in range(len(self.weights))]
        return _GroupedLinear.apply(x, layout, plan, *weights)


class _GroupedLinear(torch.autograd.Function):
    """``x [N, F_in]`` (grouped) ``-> [D, N, C]``: output block ``k``, rows ``row_k`` to
    ``row_k + 2l+1``, is ``group_k [2l+1, N, F] @ w_k [F, C]`` (zero without a group)."""

    @staticmethod
    def forward(ctx, x, layout, plan, *weights):
        n, channels = x.shape[0], weights[0].shape[1]
        out = x.new_empty(plan[-1][1] + plan[-1][2], n, channels)
        for (g, row, dim), w in zip(plan, weights):
            if g is None:
                out[row : row + dim].zero_()
            else:  # batched over the components; w broadcast (batch stride 0)
                torch.bmm(layout.components(x, g), w.expand(dim, *w.shape), out=out[row : row + dim])
        ctx.save_for_backward(x, *weights)
        ctx.layout, ctx.plan = layout, plan
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            raise RuntimeError("the grouped linear map has no double backward (training uses the torch path)")
        x, *weights = ctx.saved_tensors
        layout = ctx.layout
        grad_out = grad_out.contiguous()
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x)
            written = set()
            for (g, row, dim), w in zip(ctx.plan, weights):
                if g is None:
                    continue
                target = layout.components(grad_x, g)  # written in place, [2l+1, N, F]
                w_t = w.t().expand(dim, w.shape[1], w.shape[0])
                if g in written:  # two output blocks of one irrep read the same group
                    target.baddbmm_(grad_out[row : row + dim], w_t)
                else:
                    torch.bmm(grad_out[row : row + dim], w_t, out=target)
                    written.add(g)
            for g in range(len(layout.groups)):
                if g not in written:  # a group no output reads
                    layout.components(grad_x, g).zero_()
        grad_weights = []
        for k, ((g, row, dim), w) in enumerate(zip(ctx.plan, weights)):
            if not ctx.needs_input_grad[3 + k]:
                grad_weights.append(None)
            elif g is None:
                grad_weights.append(torch.zeros_like(w))
            else:  # sum over components and nodes
                grad_weights.append(torch.bmm(layout.components(x, g).transpose(1, 2), grad_out[row : row + dim]).sum(0))
        return (grad_x, None, None, *grad_weights)


class ElementLinear(nn.Module):
    """A linear map with a separate weight per element of the receiving atom.

    ``x [N, irreps_in.dim], element [N] -> [N, irreps_out.dim]``. This is MACE's "skip"
    tensor product of the features with the one-hot element vector; ``weights[k]`` is
    ``[num_elements, fan_in_k, mul_out_k]`` and the scale ``1/sqrt(fan_in * num_elements)``.
    """

    def __init__(self, irreps_in: Irreps, irreps_out: Irreps, num_elements: int) -> None:
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        self.num_elements = num_elements
        self.sources: List[List[int]] = []
        weights = []
        for mul_out, ir in self.irreps_out:
            idx, fan_in = _inputs_by_irrep(self.irreps_in, ir)
            self.sources.append(idx)
            weights.append(nn.Parameter(torch.randn(num_elements, fan_in, mul_out)))
        self.weights = nn.ParameterList(weights)
        self._fan_ins = [w.shape[1] for w in weights]
        self._merged = _merged_split(self.irreps_in, self.sources)

    def forward(self, x: torch.Tensor, element: torch.Tensor, groups: Optional[ElementGroups] = None) -> torch.Tensor:
        """``groups`` (from :func:`element_groups`) saves recomputing them on every call."""
        groups = element_groups(element) if groups is None else groups
        inputs = _inputs(x, self.irreps_in, self.sources, self._fan_ins, self._merged)
        outs = []
        for k, ((mul_out, ir), xin, w) in enumerate(zip(self.irreps_out, inputs, self.weights)):
            if xin is None:
                outs.append(x.new_zeros(x.shape[0], mul_out * ir.dim))
                continue
            w = derived(self, f"w{k}", [w], lambda w=w: w / math.sqrt(w.shape[1] * self.num_elements))
            outs.append(_per_element_matmul(xin, groups, w).reshape(x.shape[0], mul_out * ir.dim))
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]


def element_groups(element: torch.Tensor) -> ElementGroups:
    """``[(z, atom indices [n_z])]`` for every element present (one host sync)."""
    return [(z, (element == z).nonzero().squeeze(1)) for z in torch.unique(element).tolist()]


def _per_element_matmul(x: torch.Tensor, groups: ElementGroups, w: torch.Tensor) -> torch.Tensor:
    """``x [N, i, d], w [Z, i, o] -> [N, o, d]`` with each atom's element's weight.

    Atoms are grouped by element so that each group is one matrix product; gathering a
    weight per atom would cost ``N * i * o`` memory.
    """
    if len(groups) == 1:
        return torch.einsum("nid,io->nod", x, w[groups[0][0]])
    out = x.new_zeros(x.shape[0], w.shape[2], x.shape[2])
    for z, sel in groups:
        out = out.index_copy(0, sel, torch.einsum("nid,io->nod", x[sel], w[z]))
    return out


class ElementEmbedding(nn.Module):
    """Learned scalar features of each element: ``element [N] -> [N, num_channels]``.

    Equal to a linear map of the one-hot element vector with e3nn normalisation:
    ``weight[z] / sqrt(num_elements)``; ``weight`` is ``[num_elements, num_channels]``.
    """

    def __init__(self, num_elements: int, num_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_elements, num_channels))

    def table(self) -> torch.Tensor:
        """The features of every element: ``[num_elements, num_channels]``."""
        w = self.weight
        return derived(self, "w", [w], lambda: w / math.sqrt(w.shape[0]))

    def forward(self, element: torch.Tensor) -> torch.Tensor:
        return self.table()[element]
