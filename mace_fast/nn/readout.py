"""Readouts: per-atom energies from the scalar (0e) part of the hidden features."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..irreps import Irreps
from .activations import scaled_activation
from .linear import EquivariantLinear

__all__ = ["LinearReadout", "NonLinearReadout"]


class LinearReadout(nn.Module):
    """``[N, irreps_in.dim] -> [N]``: a linear map of the scalar channels."""

    def __init__(self, irreps_in: Irreps) -> None:
        super().__init__()
        self.linear = EquivariantLinear(Irreps(irreps_in), Irreps("1x0e"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class NonLinearReadout(nn.Module):
    """``[N, irreps_in.dim] -> [N]``: linear to ``mlp_irreps`` scalars, activation, linear."""

    def __init__(
        self, irreps_in: Irreps, mlp_irreps: Irreps, gate: Optional[str] = "silu", act_scale: Optional[float] = None
    ) -> None:
        super().__init__()
        mlp_irreps = Irreps(mlp_irreps)
        if any(ir.l != 0 or ir.p != 1 for _, ir in mlp_irreps):
            raise ValueError(f"MLP_irreps must be even scalars (e.g. 16x0e), got {mlp_irreps}")
        self.linear_1 = EquivariantLinear(Irreps(irreps_in), mlp_irreps)
        self.act = scaled_activation(gate, act_scale)
        self.linear_2 = EquivariantLinear(mlp_irreps, Irreps("1x0e"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x))).squeeze(-1)
