"""ASE calculator for mace_fast models.

>>> from mace_fast import MaceFastCalculator            # doctest: +SKIP
>>> atoms.calc = MaceFastCalculator("model.pt", device="cpu")
>>> atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

Unlike mace-torch's calculator, it never changes torch's global default dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .model import MACE
from .model_file import load_model
from .step import ModelStep

__all__ = ["MaceFastCalculator"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, None: None}


class MaceFastCalculator(Calculator):
    """Energy (eV), forces (eV/Å), stress (eV/Å³, Voigt) and per-atom energies.

    ``model`` is a model file path or a loaded :class:`~mace_fast.model.MACE`;
    ``default_dtype`` ("float32"/"float64") casts the model, default: keep its dtype.
    ``backend``: "auto" (CUDA kernels on a GPU, the torch reference elsewhere), "torch" or
    "cuda" (see :meth:`mace_fast.model.MACE.set_backend`). Stress is available when the
    cell has a volume.

    Each step goes through :class:`~mace_fast.step.ModelStep`: ``skin`` (Å) is its Verlet
    buffer (default 0.5 on a GPU, where the list is kept between steps, and 0 on the CPU,
    where the extra edges would cost more than rebuilding); ``cuda_graph`` captures the
    step as a CUDA graph (default: on CUDA devices).

    ``radial_table`` (intervals, 0: off): evaluate the radial MLPs from tables, an opt-in
    float32 approximation whose error is below the float32 MLP's own (see
    :meth:`mace_fast.model.MACE.tabulate_radial`); float64 ignores it.
    """

    implemented_properties: List[str] = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model: Union[str, Path, MACE],
        device: Union[str, torch.device] = "cpu",
        default_dtype: Optional[str] = None,
        backend: str = "auto",
        skin: Optional[float] = None,
        cuda_graph: Optional[bool] = None,
        radial_table: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if default_dtype not in _DTYPES:
            raise ValueError(f"default_dtype must be 'float32', 'float64' or None, got {default_dtype!r}")
        dtype = _DTYPES[default_dtype]
        if isinstance(model, MACE):
            self.model = model.to(device=device, dtype=dtype) if dtype else model.to(device=device)
        else:
            self.model = load_model(model, device=device, dtype=dtype)
        self.model.eval()
        self.model.set_backend(backend)
        self.model.tabulate_radial(radial_table)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.dtype = next(self.model.parameters()).dtype
        if skin is None:
            skin = 0.5 if self.device.type == "cuda" else 0.0
        self.step = ModelStep(self.model, skin=skin, cuda_graph=cuda_graph)
        self.elements = self.step.elements
        self._stress_asked = False

    def check_state(self, atoms, tol: float = 1e-15) -> List[str]:
        """What changed since the last calculation: ASE's rule, with exact comparisons.

        ASE's generic check (``allclose`` over every property) costs ~0.4 ms and runs
        several times per MD step, a sizeable share of a small system's step. Exact
        equality is at least as strict (a change below ``tol`` only costs a recalculation).
        """
        if self.atoms is None:
            return list(all_changes)
        old, checked = self.atoms, set(all_changes) - set(self.ignored_changes)
        changes = [p for p in ("cell", "pbc") if p in checked and not np.array_equal(getattr(old, p), getattr(atoms, p))]
        checked -= {"cell", "pbc"}
        ours, theirs = set(old.arrays), set(atoms.arrays)
        changes += sorted(checked & (ours ^ theirs))
        changes += [p for p in sorted(checked & ours & theirs) if not np.array_equal(old.arrays[p], atoms.arrays[p])]
        return changes

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        cell = np.asarray(atoms.cell)
        has_volume = bool(atoms.pbc.any()) and abs(np.linalg.det(cell)) > 1e-12
        if "stress" in properties and not has_volume:
            raise PropertyNotImplementedError("stress needs a periodic cell with a non-zero volume")
        # Stress costs a strain derivative: compute it once it has been asked for (NPT, cell
        # filters ask every step, separately from the forces), not in plain MD.
        self._stress_asked |= "stress" in properties
        stress = has_volume and self._stress_asked
        result = self.step(atoms.positions, atoms.numbers, cell, atoms.pbc, stress=stress)
        self.results = {
            "energy": result.energy,
            "free_energy": result.energy,
            "forces": result.forces,
            "energies": result.energies,
        }
        if stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(result.stress)
