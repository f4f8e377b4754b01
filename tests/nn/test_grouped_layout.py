"""The grouped message layout and the linear map that reads it, against the mul_ir path."""

from __future__ import annotations

import pytest
import torch

from mace_fast.irreps import Irreps
from mace_fast.nn.grouped_layout import GroupedLayout
from mace_fast.nn.linear import EquivariantLinear

# Blocks of one irrep apart and out of order, as a tensor product's paths give them.
MESSAGE = Irreps("6x0e+6x1o+6x2e+6x3o+6x1o+6x0e+6x1o+6x2e+6x3o+6x2e")


def test_columns_match_the_layout():
    layout = GroupedLayout(MESSAGE)
    n = 5
    x = torch.randn(n, MESSAGE.dim, dtype=torch.float64)
    grouped = layout.from_mul_ir(x)
    offsets = [s.start for s in MESSAGE.slices()]
    for b, (mul, ir) in enumerate(MESSAGE):
        for m in range(ir.dim):
            for c in (0, 1, mul - 1):
                assert torch.equal(grouped[:, layout.column(b, m) + c], x[:, offsets[b] + c * ir.dim + m])


def test_round_trip_and_components():
    layout = GroupedLayout(MESSAGE)
    assert [str(g.ir) for g in layout.groups] == ["0e", "1o", "2e", "3o"]
    assert [g.channels for g in layout.groups] == [12, 18, 18, 12]
    n = 7
    x = torch.randn(n, MESSAGE.dim, dtype=torch.float64)
    grouped = layout.from_mul_ir(x)
    assert grouped.shape == x.shape
    assert torch.equal(layout.to_mul_ir(grouped), x)
    # Group 1o, component 2: blocks 1, 4, 6 (channels side by side) of every node.
    comps = layout.components(grouped, 1)
    assert comps.shape == (3, n, 18)
    blocks = [x[:, MESSAGE.slices()[i]].reshape(n, 6, 3)[:, :, 2] for i in (1, 4, 6)]
    assert torch.equal(comps[2], torch.cat(blocks, dim=1))


@pytest.mark.parametrize("target", ["6x0e+6x1o+6x2e+6x3o", "6x0e+6x1o+6x1e+6x2e"])
def test_grouped_linear_matches_mul_ir(target):
    """Values and gradients (input and weights) against the mul_ir map; 1e has no input,
    and without 3o one group is read by no output."""
    target = Irreps(target)
    linear = EquivariantLinear(MESSAGE, target).double()
    for w in linear.weights:
        w.data.normal_()
    layout = GroupedLayout(MESSAGE)
    n, scale = 9, 0.37
    x = torch.randn(n, MESSAGE.dim, dtype=torch.float64, requires_grad=True)
    want = linear(x, scale=scale)  # [N, target.dim], mul_ir
    channels = target[0][0]
    want_rows = torch.cat([want[:, s].reshape(n, channels, ir.dim).permute(2, 0, 1)
                           for s, (_, ir) in zip(target.slices(), target)])  # [D, N, C]

    grouped = layout.from_mul_ir(x.detach()).requires_grad_(True)
    got = linear.forward_grouped(grouped, scale)
    assert got.shape == (target.dim // channels, n, channels)
    torch.testing.assert_close(got, want_rows, rtol=1e-12, atol=1e-12)

    g = torch.randn_like(got)
    params = [w for w in linear.weights if w.shape[0] > 0]  # 1e: no input, no weight
    grads_want = torch.autograd.grad(want_rows, [x] + params, g)
    grads_got = torch.autograd.grad(got, [grouped] + params, g)
    torch.testing.assert_close(layout.to_mul_ir(grads_got[0]), grads_want[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_got[1:], grads_want[1:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_grouped_linear_refuses_double_backward():
    linear = EquivariantLinear(MESSAGE, Irreps("6x0e+6x1o")).double()
    x = torch.randn(4, MESSAGE.dim, dtype=torch.float64, requires_grad=True)
    out = linear.forward_grouped(x)
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(out.sum(), x, create_graph=True)


def test_grouped_linear_needs_equal_multiplicities():
    linear = EquivariantLinear(MESSAGE, Irreps("6x0e+4x1o"))
    with pytest.raises(ValueError, match="equal multiplicity"):
        linear.forward_grouped(torch.randn(2, MESSAGE.dim))
