"""Cached derived weights: reused only while the parameters are unchanged and need no gradient."""

import math

import torch

from mace_fast.irreps import Irreps
from mace_fast.nn.linear import EquivariantLinear


def _scaled(layer):
    return layer._derived_cache["w0"][2]


def test_reused_while_unchanged_and_refreshed_after_updates(rng):
    layer = EquivariantLinear(Irreps("8x0e+8x1o"), Irreps("4x0e+4x1o")).double()
    layer.requires_grad_(False)
    x = torch.randn(5, layer.irreps_in.dim, generator=rng, dtype=torch.float64)
    y0 = layer(x)
    cached = _scaled(layer)
    assert torch.equal(layer(x), y0) and _scaled(layer) is cached  # hit: same tensor, no recompute

    with torch.no_grad():  # in-place update (an optimiser step, load_state_dict)
        layer.weights[0].mul_(2.0)
    y1 = layer(x)
    assert _scaled(layer) is not cached
    torch.testing.assert_close(y1[:, :4], 2 * y0[:, :4])

    layer.weights[0].data = torch.randn(8, 4, generator=rng, dtype=torch.float64)  # storage swapped
    expected = x[:, :8] @ (layer.weights[0] / math.sqrt(8))
    torch.testing.assert_close(layer(x)[:, :4], expected)


def test_recomputed_with_gradients_so_training_sees_them(rng):
    layer = EquivariantLinear(Irreps("6x0e"), Irreps("3x0e")).double()
    x = torch.randn(4, 6, generator=rng, dtype=torch.float64)
    layer(x).sum().backward()
    grad = layer.weights[0].grad
    assert grad is not None
    torch.testing.assert_close(grad, (x.sum(0) / math.sqrt(6)).unsqueeze(1).expand(6, 3))
    assert "_derived_cache" not in layer.__dict__ or "w0" not in layer._derived_cache


def test_non_differentiable_copies_cached_while_weights_train(rng):
    owner = torch.nn.Linear(3, 2)  # parameters require grad, as in training
    w = owner.weight
    calls = []

    def make():
        calls.append(1)
        return w * 3.0

    from mace_fast.nn.derived import derived

    first = derived(owner, "copy", [w], make, differentiable=False)
    assert first.grad_fn is None and not first.requires_grad  # no autograd through it
    assert derived(owner, "copy", [w], make, differentiable=False) is first and len(calls) == 1
    with torch.no_grad():  # an optimiser step
        w.add_(torch.randn(w.shape, generator=rng))
    refreshed = derived(owner, "copy", [w], make, differentiable=False)
    assert len(calls) == 2 and torch.equal(refreshed, w.detach() * 3.0)
