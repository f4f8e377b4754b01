"""The prepared tensor-core operands (CPU): tf32 rounding and the fragment layout.

The layout is checked against the PTX ISA's mma.m16n8k8 operand map written out element
by element (kernels/tf32x3.cuh), on fresh random matrices of ragged shapes.
"""

from __future__ import annotations

import math

import pytest
import torch

from mace_fast.ops.tensor_cores import fragments, round_tf32


def test_round_tf32(rng):
    x = torch.randn(10000, generator=rng, dtype=torch.float64).float() * 10.0 ** torch.randint(-20, 20, (10000,), generator=rng)
    r = round_tf32(x)
    bits = r.view(torch.int32)
    assert int((bits & 0x1FFF).abs().max()) == 0  # 10 mantissa bits left
    # Nearest: within half a tf32 unit (2^-11 relative to the leading bit) of x, same sign.
    ulp = torch.ldexp(torch.ones_like(x), torch.frexp(x).exponent - 11)
    assert bool(((r - x).abs() <= ulp / 2).all()) and bool((torch.sign(r) == torch.sign(x)).all())
    # Ties go away from zero: 1 + 2^-11 lies halfway between two tf32 numbers.
    tie = torch.tensor([1 + 2.0**-11, -(1 + 2.0**-11)])
    assert round_tf32(tie).tolist() == [1 + 2.0**-10, -(1 + 2.0**-10)]


@pytest.mark.parametrize("shape", [(8, 8), (20, 24), (10, 64), (64, 10), (1280, 64), (7, 3)])
def test_fragment_layout(shape, rng):
    b = torch.randn(*shape, generator=rng, dtype=torch.float64).float()
    f = fragments(b)
    k, n = shape
    kt, nt = math.ceil(k / 8), math.ceil(n / 8)
    assert f.shape == (kt, nt, 32, 4) and f.dtype == torch.float32
    rebuilt = torch.zeros(8 * kt, 8 * nt, dtype=torch.float64)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for pair in range(2):  # B slots t and t + 4 hold k = 2t and 2t + 1 of each k step
            hi = f[:, :, lane, pair].double()
            lo = f[:, :, lane, 2 + pair].double()
            assert int((hi.float().view(torch.int32) & 0x1FFF).abs().max()) == 0  # tf32 terms
            assert int((lo.float().view(torch.int32) & 0x1FFF).abs().max()) == 0
            rebuilt[2 * t + pair :: 8, g::8] = hi + lo
    assert float(rebuilt[k:].abs().sum()) == 0 and float(rebuilt[:, n:].abs().sum()) == 0  # zero padding
    err = (rebuilt[:k, :n] - b.double()).abs() / b.double().abs()
    assert float(err.max()) < 2.0**-21  # hi + lo carries ~22 bits


def test_fragments_validate():
    with pytest.raises(ValueError, match="float32"):
        fragments(torch.ones(8, 8, dtype=torch.float64))
