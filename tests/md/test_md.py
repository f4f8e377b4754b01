"""MD library and ``mace-fast-md``, with a tiny random float64 model."""

import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from mace_fast.calculator import MaceFastCalculator
from mace_fast.md.dynamics import run_md

from .test_relax import tiny_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    tiny_model(seed=3).save(path)
    return path


def si_cell():
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.03, seed=4)
    return atoms


def test_nve_conserves_energy(model_file):
    calc = MaceFastCalculator(model_file)
    res = run_md(si_cell(), calc, "nve", temperature_K=300, timestep_fs=0.5, steps=50, interval=1, seed=0,
                 progress=False)
    etot, ekin = res.array("etot_eV"), res.array("ekin_eV")
    assert len(etot) == 51
    # velocity Verlet: the total energy wanders far less than its kinetic/potential parts
    assert ekin.std() > 1e-4
    assert np.ptp(etot) < 0.02 * ekin.std()
    assert np.isfinite(res.array("pressure_GPa")).all()


def test_nvt_writes_log_traj_plot(model_file, tmp_path):
    calc = MaceFastCalculator(model_file)
    log, traj, plot = tmp_path / "md.log", tmp_path / "md.extxyz", tmp_path / "md.png"
    res = run_md(si_cell(), calc, "nvt-langevin", temperature_K=500, timestep_fs=1.0, steps=10, friction=0.02,
                 interval=5, log=log, traj=traj, plot=plot, seed=1, progress=False)
    lines = log.read_text().splitlines()
    assert lines[0].startswith("#") and "temperature_K" in lines[0] and len(lines) == 1 + 3
    frames = ase.io.read(traj, index=":")
    assert len(frames) == 3 and np.isfinite(frames[-1].get_potential_energy())
    assert frames[-1].get_forces().shape == (2, 3)
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert res.ns_per_day > 0


def test_bad_ensemble(model_file, tmp_path):
    with pytest.raises(ValueError, match="ensemble"):
        run_md(si_cell(), MaceFastCalculator(model_file), "nvx", steps=1, progress=False)
    inp = tmp_path / "si.xyz"
    ase.io.write(inp, si_cell(), format="extxyz")
    proc = subprocess.run([sys.executable, "-m", "mace_fast.cli.md", str(inp), "--model", str(model_file),
                           "--ensemble", "nvx"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_cli_bussi_traj(model_file, tmp_path):
    inp, traj = tmp_path / "si.xyz", tmp_path / "md.traj"
    ase.io.write(inp, si_cell(), format="extxyz")
    proc = subprocess.run([sys.executable, "-m", "mace_fast.cli.md", str(inp), "--model", str(model_file),
                           "--ensemble", "nvt-bussi", "--temperature", "300", "--timestep", "1", "--steps", "4",
                           "--interval", "2", "--traj", str(traj), "--seed", "0", "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ns/day" in proc.stdout
    assert len(ase.io.read(traj, index=":")) == 3


def test_npt_runs(model_file):
    res = run_md(si_cell(), MaceFastCalculator(model_file), "npt", temperature_K=300, timestep_fs=0.5, steps=3,
                 pressure_GPa=1.0, interval=1, seed=2, progress=False)
    assert len(res.array("pressure_GPa")) == 4 and np.isfinite(res.array("etot_eV")).all()


def test_check_state_reports_what_ase_reports(model_file):
    """The calculator's exact state check names the same changes as ASE's ``compare_atoms``."""
    from ase.calculators.calculator import compare_atoms

    rng = np.random.default_rng()
    calc = MaceFastCalculator(model_file)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
    atoms.calc = calc
    atoms.get_potential_energy()
    edits = {
        "none": lambda a: None,
        "positions": lambda a: a.positions.__setitem__((int(rng.integers(len(a))), 1), a.positions[0, 1] + 1e-9),
        "numbers": lambda a: a.numbers.__setitem__(int(rng.integers(len(a))), 8),
        "cell": lambda a: a.set_cell(a.cell * (1 + 1e-7)),
        "pbc": lambda a: a.set_pbc([True, False, True]),
        "charges": lambda a: a.set_initial_charges(rng.normal(size=len(a))),
    }
    for name, edit in edits.items():
        changed = atoms.copy()
        edit(changed)
        expected = compare_atoms(calc.atoms, changed, excluded_properties=set(calc.ignored_changes))
        assert sorted(calc.check_state(changed)) == sorted(expected), name
        assert (name == "none") == (expected == [])


def test_calculator_radial_table(model_file, tmp_path):
    """float32 with radial tables: forces and stress agree with the float64 calculator as
    closely as the float32 calculator without tables (twice its error at most); the CLI
    takes the option."""
    atoms = si_cell()
    exact, plain, tab = (MaceFastCalculator(model_file, default_dtype=d, radial_table=n)
                         for d, n in (("float64", 0), ("float32", 0), ("float32", 2048)))
    got = {}
    for name, calc in (("exact", exact), ("plain", plain), ("tab", tab)):
        a = atoms.copy()
        a.calc = calc
        got[name] = np.concatenate([a.get_forces().ravel(), a.get_stress()])
    err = np.linalg.norm(got["tab"] - got["exact"])
    assert 0 < err <= 2 * np.linalg.norm(got["plain"] - got["exact"]) + 1e-7 * np.linalg.norm(got["exact"])
    inp = tmp_path / "si.xyz"
    ase.io.write(inp, atoms, format="extxyz")
    proc = subprocess.run([sys.executable, "-m", "mace_fast.cli.md", str(inp), "--model", str(model_file),
                           "--dtype", "float32", "--radial-table", "2048", "--steps", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
