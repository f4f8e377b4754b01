"""``mace_fast::symmetric_contraction``: the product basis on the GPU.

The op computes :class:`mace_fast.nn.symmetric_contraction.SymmetricContraction` with one
thread per (node, channel) and the basis' non-zero entries compiled in. Its backward
gives the gradient with respect to the features (what forces need). The weights enter as
constants: the kernels do not give weight gradients, so training uses the torch path.
"""

from __future__ import annotations

from typing import Dict

import torch

from .build import binding, compile_shared
from .codegen import symmetric_contraction_source

__all__ = ["compile_symmetric_contraction", "symmetric_contraction"]

_LIBRARY: Dict[str, int] = {}
_OUT_DIM: Dict[str, int] = {}


def compile_symmetric_contraction(sc) -> str:
    """Compile (or find cached) the kernels for ``sc``; returns the key the op takes."""
    path = compile_shared("mace_fast_sc", symmetric_contraction_source(sc), "symmetric_contraction.h")
    key = path.stem
    if key not in _LIBRARY:
        _LIBRARY[key] = binding().load_sc_library(str(path))
        _OUT_DIM[key] = sc.irreps_out.dim
    return key


@torch.library.custom_op("mace_fast::symmetric_contraction", mutates_args=())
def _symmetric_contraction(x: torch.Tensor, element: torch.Tensor, weight: torch.Tensor, key: str) -> torch.Tensor:
    return binding().sc_forward(_LIBRARY[key], x, element, weight)


@_symmetric_contraction.register_fake
def _(x, element, weight, key):
    return x.new_empty(x.shape[0], _OUT_DIM[key])


@torch.library.custom_op("mace_fast::symmetric_contraction_backward", mutates_args=())
def _symmetric_contraction_backward(
    grad_out: torch.Tensor, x: torch.Tensor, element: torch.Tensor, weight: torch.Tensor, key: str
) -> torch.Tensor:
    return binding().sc_backward(_LIBRARY[key], grad_out, x, element, weight)


@_symmetric_contraction_backward.register_fake
def _(grad_out, x, element, weight, key):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    x, element, weight, key = inputs
    ctx.save_for_backward(x, element, weight)
    ctx.key = key


def _backward(ctx, grad_out):
    x, element, weight = ctx.saved_tensors
    return _symmetric_contraction_backward(grad_out.contiguous(), x, element, weight, ctx.key), None, None, None


_symmetric_contraction.register_autograd(_backward, setup_context=_setup)


def symmetric_contraction(x: torch.Tensor, element: torch.Tensor, weight: torch.Tensor, key: str) -> torch.Tensor:
    """``x [N, C, D], element [N], weight [Z, K_total, C] -> [N, F_out]`` (weight: no gradient).

    ``x`` is read in place when contiguous or component-major (``x.permute(2, 0, 1)``
    contiguous, as the CUDA path's interactions give it); its gradient has the same layout.
    """
    if not (x.is_contiguous() or x.permute(2, 0, 1).is_contiguous()):
        x = x.contiguous()
    return _symmetric_contraction(x, element.contiguous(), weight.detach().contiguous(), key)
