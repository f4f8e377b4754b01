"""Hyperparameters of a MACE model: one typed, validated dataclass.

Everything a model needs to be rebuilt is here (the weights live in the state_dict), so a
model file is ``config + state_dict`` and never contains code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from .irreps import Irrep, Irreps
from .nn.interaction import INTERACTION_BLOCKS

__all__ = ["ModelConfig"]


@dataclass
class ModelConfig:
    """MACE hyperparameters, named as in mace-torch where they exist.

    ``atomic_numbers`` is the element table (sorted); ``atomic_energies`` are the E0s in eV
    in the same order. ``scale``/``shift`` act on the per-atom interaction energy.
    ``radial_act_scale`` and ``readout_act_scale`` override the unit-moment constant of the
    activations (set by model conversion to reproduce the source exactly).
    """

    atomic_numbers: List[int]
    atomic_energies: List[float]
    r_max: float = 5.0
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    max_ell: int = 3
    hidden_irreps: str = "128x0e+128x1o"
    mlp_irreps: str = "16x0e"
    num_interactions: int = 2
    correlation: Union[int, List[int]] = 3
    interaction: str = "RealAgnosticResidualInteractionBlock"
    interaction_first: str = "RealAgnosticResidualInteractionBlock"
    radial_mlp: List[int] = field(default_factory=lambda: [64, 64, 64])
    gate: Optional[str] = "silu"
    avg_num_neighbors: float = 1.0
    scale: float = 1.0
    shift: float = 0.0
    pair_repulsion: bool = False
    distance_transform: str = "None"
    apply_cutoff: bool = True
    radial_act_scale: Optional[float] = None
    readout_act_scale: Optional[float] = None

    def __post_init__(self) -> None:
        # Plain Python types only: the config is stored in weights-only model files.
        self.atomic_numbers = [int(z) for z in self.atomic_numbers]
        self.atomic_energies = [float(e) for e in self.atomic_energies]
        self.radial_mlp = [int(h) for h in self.radial_mlp]
        if not isinstance(self.correlation, int):
            self.correlation = [int(c) for c in self.correlation]
        for name in ("r_max", "avg_num_neighbors", "scale", "shift"):
            setattr(self, name, float(getattr(self, name)))
        for name in ("radial_act_scale", "readout_act_scale"):
            if getattr(self, name) is not None:
                setattr(self, name, float(getattr(self, name)))
        self.validate()

    @property
    def correlations(self) -> List[int]:
        c = self.correlation
        return [int(c)] * self.num_interactions if isinstance(c, int) else [int(x) for x in c]

    @property
    def num_channels(self) -> int:
        return Irreps(self.hidden_irreps).count(Irrep(0, 1))

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        if sorted(self.atomic_numbers) != list(self.atomic_numbers) or len(set(self.atomic_numbers)) != len(
            self.atomic_numbers
        ):
            raise ValueError(f"atomic_numbers must be sorted and unique, got {self.atomic_numbers}")
        if len(self.atomic_energies) != len(self.atomic_numbers):
            raise ValueError(
                f"atomic_energies has {len(self.atomic_energies)} entries for {len(self.atomic_numbers)} elements"
            )
        hidden = Irreps(self.hidden_irreps)
        muls = {mul for mul, _ in hidden}
        if len(muls) != 1 or hidden.count(Irrep(0, 1)) == 0:
            raise ValueError(
                f"hidden_irreps must have the same number of channels in every block and include 0e, "
                f"got {self.hidden_irreps}"
            )
        if any(ir.p != (-1) ** ir.l for _, ir in hidden):
            raise ValueError(f"hidden_irreps supports natural-parity irreps (0e, 1o, 2e, 3o), got {self.hidden_irreps}")
        if not 0 <= self.max_ell <= 3:
            raise ValueError(f"max_ell must be 0..3, got {self.max_ell}")
        if hidden.lmax > self.max_ell:
            raise ValueError(f"hidden_irreps {self.hidden_irreps} go beyond max_ell={self.max_ell}")
        if self.num_interactions < 1:
            raise ValueError("num_interactions must be at least 1")
        if len(self.correlations) != self.num_interactions or any(c < 1 for c in self.correlations):
            raise ValueError(f"correlation {self.correlation} does not fit num_interactions={self.num_interactions}")
        for name in ("interaction", "interaction_first"):
            if getattr(self, name) not in INTERACTION_BLOCKS:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {sorted(INTERACTION_BLOCKS)}")
        if self.r_max <= 0:
            raise ValueError(f"r_max must be positive, got {self.r_max}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}")
        return cls(**data)
