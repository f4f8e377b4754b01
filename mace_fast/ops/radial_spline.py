"""``mace_fast::radial_spline``: radial weights from a table, for inference.

In MACE's element-agnostic blocks the radial weights of an edge are a function of its
length alone: ``f(r) = MLP(bessel(r) * envelope(r))`` (times the envelope where the block
applies it after the MLP), ``[P]`` numbers per edge. With the weights fixed, ``f`` can be
tabulated once on ``n`` equal intervals of ``[0, r_max]`` (from values and derivatives at
the knots, computed in float64 through the model's own modules) and evaluated with the
cubic Hermite spline through them, whose error is ``O(h^4)`` in ``f`` and ``O(h^3)`` in
``f'``. For MP-medium's radial MLPs, with 2048 intervals, both stay below the float32
MLP's own error (:func:`interpolation_error` measures the first; the tests both).

That replaces the radial MLP, forward and backward, by a streaming pass: each row reads
its interval's coefficients and writes its weights; the backward reads the weights'
gradient and gives ``df/dr``. Rows are visited in order of length (``order``), so that
consecutive rows read the same interval from L1 instead of the whole table from L2.

The table is ``[n, P, 4]``: interval ``k`` holds each output's cubic's coefficients in
``t = r / h - k`` (:func:`tabulate`), ``h = r_max / n``, the four of an output side by side,
so that a kernel reads them with one 16-byte load. Lengths at or beyond ``r_max`` give zero (every radial
function of a MACE block vanishes there with the envelope); a NaN length gives NaN.

Opt-in, float32 inference only (see :meth:`mace_fast.model.MACE.tabulate_radial`): the
table holds no gradient with respect to the MLP's weights, and float64 keeps the exact MLP.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .build import kernel_source, launch, load_shared
from .build import pointer as _ptr

__all__ = ["tabulate", "interpolation_error", "radial_spline", "radial_spline_reference", "spline_order",
           "TabulatedRadial"]

_P = ctypes.c_void_p


def tabulate(fn: Callable[[torch.Tensor], torch.Tensor], r_max: float, intervals: int, dtype: torch.dtype,
             device: Optional[torch.device] = None) -> torch.Tensor:
    """``table [n, P, 4]`` of ``fn: r [K, 1] -> [K, P]`` on ``n = intervals`` intervals of ``[0, r_max]``.

    Interval ``k`` holds the cubic ``f(r) = a + b t + c t^2 + d t^3``, ``t = r / h - k``, that
    matches ``f`` and ``f'`` at both ends (Hermite), as ``table[k, p] = (a, b, c, d)``. The
    coefficients are computed in float64 and rounded once: stored this way (and not as knot
    values, whose differences the derivative would take) the slope keeps float32's relative
    precision. ``fn`` is evaluated in float64, its derivative by forward-mode
    differentiation; knot 0 (``r = 0``, where the Bessel basis is ``0/0``) at ``r = 1e-9 h``,
    which differs from the limit by ``O(1e-18)`` relative.
    """
    if intervals < 2:
        raise ValueError(f"radial_spline: at least 2 intervals, got {intervals}")
    h = float(r_max) / intervals
    r = torch.arange(intervals + 1, dtype=torch.float64, device=device) * h
    r[0] = 1e-9 * h
    r = r.unsqueeze(-1)
    with torch.no_grad():
        value, slope = torch.func.jvp(fn, (r,), (torch.ones_like(r),))
    value, slope = value.to(torch.float64), slope.to(torch.float64) * h
    v0, v1, s0, s1 = value[:-1], value[1:], slope[:-1], slope[1:]
    table = torch.stack([v0, s0, 3 * (v1 - v0) - 2 * s0 - s1, 2 * (v0 - v1) + s0 + s1], dim=-1)  # [n, P, 4]
    if not torch.isfinite(table).all():
        raise ValueError("radial_spline: the radial function is not finite on [0, r_max]")
    return table.to(dtype)


def radial_spline_reference(r: torch.Tensor, table: torch.Tensor, r_max: float) -> torch.Tensor:
    """The spline in plain torch: ``r [M] -> [M, P]``, differentiable in ``r`` (the oracle of
    the kernels, and the CPU path). Zero at and beyond ``r_max``."""
    intervals = table.shape[0]
    x = r * (intervals / r_max)
    # NaN lengths read interval 0 and stay NaN through t (as in the kernels).
    k = torch.nan_to_num(x.detach(), nan=0.0).clamp(0, intervals - 1).floor()
    t = (x - k).unsqueeze(-1)
    a, b, c, d = table[k.long()].unbind(-1)  # [M, P] each
    out = a + t * (b + t * (c + t * d))
    return torch.where((r >= r_max).unsqueeze(-1), 0.0, out)


def interpolation_error(fn: Callable[[torch.Tensor], torch.Tensor], table: torch.Tensor, r_max: float,
                        samples: int = 20000, r_min: float = 0.0, seed: int = 0) -> float:
    """Largest error of the table against ``fn`` (float64) at random lengths in ``[r_min, r_max)``,
    relative to the largest ``|f|``: ``max |spline - f| / max |f|``."""
    gen = torch.Generator().manual_seed(seed)
    r = r_min + (r_max - r_min) * torch.rand(samples, 1, dtype=torch.float64, generator=gen)
    r = r.to(table.device)
    with torch.no_grad():
        exact = fn(r).to(torch.float64)
        approx = radial_spline_reference(r[:, 0], table.to(torch.float64), r_max)
    return float((approx - exact).abs().max() / exact.abs().max())


def spline_order(r: torch.Tensor) -> torch.Tensor:
    """``[M]`` int32: the rows by increasing length, the order the kernels visit them in."""
    return torch.argsort(r.detach()).to(torch.int32)


_LIB: Optional[ctypes.CDLL] = None


def load_library() -> ctypes.CDLL:
    """The compiled kernels (one build for every table: the sizes are arguments)."""
    global _LIB
    if _LIB is None:
        headers = ("radial_spline.h", "radial_table.cuh")
        lib = load_shared("mace_fast_spline", kernel_source("radial_spline.cu"), headers)
        for suffix, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
            fwd = getattr(lib, f"radial_spline_forward_{suffix}")
            fwd.argtypes = [_P] * 4 + [ctypes.c_int64, ctypes.c_int, ctypes.c_int, real, real, _P]
            fwd.restype = ctypes.c_int
            bwd = getattr(lib, f"radial_spline_backward_{suffix}")
            bwd.argtypes = [_P] * 5 + [ctypes.c_int64, ctypes.c_int, ctypes.c_int, real, real, _P]
            bwd.restype = ctypes.c_int
        _LIB = lib
    return _LIB


@torch.library.custom_op("mace_fast::radial_spline", mutates_args=())
def _radial_spline(r: torch.Tensor, order: Optional[torch.Tensor], table: torch.Tensor, r_max: float) -> torch.Tensor:
    intervals, width, _ = table.shape
    out = r.new_empty(r.shape[0], width)
    launch(load_library(), "radial_spline_forward", r, _ptr(r), _ptr(order), _ptr(table), _ptr(out), r.shape[0],
           width, intervals, r_max, intervals / r_max)
    return out


@_radial_spline.register_fake
def _(r, order, table, r_max):
    return r.new_empty(r.shape[0], table.shape[1])


@torch.library.custom_op("mace_fast::radial_spline_backward", mutates_args=())
def _radial_spline_backward(grad_out: torch.Tensor, r: torch.Tensor, order: Optional[torch.Tensor],
                            table: torch.Tensor, r_max: float) -> torch.Tensor:
    intervals, width, _ = table.shape
    grad_r = torch.empty_like(r)
    launch(load_library(), "radial_spline_backward", r, _ptr(grad_out), _ptr(r), _ptr(order), _ptr(table),
           _ptr(grad_r), r.shape[0], width, intervals, r_max, intervals / r_max)
    return grad_r


@_radial_spline_backward.register_fake
def _(grad_out, r, order, table, r_max):
    return torch.empty_like(r)


def _setup(ctx, inputs, output):
    r, order, table, r_max = inputs
    ctx.save_for_backward(r, order, table)
    ctx.r_max = r_max


def _backward(ctx, grad_out):
    r, order, table = ctx.saved_tensors
    return _radial_spline_backward(grad_out.contiguous(), r, order, table, ctx.r_max), None, None, None


_radial_spline.register_autograd(_backward, setup_context=_setup)


def radial_spline(r: torch.Tensor, table: torch.Tensor, r_max: float,
                  order: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``r [M] -> [M, P]``: the tabulated radial function (module docstring), differentiable in
    ``r`` once (forces and stress; the table is a constant).

    ``order [M]`` int32 (:func:`spline_order`): the order the CUDA kernels visit the rows in,
    a permutation of ``0..M-1``; without it they go in index order (same results, slower on
    large tables). On the CPU the torch reference runs.
    """
    if r.dim() != 1 or table.dim() != 3 or table.shape[2] != 4:
        raise ValueError(f"radial_spline: expected r [M] and table [n, P, 4], got {list(r.shape)}, "
                         f"{list(table.shape)}")
    if r.dtype != table.dtype or r.device != table.device:
        raise TypeError(f"radial_spline: r ({r.dtype}, {r.device}) and table ({table.dtype}, {table.device}) "
                        "must share dtype and device")
    if not r.is_cuda:
        return radial_spline_reference(r, table, r_max)
    if r.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"radial_spline: float32 or float64, got {r.dtype}")
    if order is not None and (order.dtype != torch.int32 or order.shape != r.shape):
        raise ValueError(f"radial_spline: order must be int32 of shape {list(r.shape)}, got {order.dtype} "
                         f"{list(order.shape)}")
    return _radial_spline(r.contiguous(), order, table.contiguous(), float(r_max))


@dataclass
class TabulatedRadial:
    """One block's radial weights as a table and the lengths of the weight rows it is read at.

    ``r [M]`` (edges, or pairs of edges), ``table [n, P, 4]``; ``order [M]`` int32
    (:func:`spline_order`) on the kernels' path, None on the torch backend. A consumer either
    evaluates the table inside its own kernels (the tensor product on pair rows,
    :func:`~mace_fast.ops.channelwise_tp.tp_aggregate_tabulated`) or asks for :meth:`weights`.
    """

    r: torch.Tensor
    table: torch.Tensor
    r_max: float
    order: Optional[torch.Tensor] = None

    def weights(self) -> torch.Tensor:
        """``[M, P]``: the spline kernels with an order, else plain torch."""
        if self.order is None:
            return radial_spline_reference(self.r, self.table, self.r_max)
        return radial_spline(self.r, self.table, self.r_max, self.order)
