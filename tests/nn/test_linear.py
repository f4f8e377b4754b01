"""Equivariant linear maps: inputs taken as views of adjacent blocks give the same numbers
as the general path that concatenates them."""

import copy

import pytest
import torch

from mace_fast.irreps import Irreps
from mace_fast.nn.linear import ElementLinear, EquivariantLinear, element_groups

CASES = [
    ("8x0e+8x0e+8x1o+8x1o+8x1o+8x2e+8x3o+8x3o", "4x0e+4x1o+4x2e+4x3o"),  # a TP output, sorted
    ("8x0e+8x1o+8x2e", "4x0e+4x2e"),  # an unused block between
    ("6x1o+5x0e", "3x0e+2x1o"),
]


@pytest.mark.parametrize("irreps_in, irreps_out", CASES)
def test_views_of_adjacent_blocks_match_the_concatenation(irreps_in, irreps_out, rng):
    irreps_in, irreps_out = Irreps(irreps_in), Irreps(irreps_out)
    x = torch.randn(7, irreps_in.dim, generator=rng, dtype=torch.float64, requires_grad=True)
    element = torch.randint(0, 3, (7,), generator=rng)
    for layer, call in [
        (EquivariantLinear(irreps_in, irreps_out).double(), lambda m: m(x)),
        (ElementLinear(irreps_in, irreps_out, 3).double(), lambda m: m(x, element, element_groups(element))),
    ]:
        assert layer._merged is not None
        general = copy.deepcopy(layer)
        general._merged = None
        out, ref = call(layer), call(general)
        g = torch.randn(out.shape, generator=rng, dtype=torch.float64)
        assert torch.equal(out, ref)
        assert torch.equal(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])


def test_blocks_feeding_two_outputs_or_not_adjacent_use_the_general_path():
    assert EquivariantLinear(Irreps("8x0e+8x1o"), Irreps("4x0e+4x0e"))._merged is None
    assert EquivariantLinear(Irreps("8x0e+8x1o+8x0e"), Irreps("4x0e+4x1o"))._merged is None
