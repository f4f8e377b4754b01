#!/usr/bin/env python
"""Energy+forces of one MP-medium model under mace_fast and its peers, side by side.

Every contender evaluates the *same weights* (a random mace-torch MP-medium model,
converted) on the same graphs in one process: mace_fast with the CUDA kernels
(``fast``), the same captured once as a CUDA graph and replayed (``graph``: positions
change every step, the edge list of the first input is kept, as between the rebuilds of
a Verlet list; the edge list is checked once for symmetry so that the radial MLPs run
once per pair of edges; ``graph-unpaired``: the same, once per edge; ``table``: the same
as ``graph`` with the radial weights from tables, ``MACE.tabulate_radial``, an opt-in
float32 approximation; ``table<n>`` with ``n`` intervals), mace_fast's torch reference (``ref``), mace-torch with e3nn (``e3nn``) and,
where importable, mace-torch converted to cuEquivariance (``cueq``). Median of ``--reps``
timed steps after ``--warmup``, synchronised, fresh jittered positions each step, peak
memory from ``torch.cuda.max_memory_allocated``. Prints a table and writes JSON.

    python scripts/benchmark.py --device cpu --systems si2 si4 --reps 10
    python scripts/benchmark.py --device cuda --systems si4 si8 si12 si20 cu10 --json out.json
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
from mace_fast.data.ordering import morton_order  # noqa: E402
from mace_fast.interop.mace_torch import convert_mace_model  # noqa: E402
from mace_fast.nn.linear import element_groups  # noqa: E402
from mace_fast.step import capture_cuda_graph  # noqa: E402
from tests.interop.mace_models import build_mace_torch_model, mace_batch  # noqa: E402


ORDERS = ("built", "random", "morton")
TABLE_INTERVALS = 2048  # the "table" contender's radial tables


def system(name: str, rng, order: str = "built"):
    """``si<n>``: diamond Si, cubic cell x n^3 (8 n^3 atoms); ``cu<n>``: fcc Cu x n^3 (4 n^3).

    ``order``: the atoms as ``repeat`` makes them (cell after cell), shuffled, or sorted
    along a Z-curve (:func:`mace_fast.data.ordering.morton_order`).
    """
    kind, n = name[:2], int(name[2:])
    proto = bulk("Si", "diamond", a=5.43, cubic=True) if kind == "si" else bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms = proto.repeat((n, n, n))
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    if order == "random":
        atoms = atoms[np.random.default_rng(1).permutation(len(atoms))]
    elif order == "morton":
        atoms = atoms[morton_order(atoms.positions, atoms.cell.array, atoms.pbc)]
    elif order != "built":
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    return atoms


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, inputs, device, warmup, reps):
    """Median seconds per step and peak bytes (CUDA) over ``reps`` steps."""
    for i in range(warmup):
        step(inputs[i % len(inputs)])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(reps):
        sync(device)
        t0 = time.perf_counter()
        step(inputs[i % len(inputs)])
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return statistics.median(times), peak


def commit() -> str:
    """``$MACE_FAST_COMMIT`` if set (a copied tree may carry stale git data), else the checkout's."""
    if os.environ.get("MACE_FAST_COMMIT"):
        return os.environ["MACE_FAST_COMMIT"]
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True, stderr=subprocess.DEVNULL
        ).strip()
    except Exception:
        return "unknown"


class GraphedForces:
    """Forces of ``model`` captured as one CUDA graph per system size, replayed with new positions."""

    def __init__(self, model, pairs: bool = True) -> None:
        self.model, self.size, self.graph, self.pairs = model, None, None, pairs

    def release(self) -> None:
        """Free the captured graph and its memory pool (before other contenders run)."""
        self.size, self.graph, self.static, self.forces = None, None, None, None

    def __call__(self, g):
        batch = g["ours"]
        if batch[K.POSITIONS].shape != self.size:
            self.graph = None  # free the previous system's graph before the next capture
            self.static = {k: v.clone() for k, v in batch.items()}
            groups = element_groups(self.static[K.ELEMENT_INDEX])
            symmetric = self.pairs and self.model.edges_symmetric(self.static)  # checked once, before capture
            run = lambda: self.model(  # noqa: E731
                self.static, compute_forces=True, groups=groups, symmetric_edges=symmetric
            )[K.FORCES]
            self.graph, self.forces = capture_cuda_graph(run)
            self.size = batch[K.POSITIONS].shape
        self.static[K.POSITIONS].copy_(batch[K.POSITIONS])
        self.graph.replay()
        return self.forces


def contenders(device: str, dtype: torch.dtype, which):
    """name -> (model, input adapter, output forces) for every contender that loads."""
    source = build_mace_torch_model("mp_medium")
    out = {}
    ours = convert_mace_model(source).to(dtype).to(device)
    if ("fast" in which or "graph" in which) and device.startswith("cuda"):
        import copy

        fast = copy.deepcopy(ours).set_backend("cuda")
        if "fast" in which:
            out["fast"] = lambda g: fast(g["ours"], compute_forces=True)[K.FORCES]
        if "graph" in which:
            out["graph"] = GraphedForces(fast)
        if "graph-unpaired" in which:  # radial MLPs per edge, not per pair of edges
            out["graph-unpaired"] = GraphedForces(fast, pairs=False)
        for name in which:  # radial weights from tables (MACE.tabulate_radial), captured
            if name.startswith("table"):  # "table": TABLE_INTERVALS; "table<n>": n intervals
                intervals = int(name[5:] or TABLE_INTERVALS)
                out[name] = GraphedForces(copy.deepcopy(ours).set_backend("cuda").tabulate_radial(intervals))
    if "ref" in which:
        out["ref"] = lambda g: ours(g["ours"], compute_forces=True)[K.FORCES]
    if "e3nn" in which:
        e3nn = source.to(dtype).to(device)
        out["e3nn"] = lambda g: e3nn(dict(g["mace"]), compute_force=True)["forces"]
    if "cueq" in which:
        try:
            from mace.cli.convert_e3nn_cueq import run as to_cueq

            cueq = to_cueq(build_mace_torch_model("mp_medium"), device=device, return_model=True).to(dtype)
            out["cueq"] = lambda g: cueq(dict(g["mace"]), compute_force=True)["forces"]
        except Exception as err:  # cuEquivariance absent or not working here
            print(f"cueq unavailable: {type(err).__name__}: {err}", flush=True)
    return ours, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--systems", nargs="+", default=["si2", "si4"])
    parser.add_argument("--contenders", nargs="+", default=["fast", "graph", "ref", "e3nn", "cueq"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--max-ref-atoms", type=int, default=15000, help="skip ref/e3nn above this size (memory)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--order", default="built", choices=ORDERS,
                        help="order of the atoms given to every contender (see system())")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rng = np.random.default_rng(0)
    ours, steps = contenders(args.device, dtype, args.contenders)
    table = ElementTable(ours.config.atomic_numbers)
    n_el = len(ours.config.atomic_numbers)

    rows = []
    for name in args.systems:
        inputs = []
        for _ in range(3):
            a = system(name, rng, args.order)
            g = build_graph(a.positions, a.numbers, np.asarray(a.cell), a.pbc, ours.r_max, table, dtype)
            g = {k: v.to(args.device) for k, v in g.items()}
            inputs.append({"ours": g, "mace": mace_batch(g, n_el)})
        atoms, edges = int(inputs[0]["ours"][K.POSITIONS].shape[0]), int(inputs[0]["ours"][K.EDGE_INDEX].shape[1])
        row = dict(system=name, atoms=atoms, edges=edges)
        for who, step in steps.items():
            if who in ("ref", "e3nn") and atoms > args.max_ref_atoms:
                row[who] = None
                continue
            try:
                t, peak = time_steps(step, inputs, args.device, args.warmup, args.reps)
                row[who] = dict(ms=1e3 * t, us_per_atom=1e6 * t / atoms, peak_gib=peak / 2**30 if peak else None)
            except torch.OutOfMemoryError:
                row[who] = "OOM"
            finally:
                if hasattr(step, "release"):
                    step.release()
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            print(name, who, row[who], flush=True)
        rows.append(row)

    info = dict(date=time.strftime("%Y-%m-%d"), commit=commit(), device=args.device, dtype=args.dtype,
                torch=torch.__version__, python=platform.python_version(), threads=torch.get_num_threads(),
                reps=args.reps, warmup=args.warmup, model="MP-medium (random weights)", order=args.order)
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    print(json.dumps(info))
    print(format_table(rows, list(steps)))
    if args.json:
        args.json.write_text(json.dumps(dict(info=info, rows=rows), indent=2))


def format_table(rows, names) -> str:
    def cell(r, who):
        v = r.get(who)
        if not isinstance(v, dict):
            return str(v or "-")
        mem = f", {v['peak_gib']:.2f} GiB" if v.get("peak_gib") is not None else ""
        return f"{v['ms']:.1f} ms ({v['us_per_atom']:.2f} us/atom{mem})"

    lines = ["| system | atoms | edges | " + " | ".join(names) + " | " +
             " | ".join(f"{o}/{names[0]}" for o in names[1:]) + " |"]
    lines.append("|" + "---|" * (3 + 2 * len(names) - 1))
    for r in rows:
        base = r.get(names[0])
        ratios = []
        for o in names[1:]:
            v = r.get(o)
            ok = isinstance(v, dict) and isinstance(base, dict)
            ratios.append(f"{v['ms'] / base['ms']:.2f}x" if ok else "-")
        lines.append(f"| {r['system']} | {r['atoms']} | {r['edges']} | " + " | ".join(cell(r, n) for n in names)
                     + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
