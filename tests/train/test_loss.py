"""Loss terms against hand-computed numbers; weights, Huber regimes and the universal bands."""

from __future__ import annotations

import pytest
import torch

from mace_fast import keys as K
from mace_fast.train.loss import LossWeights, TrainingLoss, huber, universal_force_delta


def _batch():
    """Two graphs: 2 atoms and 1 atom."""
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    batch = {
        K.PTR: torch.tensor([0, 2, 3]),
        K.BATCH: torch.tensor([0, 0, 1]),
        K.ENERGY: t(1.0, 2.0),
        K.FORCES: t([1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]),
        K.STRESS: torch.zeros(2, 3, 3, dtype=torch.float64),
        K.VIRIALS: torch.zeros(2, 3, 3, dtype=torch.float64),
        K.WEIGHT: t(1.0, 2.0),
        K.ENERGY_WEIGHT: t(1.0, 1.0),
        K.FORCES_WEIGHT: t(1.0, 1.0),
        K.STRESS_WEIGHT: t(1.0, 0.0),
        K.VIRIALS_WEIGHT: t(0.0, 1.0),
    }
    pred = {
        K.ENERGY: t(1.4, 1.0),  # per-atom errors: 0.2 and 1.0
        K.FORCES: t([1.0, 0.0, 0.3], [0.0, 2.0, 0.0], [0.6, 0.0, 0.0]),
        K.STRESS: torch.full((2, 3, 3), 0.1, dtype=torch.float64),
        K.VIRIALS: torch.full((2, 3, 3), 0.5, dtype=torch.float64),
    }
    return batch, pred


def test_weighted_mse_terms():
    batch, pred = _batch()
    loss = TrainingLoss("weighted", LossWeights(energy=2.0, forces=10.0, stress=3.0, virials=5.0))
    total, terms = loss(batch, pred)
    energy = (1.0 * 0.2**2 + 2.0 * 1.0**2) / 2
    forces = (1.0 * 0.3**2 + 2.0 * 0.6**2) / 9  # mean over 3 atoms x 3 components
    stress = (1.0 * 9 * 0.1**2 + 0.0) / 18
    virials = (0.0 + 2.0 * 9 * 0.5**2) / 18  # graph 1 has one atom
    assert float(terms["energy"]) == pytest.approx(energy, rel=1e-12)
    assert float(terms["forces"]) == pytest.approx(forces, rel=1e-12)
    assert float(terms["stress"]) == pytest.approx(stress, rel=1e-12)
    assert float(terms["virials"]) == pytest.approx(virials, rel=1e-12)
    assert float(total) == pytest.approx(2 * energy + 10 * forces + 3 * stress + 5 * virials, rel=1e-12)


def test_zero_weight_removes_a_frame_and_zero_term_weight_skips_the_term():
    batch, pred = _batch()
    batch[K.WEIGHT] = torch.tensor([1.0, 0.0], dtype=torch.float64)
    pred[K.FORCES][2] = 1e6  # a wild prediction on the weight-0 frame changes nothing
    pred[K.ENERGY][1] = 1e6
    loss = TrainingLoss("weighted", LossWeights(energy=1.0, forces=1.0, stress=0.0, virials=0.0))
    total, terms = loss(batch, pred)
    assert set(terms) == {"energy", "forces"}
    assert float(total) == pytest.approx(0.2**2 / 2 + 0.3**2 / 9, rel=1e-12)


def test_huber_regimes():
    e = torch.tensor([0.005, -0.005, 0.03, -0.5], dtype=torch.float64)
    expected = [0.5 * 0.005**2, 0.5 * 0.005**2, 0.01 * (0.03 - 0.005), 0.01 * (0.5 - 0.005)]
    assert torch.allclose(huber(e, 0.01), torch.tensor(expected, dtype=torch.float64), rtol=1e-12)
    ref = torch.nn.functional.huber_loss(e, torch.zeros_like(e), reduction="none", delta=0.01)
    assert torch.allclose(huber(e, 0.01), ref, rtol=1e-12)


def test_universal_force_bands():
    forces = torch.tensor([[50.0, 0, 0], [0, 150.0, 0], [0, 0, 250.0], [400.0, 0, 0], [60.0, 80.0, 0]])
    delta = universal_force_delta(forces, 0.01).squeeze(-1)
    assert torch.allclose(delta, torch.tensor([0.01, 0.007, 0.004, 0.001, 0.007]))  # |(60, 80, 0)| = 100


def test_universal_loss_uses_the_band_delta_for_forces():
    batch, pred = _batch()
    batch[K.FORCES][0] = torch.tensor([150.0, 0.0, 0.0], dtype=torch.float64)
    pred[K.FORCES][0] = torch.tensor([150.0, 0.0, 0.3], dtype=torch.float64)
    universal = TrainingLoss("universal", LossWeights(1.0, 1.0, 0.0, 0.0), huber_delta=0.01)
    plain = TrainingLoss("huber", LossWeights(1.0, 1.0, 0.0, 0.0), huber_delta=0.01)
    _, u = universal(batch, pred)
    _, h = plain(batch, pred)
    # Atom 0 (|F| = 150): delta 0.007; atom 2 (|F| = 0, config weight 2): delta 0.01.
    expected = (0.007 * (0.3 - 0.0035) + 2 * 0.01 * (0.6 - 0.005)) / 9
    assert float(u["forces"]) == pytest.approx(expected, rel=1e-12)
    assert float(h["forces"]) == pytest.approx((0.01 * (0.3 - 0.005) + 2 * 0.01 * (0.6 - 0.005)) / 9, rel=1e-12)
    assert float(u["energy"]) == float(h["energy"])
