"""Parity with mace-torch: converted models give the same energies, forces and stresses.

Randomly initialised mace-torch models of the architectures people use (MACE-MP-0
small/medium/large, a MACE-OFF-style model, an MPA-0-style model with density blocks, ZBL
and the Agnesi transform) are converted and evaluated by both packages on the same graph:
a periodic bulk cell, a slab, a molecule and a periodic cell smaller than r_max.
"""

from __future__ import annotations

import copy

import numpy as np
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


def _outputs(model, graph, mace_model=None):
    """The compared quantities of one evaluation (ours if ``mace_model`` is None)."""
    if mace_model is None:
        out = model(graph, compute_forces=True, compute_stress=True)
        names = {"energy": K.ENERGY, "forces": K.FORCES, "interaction_energy": K.INTERACTION_ENERGY,
                 "node_energy": K.NODE_ENERGY, "stress": K.STRESS}
        return {k: out[v] for k, v in names.items()}
    out = mace_model(mace_batch(graph, len(model.config.atomic_numbers)), compute_force=True, compute_stress=True)
    return {k: out[k] for k in ("energy", "forces", "interaction_energy", "node_energy", "stress")}


def _float32_errors(ref, ours, ref32, ours32, make, keys):
    """Absolute error norms against float64 mace-torch of (our float32, mace-torch's float32)."""
    graph64 = graph_for(make, ours, torch.float64)
    exact = _outputs(ours, graph64, ref)
    graph = {k: (v.float() if v.is_floating_point() else v) for k, v in graph64.items()}
    got, theirs = _outputs(ours32, graph), _outputs(ours32, graph, ref32)
    error = lambda a, k: float((a[k].double() - exact[k].double()).norm())  # noqa: E731
    return {k: (error(got, k), error(theirs, k)) for k in keys}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_energy_forces_stress_match(models, structure, dtype):
    """float64: within 1e-10 relative. float32: within 1e-5 relative; where a quantity nearly
    cancels (e.g. the forces in a tiny, almost symmetric cell) float32 round-off alone exceeds
    that, and the criterion is then the one for kernels: our float32 error against float64 no
    more than twice mace-torch's own, over 15 fresh structures.

    The two errors are compared as RMS of absolute error norms over the draws. Round-off
    scales with the intermediate values, not with the nearly cancelled result, so relative
    errors would weight each draw by 1 / |result|^2 and let the single most cancelled draw
    decide. With relative errors the ratio of the two RMS went past 2 in one CI run (2.4).
    Over 120 batches of 15 draws (mpa_style, small cell, three random models) the ratio
    reached 1.8 at most with relative errors and 1.6 with absolute ones (90th percentile
    1.3 for both)."""
    name, ref, ours = models
    graph64 = graph_for(STRUCTURES[structure], ours, torch.float64)
    assert graph64[K.EDGE_INDEX].shape[1] > 0
    if dtype == torch.float64:
        got, expected = _outputs(ours, graph64), _outputs(ours, graph64, ref)
    else:  # cast copies: a float32 round trip would truncate the shared weights
        graph = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in graph64.items()}
        ref32, ours32 = copy.deepcopy(ref).to(dtype), copy.deepcopy(ours).to(dtype)
        got, expected = _outputs(ours32, graph), _outputs(ours32, graph, ref32)
    keys = [k for k in got if not (k == "stress" and structure == "molecule")]
    errors = {k: relative_error(got[k], expected[k]) for k in keys}
    failed = {k: e for k, e in errors.items() if e >= TOL[dtype]}
    if failed and dtype == torch.float32:
        draws = [_float32_errors(ref, ours, ref32, ours32, STRUCTURES[structure], list(failed)) for _ in range(15)]
        rms = {k: [float(np.sqrt(np.mean([d[k][i] ** 2 for d in draws]))) for i in (0, 1)] for k in failed}
        failed = {k: (errors[k], r) for k, r in rms.items() if r[0] > 2 * r[1]}
    assert not failed, f"{name}/{structure}/{dtype}: {failed} (all: {errors})"
