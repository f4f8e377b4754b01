"""Radial weights once per pair of edges: an edge and its reverse share them.

The radial MLP of an edge is a function of its length and of the two elements alike, so
on a symmetric graph (every edge ``j -> i`` within the cutoff has its reverse ``i -> j``, as
in a full neighbour list) an edge and its reverse have the same radial weights, bit for
bit: the reverse's vector is the exact negation of the edge's. Computing the MLP once per
pair halves its cost, which is most of the per-edge work of a MACE step (the last layer
alone is ``[E, 64] @ [64, P*C]``, forward and backward).

Rows of the per-pair tables (``[M, ...]``, ``M = E // 2 + 1``, static so that a step can be
captured as a CUDA graph):

* row 0 is all zeros; edges at or beyond ``r_max`` (zero weights: the envelope, and
  bias-free MLPs) point at it;
* rows ``1..count`` hold the pairs of edges within ``r_max``, in edge order of the pair's
  *owner*, its edge of smaller index;
* rows past ``count`` (only when edges lie beyond ``r_max``) are spare, zero input.

``rows [E + 1]`` (int64) says where each edge reads: ``+r`` for the owner of row ``r``,
``-r`` for its reverse, ``0`` beyond the cutoff, and last the ``count``. The backward
gives a row the sum of both edges' gradients, and the per-pair MLP passes it to the owner's
features alone: the reverse's features are the same function of the positions, so that
is the same derivative.

The reverse of each edge is ``csr.sender_perm``'s edge at the same position, as
:func:`~mace_fast.ops.channelwise_tp.symmetric_flag` establishes; so pairing is valid
exactly when that flag is 1, which the caller must know on the host (the row count is a
shape). :meth:`MACE.edges_symmetric <mace_fast.model.MACE.edges_symmetric>` tells it, at
the cost of one synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch

__all__ = ["EdgePairs", "edge_pairs", "flag_is_set"]


@dataclass
class EdgePairs:
    """Where each edge's radial weights live in the per-pair tables (module docstring)."""

    rows: torch.Tensor  # [E + 1] int64: signed row of each edge, then the rows in use
    pair_edge: torch.Tensor  # [M] int64: the owner edge of each row, E for row 0 and spares
    # gather's results by input (both interactions gather the same edge features)
    _gathered: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def num_rows(self) -> int:
        return self.pair_edge.shape[0]

    def gather(self, edge_values: torch.Tensor) -> torch.Tensor:
        """``[E, ...] -> [M, ...]``: each row's owner's values, zeros for row 0 and spares.
        Differentiable: the gradient of a row goes to its owner, zeros to other edges. A
        tensor gathered again gives the same result tensor (one gather, one backward)."""
        seen = self._gathered.get(id(edge_values))
        if seen is not None and seen[0] is edge_values:
            return seen[1]
        out = _GatherPairs.apply(edge_values, self.pair_edge, self.rows[:-1])
        self._gathered[id(edge_values)] = (edge_values, out)
        return out


class _GatherPairs(torch.autograd.Function):
    """Rows of ``values`` by ``pair_edge`` (index ``E``: zeros). The backward gathers each
    owner's row gradient by its row (``rows > 0``): autograd's own backward of indexing
    would scatter-add, and row 0 and every spare row index the same slot ``E``, a long run
    of duplicate indices that its sort-based kernel serialises (5.5 ms at 1.46M edges with
    a tenth of them beyond r_max, on an H100)."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, pair_edge: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        pad = values.new_zeros((1,) + values.shape[1:])
        return torch.cat([values, pad])[pair_edge]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        owner = (rows > 0).view((-1,) + (1,) * (grad.dim() - 1))
        return torch.where(owner, grad[rows.clamp(min=0)], 0.0), None, None


def edge_pairs(sender_perm: torch.Tensor, lengths: torch.Tensor, r_max: float) -> EdgePairs:
    """The pairing of a symmetric graph: ``sender_perm [E]`` (:class:`EdgeCSR`; edge ``k``'s
    reverse is ``sender_perm[k]``), ``lengths [E]``. No host synchronisation.

    Meaningful only on a symmetric graph (:func:`flag_is_set`). On any other graph every
    index still stays in range: a wrong call gives wrong numbers, not a memory fault.
    """
    num_edges = sender_perm.shape[0]
    num_rows = num_edges // 2 + 1
    dev = sender_perm.device
    edge = torch.arange(num_edges, device=dev)
    near = lengths < r_max
    owner = near & (edge < sender_perm)
    rank = torch.cumsum(owner, 0)  # the owner's row, 1-based
    rank = rank.clamp(max=num_rows - 1)  # only an asymmetric graph could exceed it
    row = torch.where(owner, rank, torch.where(near, -rank[sender_perm], 0))
    count = rank[-1:] if num_edges else rank.new_zeros(1)
    pair_edge = torch.full((num_rows + 1,), num_edges, dtype=torch.long, device=dev)
    # Non-owners all go to the extra slot num_rows, dropped below.
    pair_edge.scatter_(0, torch.where(owner, rank, num_rows), edge)
    return EdgePairs(torch.cat([row, count]), pair_edge[:num_rows].clone())


def flag_is_set(symmetric: Optional[torch.Tensor]) -> bool:
    """The device flag of :func:`~mace_fast.ops.channelwise_tp.symmetric_flag` on the host
    (a synchronisation; not allowed while a CUDA graph is being captured)."""
    return symmetric is not None and bool(symmetric.item())
