#!/usr/bin/env python
"""NVE energy conservation of mace_fast's calculator against mace-torch's on the same model.

The model used for the figures in docs/benchmarks.md was trained with mace-torch on the
bundled EMT copper data (25 epochs, about 18 minutes on a shared 2-core CPU):

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 OMP_NUM_THREADS=1 mace_run_train --name cu_mt \
        --work_dir runs/mace_torch_cu --model_dir runs/mace_torch_cu --seed 1 --device cpu \
        --default_dtype float32 --train_file configs/data/cu_train.xyz \
        --test_file configs/data/cu_test.xyz --valid_fraction 0.1 --energy_key REF_energy \
        --forces_key REF_forces --stress_key REF_stress --E0s average --model ScaleShiftMACE \
        --num_channels 32 --max_L 0 --r_max 5.0 --correlation 3 --num_interactions 2 \
        --loss stress --energy_weight 1 --forces_weight 100 --stress_weight 1 --batch_size 4 \
        --valid_batch_size 16 --lr 0.01 --max_num_epochs 25 --ema --ema_decay 0.99 --plot False

    python scripts/nve_drift.py --mace-model runs/mace_torch_cu/cu_mt.model --system cu:2 \
        --temperature 600 --timestep 2 --steps 1500 --interval 10 --json runs/nve_drift.json

For every (code, dtype): velocity Verlet (``ase.md.verlet.VelocityVerlet``) from the same
positions and the same Maxwell-Boltzmann velocities (``--seed``, centre-of-mass motion
removed), E_total sampled every ``--interval`` steps. Reported: drift = slope of a
least-squares line through E_total/atom against time (eV/atom/ns) with the standard error of
that slope (for independent residuals: a lower bound, the samples are correlated), RMS fluctuation of
E_total/atom about its mean and about that line (meV/atom), max |E_total - E_total(0)|/atom,
mean temperature and steps/s (wall clock of the MD loop, one process, codes run one after
the other, ``--threads`` torch threads).

``--mace-model`` is a mace-torch model file (a pickle: only files you trust); it is
converted in memory with :func:`mace_fast.interop.mace_torch.convert_mace_model` (from the
float64 copy, so both dtypes of mace_fast carry exactly mace-torch's weights) and both codes
run; mace-torch gets the same in-memory model (a copy per dtype) through
``MACECalculator(models=...)``. A model built in float32 has its fixed constants recomputed in
float64 first, for both codes (see :func:`exact_constants`: without it the converter refuses
the model). ``--model`` is a mace_fast model file: only mace_fast runs.

mace-torch's ``MACECalculator`` casts its model to ``default_dtype`` and builds its input in
that dtype; some versions also set torch's global default dtype when constructed. Each one
is constructed here with torch's default dtype saved and restored afterwards, and evaluated
with the default dtype set to its own (``_DtypeScoped``), so neither code sees the other's.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # e3nn 0.4.4 under torch >= 2.6

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lattice_constant import eos_lattice_constant  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_system(spec: str) -> Atoms:
    """``cu:n`` = fcc Cu, n³ conventional cells at EMT's lattice constant; ``si:n`` = diamond Si at 5.431 Å."""
    name, _, n = spec.partition(":")
    n = int(n or 1)
    if name.lower() == "cu":
        from ase.calculators.emt import EMT

        a = eos_lattice_constant(EMT())["a0"]
        return bulk("Cu", "fcc", a=a, cubic=True).repeat((n, n, n))
    if name.lower() == "si":
        return bulk("Si", "diamond", a=5.431, cubic=True).repeat((n, n, n))
    raise ValueError(f"unknown system {spec!r} (cu:N or si:N)")


class _DtypeScoped(Calculator):
    """Wraps a calculator so torch's default dtype is ``dtype`` while it computes, restored after."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, inner: Calculator, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            self.inner.calculate(self.atoms, list(properties) + ["energy", "forces"], system_changes)
        finally:
            torch.set_default_dtype(previous)
        self.results = {k: v for k, v in self.inner.results.items() if k in ("energy", "free_energy", "forces", "stress")}


def exact_constants(model: torch.nn.Module) -> float:
    """Recompute a float32-built mace-torch model's fixed constants in float64, in place.

    mace-torch computes its constant buffers in the default dtype at construction, so a model
    built for float32 training carries them rounded to float32:

    - the product-basis matrices ``U_matrix_*``: ``convert_mace_model`` checks that they lie in
      the span of mace_fast's basis to 1e-9 and refuses such a model (residual ~2e-8);
    - the Bessel ``bessel_weights`` (pi n / r_max) and ``prefactor`` (sqrt(2 / r_max)), which
      mace_fast derives from r_max in float64 (its converted model then differs from the
      float32-built mace-torch model by ~1e-7 relative even in float64).

    They are recomputed here (U with mace-torch's own ``U_matrix_real``) in float64 and, after
    checking that they round to the stored values (relative difference < 1e-6), replace them,
    so both codes evaluate the same function. Trained weights are untouched. Returns the
    largest relative change.
    """
    import math

    from e3nn import o3
    from mace.tools.cg import U_matrix_real

    worst = 0.0

    def replace(module, name, new):
        nonlocal worst
        old = getattr(module, name)
        if new.shape != old.shape:
            raise RuntimeError(f"recomputed {name} has shape {tuple(new.shape)}, stored {tuple(old.shape)}")
        diff = float((new - old.double()).abs().max() / old.double().abs().max().clamp_min(1e-300))
        if diff > 1e-6:
            raise RuntimeError(f"recomputed {name} differs from the stored one by {diff:.1e} (relative)")
        worst = max(worst, diff)
        setattr(module, name, new.to(device=old.device, dtype=torch.float64))

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        bessel = model.radial_embedding.bessel_fn
        r_max = float(bessel.r_max)
        n = bessel.bessel_weights.numel()
        replace(bessel, "bessel_weights", math.pi / r_max * torch.linspace(1.0, n, n, dtype=torch.float64))
        replace(bessel, "prefactor", torch.tensor(math.sqrt(2.0 / r_max), dtype=torch.float64))
        for prod in model.products:
            sc = prod.symmetric_contractions
            for contraction, (_, ir) in zip(sc.contractions, sc.irreps_out):
                for nu in range(1, contraction.correlation + 1):
                    new = U_matrix_real(irreps_in=contraction.coupling_irreps, irreps_out=o3.Irreps(str(ir)),
                                        correlation=nu, use_cueq_cg=False, dtype=torch.float64)[-1]
                    replace(contraction, f"U_matrix_{nu}", new)
    finally:
        torch.set_default_dtype(previous)
    return worst


def make_calculators(args) -> Dict[tuple, Calculator]:
    """{(code, dtype): calculator}, each with its own copy of the weights."""
    from mace_fast import MaceFastCalculator, load_model

    calcs = {}
    if args.mace_model:
        from mace.calculators import MACECalculator

        from mace_fast.interop.mace_torch import convert_mace_model, load_mace_torch_model

        source = load_mace_torch_model(args.mace_model)
        built = next(b for n, b in source.named_buffers() if "U_matrix" in n).dtype
        source = source.double()  # float32 weights are exact in float64: both codes get the same numbers
        if built == torch.float32:
            worst = exact_constants(source)
            print(f"note: model built in float32: its product-basis and Bessel constants were recomputed in "
                  f"float64 (max relative change {worst:.1e}) for BOTH codes; trained weights unchanged", flush=True)
        ours64 = convert_mace_model(source)
        for dt in args.dtypes:
            previous = torch.get_default_dtype()
            try:  # MACECalculator casts its copy to dt (float32: back to the trained weights exactly)
                theirs = MACECalculator(models=copy.deepcopy(source), device=args.device, default_dtype=dt)
            finally:
                torch.set_default_dtype(previous)
            calcs[("mace-torch", dt)] = _DtypeScoped(theirs, DTYPES[dt])
            calcs[("mace_fast", dt)] = MaceFastCalculator(copy.deepcopy(ours64), device=args.device, default_dtype=dt,
                                                          backend=args.backend)
    else:
        base = load_model(args.model)
        for dt in args.dtypes:
            calcs[("mace_fast", dt)] = MaceFastCalculator(copy.deepcopy(base), device=args.device, default_dtype=dt,
                                                          backend=args.backend)
    return dict(sorted(calcs.items(), key=lambda kv: (kv[0][1], kv[0][0])))


def parity(calcs: Dict[tuple, Calculator], atoms: Atoms) -> List[Dict]:
    """Energy and force differences between the codes, per dtype, on the starting cell rattled
    by 0.05 Å (seed 1; the perfect lattice has zero forces by symmetry)."""
    atoms = atoms.copy()
    atoms.rattle(0.05, seed=1)
    rows = []
    for dt in sorted({d for _, d in calcs}):
        if ("mace-torch", dt) not in calcs:
            continue
        out = {}
        for code in ("mace_fast", "mace-torch"):
            a = atoms.copy()
            a.calc = calcs[(code, dt)]
            out[code] = (a.get_potential_energy(), a.get_forces())
        (e1, f1), (e2, f2) = out["mace_fast"], out["mace-torch"]
        rows.append({"dtype": dt, "energy_diff_eV": float(e1 - e2), "energy_eV": float(e2),
                     "max_force_diff_eV_A": float(np.abs(f1 - f2).max()),
                     "rel_force_diff": float(np.linalg.norm(f1 - f2) / max(np.linalg.norm(f2), 1e-300))})
    return rows


def run_nve(atoms0: Atoms, momenta: np.ndarray, calc: Calculator, timestep_fs: float, steps: int,
            interval: int) -> Dict:
    atoms = atoms0.copy()
    atoms.set_momenta(momenta)
    atoms.calc = calc
    n = len(atoms)
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    t_ps, etot, temp = [], [], []

    def sample():
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        t_ps.append(dyn.nsteps * timestep_fs / 1000.0)
        etot.append((epot + ekin) / n)
        temp.append(atoms.get_temperature())

    dyn.attach(sample, interval=interval)
    start = time.perf_counter()
    dyn.run(steps)
    seconds = time.perf_counter() - start
    t_ns = np.asarray(t_ps) / 1000.0
    e = np.asarray(etot)
    slope, intercept = np.polyfit(t_ns, e, 1)
    resid = e - (slope * t_ns + intercept)
    # standard error of the slope for independent residuals; the samples are correlated, so
    # this is a lower bound on the uncertainty: a drift below it is not resolved by the run
    se = np.sqrt(np.sum(resid**2) / max(len(e) - 2, 1) / np.sum((t_ns - t_ns.mean()) ** 2))
    return {
        "drift_eV_atom_ns": float(slope),
        "drift_se_eV_atom_ns": float(se),
        "rms_fluct_meV_atom": float(1000 * e.std()),
        "rms_about_fit_meV_atom": float(1000 * np.sqrt(np.mean(resid**2))),
        "max_dev_meV_atom": float(1000 * np.abs(e - e[0]).max()),
        "mean_T_K": float(np.mean(temp)),
        "steps_per_s": steps / seconds,
        "seconds": seconds,
        "finite": bool(np.isfinite(e).all()),
        "time_ps": [float(x) for x in t_ps],
        "etot_eV_atom": [float(x) for x in e],
        "temperature_K": [float(x) for x in temp],
    }


def format_table(results: Dict[tuple, Dict]) -> str:
    lines = ["| code | dtype | drift (eV/atom/ns) | its std. error | RMS fluct. E_tot (meV/atom) | RMS about fit (meV/atom) "
             "| max abs(E_tot-E_tot(0)) (meV/atom) | mean T (K) | steps/s |", "|" + "---|" * 9]
    for (code, dt), r in results.items():
        lines.append(f"| {code} | {dt} | {r['drift_eV_atom_ns']:+.3e} | {r['drift_se_eV_atom_ns']:.1e} "
                     f"| {r['rms_fluct_meV_atom']:.4f} "
                     f"| {r['rms_about_fit_meV_atom']:.4f} | {r['max_dev_meV_atom']:.4f} | {r['mean_T_K']:.0f} "
                     f"| {r['steps_per_s']:.1f} |")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--mace-model", help="mace-torch model file: converted in memory, both codes run")
    src.add_argument("--model", help="mace_fast model file: only mace_fast runs")
    p.add_argument("--system", default="cu:2", help="cu:N (fcc Cu, N³ cubic cells, EMT a0) or si:N")
    p.add_argument("--temperature", type=float, default=300.0, help="K, initial Maxwell-Boltzmann")
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--interval", type=int, default=10, help="sample E_total every this many steps")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=sorted(DTYPES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto", help="mace_fast backend: auto, torch or cuda")
    p.add_argument("--seed", type=int, default=0, help="initial velocities")
    p.add_argument("--threads", type=int, default=1, help="torch threads (both codes)")
    p.add_argument("--json", help="write results (with the sampled series) here")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    atoms = build_system(args.system)
    rng = np.random.default_rng(args.seed)
    thermalize_momenta(atoms, temperature_K=args.temperature, rng=rng)  # Maxwell-Boltzmann (ase >= 3.29)
    Stationary(atoms)
    momenta = atoms.get_momenta().copy()
    default_before = torch.get_default_dtype()
    calcs = make_calculators(args)
    assert torch.get_default_dtype() == default_before, "a calculator changed torch's default dtype"
    print(f"{args.system}: {len(atoms)} atoms, a = {atoms.cell.lengths()[0] / int(args.system.split(':')[1] or 1):.4f} Å, "
          f"T0 = {args.temperature} K, dt = {args.timestep} fs, {args.steps} steps "
          f"({args.steps * args.timestep / 1000:.2f} ps), sample every {args.interval}, torch {torch.__version__}, "
          f"{args.threads} thread(s)", flush=True)
    par = parity(calcs, atoms)
    for row in par:
        print(f"parity {row['dtype']} (rattled start): E(mace_fast) - E(mace-torch) = {row['energy_diff_eV']:+.3e} eV "
              f"(of {row['energy_eV']:.6f} eV), "
              f"max |dF| = {row['max_force_diff_eV_A']:.3e} eV/Å (relative {row['rel_force_diff']:.2e})", flush=True)
    results = {}
    for key, calc in calcs.items():
        results[key] = run_nve(atoms, momenta, calc, args.timestep, args.steps, args.interval)
        r = results[key]
        print(f"{key[0]:>10} {key[1]}: drift {r['drift_eV_atom_ns']:+.3e} eV/atom/ns, "
              f"{r['steps_per_s']:.1f} steps/s", flush=True)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "natoms": len(atoms), "torch": torch.__version__, "parity": par,
                       "results": [{"code": c, "dtype": d, **r} for (c, d), r in results.items()]}, f, indent=1)
    return 0 if all(r["finite"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
