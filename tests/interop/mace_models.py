"""Random mace-torch models and test structures shared by the parity tests and benchmarks."""

from __future__ import annotations

import os
from typing import Callable, Dict

import ase
import ase.build
import numpy as np
import torch

from mace_fast import keys as K
from mace_fast.data.graph import ElementTable, build_graph

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

MP_ELEMENTS = list(range(1, 84)) + [89, 90, 91, 92, 93, 94]  # the 89 elements of MACE-MP-0
OFF_ELEMENTS = [1, 6, 7, 8, 9, 15, 16, 17, 35, 53]

_MP = dict(r_max=6.0, num_bessel=10, num_polynomial_cutoff=5, max_ell=3, num_interactions=2, correlation=3,
           radial_MLP=[64, 64, 64], MLP_irreps="16x0e", elements=MP_ELEMENTS,
           interaction="RealAgnosticResidualInteractionBlock", interaction_first="RealAgnosticResidualInteractionBlock")

ARCHITECTURES: Dict[str, dict] = {
    "mp_small": dict(_MP, hidden_irreps="128x0e"),
    "mp_medium": dict(_MP, hidden_irreps="128x0e+128x1o"),
    "mp_large": dict(_MP, hidden_irreps="128x0e+128x1o+128x2e"),
    "off_style": dict(r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3, num_interactions=2, correlation=3,
                      radial_MLP=[64, 64, 64], MLP_irreps="16x0e", elements=OFF_ELEMENTS, hidden_irreps="96x0e+96x1o",
                      interaction="RealAgnosticResidualInteractionBlock",
                      interaction_first="RealAgnosticInteractionBlock"),
    "tiny_l2_corr2": dict(_MP, hidden_irreps="16x0e+16x1o+16x2e", elements=[1, 6, 8], correlation=2, max_ell=2,
                          radial_MLP=[16, 16], num_interactions=3, interaction_first="RealAgnosticInteractionBlock",
                          interaction="RealAgnosticInteractionBlock"),
    "mpa_style": dict(_MP, hidden_irreps="128x0e+128x1o", interaction="RealAgnosticDensityResidualInteractionBlock",
                      interaction_first="RealAgnosticDensityInteractionBlock", pair_repulsion=True,
                      distance_transform="Agnesi"),
}


def build_mace_torch_model(name: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised mace-torch ``ScaleShiftMACE`` of architecture ``name``."""
    from e3nn import o3
    from mace import modules

    spec = ARCHITECTURES[name]
    elements = spec["elements"]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    try:
        model = modules.ScaleShiftMACE(
            r_max=spec["r_max"],
            num_bessel=spec["num_bessel"],
            num_polynomial_cutoff=spec["num_polynomial_cutoff"],
            max_ell=spec["max_ell"],
            interaction_cls=modules.interaction_classes[spec["interaction"]],
            interaction_cls_first=modules.interaction_classes[spec["interaction_first"]],
            num_interactions=spec["num_interactions"],
            num_elements=len(elements),
            hidden_irreps=o3.Irreps(spec["hidden_irreps"]),
            MLP_irreps=o3.Irreps(spec["MLP_irreps"]),
            atomic_energies=rng.normal(-3.0, 1.0, size=len(elements)),
            avg_num_neighbors=float(rng.uniform(8, 40)),
            atomic_numbers=elements,
            correlation=spec["correlation"],
            gate=torch.nn.functional.silu,
            pair_repulsion=spec.get("pair_repulsion", False),
            distance_transform=spec.get("distance_transform", "None"),
            radial_MLP=spec["radial_MLP"],
            radial_type="bessel",
            atomic_inter_scale=float(rng.uniform(0.5, 2.0)),
            atomic_inter_shift=float(rng.normal(0.0, 0.5)),
        )
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def _pick(elements, n, rng):
    preferred = [z for z in (1, 6, 8, 14, 29, 26, 13, 3) if z in elements] or list(elements)
    return rng.choice(preferred, size=n)


def bulk(elements, rng) -> ase.Atoms:
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.set_atomic_numbers(_pick(elements, len(atoms), rng))
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    return atoms


def slab(elements, rng) -> ase.Atoms:
    atoms = ase.build.fcc111("Cu", size=(2, 2, 3), vacuum=6.0, a=3.6)
    atoms.set_atomic_numbers(_pick(elements, len(atoms), rng))
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    return atoms


def molecule(elements, rng) -> ase.Atoms:
    points = []
    while len(points) < 9:
        p = rng.uniform(-2.5, 2.5, 3)
        if all(np.linalg.norm(p - q) > 1.0 for q in points):
            points.append(p)
    return ase.Atoms(numbers=_pick(elements, len(points), rng), positions=np.array(points), pbc=False)


def small_cell(elements, rng) -> ase.Atoms:
    cell = np.diag([2.6, 2.8, 3.0]) + rng.uniform(-0.3, 0.3, (3, 3))
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]) + rng.uniform(-0.05, 0.05, (2, 3))
    return ase.Atoms(numbers=_pick(elements, 2, rng), scaled_positions=frac, cell=cell, pbc=True)


STRUCTURES: Dict[str, Callable] = {"bulk": bulk, "slab": slab, "molecule": molecule, "small_cell": small_cell}


def graph_for(make: Callable, model, dtype: torch.dtype, seed=None) -> Dict[str, torch.Tensor]:
    """Our graph of a fresh random structure for ``model``'s elements."""
    rng = np.random.default_rng(seed)
    atoms = make(model.config.atomic_numbers, rng)
    table = ElementTable(model.config.atomic_numbers)
    return build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, model.config.r_max, table, dtype)


def mace_batch(graph: Dict[str, torch.Tensor], num_elements: int) -> Dict[str, torch.Tensor]:
    """The same graph in mace-torch's input format."""
    node_attrs = torch.nn.functional.one_hot(graph[K.ELEMENT_INDEX], num_elements).to(graph[K.POSITIONS].dtype)
    return {
        "positions": graph[K.POSITIONS].clone(),
        "node_attrs": node_attrs,
        "edge_index": graph[K.EDGE_INDEX].clone(),
        "shifts": graph[K.SHIFTS].clone(),
        "unit_shifts": graph[K.UNIT_SHIFTS].clone(),
        "cell": graph[K.CELL].reshape(-1, 3).clone(),
        "batch": graph[K.BATCH].clone(),
        "ptr": graph[K.PTR].clone(),
    }
