"""The edge-embedding kernel against the torch reference (GPU only).

Reference: ``spherical_harmonics`` and ``RadialEmbedding`` (no distance transform) on
``torch.linalg.norm`` lengths, differentiated by autograd. float64 must agree to 1e-12
(norm-wise relative); in float32 the kernel's error against the float64 reference may be at
most twice the float32 torch reference's own error.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mace_fast.nn.radial import RadialEmbedding
from mace_fast.nn.spherical_harmonics import spherical_harmonics
from mace_fast.ops.edge_embedding import edge_embedding, edge_embedding_supported, embed_edges
from mace_fast.step import capture_cuda_graph

pytestmark = pytest.mark.gpu

R_MAX = 5.0


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def make_radial(rng, nb, p, apply_cutoff, dtype):
    radial = RadialEmbedding(R_MAX, nb, p, apply_cutoff=apply_cutoff)
    # Converted models carry their own weights: the kernel must read the buffers.
    radial.bessel.bessel_weights.mul_(1 + 0.1 * torch.rand(nb, generator=rng, dtype=torch.float64))
    radial.bessel.prefactor.mul_(1.1)
    return radial.to(device="cuda", dtype=dtype)


def random_vectors(rng, num_edges):
    """Random directions, lengths in 0.5 .. 1.2 r_max, plus edges on the axes and at r_max."""
    dirs = torch.randn(num_edges, 3, generator=rng, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    lengths = 0.5 + (1.2 * R_MAX - 0.5) * torch.rand(num_edges, 1, generator=rng, dtype=torch.float64)
    v = dirs * lengths
    special = torch.tensor([[0, R_MAX, 0], [R_MAX, 0, 0], [0, 0, -1.0], [0, -2.0, 0], [0.5, 0, 0]],
                           dtype=torch.float64)
    return torch.cat([special, v]).cuda()


def reference(vectors, lmax, radial):
    """``(sh, feats, cutoff [E, 1])`` of the torch path (cutoff also when it is applied)."""
    lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)
    sh = spherical_harmonics(vectors, lmax)
    feats, cutoff = radial(lengths, None, None)
    return sh, feats, radial.cutoff(lengths) if cutoff is None else cutoff


def kernel(vectors, lmax, radial):
    b = radial.bessel
    return edge_embedding(vectors, lmax, b.bessel_weights, b.prefactor, R_MAX, radial.cutoff.p, radial.apply_cutoff)


def outputs_and_grad(fn, vectors, lmax, radial, grads):
    """Outputs of ``fn`` and the gradient of ``sum(grads * outputs)`` w.r.t. ``vectors``."""
    v = vectors.detach().clone().requires_grad_(True)
    outs = fn(v, lmax, radial)
    # l = 0 alone does not depend on the vector: autograd has nothing to differentiate there.
    pairs = [(o, g.to(o.dtype)) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
    (grad,) = torch.autograd.grad([o for o, _ in pairs], v, [g for _, g in pairs], allow_unused=True)
    return [o.detach() for o in outs], torch.zeros_like(v) if grad is None else grad


def upstream(rng, vectors, lmax, nb):
    e = vectors.shape[0]
    return [torch.randn(e, k, generator=rng, dtype=torch.float64).cuda() for k in ((lmax + 1) ** 2, nb, 1)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("apply_cutoff", [True, False])
@pytest.mark.parametrize("p", [5, 6])
@pytest.mark.parametrize("nb", [8, 10])
@pytest.mark.parametrize("lmax", [0, 1, 2, 3])
def test_matches_reference(rng, lmax, nb, p, apply_cutoff, dtype):
    radial64 = make_radial(rng, nb, p, apply_cutoff, torch.float64)
    vectors = random_vectors(rng, 1000).to(dtype)  # 1005 edges: a partial last block
    grads = upstream(rng, vectors, lmax, nb)
    ref, ref_grad = outputs_and_grad(reference, vectors.double(), lmax, radial64, grads)
    if dtype == torch.float64:
        outs, grad = outputs_and_grad(kernel, vectors, lmax, radial64, grads)
        for name, o, r in zip(("sh", "feats", "cutoff"), outs, ref):
            assert o.dtype == dtype and o.shape == r.shape, name
            assert rel(o, r) < 1e-12, (name, rel(o, r))
        assert rel(grad, ref_grad) < 1e-12, rel(grad, ref_grad)
        return
    radial32 = copy.deepcopy(radial64).float()
    ref32, ref32_grad = outputs_and_grad(reference, vectors, lmax, radial32, grads)
    outs, grad = outputs_and_grad(kernel, vectors, lmax, radial32, grads)
    for name, o, r32, r in zip(("sh", "feats", "cutoff", "grad"), [*outs, grad], [*ref32, ref32_grad],
                               [*ref, ref_grad]):
        assert o.dtype == dtype and o.shape == r.shape, name
        assert rel(o, r) <= 2 * rel(r32, r) + 1e-7, (name, rel(o, r), rel(r32, r))


@pytest.mark.parametrize("lmax", [4, 5])
def test_higher_lmax(rng, lmax):
    radial = make_radial(rng, 8, 5, False, torch.float64)
    vectors = random_vectors(rng, 300)
    grads = upstream(rng, vectors, lmax, 8)
    ref, ref_grad = outputs_and_grad(reference, vectors, lmax, radial, grads)
    outs, grad = outputs_and_grad(kernel, vectors, lmax, radial, grads)
    assert all(rel(o, r) < 1e-12 for o, r in zip(outs, ref)) and rel(grad, ref_grad) < 1e-12


@pytest.mark.parametrize("used", ["sh", "feats", "cutoff", "sh+feats"])
def test_unused_outputs(rng, used):
    """Outputs that do not reach the loss give no gradient (None pointers in the kernel)."""
    radial = make_radial(rng, 8, 5, True, torch.float64)
    vectors = random_vectors(rng, 200)
    grads = upstream(rng, vectors, 3, 8)
    grads = [g if name in used.split("+") else None for name, g in zip(("sh", "feats", "cutoff"), grads)]
    _, ref_grad = outputs_and_grad(reference, vectors, 3, radial, grads)
    _, grad = outputs_and_grad(kernel, vectors, 3, radial, grads)
    assert rel(grad, ref_grad) < 1e-12


@pytest.mark.parametrize("num_edges", [1, 127, 128, 129, 300])
def test_block_edges(rng, num_edges):
    radial = make_radial(rng, 10, 6, False, torch.float64)
    vectors = random_vectors(rng, 300)[:num_edges].contiguous()
    grads = upstream(rng, vectors, 2, 10)
    ref, ref_grad = outputs_and_grad(reference, vectors, 2, radial, grads)
    outs, grad = outputs_and_grad(kernel, vectors, 2, radial, grads)
    assert all(rel(o, r) < 1e-12 for o, r in zip(outs, ref)) and rel(grad, ref_grad) < 1e-12


def test_beyond_cutoff_and_zero_vector(rng):
    radial = make_radial(rng, 8, 5, True, torch.float64)
    far = torch.tensor([[R_MAX, 0, 0], [0, 1.2 * R_MAX, 0], [0, 0, 1e6]], dtype=torch.float64, device="cuda")
    far.requires_grad_(True)
    sh, feats, cutoff = kernel(far, 3, radial)
    assert torch.all(cutoff == 0) and torch.all(feats == 0)
    (grad,) = torch.autograd.grad((sh.sum() + feats.sum() + cutoff.sum()), far)
    assert torch.isfinite(grad).all()
    zero = torch.zeros(1, 3, dtype=torch.float64, device="cuda")
    sh, _, _ = kernel(zero, 3, radial)
    expected = torch.zeros(1, 16, dtype=torch.float64, device="cuda")
    expected[0, 0] = 1
    assert torch.equal(sh, expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_empty(dtype):
    radial = RadialEmbedding(R_MAX, 8, 5).to(device="cuda", dtype=dtype)
    vectors = torch.zeros(0, 3, dtype=dtype, device="cuda", requires_grad=True)
    sh, feats, cutoff = kernel(vectors, 3, radial)
    assert sh.shape == (0, 16) and feats.shape == (0, 8) and cutoff.shape == (0, 1)
    (grad,) = torch.autograd.grad(sh.sum() + feats.sum(), vectors)
    assert grad.shape == (0, 3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deterministic(rng, dtype):
    radial = make_radial(rng, 8, 5, False, dtype)
    vectors = random_vectors(rng, 5000).to(dtype)
    grads = upstream(rng, vectors, 3, 8)
    first, grad1 = outputs_and_grad(kernel, vectors, 3, radial, grads)
    second, grad2 = outputs_and_grad(kernel, vectors, 3, radial, grads)
    assert all(torch.equal(a, b) for a, b in zip(first, second)) and torch.equal(grad1, grad2)


def test_cuda_graph(rng):
    """Capture forward and backward once, replay with new vectors in the static input."""
    radial = make_radial(rng, 8, 5, True, torch.float32)
    vectors = random_vectors(rng, 500).float()
    static = vectors.clone().requires_grad_(True)
    g_sh, g_feats, _ = (g.float() for g in upstream(rng, vectors, 3, 8))

    def step():
        sh, feats, cutoff = kernel(static, 3, radial)
        (grad,) = torch.autograd.grad((sh, feats), static, (g_sh, g_feats))
        return sh, feats, cutoff, grad

    graph, captured = capture_cuda_graph(step)  # warm-up runs compile and load the kernels first

    new = random_vectors(rng, 500).float()
    with torch.no_grad():
        static.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    static_copy = new.clone().requires_grad_(True)
    sh, feats, cutoff = kernel(static_copy, 3, radial)
    (grad,) = torch.autograd.grad((sh, feats), static_copy, (g_sh, g_feats))
    for got, want in zip(captured, (sh, feats, cutoff, grad)):
        assert torch.equal(got, want)


def test_embed_edges_matches_model_path(rng):
    for apply_cutoff in (True, False):
        radial = make_radial(rng, 8, 6, apply_cutoff, torch.float64)
        assert edge_embedding_supported(radial, 3)
        vectors = random_vectors(rng, 100)
        sh, feats, cutoff = embed_edges(radial, vectors, 3, R_MAX)
        lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)
        ref_feats, ref_cutoff = radial(lengths, None, None)
        assert rel(sh, spherical_harmonics(vectors, 3)) < 1e-12 and rel(feats, ref_feats) < 1e-12
        assert (cutoff is None) == (ref_cutoff is None)
        if cutoff is not None:
            assert rel(cutoff, ref_cutoff) < 1e-12


def test_rejects_bad_inputs():
    radial = RadialEmbedding(R_MAX, 8, 5).cuda()
    good = torch.ones(4, 3, device="cuda")
    with pytest.raises(ValueError, match="shape"):
        kernel(torch.ones(4, 2, device="cuda"), 3, radial)
    with pytest.raises(ValueError, match="contiguous"):
        kernel(torch.ones(3, 4, device="cuda").t(), 3, radial)
    with pytest.raises(TypeError, match="float32 or float64"):
        kernel(good.half(), 3, radial)
    with pytest.raises(ValueError, match="lmax"):
        kernel(good, 9, radial)
