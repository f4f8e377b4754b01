"""Molecular dynamics with ASE integrators, logging, trajectory and a summary plot.

Ensembles (all from ase 3.29):

- ``nve``: :class:`ase.md.verlet.VelocityVerlet`.
- ``nvt-langevin``: :class:`ase.md.langevin.Langevin`, ``friction`` in 1/fs.
- ``nvt-bussi``: :class:`ase.md.bussi.Bussi` (stochastic velocity rescaling), tau = 100 steps.
- ``npt``: :class:`ase.md.IsotropicMTKNPT` (Martyna-Tobias-Klein, isotropic cell), chosen over
  ``ase.md.npt.NPT`` (whose Parrinello-Rahman barostat is known to be fragile) and
  ``NPTBerendsen`` (which does not sample the NPT ensemble); thermostat damping 100 steps,
  barostat damping 1000 steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.velocitydistribution import Stationary, thermalize_momenta

__all__ = ["ENSEMBLES", "MDResult", "make_integrator", "run_md"]

ENSEMBLES = ("nve", "nvt-langevin", "nvt-bussi", "npt")
LOG_COLUMNS = ("time_ps", "etot_eV", "epot_eV", "ekin_eV", "temperature_K", "pressure_GPa")


@dataclass
class MDResult:
    """Thermodynamic series sampled every ``interval`` steps (pressure is NaN without a cell)."""

    atoms: Atoms
    series: Dict[str, List[float]] = field(default_factory=lambda: {c: [] for c in LOG_COLUMNS})
    steps_per_second: float = 0.0
    ns_per_day: float = 0.0

    def array(self, column: str) -> np.ndarray:
        return np.asarray(self.series[column])


def _periodic(atoms: Atoms) -> bool:
    return bool(atoms.pbc.any()) and abs(atoms.cell.volume) > 1e-12


def make_integrator(atoms: Atoms, ensemble: str, temperature_K: float, timestep_fs: float,
                    friction: float = 0.01, pressure_GPa: float = 0.0, rng=None):
    """The ASE integrator for ``ensemble`` (see the module docstring)."""
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if ensemble == "nvt-langevin":
        from ase.md.langevin import Langevin

        # fixcm=True is deprecated in ase 3.28+ (it does not sample NVT exactly)
        return Langevin(atoms, timestep=dt, temperature_K=temperature_K, friction=friction / units.fs,
                        fixcm=False, rng=rng)
    if ensemble == "nvt-bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, timestep=dt, temperature_K=temperature_K, taut=100 * dt, rng=rng)
    if ensemble == "npt":
        from ase.md import IsotropicMTKNPT

        if not (atoms.pbc.all() and _periodic(atoms)):
            raise ValueError("npt needs a structure periodic in all three directions")
        return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=temperature_K,
                               pressure_au=pressure_GPa * units.GPa, tdamp=100 * dt, pdamp=1000 * dt)
    raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")


class _TrajectoryWriter:
    """Frames with energy/forces/stress to ``.traj`` (ASE Trajectory) or extxyz (anything else)."""

    def __init__(self, path: Path):
        from ase.io import Trajectory

        self.path = Path(path)
        self._traj = Trajectory(str(self.path), "w") if self.path.suffix == ".traj" else None
        self._file = None if self._traj else open(self.path, "w")

    def write(self, atoms: Atoms) -> None:
        import ase.io

        frame = atoms.copy()
        props = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if _periodic(atoms):
            props["stress"] = atoms.get_stress()
        frame.calc = SinglePointCalculator(frame, **props)
        if self._traj is not None:
            self._traj.write(frame)
        else:
            ase.io.write(self._file, frame, format="extxyz")
            self._file.flush()

    def close(self) -> None:
        (self._traj or self._file).close()


def plot_series(result: MDResult, path: Union[str, Path]) -> None:
    """Energy, temperature and (when periodic) pressure against time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on clusters
    import matplotlib.pyplot as plt

    t = result.array("time_ps")
    has_p = np.isfinite(result.array("pressure_GPa")).any()
    fig, axes = plt.subplots(3 if has_p else 2, 1, sharex=True, figsize=(6, 7 if has_p else 5))
    for col, label in (("etot_eV", "E total"), ("epot_eV", "E potential"), ("ekin_eV", "E kinetic")):
        axes[0].plot(t, result.array(col), label=label)
    axes[0].set_ylabel("energy (eV)")
    axes[0].legend(fontsize="small")
    axes[1].plot(t, result.array("temperature_K"))
    axes[1].set_ylabel("T (K)")
    if has_p:
        axes[2].plot(t, result.array("pressure_GPa"))
        axes[2].set_ylabel("P (GPa)")
    axes[-1].set_xlabel("time (ps)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_md(atoms: Atoms, calculator, ensemble: str = "nve", temperature_K: float = 300.0,
           timestep_fs: float = 1.0, steps: int = 1000, friction: float = 0.01, pressure_GPa: float = 0.0,
           traj: Optional[Union[str, Path]] = None, interval: int = 10, log: Optional[Union[str, Path]] = None,
           plot: Optional[Union[str, Path]] = None, seed: Optional[int] = None,
           progress: bool = True) -> MDResult:
    """Run ``steps`` MD steps on a copy of ``atoms``; sample thermo/trajectory every ``interval`` steps.

    Initial velocities are Maxwell-Boltzmann at ``temperature_K`` (seeded by ``seed``), with
    the centre-of-mass motion removed. ``friction`` is in 1/fs, ``pressure_GPa`` is used by npt.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    if timestep_fs <= 0 or steps < 0 or interval < 1 or temperature_K < 0:
        raise ValueError("need timestep > 0, steps >= 0, interval >= 1 and temperature >= 0")
    from tqdm import tqdm

    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)  # Maxwell-Boltzmann (ase >= 3.29)
    Stationary(atoms)
    dyn = make_integrator(atoms, ensemble, temperature_K, timestep_fs, friction, pressure_GPa, rng)

    result = MDResult(atoms=atoms)
    writer = _TrajectoryWriter(Path(traj)) if traj else None
    logfile = open(log, "w") if log else None
    if logfile:
        logfile.write("# " + " ".join(f"{c:>14}" for c in LOG_COLUMNS) + "\n")

    def sample() -> None:
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        p = -np.trace(atoms.get_stress(voigt=False)) / 3 / units.GPa if _periodic(atoms) else float("nan")
        row = (dyn.nsteps * timestep_fs / 1000, epot + ekin, epot, ekin, atoms.get_temperature(), p)
        for c, v in zip(LOG_COLUMNS, row):
            result.series[c].append(float(v))
        if logfile:
            logfile.write("  " + " ".join(f"{v:>14.6f}" for v in row) + "\n")
            logfile.flush()
        if writer:
            writer.write(atoms)

    bar = tqdm(total=steps, desc=f"md {ensemble}", unit="step", disable=not progress)
    start = time.perf_counter()

    def tick() -> None:
        if dyn.nsteps == 0:  # observers also fire before the first step
            return
        bar.update(1)
        rate = dyn.nsteps / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix_str(f"{rate * timestep_fs * 1e-6 * 86400:.3g} ns/day", refresh=False)

    dyn.attach(sample, interval=interval)  # ASE also calls it at step 0
    dyn.attach(tick, interval=1)
    try:
        dyn.run(steps)
    finally:
        bar.close()
        if writer:
            writer.close()
        if logfile:
            logfile.close()
    elapsed = max(time.perf_counter() - start, 1e-9)
    result.steps_per_second = steps / elapsed
    result.ns_per_day = result.steps_per_second * timestep_fs * 1e-6 * 86400
    if plot:
        plot_series(result, plot)
    return result
