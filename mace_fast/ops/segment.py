"""Deterministic edge geometry and receiver sums over CSR-sorted edges.

On a GPU, ``index_add`` and the backward of ``x[index]`` accumulate with float atomics, so
their results change from run to run. The CUDA path uses these instead: sums over the
receiver segments (``edge_ptr``) and, for gradients that land on senders, over the
sender-major permutation, always in the same order.
"""

from __future__ import annotations

import torch

from .channelwise_tp import EdgeCSR

__all__ = ["segment_sum", "edge_vectors"]


def segment_sum(src: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    """``src [E, ...]`` summed over segments ``ptr [N+1]`` -> ``[N, ...]`` (fixed order)."""
    return torch.segment_reduce(src, "sum", offsets=ptr, axis=0, unsafe=True)


class _EdgeVectors(torch.autograd.Function):
    @staticmethod
    def forward(ctx, positions, shifts, sender, receiver, edge_ptr, sender_perm, sender_ptr):
        ctx.save_for_backward(sender_perm, edge_ptr, sender_ptr)
        return positions[receiver] - positions[sender] + shifts

    @staticmethod
    def backward(ctx, grad):
        sender_perm, edge_ptr, sender_ptr = ctx.saved_tensors
        grad = grad.contiguous()
        grad_pos = segment_sum(grad, edge_ptr) - segment_sum(grad[sender_perm], sender_ptr)
        return grad_pos, grad, None, None, None, None, None


def edge_vectors(positions: torch.Tensor, shifts: torch.Tensor, csr: EdgeCSR) -> torch.Tensor:
    """``positions[receiver] - positions[sender] + shifts``: ``[E, 3]``, deterministic backward."""
    return _EdgeVectors.apply(
        positions, shifts, csr.sender, csr.receiver, csr.edge_ptr, csr.sender_perm, csr.sender_ptr
    )
