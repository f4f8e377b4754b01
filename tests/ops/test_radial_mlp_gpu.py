"""The radial-MLP trunk kernels against the torch RadialMLP (GPU only; skipped without CUDA).

Whole MLPs (kernel trunk + torch last layer) and their input gradients: float64 to 1e-12,
float32 no worse than twice the float32 torch reference's own error against float64, on
the float32 units and on the tensor cores (3xTF32); the float32 last layer split into
bfloat16 terms (tensor cores) to float32-level error.
Then weight gradients (torch fallback), double backward, bit-identical reruns, CUDA-graph
capture and input validation. Fresh random inputs on every run.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mace_fast.nn.radial import RadialMLP
from mace_fast.ops.radial_mlp import radial_mlp, radial_mlp_supported, radial_trunk
from mace_fast.step import capture_cuda_graph

pytestmark = pytest.mark.gpu

ARCHS = {
    "mp_medium": [10, 64, 64, 64, 1280],
    "two_hidden": [8, 32, 32, 96],
    "one_hidden": [8, 16, 48],
    "wide": [10, 128, 40],
    "four_hidden_ragged": [7, 24, 8, 40, 16, 30],
    "n0_32": [32, 56, 120, 24],
}
NUM_EDGES = (0, 1, 77, 4096, 5003)  # 5003: not a multiple of any tile


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def make_mlp(sizes, rng, dtype=torch.float64):
    mlp = RadialMLP(sizes)
    with torch.no_grad():
        for w in mlp.layers:
            w.copy_(torch.randn(w.shape, generator=rng, dtype=torch.float64))
    return mlp.to(device="cuda", dtype=dtype)


def randn(rng, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=rng, dtype=torch.float64).to(device="cuda", dtype=dtype)


def value_and_input_grad(fn, x, g):
    x = x.detach().requires_grad_(True)
    out = fn(x)
    (grad,) = torch.autograd.grad(out, x, g)
    return out.detach(), grad


KERNELS = {  # dtype, tensor cores
    "float64": (torch.float64, False),
    "float32": (torch.float32, False),
    "float32_tc": (torch.float32, True),
}


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_matches_torch(arch, kernel, rng):
    dtype, tensor_cores = KERNELS[kernel]
    sizes = ARCHS[arch]
    mlp64 = make_mlp(sizes, rng)
    mlp = copy.deepcopy(mlp64).to(dtype)
    assert radial_mlp_supported(mlp)
    for num_edges in NUM_EDGES:
        x = randn(rng, num_edges, sizes[0])
        g = randn(rng, num_edges, sizes[-1])
        out, grad = value_and_input_grad(
            lambda t: radial_mlp(mlp, t, split=False, tensor_cores=tensor_cores), x.to(dtype), g.to(dtype)
        )
        assert out.dtype == dtype and out.shape == (num_edges, sizes[-1]) and grad.shape == x.shape
        if num_edges == 0:
            continue
        ref, ref_grad = value_and_input_grad(mlp64, x, g)
        errors = (num_edges, rel(out, ref), rel(grad, ref_grad))
        if dtype == torch.float64:
            assert errors[1] < 1e-12 and errors[2] < 1e-12, errors
        else:
            own, own_grad = value_and_input_grad(mlp, x.to(dtype), g.to(dtype))
            floor = 5e-7
            errors += (rel(own, ref), rel(own_grad, ref_grad))
            assert errors[1] <= 2 * errors[3] + floor and errors[2] <= 2 * errors[4] + floor, errors


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_zero_rows_and_saturated_units(kernel, rng):
    """Edges beyond the cutoff (exact zero rows) give exact zeros; inputs scaled so that some
    pre-activations reach -100 (sigmoid underflows to 0) still match the reference."""
    dtype, tensor_cores = KERNELS[kernel]
    sizes = ARCHS["mp_medium"]
    mlp64 = make_mlp(sizes, rng)
    mlp = copy.deepcopy(mlp64).to(dtype)
    num_edges = 5003
    x = randn(rng, num_edges, sizes[0])
    x[torch.rand(num_edges, generator=rng).cuda() < 0.3] = 0
    x[:64] *= 40  # |z| up to ~100 in the first layer
    g = randn(rng, num_edges, sizes[-1])
    zero = (x == 0).all(dim=1)
    assert 0.2 < zero.float().mean() < 0.4
    out, grad = value_and_input_grad(
        lambda t: radial_mlp(mlp, t, split=False, tensor_cores=tensor_cores), x.to(dtype), g.to(dtype)
    )
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    assert torch.equal(out[zero], torch.zeros_like(out[zero])) and out[~zero].abs().max() > 1e-3
    ref, ref_grad = value_and_input_grad(mlp64, x, g)
    errors = (rel(out, ref), rel(grad, ref_grad))
    if dtype == torch.float64:
        assert max(errors) < 1e-12, errors
    else:
        own, own_grad = value_and_input_grad(mlp, x.to(dtype), g.to(dtype))
        floor = 5e-7
        assert errors[0] <= 2 * rel(own, ref) + floor and errors[1] <= 2 * rel(own_grad, ref_grad) + floor, errors


@pytest.mark.parametrize("plan", ["64, false", "32, true", "32, false", "16, true", "8, false", "8, true"])
def test_every_tiling(plan, rng):
    """The tilings the planner picks only for wide trunks or small GPUs: the same bits as the default.

    Every output is one multiply-add chain in the same order whatever the tiling.
    """
    from mace_fast.ops.radial_mlp import _compile, compile_trunk

    sizes = ARCHS["four_hidden_ragged"]
    widths = tuple(sizes[:-1])
    forced, default = _compile(widths, (0, 0), plan), compile_trunk(widths, "cuda")
    for dtype in (torch.float64, torch.float32):
        mlp = make_mlp(sizes, rng, dtype).requires_grad_(False)
        weights = list(mlp.layers)[:-1]
        for num_edges in (1, 77, 5003):
            x, g = randn(rng, num_edges, sizes[0], dtype=dtype), randn(rng, num_edges, sizes[-2], dtype=dtype)
            a, b = (
                value_and_input_grad(lambda t: torch.ops.mace_fast.radial_trunk(t, weights, mlp.act.scale, key, []), x, g)
                for key in (forced, default)
            )
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), (dtype, num_edges, rel(a[0], b[0]))


@pytest.mark.parametrize("tensor_cores", [False, True])
@pytest.mark.parametrize("arch", ["mp_medium", "wide", "four_hidden_ragged"])
def test_split_last_layer(arch, tensor_cores, rng):
    """float32 last layer as bf16x6 on tensor cores: float32-level error, same input gradient
    (with ``tensor_cores``, the trunk and the last layer's backward in 3xTF32 as well)."""
    sizes = ARCHS[arch]
    mlp64 = make_mlp(sizes, rng)
    mlp = copy.deepcopy(mlp64).float()
    x = randn(rng, 5003, sizes[0])
    g = randn(rng, 5003, sizes[-1])
    ref, ref_grad = value_and_input_grad(mlp64, x, g)
    split, split_grad = value_and_input_grad(
        lambda t: radial_mlp(mlp, t, split=True, tensor_cores=tensor_cores), x.float(), g.float()
    )
    plain, plain_grad = value_and_input_grad(
        lambda t: radial_mlp(mlp, t, split=False, tensor_cores=False), x.float(), g.float()
    )
    errors = (rel(split, ref), rel(plain, ref))
    assert errors[0] < 2e-6 and errors[0] < 10 * errors[1] + 5e-7, errors
    assert rel(split_grad, ref_grad) < 2 * rel(plain_grad, ref_grad) + 1e-7
    assert rel(split_grad, plain_grad) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_weight_gradients(dtype, rng):
    sizes = ARCHS["four_hidden_ragged"]
    mlp = make_mlp(sizes, rng, dtype)
    x = randn(rng, 333, sizes[0], dtype=dtype).requires_grad_(True)
    g = randn(rng, 333, sizes[-1], dtype=dtype)
    params = list(mlp.parameters())
    ref = torch.autograd.grad(mlp(x), [x, *params], g)
    fast = torch.autograd.grad(radial_mlp(mlp, x), [x, *params], g)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    errors = [rel(a, b) for a, b in zip(fast, ref)]
    assert max(errors) < tol, errors
    # Only some of them, and through .backward() into .grad.
    (part,) = torch.autograd.grad(radial_mlp(mlp, x), [params[1]], g)
    assert rel(part, ref[2]) < tol
    (radial_mlp(mlp, x) * g).sum().backward()
    errors = [rel(p.grad, b) for p, b in zip(params, ref[1:])]
    assert max(errors) < tol, errors


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32: the split last layer
def test_double_backward(dtype, rng):
    sizes = ARCHS["two_hidden"]
    mlp = make_mlp(sizes, rng, dtype)
    x = randn(rng, 100, sizes[0], dtype=dtype).requires_grad_(True)
    g, v = randn(rng, 100, sizes[-1], dtype=dtype), randn(rng, 100, sizes[0], dtype=dtype)
    params = list(mlp.parameters())

    def second(fn):
        (gx,) = torch.autograd.grad(fn(x), x, g, create_graph=True)
        return torch.autograd.grad((gx * v).sum(), [x, *params])

    errors = [rel(a, b) for a, b in zip(second(lambda t: radial_mlp(mlp, t)), second(mlp))]
    assert max(errors) < (1e-12 if dtype == torch.float64 else 1e-5), errors


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deterministic(dtype, rng):
    sizes = ARCHS["mp_medium"]
    mlp = make_mlp(sizes, rng, dtype).requires_grad_(False)
    weights = list(mlp.layers)[:-1]
    x, g = randn(rng, 20011, sizes[0], dtype=dtype), randn(rng, 20011, sizes[-2], dtype=dtype)

    def trunk(t):
        return radial_trunk(t, weights, mlp.act.scale)

    first, second = value_and_input_grad(trunk, x, g), value_and_input_grad(trunk, x, g)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_cuda_graph(rng):
    sizes = ARCHS["mp_medium"]
    mlp = make_mlp(sizes, rng, torch.float32).requires_grad_(False)
    num_edges = 3001
    static_x = randn(rng, num_edges, sizes[0], dtype=torch.float32)
    static_g = randn(rng, num_edges, sizes[-1], dtype=torch.float32)

    def step():
        return value_and_input_grad(lambda t: radial_mlp(mlp, t), static_x, static_g)

    graph, (out, grad) = capture_cuda_graph(step)
    static_x.copy_(randn(rng, num_edges, sizes[0], dtype=torch.float32))
    graph.replay()
    torch.cuda.synchronize()
    ref, ref_grad = step()  # eager, on the new input
    # cuBLAS (the last layer) need not pick the same algorithm inside a capture: compare closely.
    assert rel(out, ref) < 1e-6 and rel(grad, ref_grad) < 1e-6, (rel(out, ref), rel(grad, ref_grad))


def test_validation(rng):
    mlp = make_mlp(ARCHS["two_hidden"], rng)
    weights = list(mlp.layers)[:-1]
    with pytest.raises(ValueError, match="CUDA"):
        radial_trunk(torch.randn(4, 8, dtype=torch.float64), weights, 1.0)
    with pytest.raises(ValueError, match="float32 or float64"):
        radial_trunk(randn(rng, 4, 8).half(), weights, 1.0)
    with pytest.raises(ValueError, match="chain"):
        radial_trunk(randn(rng, 4, 9), weights, 1.0)
    from mace_fast.ops.radial_mlp import compile_trunk

    key = compile_trunk([8, 32, 32], "cuda")
    with pytest.raises(ValueError, match="contiguous"):
        torch.ops.mace_fast.radial_trunk(randn(rng, 8, 4).t(), weights, 1.0, key, [])
    with pytest.raises(ValueError, match="float32"):
        radial_trunk(randn(rng, 4, 8), weights, 1.0, tensor_cores=True)
    assert not radial_mlp_supported(RadialMLP([8, 32, 32, 16], activation="tanh"))
    assert not radial_mlp_supported(RadialMLP([8, 12, 16]))  # width not a multiple of 8
    assert not radial_mlp_supported(RadialMLP([8, 136, 16]))  # too wide
    assert not radial_mlp_supported(RadialMLP([33, 32, 16]))  # too many radial features
    assert not radial_mlp_supported(RadialMLP([8, 16]))  # no hidden layer
    assert not radial_mlp_supported(RadialMLP([8] * 7))  # five hidden layers
