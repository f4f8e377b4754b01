"""Ziegler–Biersack–Littmark (ZBL) screened nuclear repulsion, as MACE adds it.

Pair energy ``14.3996 Z_i Z_j / r * phi(r / a)`` with the universal screening function
``phi`` and screening length ``a = 0.4543 * 0.529 / (Z_i^0.3 + Z_j^0.3)`` (Angstrom, eV),
smoothly switched off at the sum of the two covalent radii by the polynomial envelope.
Half of each directed edge's energy is assigned to its receiver.
"""

from __future__ import annotations

import torch
from torch import nn

from .interaction import scatter_sum
from .radial import covalent_radii_table, polynomial_envelope

__all__ = ["ZBLRepulsion"]


class ZBLRepulsion(nn.Module):
    """``(lengths [E,1], z_sender [E], z_receiver [E], receiver [E], N) -> [N]`` energies."""

    def __init__(self, p: int = 6, a_exp: float = 0.300, a_prefactor: float = 0.4543) -> None:
        super().__init__()
        self.p = int(p)
        self.register_buffer("c", torch.tensor([0.1818, 0.5099, 0.2802, 0.02817], dtype=torch.float64))
        self.register_buffer("a_exp", torch.tensor(a_exp, dtype=torch.float64))
        self.register_buffer("a_prefactor", torch.tensor(a_prefactor, dtype=torch.float64))
        self.register_buffer("covalent_radii", covalent_radii_table())

    def forward(
        self, lengths: torch.Tensor, z_sender: torch.Tensor, z_receiver: torch.Tensor, receiver: torch.Tensor, num_nodes: int
    ) -> torch.Tensor:
        zu = z_sender.unsqueeze(-1)
        zv = z_receiver.unsqueeze(-1)
        a = self.a_prefactor * 0.529 / (torch.pow(zu, self.a_exp) + torch.pow(zv, self.a_exp))
        x = lengths / a
        phi = (
            self.c[0] * torch.exp(-3.2 * x)
            + self.c[1] * torch.exp(-0.9423 * x)
            + self.c[2] * torch.exp(-0.4028 * x)
            + self.c[3] * torch.exp(-0.2016 * x)
        )
        v = (14.3996 * zu * zv) / lengths * phi
        r_max = (self.covalent_radii[z_sender] + self.covalent_radii[z_receiver]).unsqueeze(-1)
        v = 0.5 * v * polynomial_envelope(lengths, r_max, self.p)
        return scatter_sum(v, receiver, num_nodes).squeeze(-1)
