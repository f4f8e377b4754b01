#!/usr/bin/env python
"""Relaxation throughput: batched FIRE against one-by-one ASE FIRE, in structures per second.

N rattled 64-atom cells (diamond Si 2x2x2 or fcc Cu 2x2x4 conventional cells, each with
its own random rattle) are relaxed with

* ``batched``: :func:`mace_fast.md.batch_relax.relax_batch`, all structures through the
  model together (``--max-atoms-per-batch`` atoms per batch);
* ``ase``: ASE's FIRE on each structure in turn with :class:`MaceFastCalculator`;
* ``mace-torch``: the same with mace-torch's ``MACECalculator`` on the same weights (only
  for a random model built with mace-torch, or ``--mace-torch-model``; needs mace-torch).

All use the same model (``--model``, a mace_fast file; ``--mace-torch-model``, converted;
or a random MP-like model of ``--size``, its energy scaled so that the rattled cells start
at ``--start-force`` eV/Å: random weights alone give a nearly flat landscape). The one-by-one contenders are slow, so they
relax only the first ``--one-by-one`` structures; structures/second is comparable anyway,
since every structure follows the same FIRE trajectory in each contender (up to
round-off, which the report quantifies as the largest energy difference per atom and the
fraction of equal step counts). Each contender is warmed up on two structures first.

    python scripts/benchmark_relax.py --device cpu --size small -n 4 --one-by-one 2 --steps 20
    python scripts/benchmark_relax.py --device cuda --dtype float32 --size medium -n 512 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase.build import bulk  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mace_fast.calculator import MaceFastCalculator  # noqa: E402
from mace_fast.config import ModelConfig  # noqa: E402
from mace_fast.md.batch_relax import relax_batch  # noqa: E402
from mace_fast.md.relax import relax_structures  # noqa: E402
from mace_fast.model import MACE  # noqa: E402
from mace_fast.model_file import load_model  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# MP-like architectures (as MACE-MP-0 small/medium/large): hidden irreps of the random model.
SIZES = {"small": "128x0e", "medium": "128x0e+128x1o", "large": "128x0e+128x1o+128x2e"}
MP_ELEMENTS = list(range(1, 84)) + [89, 90, 91, 92, 93, 94]


def structures(n: int, system: str, rattle: float, seed: int) -> list:
    """``n`` 64-atom cells, each rattled with its own Gaussian noise (std ``rattle`` Å)."""
    rng = np.random.default_rng(seed)
    if system == "si":
        proto = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))
    else:
        proto = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 4))
    out = []
    for _ in range(n):
        atoms = proto.copy()
        atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
        out.append(atoms)
    return out


def mace_torch_available() -> bool:
    try:
        import mace  # noqa: F401
        from mace.calculators import MACECalculator  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def random_models(size: str, dtype: torch.dtype, seed: int, atoms: list, start_force: float):
    """(mace_fast model, mace-torch model or None, energy scale) of the same random weights.

    Random weights give a nearly flat landscape (forces ~1e-3 eV/Å on rattled cells, which
    FIRE crawls over); the interaction energy is scaled so that the median starting fmax of
    ``atoms`` is ``start_force``, as for a real model on a rattled cell.
    """
    source = None
    if mace_torch_available():
        from mace_fast.interop.mace_torch import convert_mace_model
        from tests.interop.mace_models import build_mace_torch_model

        source = build_mace_torch_model(f"mp_{size}", dtype=torch.float64, seed=seed)
        model = convert_mace_model(source)
    else:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        config = ModelConfig(
            atomic_numbers=MP_ELEMENTS, atomic_energies=rng.normal(-3.0, 1.0, len(MP_ELEMENTS)).tolist(),
            r_max=6.0, num_bessel=10, max_ell=3, hidden_irreps=SIZES[size], mlp_irreps="16x0e",
            num_interactions=2, correlation=3, radial_mlp=[64, 64, 64], avg_num_neighbors=20.0,
        )
        model = MACE(config).double()
    start = relax_batch(atoms[:4], model, fmax=1e-12, steps=0)
    factor = start_force / float(np.median([r.fmax for r in start]))
    with torch.no_grad():
        if source is not None:
            source.scale_shift.scale.mul_(factor)
            model = convert_mace_model(source)  # picks up the new scale
            source = source.to(dtype)
        else:
            model.scale.mul_(factor)
    return model.to(dtype), source, factor


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def summarise(name: str, results, seconds: float, device: str) -> dict:
    ok = [r for r in results if r.ok]
    row = {
        "method": name,
        "structures": len(results),
        "failed": len(results) - len(ok),
        "converged": sum(r.converged for r in ok),
        "mean_steps": float(np.mean([r.steps for r in ok])) if ok else float("nan"),
        "seconds": seconds,
        "structures_per_s": len(results) / seconds if seconds > 0 else float("nan"),
        "fire_steps_per_s": sum(r.steps + 1 for r in ok) / seconds if seconds > 0 else float("nan"),
    }
    if device.startswith("cuda"):
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def run_batched(atoms, model, args) -> tuple:
    relax_batch(atoms[:2], model, fmax=args.fmax, steps=3, cell=args.cell,
                max_atoms_per_batch=args.max_atoms_per_batch)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(args.device)
    t0 = time.perf_counter()
    results = relax_batch(atoms, model, fmax=args.fmax, steps=args.steps, cell=args.cell,
                          max_atoms_per_batch=args.max_atoms_per_batch)
    sync(args.device)
    return results, time.perf_counter() - t0


def run_one_by_one(atoms, calc, args) -> tuple:
    relax_structures(atoms[:2], calc, "FIRE", args.fmax, 3, args.cell)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(args.device)
    t0 = time.perf_counter()
    results = relax_structures(atoms, calc, "FIRE", args.fmax, args.steps, args.cell)
    sync(args.device)
    return results, time.perf_counter() - t0


def agreement(results, reference) -> dict:
    """How far a contender's relaxed structures are from the batched ones."""
    pairs = [(r, b) for r, b in zip(results, reference) if r.ok and b.ok]
    if not pairs:
        return {}
    return {
        "max_energy_diff_per_atom": max(abs(r.energy - b.energy) / len(r.atoms) for r, b in pairs),
        "same_steps_fraction": sum(r.steps == b.steps for r, b in pairs) / len(pairs),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64", choices=list(DTYPES))
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="mace_fast model file")
    source.add_argument("--mace-torch-model", type=Path, help="mace-torch model file (converted for mace_fast)")
    parser.add_argument("--size", choices=list(SIZES), default="medium", help="random model without --model")
    parser.add_argument("--start-force", type=float, default=1.0,
                        help="random model: scale its energy so the median starting fmax is this, eV/Å")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "cuda"])
    parser.add_argument("-n", "--num-structures", type=int, default=64)
    parser.add_argument("--system", choices=["si", "cu"], default="si")
    parser.add_argument("--rattle", type=float, default=0.1, help="std of the Gaussian rattle, Å")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--cell", action="store_true", help="relax the cells too (FrechetCellFilter)")
    parser.add_argument("--max-atoms-per-batch", type=int, default=4096)
    parser.add_argument("--one-by-one", type=int, default=8, help="structures the one-by-one contenders relax")
    parser.add_argument("--methods", nargs="+", default=["batched", "ase", "mace-torch"],
                        choices=["batched", "ase", "mace-torch"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    # ASE's FrechetCellFilter takes scipy's logm of a deformation gradient close to I every
    # step, and in float32 its error estimate warns each time (batched FIRE needs no log).
    warnings.filterwarnings("ignore", message="logm result may be inaccurate", category=RuntimeWarning)
    if args.num_structures < 1 or args.one_by_one < 0 or args.fmax <= 0 or args.steps < 0:
        parser.error("need -n >= 1, --one-by-one >= 0, --fmax > 0 and --steps >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]

    atoms = structures(args.num_structures, args.system, args.rattle, args.seed)
    mace_torch_model = None
    if args.model is not None:
        model, model_name = load_model(args.model, device="cpu", dtype=dtype), str(args.model)
    elif args.mace_torch_model is not None:
        from mace_fast.interop.mace_torch import convert_mace_model, load_mace_torch_model

        mace_torch_model = load_mace_torch_model(args.mace_torch_model).to(dtype)
        model, model_name = convert_mace_model(mace_torch_model), str(args.mace_torch_model)
    else:
        model, mace_torch_model, factor = random_models(args.size, dtype, args.seed, atoms, args.start_force)
        model_name = (f"random mp_{args.size}" + (" (mace-torch, converted)" if mace_torch_model is not None else "")
                      + f", energy x {factor:.3g}")
    # The calculator moves the model, picks the backend and freezes the parameters;
    # the batched contender uses the very same module.
    calc = MaceFastCalculator(model, device=args.device, backend=args.backend)
    subset = atoms[: max(0, min(args.one_by_one, len(atoms)))]

    rows, batched = [], None
    print(f"model {model_name}, {args.dtype} on {args.device}; {len(atoms)} x {len(atoms[0])}-atom "
          f"{args.system} cells, fmax {args.fmax}, steps {args.steps}, cell={args.cell}", flush=True)
    if "batched" in args.methods:
        batched, seconds = run_batched(atoms, calc.model, args)
        rows.append(summarise("batched", batched, seconds, args.device))
    if "ase" in args.methods and subset:
        results, seconds = run_one_by_one(subset, calc, args)
        rows.append(summarise("ase", results, seconds, args.device) | (agreement(results, batched) if batched else {}))
    if "mace-torch" in args.methods and subset:
        if mace_torch_model is None or not mace_torch_available():
            print("mace-torch: skipped (needs mace-torch and a random or --mace-torch-model model)")
        else:
            from mace.calculators import MACECalculator

            previous = torch.get_default_dtype()
            try:  # MACECalculator sets torch's global default dtype
                mt_calc = MACECalculator(models=mace_torch_model, device=args.device, default_dtype=args.dtype)
                results, seconds = run_one_by_one(subset, mt_calc, args)
            finally:
                torch.set_default_dtype(previous)
            rows.append(summarise("mace-torch", results, seconds, args.device)
                        | (agreement(results, batched) if batched else {}))

    print(f"{'method':<11} {'structs':>7} {'conv':>5} {'steps':>7} {'seconds':>9} {'struct/s':>10} {'steps/s':>9}"
          f" {'max|dE|/atom':>13} {'same steps':>10}")
    for r in rows:
        de = r.get("max_energy_diff_per_atom")
        same = r.get("same_steps_fraction")
        print(f"{r['method']:<11} {r['structures']:>7} {r['converged']:>5} {r['mean_steps']:>7.1f} {r['seconds']:>9.2f} "
              f"{r['structures_per_s']:>10.3f} {r['fire_steps_per_s']:>9.1f} "
              f"{'' if de is None else f'{de:.2e}':>13} {'' if same is None else f'{same:.2f}':>10}")
    if args.json:
        info = {
            "model": model_name, "device": args.device, "dtype": args.dtype, "backend": args.backend,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "torch": torch.__version__, "python": platform.python_version(), "host": platform.node(),
            "system": args.system, "atoms_per_structure": len(atoms[0]), "num_structures": len(atoms),
            "one_by_one_structures": len(subset), "fmax": args.fmax, "steps": args.steps, "cell": args.cell,
            "rattle": args.rattle, "max_atoms_per_batch": args.max_atoms_per_batch, "seed": args.seed,
        }
        args.json.write_text(json.dumps({"config": info, "results": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
