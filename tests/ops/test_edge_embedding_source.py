"""The edge-embedding op without a GPU: generated source, the harmonics it encodes, checks.

The harmonics' body of the kernel is straight-line C++ that is also valid Python once the
declarations are stripped, so it is evaluated here against ``spherical_harmonics``.
(scripts/compile_kernels.py compiles the generated sources with nvcc.)
"""

from __future__ import annotations

import pytest
import torch

from mace_fast.nn.radial import RadialEmbedding
from mace_fast.nn.spherical_harmonics import spherical_harmonics
from mace_fast.ops.edge_embedding import (
    MAX_LMAX,
    _sh_body,
    edge_embedding,
    edge_embedding_source,
    edge_embedding_supported,
)


def evaluate_body(lmax: int, u: torch.Tensor) -> torch.Tensor:
    """Run the generated harmonics on unit vectors ``u [n, 3]`` (float64) in Python."""
    one = torch.ones_like(u[:, 0])
    scope = {"x": u[:, 2], "y": u[:, 0], "z": u[:, 1], "N": lambda c: c * one, "scalar_t": float, "Y": {}}
    for line in _sh_body(lmax):
        exec(line.strip().rstrip(";").replace("const N ", ""), scope)
    return torch.stack([scope["Y"][k] for k in range((lmax + 1) ** 2)], dim=-1)


@pytest.mark.parametrize("lmax", range(MAX_LMAX + 1))
def test_generated_harmonics_match_reference(rng, lmax):
    v = torch.randn(200, 3, generator=rng, dtype=torch.float64)
    v[0] = torch.tensor([0.0, 0.0, 0.0])  # zero vector: Y_0 = 1, zeros elsewhere
    v[1] = torch.tensor([0.0, -2.0, 0.0])  # on e3nn's polar axis
    u = torch.nn.functional.normalize(v, dim=-1)
    ours, ref = evaluate_body(lmax, u), spherical_harmonics(v, lmax)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-14)


def test_source_is_complete():
    for lmax in range(MAX_LMAX + 1):
        source = edge_embedding_source(lmax)
        assert "@@" not in source and f"kLmax = {lmax};" in source
    with pytest.raises(ValueError):
        edge_embedding_source(MAX_LMAX + 1)


def test_supported():
    assert edge_embedding_supported(RadialEmbedding(5.0, 8, 5), 3)
    assert not edge_embedding_supported(RadialEmbedding(5.0, 8, 5, distance_transform="Agnesi"), 3)
    assert not edge_embedding_supported(RadialEmbedding(5.0, 8, 5), MAX_LMAX + 1)


def test_rejects_cpu_tensors():
    radial = RadialEmbedding(5.0, 8, 5)
    with pytest.raises(ValueError, match="CUDA"):
        edge_embedding(torch.ones(4, 3), 3, radial.bessel.bessel_weights, radial.bessel.prefactor, 5.0, 5)
