"""``mace_fast::tp_aggregate``: fused channel-wise tensor product + receiver aggregation.

Layer 3 of the op: a ``torch.library`` custom op (with a fake for tracing) over the
kernels of ``kernels/channelwise_tp.cu``, and its autograd. It replaces, in one pass and
without per-edge messages in device memory::

    scatter_sum(conv_tp(h[sender], sh, w), receiver)

The backward gives the gradients of ``h``, ``sh`` and ``w`` (what forces and stress
need); it is not itself differentiable, so training (double backward) uses the torch path.
On a symmetric graph (every edge has its reverse, as in a full neighbour list) and with
weights that depend on the edge length only, one receiver-major pass reads each weight row
once for all gradients (:func:`symmetric_flag`); otherwise the feature gradient takes a
second, sender-major pass. There the weights may also be one row per pair of edges
(:mod:`mace_fast.ops.edge_pairs`, ``csr.pairs``); then the backward runs once per pair, in
the block of the pair's owner, which reads the row and both ends' gradient rows once and
writes the other end's feature gradient to a scratch row that a short second kernel adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from ..nn.tensor_product import ChannelwiseTensorProduct
from .build import binding, compile_shared
from .codegen import channelwise_tp_source
from .edge_pairs import EdgePairs

__all__ = ["EdgeCSR", "edge_csr", "symmetric_flag", "compile_tp", "tp_aggregate", "tp_aggregate_tabulated"]


@dataclass
class EdgeCSR:
    """Receiver- and sender-major views of one batch's edges (computed once per forward)."""

    sender: torch.Tensor  # [E] int64
    receiver: torch.Tensor  # [E] int64, non-decreasing
    edge_ptr: torch.Tensor  # [N+1] int64: receiver segments
    sender_perm: torch.Tensor  # [E] int64: edges ordered by sender (stable)
    sender_ptr: torch.Tensor  # [N+1] int64: sender segments of sender_perm
    symmetric: Optional[torch.Tensor] = None  # [1] int32 device flag, see symmetric_flag
    pairs: Optional[EdgePairs] = None  # weights shared by an edge and its reverse (symmetric graphs)


def edge_csr(edge_index: torch.Tensor, edge_ptr: torch.Tensor, num_nodes: int) -> EdgeCSR:
    sender, receiver = edge_index[0].contiguous(), edge_index[1].contiguous()
    # 32-bit keys: a radix sort of half the passes of int64 ones (node indices fit).
    ordered, perm = torch.sort(sender.to(torch.int32), stable=True)
    # searchsorted, not bincount: no host synchronisation (keeps the step graph-capturable)
    nodes = torch.arange(num_nodes + 1, device=sender.device, dtype=torch.int32)
    sender_ptr = torch.searchsorted(ordered, nodes)
    return EdgeCSR(sender, receiver, edge_ptr.contiguous(), perm, sender_ptr)


def symmetric_flag(csr: EdgeCSR, unit_shifts: torch.Tensor, lengths: torch.Tensor, r_max: float) -> torch.Tensor:
    """``[1]`` int32 on the edges' device: 1 if every edge that carries weight has its reverse.

    The reverse of ``j -> i`` with lattice shift ``s`` is ``i -> j`` with ``-s`` (the opposite
    vector). Edges are sorted by (receiver, sender, shift) and ``sender_perm`` orders them
    by sender stably, so in a symmetric graph the k-th edge in sender order is the reverse of
    the k-th edge in receiver order, as long as no pair of atoms has two images (then the
    shifts come in the opposite order: the flag is 0 and the general backward runs). Pairs at
    or beyond the cutoff (zero weights, e.g. the padding between ghost atoms of
    :class:`~mace_fast.step.ModelStep`) are exempt. Computed on the device: no host sync,
    so it can be captured in a CUDA graph. ``lengths [E]``.
    """
    perm = csr.sender_perm
    same = (csr.receiver == csr.sender[perm]) & (csr.sender == csr.receiver[perm])
    same &= (unit_shifts == -unit_shifts[perm]).all(dim=-1)
    far = (lengths >= r_max) & (lengths[perm] >= r_max)
    return (same | far).all().to(torch.int32).reshape(1)


_LIBRARY: Dict[str, int] = {}
_OUT_DIM: Dict[str, int] = {}


def compile_tp(tp: ChannelwiseTensorProduct, grouped: bool = False) -> str:
    """Compile (or find cached) the kernels for ``tp``'s paths; returns the key the op takes.

    ``grouped``: kernels whose message is in the grouped layout
    (:mod:`mace_fast.nn.grouped_layout`), not ``mul_ir``.
    """
    path = compile_shared(
        "mace_fast_tp", channelwise_tp_source(tp, grouped), ("channelwise_tp.h", "pair_rows.cuh", "radial_table.cuh")
    )
    key = path.stem
    if key not in _LIBRARY:
        _LIBRARY[key] = binding().load_library(str(path))
        _OUT_DIM[key] = tp.irreps_out.dim
    return key


@torch.library.custom_op("mace_fast::tp_aggregate", mutates_args=())
def _tp_aggregate(
    h: torch.Tensor, sh: torch.Tensor, w: torch.Tensor, sender: torch.Tensor, receiver: torch.Tensor,
    edge_ptr: torch.Tensor, sender_perm: torch.Tensor, sender_ptr: torch.Tensor, key: str, channels: int,
    grad_into_w: bool, symmetric: Optional[torch.Tensor], rows: Optional[torch.Tensor],
) -> torch.Tensor:
    return binding().forward(_LIBRARY[key], h, sh, w, sender, edge_ptr, channels, rows, None, 0.0)


@_tp_aggregate.register_fake
def _(h, sh, w, sender, receiver, edge_ptr, sender_perm, sender_ptr, key, channels, grad_into_w, symmetric, rows):
    return h.new_empty(h.shape[0], _OUT_DIM[key])


@torch.library.custom_op("mace_fast::tp_aggregate_backward", mutates_args=())
def _tp_aggregate_backward(
    grad_out: torch.Tensor, h: torch.Tensor, sh: torch.Tensor, w: torch.Tensor, sender: torch.Tensor,
    receiver: torch.Tensor, edge_ptr: torch.Tensor, sender_perm: torch.Tensor, sender_ptr: torch.Tensor,
    key: str, channels: int, symmetric: Optional[torch.Tensor], rows: Optional[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_h, grad_sh, grad_w = binding().backward(
        _LIBRARY[key], grad_out, h, sh, w, sender, receiver, edge_ptr, sender_perm, sender_ptr, channels, False,
        symmetric, rows, None, 0.0,
    )
    return grad_h, grad_sh, grad_w


@_tp_aggregate_backward.register_fake
def _(grad_out, h, sh, w, sender, receiver, edge_ptr, sender_perm, sender_ptr, key, channels, symmetric, rows):
    return torch.empty_like(h), torch.empty_like(sh), torch.empty_like(w)


@torch.library.custom_op("mace_fast::tp_aggregate_backward_into_w", mutates_args=("w",))
def _tp_aggregate_backward_into_w(
    grad_out: torch.Tensor, h: torch.Tensor, sh: torch.Tensor, w: torch.Tensor, sender: torch.Tensor,
    receiver: torch.Tensor, edge_ptr: torch.Tensor, sender_perm: torch.Tensor, sender_ptr: torch.Tensor,
    key: str, channels: int, symmetric: Optional[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """As ``tp_aggregate_backward``, but the weights' gradient overwrites ``w``."""
    grad_h, grad_sh, _ = binding().backward(
        _LIBRARY[key], grad_out, h, sh, w, sender, receiver, edge_ptr, sender_perm, sender_ptr, channels, True,
        symmetric, None, None, 0.0,
    )
    return grad_h, grad_sh


@_tp_aggregate_backward_into_w.register_fake
def _(grad_out, h, sh, w, sender, receiver, edge_ptr, sender_perm, sender_ptr, key, channels, symmetric):
    return torch.empty_like(h), torch.empty_like(sh)


def _setup(ctx, inputs, output):
    h, sh, w, sender, receiver, edge_ptr, sender_perm, sender_ptr, key, channels, grad_into_w, symmetric, rows = inputs
    ctx.save_for_backward(h, sh, w, sender, receiver, edge_ptr, sender_perm, sender_ptr, symmetric, rows)
    ctx.key, ctx.channels, ctx.grad_into_w = key, channels, grad_into_w


def _backward(ctx, grad_out):
    h, sh, w, sender, receiver, edge_ptr, sender_perm, sender_ptr, symmetric, rows = ctx.saved_tensors
    args = (grad_out.contiguous(), h, sh, w, sender, receiver, edge_ptr, sender_perm, sender_ptr, ctx.key, ctx.channels,
            symmetric)
    if ctx.grad_into_w:
        grad_h, grad_sh = _tp_aggregate_backward_into_w(*args)
        grad_w = w  # now holds the gradient
    else:
        grad_h, grad_sh, grad_w = _tp_aggregate_backward(*args, rows)
    return grad_h, grad_sh, grad_w, None, None, None, None, None, None, None, None, None, None


_tp_aggregate.register_autograd(_backward, setup_context=_setup)


def tp_aggregate(
    h: torch.Tensor, sh: torch.Tensor, w: torch.Tensor, csr: EdgeCSR, key: str, channels: int,
    grad_into_w: bool = False,
) -> torch.Tensor:
    """``h [N, F_in], sh [E, S], w [E, P*C] -> [N, F_mid]`` (see module docstring), in the
    grouped layout where the kernels were compiled ``grouped``.

    ``grad_into_w``: the backward writes the weights' gradient over ``w`` instead of a new
    ``[E, P*C]`` tensor (the largest in the model). Only for a graph differentiated once,
    by a caller that uses ``w`` for nothing else (the model computing forces).
    ``csr.symmetric`` (:func:`symmetric_flag`) lets the backward take the one-pass route;
    set it only where the weights of an edge and of its reverse are equal (a function of
    the edge length, as MACE's radial MLP is). With ``csr.pairs`` (a symmetric graph) ``w``
    is ``[M, P*C]``, one row per pair of edges (:mod:`~mace_fast.ops.edge_pairs`), and
    ``grad_into_w`` does not apply: the pair backward writes the gradient to a buffer of
    its own (its kernel takes ``w`` and the gradient as distinct buffers).
    """
    rows = None if csr.pairs is None else csr.pairs.rows
    return _tp_aggregate(
        h.contiguous(), sh.contiguous(), w.contiguous(), csr.sender, csr.receiver, csr.edge_ptr,
        csr.sender_perm, csr.sender_ptr, key, channels, grad_into_w and rows is None, csr.symmetric, rows,
    )



# Weights from a radial table (ops/radial_spline.py), evaluated inside the kernels: the op
# takes the pair rows' lengths instead of their weights, and gives the lengths' gradient.


@torch.library.custom_op("mace_fast::tp_aggregate_table", mutates_args=())
def _tp_aggregate_table(
    h: torch.Tensor, sh: torch.Tensor, r: torch.Tensor, table: torch.Tensor, sender: torch.Tensor,
    receiver: torch.Tensor, edge_ptr: torch.Tensor, sender_perm: torch.Tensor, sender_ptr: torch.Tensor,
    rows: torch.Tensor, key: str, channels: int, r_max: float,
) -> torch.Tensor:
    return binding().forward(_LIBRARY[key], h, sh, r, sender, edge_ptr, channels, rows, table, r_max)


@_tp_aggregate_table.register_fake
def _(h, sh, r, table, sender, receiver, edge_ptr, sender_perm, sender_ptr, rows, key, channels, r_max):
    return h.new_empty(h.shape[0], _OUT_DIM[key])


@torch.library.custom_op("mace_fast::tp_aggregate_table_backward", mutates_args=())
def _tp_aggregate_table_backward(
    grad_out: torch.Tensor, h: torch.Tensor, sh: torch.Tensor, r: torch.Tensor, table: torch.Tensor,
    sender: torch.Tensor, receiver: torch.Tensor, edge_ptr: torch.Tensor, sender_perm: torch.Tensor,
    sender_ptr: torch.Tensor, rows: torch.Tensor, key: str, channels: int, r_max: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_h, grad_sh, grad_r = binding().backward(
        _LIBRARY[key], grad_out, h, sh, r, sender, receiver, edge_ptr, sender_perm, sender_ptr, channels, False,
        None, rows, table, r_max,
    )
    return grad_h, grad_sh, grad_r


@_tp_aggregate_table_backward.register_fake
def _(grad_out, h, sh, r, table, sender, receiver, edge_ptr, sender_perm, sender_ptr, rows, key, channels, r_max):
    return torch.empty_like(h), torch.empty_like(sh), torch.empty_like(r)


def _setup_table(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:10])
    ctx.key, ctx.channels, ctx.r_max = inputs[10:]


def _backward_table(ctx, grad_out):
    grad_h, grad_sh, grad_r = _tp_aggregate_table_backward(
        grad_out.contiguous(), *ctx.saved_tensors, ctx.key, ctx.channels, ctx.r_max
    )
    return (grad_h, grad_sh, grad_r) + (None,) * 10


_tp_aggregate_table.register_autograd(_backward_table, setup_context=_setup_table)


def tp_aggregate_tabulated(
    h: torch.Tensor, sh: torch.Tensor, r: torch.Tensor, table: torch.Tensor, r_max: float, csr: EdgeCSR, key: str,
    channels: int,
) -> torch.Tensor:
    """As :func:`tp_aggregate` with the weights of pair row ``m`` given by a radial table at
    its length: ``radial_spline(r, table, r_max)[m]`` (:mod:`~mace_fast.ops.radial_spline`),
    evaluated by the kernels where they use it, so that neither the ``[M, P*C]`` weights nor
    their gradient go through device memory. ``r [M]`` (differentiable: the backward gives
    its gradient), ``table [n, P*C, 4]`` (a constant). Needs ``csr.pairs``.
    """
    if csr.pairs is None:
        raise ValueError("tp_aggregate_tabulated: needs weight rows shared by pairs (csr.pairs)")
    if r.dtype != h.dtype or table.dtype != h.dtype:
        raise TypeError(f"tp_aggregate_tabulated: r ({r.dtype}) and table ({table.dtype}) must be {h.dtype}")
    return _tp_aggregate_table(
        h.contiguous(), sh.contiguous(), r.contiguous(), table.contiguous(), csr.sender, csr.receiver, csr.edge_ptr,
        csr.sender_perm, csr.sender_ptr, csr.pairs.rows, key, channels, float(r_max),
    )
