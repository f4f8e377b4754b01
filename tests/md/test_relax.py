"""Relaxation library and ``mace-fast-relax`` end to end, with a tiny random model."""

import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mace_fast.calculator import MaceFastCalculator
from mace_fast.config import ModelConfig
from mace_fast.md.relax import relax_structures
from mace_fast.model import MACE


def tiny_model(seed: int = 0) -> MACE:
    """Small random float64 model (H, C, O, Si); scale=20 so forces are well above the tolerances."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    config = ModelConfig(
        atomic_numbers=[1, 6, 8, 14], atomic_energies=[-1.0, -2.0, -3.0, -4.0], r_max=4.0, num_bessel=6,
        hidden_irreps="8x0e", mlp_irreps="8x0e", radial_mlp=[16, 16], avg_num_neighbors=8.0,
        scale=20.0, shift=0.0,
    )
    return MACE(config).double()


def strained_si() -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.set_cell(atoms.cell @ (np.eye(3) + [[0.06, 0.03, 0], [0, -0.04, 0], [0, 0, 0.05]]), scale_atoms=True)
    atoms.rattle(0.1, seed=1)
    return atoms


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    tiny_model().save(path)
    return path


def test_relax_cell_converges(model_file):
    calc = MaceFastCalculator(model_file)
    atoms = strained_si()
    atoms.calc = calc
    f0 = np.linalg.norm(atoms.get_forces(), axis=1).max()
    s0 = np.abs(atoms.get_stress()).max() * atoms.cell.volume  # virial, what the cell filter sees
    assert max(f0, s0) > 0.05, "start must not be already relaxed, or the test proves nothing"
    (r,) = relax_structures([strained_si()], calc, "FIRE", fmax=0.05, steps=300, cell=True)
    assert r.ok and r.converged and r.steps > 0
    assert r.fmax < 0.05
    forces = r.atoms.get_forces()
    assert np.linalg.norm(forces, axis=1).max() < 0.05
    # FrechetCellFilter's cell "forces" are the virial divided by the number of atoms
    assert np.abs(r.atoms.get_stress()).max() * r.atoms.cell.volume / len(r.atoms) < 0.05
    assert not np.allclose(r.atoms.cell, strained_si().cell)  # the cell moved


def test_bad_structures_are_reported_not_raised(model_file):
    calc = MaceFastCalculator(model_file)
    cu = bulk("Cu", "fcc", a=3.6)
    overlap = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.05]])
    results = relax_structures([cu, overlap, strained_si()], calc, fmax=0.5, steps=5,
                               sources=["a.xyz, frame 0", "a.xyz, frame 1", "a.xyz, frame 2"])
    assert "Cu" in results[0].error and "overlap" in results[1].error
    assert results[2].ok and results[0].source == "a.xyz, frame 0"
    with pytest.raises(ValueError):
        relax_structures([cu], calc, optimizer="Newton")


def test_cli_end_to_end(model_file, tmp_path):
    inp, out = tmp_path / "in.extxyz", tmp_path / "out.extxyz"
    good = strained_si()
    ase.io.write(inp, [good, bulk("Cu", "fcc", a=3.6), good.copy()], format="extxyz")
    proc = subprocess.run(
        [sys.executable, "-m", "mace_fast.cli.relax", str(inp), "--model", str(model_file), "-o", str(out),
         "--cell", "--fmax", "0.05", "--steps", "3", "--optimizer", "BFGS", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"{inp}, frame 1" in proc.stdout and "Cu" in proc.stdout
    assert f"error: {inp}, frame 1" in proc.stderr
    assert "2 relaxed" in proc.stdout and "1 failed" in proc.stdout
    assert "Si2" in proc.stdout and "energy" in proc.stdout
    frames = ase.io.read(out, index=":")
    assert len(frames) == 2
    for atoms in frames:
        assert np.isfinite(atoms.get_potential_energy())
        assert atoms.get_forces().shape == (2, 3) and atoms.get_stress().shape == (6,)


def test_cli_all_good_exit_zero(model_file, tmp_path):
    inp, out = tmp_path / "in.xyz", tmp_path / "out.extxyz"
    ase.io.write(inp, strained_si(), format="extxyz")
    proc = subprocess.run(
        [sys.executable, "-m", "mace_fast.cli.relax", str(inp), "--model", str(model_file), "-o", str(out),
         "--fmax", "0.5", "--steps", "3", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(ase.io.read(out, index=":")) == 1
