#!/usr/bin/env python
"""Where one energy+forces step of MP-medium spends its GPU time (torch profiler table).

    python scripts/profile_step.py --system si8 --backend cuda
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
from scripts.benchmark import system  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", default="si8")
    parser.add_argument("--backend", default="cuda")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--host", action="store_true", help="sort by host (CPU) time: where launch overhead goes")
    parser.add_argument("--ops", action="store_true", help="GPU time per torch operator and input shapes")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    z = [14]
    cfg = ModelConfig(atomic_numbers=z, atomic_energies=[0.0], r_max=6.0, num_bessel=10, hidden_irreps="128x0e+128x1o",
                      radial_mlp=[64, 64, 64], avg_num_neighbors=40.0)
    model = MACE(cfg, backend=args.backend).to(dtype).cuda()
    for p in model.parameters():
        p.requires_grad_(False)
    atoms = system(args.system, np.random.default_rng(0))
    g = build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, 6.0, ElementTable(z), dtype)
    g = {k: v.cuda() for k, v in g.items()}
    for _ in range(3):
        model(g)[K.FORCES]
    torch.cuda.synchronize()
    host = args.host or args.ops
    acts = [torch.profiler.ProfilerActivity.CUDA] + ([torch.profiler.ProfilerActivity.CPU] if host else [])
    with torch.profiler.profile(activities=acts, record_shapes=args.ops) as prof:
        model(g)[K.FORCES]
        torch.cuda.synchronize()
    if args.ops:  # operators (with their shapes) by the GPU time of the kernels they launch
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=40, max_shapes_column_width=90)
    else:
        key = "self_cpu_time_total" if args.host else "cuda_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60)
    print(table)


if __name__ == "__main__":
    main()
