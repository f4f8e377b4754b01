"""Radial features of an edge: distance transforms, Bessel basis, polynomial envelope, MLP.

All functions are plain PyTorch, differentiable to any order, and take edge lengths of
shape ``[E, 1]``. The conventions (formulas, normalisation constants, parameter names) are
those of MACE, so that mace-torch models convert without changing a number.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import ase.data
import numpy as np
import torch
from torch import nn

from .activations import scaled_activation
from .derived import derived

__all__ = [
    "BesselBasis",
    "PolynomialCutoff",
    "polynomial_envelope",
    "AgnesiTransform",
    "SoftTransform",
    "RadialMLP",
    "RadialEmbedding",
    "covalent_radii_table",
]


def covalent_radii_table() -> torch.Tensor:
    """ASE's covalent radii in Angstrom, indexed by atomic number: ``[119]`` float64."""
    return torch.tensor(np.asarray(ase.data.covalent_radii), dtype=torch.float64)


def polynomial_envelope(r: torch.Tensor, r_max: torch.Tensor, p: int) -> torch.Tensor:
    """Smooth cutoff going from 1 at r=0 to 0 at r=r_max with p continuous derivatives.

    ``1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, ``x = r / r_max``, and
    exactly zero at and beyond ``r_max``. Shapes broadcast; returns the shape of ``r``.
    """
    x = r / r_max
    envelope = (
        1.0
        - ((p + 1.0) * (p + 2.0) / 2.0) * torch.pow(x, p)
        + p * (p + 2.0) * torch.pow(x, p + 1)
        - (p * (p + 1.0) / 2.0) * torch.pow(x, p + 2)
    )
    return envelope * (r < r_max)


class PolynomialCutoff(nn.Module):
    """The envelope of :func:`polynomial_envelope` with a fixed ``r_max`` and ``p``."""

    def __init__(self, r_max: float, p: int = 6) -> None:
        super().__init__()
        self.p = int(p)
        self.register_buffer("r_max", torch.tensor(float(r_max), dtype=torch.float64))

    def forward(self, r: torch.Tensor) -> torch.Tensor:  # [E, 1] -> [E, 1]
        return polynomial_envelope(r, self.r_max.to(r.dtype), self.p)


class BesselBasis(nn.Module):
    """``sqrt(2/r_max) sin(n pi r / r_max) / r`` for n = 1..num_basis: ``[E,1] -> [E,n]``."""

    def __init__(self, r_max: float, num_basis: int = 8) -> None:
        super().__init__()
        weights = math.pi / r_max * torch.linspace(1.0, num_basis, num_basis, dtype=torch.float64)
        self.register_buffer("bessel_weights", weights)
        self.register_buffer("prefactor", torch.tensor(math.sqrt(2.0 / r_max), dtype=torch.float64))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.prefactor * (torch.sin(self.bessel_weights * r) / r)


class AgnesiTransform(nn.Module):
    """Agnesi distance transform (ACEpotentials.jl, J. Chem. Phys. 159, 164101 (2023)).

    ``x = r / r0`` with ``r0`` the mean covalent radius of the two atoms;
    returns ``1 / (1 + a x^q / (1 + x^(q-p)))``.
    """

    def __init__(self, q: float = 0.9183, p: float = 4.5791, a: float = 1.0805) -> None:
        super().__init__()
        self.register_buffer("q", torch.tensor(q, dtype=torch.float64))
        self.register_buffer("p", torch.tensor(p, dtype=torch.float64))
        self.register_buffer("a", torch.tensor(a, dtype=torch.float64))
        self.register_buffer("covalent_radii", covalent_radii_table())

    def forward(self, r: torch.Tensor, z_sender: torch.Tensor, z_receiver: torch.Tensor) -> torch.Tensor:
        r0 = 0.5 * (self.covalent_radii[z_sender] + self.covalent_radii[z_receiver]).unsqueeze(-1)
        x = r / r0
        return (1 + self.a * torch.pow(x, self.q) / (1 + torch.pow(x, self.q - self.p))).reciprocal()


class SoftTransform(nn.Module):
    """Smooth clamp of short distances: ``p0 + (r - p0) * (1 + tanh(alpha (r - m))) / 2``.

    ``r0`` is the sum of covalent radii, ``p0 = 3/4 r0``, ``p1 = 4/3 r0``, ``m = (p0+p1)/2``
    and the steepness is ``alpha / (p1 - p0)``.
    """

    def __init__(self, alpha: float = 4.0) -> None:
        super().__init__()
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float64))
        self.register_buffer("covalent_radii", covalent_radii_table())

    def forward(self, r: torch.Tensor, z_sender: torch.Tensor, z_receiver: torch.Tensor) -> torch.Tensor:
        r0 = (self.covalent_radii[z_sender] + self.covalent_radii[z_receiver]).unsqueeze(-1)
        p0 = 0.75 * r0
        p1 = (4.0 / 3.0) * r0
        m = 0.5 * (p0 + p1)
        steep = self.alpha / (p1 - p0)
        s = 0.5 * (1.0 + torch.tanh(steep * (r - m)))
        return p0 + (r - p0) * s


class RadialMLP(nn.Module):
    """Bias-free MLP with e3nn's normalisation: ``[E, sizes[0]] -> [E, sizes[-1]]``.

    Each layer computes ``x @ W / sqrt(fan_in)``; hidden layers are followed by the
    activation scaled to unit second moment (``act_scale``). The weights are ``layers.i``
    of shape ``[fan_in, fan_out]``, initialised standard normal.
    """

    def __init__(self, sizes: List[int], activation: str = "silu", act_scale: Optional[float] = None) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.layers = nn.ParameterList(
            [nn.Parameter(torch.randn(a, b)) for a, b in zip(self.sizes, self.sizes[1:])]
        )
        self.act = scaled_activation(activation, act_scale)

    def scaled_weight(self, i: int) -> torch.Tensor:
        """Layer ``i``'s weight divided by ``sqrt(fan_in)`` (cached for inference)."""
        w = self.layers[i]
        return derived(self, f"w{i}", [w], lambda: w / math.sqrt(w.shape[0]))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The layers before the last, activations included: ``[E, sizes[0]] -> [E, sizes[-2]]``."""
        for i in range(len(self.layers) - 1):
            x = self.act(x @ self.scaled_weight(i))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(x) @ self.scaled_weight(len(self.layers) - 1)


class RadialEmbedding(nn.Module):
    """Edge length -> radial features: ``(features [E, num_bessel], cutoff [E, 1] or None)``.

    The envelope is always taken on the true length; the optional transform only changes
    the argument of the Bessel basis. With ``apply_cutoff`` the features are multiplied by
    the envelope here and ``None`` is returned; otherwise the envelope is returned for the
    interaction blocks to apply after the radial MLP (mace-torch's ``apply_cutoff=False``).
    """

    def __init__(
        self,
        r_max: float,
        num_bessel: int,
        num_polynomial_cutoff: int,
        distance_transform: str = "None",
        apply_cutoff: bool = True,
    ) -> None:
        super().__init__()
        self.bessel = BesselBasis(r_max, num_bessel)
        self.cutoff = PolynomialCutoff(r_max, num_polynomial_cutoff)
        self.apply_cutoff = apply_cutoff
        self.transform: Optional[nn.Module]
        if distance_transform in (None, "None", "none"):
            self.transform = None
        elif distance_transform == "Agnesi":
            self.transform = AgnesiTransform()
        elif distance_transform == "Soft":
            self.transform = SoftTransform()
        else:
            raise ValueError(
                f"unknown distance_transform {distance_transform!r}; use 'None', 'Agnesi' or 'Soft'"
            )
        self.out_dim = num_bessel

    def forward(
        self, lengths: torch.Tensor, z_sender: torch.Tensor, z_receiver: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        cutoff = self.cutoff(lengths)
        r = lengths if self.transform is None else self.transform(lengths, z_sender, z_receiver)
        radial = self.bessel(r)
        if self.apply_cutoff:
            return radial * cutoff, None
        return radial, cutoff
