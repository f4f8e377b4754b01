#!/usr/bin/env python
"""Cost of one MD step through ASE (``atoms.get_forces()`` in a VelocityVerlet loop).

For each system: the model alone (mace_fast with kernels, energy+forces on a prebuilt
graph, as in ``benchmark.py``, eager), ASE MD steps with ``MaceFastCalculator``, one call
of that calculator's ``ModelStep`` at fixed positions (the captured step and its
transfers, without ASE), and ASE MD steps with mace-torch's ``MACECalculator``
(cuEquivariance, and e3nn if asked) on the same weights (a random MP-medium model). Reports ms per MD step, the ratio to the model-only time, and
how often mace_fast rebuilt its neighbour list.

    python scripts/benchmark_md.py --device cuda --systems si4 si8 si12 --steps 50 --json md.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402
from ase.units import fs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark import ORDERS, commit, sync, system, time_steps  # noqa: E402

from mace_fast import keys as K  # noqa: E402
from mace_fast.calculator import MaceFastCalculator  # noqa: E402
from mace_fast.data.graph import ElementTable, build_graph  # noqa: E402
from mace_fast.interop.mace_torch import convert_mace_model  # noqa: E402
from tests.interop.mace_models import build_mace_torch_model  # noqa: E402


def md_atoms(name: str, seed: int = 0, order: str = "built"):
    atoms = system(name, np.random.default_rng(seed), order)
    rng = np.random.default_rng(seed + 1)
    # 300 K Maxwell-Boltzmann momenta (amu * Å/fs-ish ASE units), zero total momentum.
    masses = atoms.get_masses()[:, None]
    p = rng.normal(0.0, 1.0, (len(atoms), 3)) * np.sqrt(masses * 300 * 8.617333e-5)
    atoms.set_momenta(p - p.mean(axis=0))
    return atoms


def time_md(atoms, calc, device: str, warmup: int, steps: int) -> float:
    """Seconds per VelocityVerlet step (1 fs) with ``calc``."""
    atoms = atoms.copy()
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=1.0 * fs)
    dyn.run(warmup)
    sync(device)
    t0 = time.perf_counter()
    dyn.run(steps)
    sync(device)
    return (time.perf_counter() - t0) / steps


def profile_md(atoms, calc, steps: int) -> None:
    """Host-side profile (cProfile, by cumulative and by own time) of ``steps`` MD steps."""
    import cProfile
    import pstats

    atoms = atoms.copy()
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=1.0 * fs)
    dyn.run(2)
    prof = cProfile.Profile()
    prof.enable()
    dyn.run(steps)
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--systems", nargs="+", default=["si4", "si8", "si12"])
    parser.add_argument("--peers", nargs="*", default=["cueq"], help="mace-torch calculators: cueq, e3nn")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--skin", type=float, default=None, help="mace_fast Verlet skin, Å (default: the calculator's)")
    parser.add_argument("--energy-scale", type=float, default=1e-3,
                        help="factor on the random model's interaction energy (keeps the MD physical)")
    parser.add_argument("--order", default="built", choices=ORDERS, help="order of the atoms (see benchmark.py)")
    parser.add_argument("--unsorted", action="store_true",
                        help="also time mace_fast MD without its spatial sort of the atoms (sort_atoms=False)")
    parser.add_argument("--radial-table", type=int, default=0, metavar="INTERVALS",
                        help="also time mace_fast MD with radial tables of this many intervals")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--profile", action="store_true",
                        help="also print where the host spends a mace_fast MD step (cProfile)")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    source = build_mace_torch_model("mp_medium")
    # Random weights give forces of hundreds of eV/Å: MD would blow the crystal apart within
    # tens of steps. Scaling the interaction energy down (same cost) keeps a 300 K run a
    # crystal, so neighbour-list rebuilds happen about as often as in real MD.
    with torch.no_grad():
        source.scale_shift.scale.mul_(args.energy_scale)
    model = convert_mace_model(source).to(device=args.device, dtype=dtype).set_backend("auto")
    table = ElementTable(model.config.atomic_numbers)
    source_file = Path(tempfile.mkdtemp()) / "mp_medium.model"
    torch.save(source, source_file)

    peers = {}
    for peer in args.peers:
        try:
            from mace.calculators import MACECalculator

            default = torch.get_default_dtype()
            peers[peer] = MACECalculator(model_paths=str(source_file), device=args.device,
                                         default_dtype=args.dtype, enable_cueq=(peer == "cueq"))
            torch.set_default_dtype(default)  # mace-torch changes it; mace_fast never does
        except Exception as err:  # mace-torch or cuEquivariance absent here
            print(f"{peer} calculator unavailable: {type(err).__name__}: {err}", flush=True)

    rows = []
    for name in args.systems:
        atoms = md_atoms(name, order=args.order)
        row = dict(system=name, atoms=len(atoms))
        g = build_graph(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, model.r_max, table, dtype)
        g = {k: v.to(args.device) for k, v in g.items()}
        t_model, _ = time_steps(lambda b: model(b, compute_forces=True)[K.FORCES], [g], args.device, 3, 20)
        row["model_ms"] = 1e3 * t_model
        calc = MaceFastCalculator(model, device=args.device, skin=args.skin)
        row["fast_ms"] = 1e3 * time_md(atoms, calc, args.device, args.warmup, args.steps)
        row["fast_builds"] = calc.step.num_builds
        row["fast_captures"] = calc.step.num_captures
        row["fast_edges_capacity"] = calc.step._capacity
        row["fast_over_model"] = row["fast_ms"] / row["model_ms"]
        # One ModelStep call at fixed positions: the (captured) step and its transfers, without
        # ASE; the warm-up calls absorb the list rebuild (and capture) the first one may need.
        step_args = (atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc)
        t_step, _ = time_steps(lambda _: calc.step(*step_args), [None], args.device, 3, 40)
        row["step_ms"] = 1e3 * t_step
        if args.profile:
            profile_md(atoms, calc, args.steps)
        del calc
        if args.unsorted:
            calc = MaceFastCalculator(model, device=args.device, skin=args.skin)
            calc.step.sort_atoms = False
            row["fast_unsorted_ms"] = 1e3 * time_md(atoms, calc, args.device, args.warmup, args.steps)
            del calc
        if args.radial_table:
            calc = MaceFastCalculator(copy.deepcopy(model), device=args.device, skin=args.skin,
                                      radial_table=args.radial_table)
            row["table_ms"] = 1e3 * time_md(atoms, calc, args.device, args.warmup, args.steps)
            del calc
        for peer, pcalc in peers.items():
            row[f"{peer}_ms"] = 1e3 * time_md(atoms, pcalc, args.device, 2, max(5, args.steps // 5))
            row[f"{peer}_over_fast"] = row[f"{peer}_ms"] / row["fast_ms"]
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
        rows.append(row)

    info = dict(date=time.strftime("%Y-%m-%d"), commit=commit(), device=args.device, dtype=args.dtype,
                torch=torch.__version__, python=platform.python_version(), steps=args.steps,
                model="MP-medium (random weights)", integrator="ASE VelocityVerlet, 1 fs, 300 K start",
                order=args.order)
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(info))
    table = " with radial tables |" if args.radial_table else ""
    head = "| system | atoms | model only | ModelStep call | mace_fast MD step | step/model | list builds |" + table + " | ".join(
        f" {p} MD step | {p}/mace_fast" for p in peers) + " |"
    print(head)
    for r in rows:
        peer_cells = " | ".join(f"{r[f'{p}_ms']:.1f} ms | {r[f'{p}_over_fast']:.1f}x" for p in peers)
        table_cell = f" {r['table_ms']:.2f} ms |" if args.radial_table else ""
        print(f"| {r['system']} | {r['atoms']} | {r['model_ms']:.2f} ms | {r['step_ms']:.2f} ms | {r['fast_ms']:.2f} ms | "
              f"{r['fast_over_model']:.2f} | {r['fast_builds']} |{table_cell} {peer_cells} |")
    if args.json:
        args.json.write_text(json.dumps(dict(info=info, rows=rows), indent=2))


if __name__ == "__main__":
    main()
