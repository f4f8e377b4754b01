"""Parameter groups, schedules, EMA arithmetic, freezing and element extension."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import bulk

from mace_fast import MACE, ModelConfig
from mace_fast.data.graph import ElementTable, build_graph
from mace_fast.train.config import OptimConfig
from mace_fast.train.ema import ExponentialMovingAverage
from mace_fast.train.finetune import extend_elements, freeze
from mace_fast.train.optim import build_optimizer, build_scheduler, parameter_groups
from mace_fast.train.schema import ConfigError


def tiny_model(numbers=(29,), seed=0) -> MACE:
    torch.manual_seed(seed)
    config = ModelConfig(atomic_numbers=list(numbers), atomic_energies=[-1.0 * (i + 1) for i in range(len(numbers))],
                         r_max=4.0, num_bessel=4, max_ell=1, hidden_irreps="8x0e+8x1o", radial_mlp=[8],
                         correlation=2, mlp_irreps="8x0e", avg_num_neighbors=10.0)  # fmt: skip
    return MACE(config).double()


def test_weight_decay_only_on_interaction_linears_skips_and_products():
    model = tiny_model()
    groups = {g["name"]: g for g in parameter_groups(model, lr=0.01, weight_decay=1e-3)}
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups["decay"]["params"]}
    plain = {names[id(p)] for p in groups["no_decay"]["params"]}
    assert decayed | plain == set(names.values()) and not decayed & plain
    assert "interactions.0.linear.weights.0" in decayed and "interactions.0.skip.weights.0" in decayed
    assert any(n.startswith("products.") for n in decayed)
    assert "node_embedding.weight" in plain and "interactions.0.radial_mlp.layers.0" in plain
    assert "interactions.0.linear_up.weights.0" in plain and all(not n.startswith("readouts") for n in decayed)
    assert groups["decay"]["weight_decay"] == 1e-3 and groups["no_decay"]["weight_decay"] == 0.0


def test_adam_weight_decay_is_applied_to_the_decay_group_only():
    model = tiny_model()
    opt = build_optimizer(OptimConfig(lr=0.1, weight_decay=0.5, amsgrad=False), model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradient: only the L2 term moves weights
    after = dict(model.named_parameters())
    assert not torch.equal(after["products.0.linear.weights.0"], before["products.0.linear.weights.0"])
    assert torch.equal(after["node_embedding.weight"], before["node_embedding.weight"])


@pytest.mark.parametrize("kind", ["exponential", "cosine", "constant"])
def test_schedules(kind):
    model = tiny_model()
    cfg = OptimConfig(lr=0.1, scheduler=kind, exponential_gamma=0.5, cosine_min_lr=0.01, max_epochs=4)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs.append(opt.param_groups[0]["lr"])
    if kind == "exponential":
        assert lrs == pytest.approx([0.1, 0.05, 0.025, 0.0125, 0.00625])
    elif kind == "cosine":
        expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
        assert lrs == pytest.approx(expected) and lrs[-1] == pytest.approx(0.01)
    else:
        assert lrs == [0.1] * 5


def test_plateau_schedule_reduces_after_patience():
    model = tiny_model()
    cfg = OptimConfig(lr=0.1, scheduler="plateau", plateau_patience=1, plateau_factor=0.5)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt)
    for loss in (1.0, 1.0, 1.0):
        sched.step(loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_ema_arithmetic_and_swap():
    model = tiny_model()
    p = model.node_embedding.weight
    start = p.detach().clone()
    ema = ExponentialMovingAverage(model, decay=0.9)
    with torch.no_grad():
        p.add_(1.0)
    ema.update(model)  # n=1: d = min(0.9, 2/11)
    d = 2 / 11
    expected = d * start + (1 - d) * (start + 1.0)
    assert torch.allclose(ema.shadow["node_embedding.weight"], expected, atol=0, rtol=1e-15)
    for _ in range(100):
        ema.update(model)
    with ema.applied(model):
        assert torch.allclose(p, ema.shadow["node_embedding.weight"])
    assert torch.equal(p, start + 1.0)  # restored
    other = ExponentialMovingAverage(tiny_model(seed=1), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 101 and other.decay == 0.9


def test_freeze_and_unknown_prefix():
    model = tiny_model()
    frozen = freeze(model, ["node_embedding", "interactions.0"])
    assert "node_embedding.weight" in frozen and all(n.startswith(("node_embedding", "interactions.0")) for n in frozen)
    assert not model.node_embedding.weight.requires_grad and model.products[0].linear.weights[0].requires_grad
    names = [g["params"] for g in parameter_groups(model, 0.1, 0.0)]
    assert all(p.requires_grad for group in names for p in group)
    with pytest.raises(ConfigError, match=r"'interaction.1' matches no parameter \(did you mean 'interactions.1'"):
        freeze(model, ["interaction.1"])


def test_extending_elements_keeps_predictions_of_known_elements():
    model = tiny_model(numbers=(13, 29))
    bigger = extend_elements(model, [29, 47, 13], {47: -3.5})
    assert bigger.config.atomic_numbers == [13, 29, 47] and bigger.config.atomic_energies == [-1.0, -2.0, -3.5]
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[1] = 13
    atoms.positions += np.random.default_rng(0).normal(0, 0.1, atoms.positions.shape)
    args = (atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, 4.0)
    old = model(build_graph(*args, ElementTable([13, 29])))
    new = bigger(build_graph(*args, ElementTable([13, 29, 47])))
    assert torch.allclose(new["energy"], old["energy"], rtol=1e-13, atol=0)
    assert torch.allclose(new["forces"], old["forces"], rtol=0, atol=1e-13)
    atoms.numbers[2] = 47
    out = bigger(build_graph(*args[:1], atoms.numbers, *args[2:], ElementTable([13, 29, 47])))
    assert torch.isfinite(out["energy"]).all()
