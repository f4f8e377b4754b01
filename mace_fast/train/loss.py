"""Training losses: weighted energy-per-atom, forces, stress and virials terms.

Each term is a mean over its entries (graphs for energy, force components, stress and
virial components) of ``w_config * w_property * penalty(reference - prediction)``, with the
conventions of MACE: the energy enters per atom, virials divided by the number of atoms.
A frame without a label has property weight 0 and contributes nothing.

Penalties: ``"weighted"`` squares the error; ``"huber"`` uses a Huber penalty with
``delta``; ``"universal"`` (MACE-MP) is Huber with a per-atom delta for forces that shrinks
with the reference force magnitude: ``delta * {1, 0.7, 0.4, 0.1}`` for ``|F|`` in
``[0, 100), [100, 200), [200, 300), [300, inf)`` eV/Angstrom. Unlike mace-torch, the
weights always multiply the penalty (so weight 0 always removes a frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch

from .. import keys as K

__all__ = ["LossWeights", "TrainingLoss", "huber", "universal_force_delta"]

_FORCE_BANDS = (100.0, 200.0, 300.0)
_FORCE_FACTORS = (1.0, 0.7, 0.4, 0.1)


@dataclass
class LossWeights:
    energy: float = 1.0
    forces: float = 100.0
    stress: float = 1.0
    virials: float = 1.0


def huber(error: torch.Tensor, delta) -> torch.Tensor:
    """Elementwise Huber penalty: ``0.5 e^2`` for ``|e| < delta``, else ``delta (|e| - delta/2)``.

    ``delta`` is a float or a tensor broadcasting against ``error``.
    """
    a = error.abs()
    delta = torch.as_tensor(delta, dtype=error.dtype, device=error.device)
    return torch.where(a < delta, 0.5 * error * error, delta * (a - 0.5 * delta))


def universal_force_delta(ref_forces: torch.Tensor, delta: float) -> torch.Tensor:
    """Per-atom Huber delta ``[N, 1]`` of the MACE-MP universal loss."""
    norm = torch.linalg.vector_norm(ref_forces, dim=-1, keepdim=True)
    factor = torch.full_like(norm, _FORCE_FACTORS[-1])
    for bound, value in reversed(list(zip(_FORCE_BANDS, _FORCE_FACTORS))):
        factor = torch.where(norm < bound, torch.full_like(norm, value), factor)
    return delta * factor


class TrainingLoss:
    """``loss(batch, pred) -> (total, terms)``; ``terms``: each unweighted term, a detached 0-d tensor.

    ``kind``: "weighted", "huber" or "universal". Weights can change between calls
    (stage two) through :attr:`weights`.
    """

    def __init__(self, kind: str, weights: LossWeights, huber_delta: float = 0.01) -> None:
        if kind not in ("weighted", "huber", "universal"):
            raise ValueError(f"unknown loss kind {kind!r}")
        self.kind = kind
        self.weights = weights
        self.huber_delta = float(huber_delta)

    def _penalty(self, error: torch.Tensor, delta=None) -> torch.Tensor:
        if self.kind == "weighted":
            return error * error
        return huber(error, self.huber_delta if delta is None else delta)

    def __call__(
        self, batch: Dict[str, torch.Tensor], pred: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        ptr = batch[K.PTR]
        num_atoms = (ptr[1:] - ptr[:-1]).to(batch[K.ENERGY].dtype)  # [G]
        config_w = batch[K.WEIGHT]  # [G]
        terms: Dict[str, torch.Tensor] = {}
        total = torch.zeros((), dtype=num_atoms.dtype, device=num_atoms.device)

        if self.weights.energy > 0:
            error = (batch[K.ENERGY] - pred[K.ENERGY]) / num_atoms
            terms["energy"] = (config_w * batch[K.ENERGY_WEIGHT] * self._penalty(error)).mean()
        if self.weights.forces > 0:
            atom_w = (config_w * batch[K.FORCES_WEIGHT])[batch[K.BATCH]].unsqueeze(-1)  # [N, 1]
            error = batch[K.FORCES] - pred[K.FORCES]
            delta = universal_force_delta(batch[K.FORCES], self.huber_delta) if self.kind == "universal" else None
            terms["forces"] = (atom_w * self._penalty(error, delta)).mean()
        if self.weights.stress > 0 and K.STRESS in pred:
            w = (config_w * batch[K.STRESS_WEIGHT]).view(-1, 1, 1)
            terms["stress"] = (w * self._penalty(batch[K.STRESS] - pred[K.STRESS])).mean()
        if self.weights.virials > 0 and K.VIRIALS in pred:
            w = (config_w * batch[K.VIRIALS_WEIGHT]).view(-1, 1, 1)
            error = (batch[K.VIRIALS] - pred[K.VIRIALS]) / num_atoms.view(-1, 1, 1)
            terms["virials"] = (w * self._penalty(error)).mean()
        for name, value in terms.items():
            total = total + getattr(self.weights, name) * value
        return total, {name: value.detach() for name, value in terms.items()}
