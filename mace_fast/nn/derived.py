"""Tensors derived from parameters (scaled or concatenated weights), cached for inference.

Layers use their weights scaled (``W / sqrt(fan_in)``) or concatenated. Recomputing that
on every call costs one small kernel per weight: harmless in training, but in MD on a
few hundred atoms the whole step is a few hundred kernels, so these add up. A derived
tensor is kept while none of its sources needs a gradient and none has changed (same
storage, dtype and in-place version counter); otherwise it is recomputed on each call so
that autograd sees it (training).
"""

from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch
from torch import nn

__all__ = ["derived"]

_Key = Tuple[Tuple[int, int, torch.dtype], ...]


def derived(
    owner: nn.Module, name: str, sources: Sequence[torch.Tensor], make: Callable[[], torch.Tensor],
    differentiable: bool = True,
) -> torch.Tensor:
    """``make()``, reused from ``owner``'s cache under ``name`` while ``sources`` are unchanged.

    ``differentiable=False``: no gradient ever flows through the result (e.g. a kernel's
    prepared copy of a weight whose gradient the op takes from the weight itself), so it is
    computed without autograd and cached even while the sources require grad.
    """
    if not differentiable:
        with torch.no_grad():
            return _cached(owner, name, sources, make)
    if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
        return make()
    return _cached(owner, name, sources, make)


def _cached(owner: nn.Module, name: str, sources: Sequence[torch.Tensor], make: Callable[[], torch.Tensor]) -> torch.Tensor:
    key: _Key = tuple((t.data_ptr(), t._version, t.dtype) for t in sources)
    cache = owner.__dict__.setdefault("_derived_cache", {})
    hit = cache.get(name)
    if hit is not None and hit[0] == key:
        return hit[2]
    value = make()
    # Holding the sources' storage keeps their addresses from being reused by other tensors
    # (an address match is part of the key).
    cache[name] = (key, [t.detach() for t in sources], value)
    return value
