"""InteractionBlock.per_channel: the column gather against concatenating the blocks."""

from __future__ import annotations

import pytest
import torch

from mace_fast.irreps import Irreps
from mace_fast.nn.interaction import InteractionBlock
from mace_fast.nn.linear import split_blocks


def make_block(target: str) -> InteractionBlock:
    return InteractionBlock("RealAgnosticResidualInteractionBlock", Irreps("8x0e+8x1o"), Irreps("1x0e+1x1o+1x2e+1x3o"),
                            Irreps(target), Irreps("8x0e+8x1o"), 2, 4, [8], 5.0)


@pytest.mark.parametrize("target", ["8x0e+8x1o+8x2e+8x3o", "5x1o+5x0e", "3x2e"])
def test_matches_block_concatenation(target):
    block = make_block(target)
    irreps = Irreps(target)
    x = torch.randn(7, irreps.dim, dtype=torch.float64, requires_grad=True)
    expected = torch.cat(split_blocks(x, irreps), dim=-1)
    got = block.per_channel(x)
    assert got.shape == expected.shape and torch.equal(got, expected)
    g = torch.randn_like(expected)
    (grad,) = torch.autograd.grad(got, x, g)
    (grad_ref,) = torch.autograd.grad(expected, x, g)
    assert torch.equal(grad, grad_ref)
    # The backward is itself differentiable (training on forces differentiates it again).
    assert torch.autograd.gradcheck(lambda t: block.per_channel(t), (x,))
    assert torch.autograd.gradgradcheck(lambda t: block.per_channel(t), (x,))


def test_index_is_not_in_the_state_dict():
    block = make_block("8x0e+8x1o+8x2e+8x3o")
    assert not any("channel_index" in k for k in block.state_dict())


def test_unequal_multiplicities_refused():
    with pytest.raises(ValueError, match="equal multiplicities"):
        make_block("8x0e+4x1o")
