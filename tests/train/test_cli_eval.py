"""``mace-fast-eval``: predictions written into extxyz agree with the ASE calculator; metrics printed."""

from __future__ import annotations

import json
import subprocess
import sys

import ase
import ase.io
import numpy as np
import pytest

from mace_fast import MaceFastCalculator

from .helpers import emt_frames, write_frames
from .test_optim import tiny_model


def test_eval_writes_predictions_and_metrics(tmp_path):
    model = tiny_model(numbers=(29,))
    model.save(tmp_path / "model.pt")
    frames = emt_frames(3, seed=30)
    molecule = ase.Atoms("Cu3", positions=[[0, 0, 0], [2.4, 0, 0], [0, 2.5, 0.3]])
    molecule.info["REF_energy"] = 1.0  # no forces and no stress label
    frames.append(molecule)
    data = write_frames(tmp_path / "in.xyz", frames)
    out = tmp_path / "out.xyz"
    cmd = [sys.executable, "-m", "mace_fast.cli.eval", "--model", str(tmp_path / "model.pt"), "--configs", str(data),
           "-o", str(out), "--batch-size", "3", "--metrics", str(tmp_path / "m.json")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "RMSE forces [meV/Å]" in proc.stdout and "in.xyz" in proc.stdout

    written = ase.io.read(out, index=":")
    calc = MaceFastCalculator(tmp_path / "model.pt")
    for atoms in written:
        reference = atoms.copy()
        reference.calc = calc
        assert atoms.info["MACE_energy"] == pytest.approx(reference.get_potential_energy(), rel=1e-10)
        assert np.allclose(atoms.arrays["MACE_forces"], reference.get_forces(), atol=1e-9)
        if atoms.pbc.all():
            assert np.allclose(atoms.info["MACE_stress"], reference.get_stress(), atol=1e-9)
        else:
            assert "MACE_stress" not in atoms.info
    assert "REF_energy" in written[0].info and "REF_forces" in written[0].arrays  # labels kept

    metrics = json.loads((tmp_path / "m.json").read_text())
    ref_e = np.array([a.info["REF_energy"] / len(a) for a in written])
    got_e = np.array([a.info["MACE_energy"] / len(a) for a in written])
    assert metrics["energy_rmse"] == pytest.approx(1000 * np.sqrt(np.mean((got_e - ref_e) ** 2)), rel=1e-9)
    ref_f = np.concatenate([a.arrays["REF_forces"] for a in written[:3]])
    got_f = np.concatenate([a.arrays["MACE_forces"] for a in written[:3]])
    assert metrics["forces_rmse"] == pytest.approx(1000 * np.sqrt(np.mean((got_f - ref_f) ** 2)), rel=1e-9)


def test_eval_reports_bad_input(tmp_path):
    tiny_model().save(tmp_path / "model.pt")
    frames = emt_frames(2, seed=31)
    frames[1].arrays["REF_forces"][0, 0] = np.nan
    data = write_frames(tmp_path / "bad.xyz", frames)
    cmd = [sys.executable, "-m", "mace_fast.cli.eval", "--model", str(tmp_path / "model.pt"), "--configs", str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "bad.xyz, frame 1" in proc.stderr and "REF_forces" in proc.stderr
    cmd[4] = str(tmp_path / "none.pt")  # the --model value
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "none.pt" in proc.stderr
