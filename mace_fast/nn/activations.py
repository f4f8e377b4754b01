"""Activations scaled to unit second moment under a standard normal input.

e3nn (and so MACE) multiplies every activation ``f`` by ``c = E[f(z)^2]^(-1/2)``,
``z ~ N(0, 1)``, so that signals keep unit variance through a network. We compute ``c``
by Gauss–Hermite quadrature (exact to double precision). e3nn estimates it by Monte
Carlo, which differs in the fifth digit; a converted model therefore carries the exact
constant of its source in its config, and that value is used instead.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import numpy as np
import torch

__all__ = ["ACTIVATIONS", "second_moment_scale", "scaled_activation"]

ACTIVATIONS: dict = {
    "silu": torch.nn.functional.silu,
    "tanh": torch.tanh,
}


@functools.lru_cache(maxsize=None)
def second_moment_scale(name: str) -> float:
    """``E[f(z)^2]^(-1/2)`` for ``z ~ N(0,1)``, by 200-point Gauss–Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    f = ACTIVATIONS[name]
    values = f(torch.from_numpy(nodes)).numpy()
    moment = float(np.sum(weights * values**2) / np.sqrt(2.0 * np.pi))
    return moment**-0.5


class ScaledActivation(torch.nn.Module):
    """``scale * f(x)``; ``f`` is one of :data:`ACTIVATIONS`."""

    def __init__(self, name: str, scale: float) -> None:
        super().__init__()
        self.name = name
        self.scale = float(scale)
        self.fn: Callable[[torch.Tensor], torch.Tensor] = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) * self.scale

    def extra_repr(self) -> str:
        return f"{self.name}, scale={self.scale:.10g}"


def scaled_activation(name: Optional[str], scale: Optional[float] = None) -> torch.nn.Module:
    """The activation ``name`` times ``scale`` (default: the exact unit-moment constant).

    ``None`` gives the identity (mace-torch's ``gate=None``).
    """
    if name is None or name == "None":
        return torch.nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ScaledActivation(name, second_moment_scale(name) if scale is None else scale)
