#!/usr/bin/env python
"""Time the float32 radial trunk at one edge count: float32 units against tensor cores.

    python scripts/bench_radial.py --edges 1458818

Rows: trunk forward / backward (MP-medium widths [10, 64, 64, 64]) on the float32 units
and on the tensor cores (3xTF32). Median of CUDA-event timings; relative error against
float64 for each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mace_fast.nn.radial import RadialMLP  # noqa: E402
from mace_fast.ops.radial_mlp import radial_trunk  # noqa: E402


def timed(fn, reps: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edges", type=int, default=1458818)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    e = args.edges
    mlp = RadialMLP([10, 64, 64, 64, 1280]).cuda().requires_grad_(False)
    weights = list(mlp.layers)[:-1]
    x = torch.rand(e, 10, device="cuda") * 2
    g = torch.randn(e, 64, device="cuda")
    rows = []
    x64 = x.double().requires_grad_(True)
    ref = mlp.double().hidden(x64)
    (ref_grad,) = torch.autograd.grad(ref, x64, g.double())
    mlp.float()
    for tc in (False, True):
        xr = x.clone().requires_grad_(True)
        out = radial_trunk(xr, weights, mlp.act.scale, tensor_cores=tc, owner=mlp)
        (grad,) = torch.autograd.grad(out, xr, g)
        name = "tensor cores" if tc else "float32 units"
        fwd = timed(lambda: radial_trunk(x, weights, mlp.act.scale, tensor_cores=tc, owner=mlp), args.reps)

        def both():
            xr = x.detach().requires_grad_(True)
            torch.autograd.grad(radial_trunk(xr, weights, mlp.act.scale, tensor_cores=tc, owner=mlp), xr, g)

        total = timed(both, args.reps)
        rows.append((f"trunk forward, {name}", fwd, rel(out, ref)))
        rows.append((f"trunk backward, {name}", total - fwd, rel(grad, ref_grad)))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {e} edges")
    print(f"{'what':45s} {'ms':>8s} {'rel. error':>11s}")
    for name, ms, err in rows:
        print(f"{name:45s} {ms:8.3f} {err:11.2e}")


if __name__ == "__main__":
    main()
