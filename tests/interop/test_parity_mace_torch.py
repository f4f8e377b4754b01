"""Parity with mace-torch: converted models give the same energies, forces and stresses.

Randomly initialised mace-torch models of the architectures people use (MACE-MP-0
small/medium/large, a MACE-OFF-style model, an MPA-0-style model with density blocks, ZBL
and the Agnesi transform) are converted and evaluated by both packages on the same graph:
a periodic bulk cell, a slab, a molecule and a periodic cell smaller than r_max.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mace_fast import keys as K
from mace_fast.interop.mace_torch import convert_mace_model

from .mace_models import ARCHITECTURES, STRUCTURES, build_mace_torch_model, graph_for, mace_batch

mace = pytest.importorskip("mace", reason="mace-torch is not installed (optional extra 'mace')")

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-300))


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def models(request):
    """(mace-torch model, converted mace_fast model, z table) for one architecture, float64."""
    ref = build_mace_torch_model(request.param)
    return request.param, ref, convert_mace_model(ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_energy_forces_stress_match(models, structure, dtype):
    name, ref, ours = models
    if dtype != torch.float64:  # cast copies: a float32 round trip would truncate the shared weights
        ref, ours = copy.deepcopy(ref).to(dtype), copy.deepcopy(ours).to(dtype)
    graph = graph_for(STRUCTURES[structure], ours, dtype)
    out = ours(graph, compute_forces=True, compute_stress=True)
    expected = ref(mace_batch(graph, len(ours.config.atomic_numbers)), compute_force=True, compute_stress=True)
    tol = TOL[dtype]
    assert graph[K.EDGE_INDEX].shape[1] > 0
    errors = {
        "energy": relative_error(out[K.ENERGY], expected["energy"]),
        "forces": relative_error(out[K.FORCES], expected["forces"]),
        "interaction_energy": relative_error(out[K.INTERACTION_ENERGY], expected["interaction_energy"]),
        "node_energy": relative_error(out[K.NODE_ENERGY], expected["node_energy"]),
    }
    if structure != "molecule":
        errors["stress"] = relative_error(out[K.STRESS], expected["stress"])
    assert all(e < tol for e in errors.values()), f"{name}/{structure}/{dtype}: {errors}"
