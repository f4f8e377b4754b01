"""MACE interaction blocks: messages from neighbours, aggregated onto each atom.

One class covers the four element-agnostic blocks of mace-torch; they differ in two
switches:

============================================  ========  =======
block                                         residual  density
============================================  ========  =======
RealAgnosticInteractionBlock                  no        no
RealAgnosticResidualInteractionBlock          yes       no
RealAgnosticDensityInteractionBlock           no        yes
RealAgnosticDensityResidualInteractionBlock   yes       yes
============================================  ========  =======

``residual``: the skip connection (a per-element linear map of the *input* features) is
returned for the product block to add; otherwise the per-element map is applied to the
message itself. ``density``: the message is divided by ``1 + sum_j tanh(f(r_ij)^2)``, a
learned neighbour density, instead of the fixed average number of neighbours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
from torch import nn

from ..irreps import Irreps
from .linear import ElementGroups, ElementLinear, EquivariantLinear, element_groups
from .radial import RadialMLP
from .tensor_product import ChannelwiseTensorProduct

if TYPE_CHECKING:
    from ..ops.channelwise_tp import EdgeCSR
    from ..ops.radial_spline import TabulatedRadial

__all__ = ["INTERACTION_BLOCKS", "InteractionBlock", "scatter_sum"]

INTERACTION_BLOCKS = {
    "RealAgnosticInteractionBlock": (False, False),
    "RealAgnosticResidualInteractionBlock": (True, False),
    "RealAgnosticDensityInteractionBlock": (False, True),
    "RealAgnosticDensityResidualInteractionBlock": (True, True),
}


def scatter_sum(src: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    """Sum rows of ``src [E, ...]`` into ``[num, ...]`` by ``index [E]``."""
    out = src.new_zeros((num,) + src.shape[1:])
    return out.index_add(0, index, src)


def _channel_major_columns(irreps: Irreps) -> torch.Tensor:
    """For blocks ``[C, 2l+1]`` of equal ``C``: the column of ``[N, irreps.dim]`` that holds
    (channel c, component k) of the channel-major layout ``[N, C, D]``, in that order."""
    muls = {mul for mul, _ in irreps}
    if len(muls) != 1:
        raise ValueError(f"per-channel layout needs equal multiplicities, got {irreps}")
    (channels,) = muls
    offsets, dims, offset = [], [], 0
    for mul, ir in irreps:
        offsets.append(offset)
        dims.append(ir.dim)
        offset += mul * ir.dim
    columns = [off + c * d + m for c in range(channels) for off, d in zip(offsets, dims) for m in range(d)]
    return torch.tensor(columns, dtype=torch.long)


class _GatherColumns(torch.autograd.Function):
    """``x[:, index]`` for a permutation ``index`` of the columns. The backward gathers with
    the inverse permutation (autograd's own backward for indexing would scatter-add)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index, inverse)
        return x[:, index]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        index, inverse = ctx.saved_tensors
        return _GatherColumns.apply(grad, inverse, index), None, None


class InteractionBlock(nn.Module):
    """``(node_feats [N, in], element [N], sh [E, Y], edge_feats [E, B], ...) -> (x [N, C, D], sc)``.

    ``x`` is the aggregated message reshaped per channel for the symmetric contraction
    (``D = sum (2l+1)`` over ``target_irreps``); ``sc`` is ``[N, hidden_irreps.dim]`` for
    residual blocks and ``None`` otherwise.
    """

    def __init__(
        self,
        kind: str,
        node_feats_irreps: Irreps,
        sh_irreps: Irreps,
        target_irreps: Irreps,
        hidden_irreps: Irreps,
        num_elements: int,
        num_radial: int,
        radial_mlp: List[int],
        avg_num_neighbors: float,
        radial_act_scale: Optional[float] = None,
    ) -> None:
        super().__init__()
        if kind not in INTERACTION_BLOCKS:
            raise ValueError(f"unknown interaction block {kind!r}; choose from {sorted(INTERACTION_BLOCKS)}")
        self.kind = kind
        self.residual, self.density = INTERACTION_BLOCKS[kind]
        self.node_feats_irreps = Irreps(node_feats_irreps)
        self.target_irreps = Irreps(target_irreps)
        self.hidden_irreps = Irreps(hidden_irreps)
        self.avg_num_neighbors = float(avg_num_neighbors)

        self.linear_up = EquivariantLinear(self.node_feats_irreps, self.node_feats_irreps)
        self.conv_tp = ChannelwiseTensorProduct(self.node_feats_irreps, Irreps(sh_irreps), self.target_irreps)
        self.radial_mlp = RadialMLP([num_radial] + list(radial_mlp) + [self.conv_tp.weight_numel], "silu", radial_act_scale)
        self.linear = EquivariantLinear(self.conv_tp.irreps_out, self.target_irreps)
        if self.residual:
            self.skip = ElementLinear(self.node_feats_irreps, self.hidden_irreps, num_elements)
        else:
            self.skip = ElementLinear(self.target_irreps, self.target_irreps, num_elements)
        if self.density:
            self.density_mlp = RadialMLP([num_radial, 1], "silu", radial_act_scale)
        # per_channel as one gather: [N, target.dim] column of (channel c, component k).
        index = _channel_major_columns(self.target_irreps)
        self.register_buffer("_channel_index", index, persistent=False)
        self.register_buffer("_channel_index_inverse", torch.argsort(index), persistent=False)
        self._tp_key: Optional[str] = None  # compiled CUDA kernels, on first use
        # On the CUDA path the message of residual blocks stays in the grouped layout
        # (mace_fast/nn/grouped_layout.py) from the tensor product to the symmetric
        # contraction; non-residual blocks apply their element map to it in mul_ir.
        self.grouped_message = self.residual
        self._radial_kernel = False  # the fused radial-MLP trunk applies (set with the kernels)

    def forward(
        self,
        node_feats: torch.Tensor,
        element: torch.Tensor,
        sh: torch.Tensor,
        edge_feats: torch.Tensor,
        edge_index: torch.Tensor,
        cutoff: Optional[torch.Tensor] = None,
        csr: Optional["EdgeCSR"] = None,
        groups: Optional[ElementGroups] = None,
        grad_into_w: bool = False,
        by_element: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        radial_table: Optional["TabulatedRadial"] = None,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """With ``csr`` (the CUDA backend) the fused kernel replaces gather, product and sum;
        ``grad_into_w`` lets its backward reuse the radial weights' memory (see
        :func:`~mace_fast.ops.channelwise_tp.tp_aggregate`). ``by_element``
        ``(element_feats [Zp, C], slot [N])``, with ``csr``: the input features are
        ``element_feats[slot]`` (the first interaction), and the message is computed from
        the atomic base (:mod:`mace_fast.ops.atomic_base`). ``radial_table``
        (:meth:`MACE.tabulate_radial <mace_fast.model.MACE.tabulate_radial>`): instead of the
        radial MLP times the envelope, its table at the lengths of the weight rows (edges,
        or pairs with ``csr.pairs``, where the tensor-product kernels read the table
        themselves); with ``by_element``, the table of the MLP's hidden layers."""
        sender, receiver = edge_index[0], edge_index[1]
        num_nodes = node_feats.shape[0]
        sc = self.skip(node_feats, element, groups) if self.residual else None

        if csr is not None and by_element is not None:
            from ..ops.atomic_base import first_message

            density = self.density_of(edge_feats, cutoff, receiver, csr, num_nodes) if self.density else None
            groups = element_groups(element) if groups is None else groups
            radial = None if radial_table is None else radial_table.weights()
            x = first_message(self, by_element[0], by_element[1], groups, sh, edge_feats, cutoff, density, csr, radial)
            return x, sc

        h = self.linear_up(node_feats)
        pairs = csr.pairs if csr is not None else None
        # With a table on pair rows (the kernels' path) the tensor product reads it itself.
        table_in_tp = radial_table is not None and pairs is not None
        if radial_table is None:
            weights = self._mlp_weights(edge_feats, cutoff, csr)
        elif table_in_tp:
            weights = None
        else:
            weights = radial_table.weights()
        if csr is None:
            message = scatter_sum(self.conv_tp(h[sender], sh, weights), receiver, num_nodes)
            return self._finish(self.linear(message), element, edge_feats, cutoff, receiver, csr, groups), sc

        from ..ops.channelwise_tp import compile_tp, tp_aggregate, tp_aggregate_tabulated

        if self._tp_key is None:
            self._tp_key = compile_tp(self.conv_tp, self.grouped_message)
        channels = self.node_feats_irreps[0][0]
        if table_in_tp:
            t = radial_table
            message = tp_aggregate_tabulated(h, sh, t.r, t.table, t.r_max, csr, self._tp_key, channels)
        else:
            message = tp_aggregate(h, sh, weights, csr, self._tp_key, channels, grad_into_w)
        # 1 / avg_num_neighbors folded into the linear map's weights: no pass over the
        # message for it, forward or backward.
        scale = 1.0 if self.density else 1.0 / self.avg_num_neighbors
        if self.grouped_message:
            x = self.linear.forward_grouped(message, scale)  # [D, N, C]
            if self.density:
                x = x / (self.density_of(edge_feats, cutoff, receiver, csr, num_nodes) + 1).view(1, num_nodes, 1)
            return x.permute(1, 2, 0), sc  # [N, C, D], read in place by the symmetric contraction
        message = self.linear(message, scale=scale)
        return self._finish(message, element, edge_feats, cutoff, receiver, csr, groups, normalised=True), sc

    def _mlp_weights(
        self, edge_feats: torch.Tensor, cutoff: Optional[torch.Tensor], csr: Optional["EdgeCSR"]
    ) -> torch.Tensor:
        """The radial MLP times the envelope: ``[E, P*C]``, or one row per pair of edges with
        ``csr.pairs`` (ops/edge_pairs.py)."""
        pairs = csr.pairs if csr is not None else None
        if pairs is not None:
            edge_feats = pairs.gather(edge_feats)
            cutoff = None if cutoff is None else pairs.gather(cutoff)
        if csr is not None and self._radial_kernel:
            from ..ops.radial_mlp import radial_mlp

            weights = radial_mlp(self.radial_mlp, edge_feats)  # hidden layers fused in one kernel
        else:
            weights = self.radial_mlp(edge_feats)
        return weights if cutoff is None else weights * cutoff

    def _finish(
        self,
        message: torch.Tensor,
        element: torch.Tensor,
        edge_feats: torch.Tensor,
        cutoff: Optional[torch.Tensor],
        receiver: torch.Tensor,
        csr: Optional["EdgeCSR"],
        groups: Optional[ElementGroups],
        normalised: bool = False,
    ) -> torch.Tensor:
        """Normalise the linearly mapped message ``[N, target.dim]`` (unless ``normalised``)
        and apply the element map of non-residual blocks: ``-> [N, C, D]``."""
        if self.density:
            message = message / (self.density_of(edge_feats, cutoff, receiver, csr, message.shape[0]) + 1)
        elif not normalised:
            message = message / self.avg_num_neighbors
        if not self.residual:
            message = self.skip(message, element, groups)
        return self.per_channel(message)

    def density_of(
        self,
        edge_feats: torch.Tensor,
        cutoff: Optional[torch.Tensor],
        receiver: torch.Tensor,
        csr: Optional["EdgeCSR"],
        num_nodes: int,
    ) -> torch.Tensor:
        """The learned neighbour density ``sum_j tanh(f(r_ij)^2)`` of density blocks: ``[N, 1]``."""
        edge_density = torch.tanh(self.density_mlp(edge_feats) ** 2)
        if cutoff is not None:
            edge_density = edge_density * cutoff
        if csr is None:
            return scatter_sum(edge_density, receiver, num_nodes)
        from ..ops.segment import segment_sum

        return segment_sum(edge_density, csr.edge_ptr)

    def per_channel(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, target_irreps.dim] -> [N, C, D]``: each channel's components side by side.

        One gather of columns (and one in the backward) instead of concatenating the blocks
        along their last axis: that strided concatenation and its backward took 1.5 ms at
        32k atoms of MP-medium on an H100, the two gathers ~0.5 ms."""
        out = _GatherColumns.apply(x, self._channel_index, self._channel_index_inverse)
        return out.view(x.shape[0], self.target_irreps[0][0], -1)
