#!/usr/bin/env python
"""Where one energy+forces step of MP-medium spends its GPU time (torch profiler table).

    python scripts/profile_step.py --system si8 --backend cuda
    python scripts/profile_step.py --system si16 --graph   # the captured step's kernels
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mace_fast import MACE, ModelConfig  # noqa: E402
from mace_fast import keys as K  # noqa: E402
from mace_fast.data.graph import ElementTable, build_graph  # noqa: E402
from mace_fast.nn.linear import element_groups  # noqa: E402
from mace_fast.step import capture_cuda_graph  # noqa: E402
from scripts.benchmark import system  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", default="si8")
    parser.add_argument("--backend", default="cuda")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--host", action="store_true", help="sort by host (CPU) time: where launch overhead goes")
    parser.add_argument("--ops", action="store_true", help="GPU time per torch operator and input shapes")
    parser.add_argument("--graph", action="store_true", help="profile the step captured as a CUDA graph (kernels only)")
    parser.add_argument("--steps", type=int, default=1, help="steps profiled back to back (times are totals)")
    parser.add_argument("--order", default="built", help="order of the atoms (benchmark.system): built, random, morton")
    parser.add_argument("--converted", action="store_true",
                        help="the benchmark's model: a random mace-torch MP-medium (89 elements), converted")
    parser.add_argument("--table", type=int, default=0,
                        help="radial weights from tables of this many intervals (MACE.tabulate_radial)")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.converted:
        from mace_fast.interop.mace_torch import convert_mace_model
        from tests.interop.mace_models import build_mace_torch_model

        model = convert_mace_model(build_mace_torch_model("mp_medium")).set_backend(args.backend).to(dtype).cuda()
        z = model.config.atomic_numbers
    else:
        z = [14]
        cfg = ModelConfig(atomic_numbers=z, atomic_energies=[0.0], r_max=6.0, num_bessel=10,
                          hidden_irreps="128x0e+128x1o", radial_mlp=[64, 64, 64], avg_num_neighbors=40.0)
        model = MACE(cfg, backend=args.backend).to(dtype).cuda()
    model.tabulate_radial(args.table)
    atoms = system(args.system, np.random.default_rng(0), args.order)
    g = build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, 6.0, ElementTable(z), dtype)
    g = {k: v.cuda() for k, v in g.items()}
    # Given, so that the step has no host sync (and can be captured).
    groups = element_groups(g[K.ELEMENT_INDEX])
    symmetric = model.edges_symmetric(g) if args.backend == "cuda" else False
    step = lambda: model(g, groups=groups, symmetric_edges=symmetric)[K.FORCES]  # noqa: E731
    if args.graph:
        graph, _ = capture_cuda_graph(step)
        step = graph.replay
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    host = (args.host or args.ops) and not args.graph
    acts = [torch.profiler.ProfilerActivity.CUDA] + ([torch.profiler.ProfilerActivity.CPU] if host else [])
    with torch.profiler.profile(activities=acts, record_shapes=host) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    if host and args.ops:  # operators (with their shapes) by the GPU time of the kernels they launch
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=40, max_shapes_column_width=90)
    else:
        key = "self_cpu_time_total" if args.host else "cuda_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60)
    print(table)
    kernels = sum(e.device_time_total for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    print(f"GPU kernel time per step: {kernels / 1e3 / args.steps:.2f} ms")


if __name__ == "__main__":
    main()
