#!/usr/bin/env python
"""Time energy+forces of one MP-medium model under mace_fast and mace-torch, side by side.

Both packages evaluate the *same weights* (a random mace-torch MP-medium model, converted)
on the same graphs, in one process. Median of ``--reps`` timed steps after ``--warmup``
steps, fresh jittered positions every step. Prints a table and writes JSON.

    python scripts/benchmark.py --device cpu --sizes 1 2 --reps 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase.build import bulk  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mace_fast import keys as K  # noqa: E402
from mace_fast.data.graph import ElementTable, build_graph  # noqa: E402
from mace_fast.interop.mace_torch import convert_mace_model  # noqa: E402
from tests.interop.mace_models import build_mace_torch_model, mace_batch  # noqa: E402


def si_cell(n: int, rng) -> "ase.Atoms":  # noqa: F821
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((n, n, n))
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    return atoms


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, graphs, device, warmup, reps):
    for i in range(warmup):
        step(graphs[i % len(graphs)])
    times = []
    for i in range(reps):
        g = graphs[i % len(graphs)]
        sync(device)
        t0 = time.perf_counter()
        step(g)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except Exception:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2], help="Si supercell repeats (8 n^3 atoms)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rng = np.random.default_rng(0)

    ref = build_mace_torch_model("mp_medium").to(dtype).to(args.device)
    ours = convert_mace_model(build_mace_torch_model("mp_medium")).to(dtype).to(args.device)
    table = ElementTable(ours.config.atomic_numbers)
    n_el = len(ours.config.atomic_numbers)

    rows = []
    for n in args.sizes:
        structures = [si_cell(n, rng) for _ in range(4)]
        graphs = [
            {k: v.to(args.device) for k, v in build_graph(
                a.positions, a.numbers, np.asarray(a.cell), a.pbc, ours.r_max, table, dtype).items()}
            for a in structures
        ]
        mace_graphs = [mace_batch(g, n_el) for g in graphs]
        t_ours = time_steps(lambda g: ours(g, compute_forces=True)[K.FORCES], graphs, args.device, args.warmup, args.reps)
        t_ref = time_steps(
            lambda g: ref(dict(g), compute_force=True)["forces"], mace_graphs, args.device, args.warmup, args.reps
        )
        atoms = len(structures[0])
        edges = int(graphs[0][K.EDGE_INDEX].shape[1])
        rows.append(dict(system=f"Si {n}^3", atoms=atoms, edges=edges, mace_fast_ms=1e3 * t_ours,
                         mace_torch_ms=1e3 * t_ref, speedup=t_ref / t_ours))
        print(f"Si {n}^3: {atoms} atoms {edges} edges  mace_fast {1e3*t_ours:.1f} ms  "
              f"mace-torch {1e3*t_ref:.1f} ms  ratio {t_ref/t_ours:.2f}x", flush=True)

    info = dict(date=time.strftime("%Y-%m-%d"), commit=commit(), device=args.device, dtype=args.dtype,
                torch=torch.__version__, python=platform.python_version(), threads=torch.get_num_threads(),
                cpu=platform.processor() or platform.machine(), reps=args.reps, warmup=args.warmup)
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    print("\n| system | atoms | edges | mace_fast (ms) | mace-torch (ms) | mace-torch / mace_fast |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['atoms']} | {r['edges']} | {r['mace_fast_ms']:.1f} | "
              f"{r['mace_torch_ms']:.1f} | {r['speedup']:.2f} |")
    print(json.dumps(info))
    if args.json:
        args.json.write_text(json.dumps(dict(info=info, rows=rows), indent=2))


if __name__ == "__main__":
    main()
