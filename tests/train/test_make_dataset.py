"""scripts/make_dataset.py: seeded and reproducible, labels are EMT's, stress only where defined."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
from ase.calculators.emt import EMT

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_dataset.py"
SMALL = ["--bulk", "3", "--vacancy", "1", "--surface", "2", "--cluster", "1", "--temperatures", "300,900",
         "--md-snapshots", "2", "--elements", "Cu,Ni"]  # fmt: skip


def _make(out: Path, seed: int) -> Path:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--seed", str(seed), *SMALL],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def test_same_seed_same_files_and_emt_labels(tmp_path):
    a, b, c = _make(tmp_path / "a", 5), _make(tmp_path / "b", 5), _make(tmp_path / "c", 6)
    for split in ("train", "test"):
        assert (a / f"cuni_{split}.xyz").read_bytes() == (b / f"cuni_{split}.xyz").read_bytes()
        assert (a / f"cuni_{split}.xyz").read_bytes() != (c / f"cuni_{split}.xyz").read_bytes()
    frames = ase.io.read(a / "cuni_train.xyz", index=":")
    types = [f.info["config_type"] for f in frames]
    assert types.count("bulk") == 3 and types.count("md_900K") == 2 and types.count("IsolatedAtom") == 2
    assert {"vacancy", "surface", "cluster", "md_300K"} <= set(types)
    assert set(np.concatenate([f.numbers for f in frames])) == {28, 29}
    for atoms in frames:
        ref = atoms.copy()
        ref.calc = EMT()
        assert abs(ref.get_potential_energy() - atoms.info["REF_energy"]) < 1e-6
        assert np.allclose(ref.get_forces(), atoms.arrays["REF_forces"], atol=1e-6)
        if atoms.pbc.all():
            assert np.allclose(ref.get_stress(), atoms.info["REF_stress"], atol=1e-8)
        else:
            assert "REF_stress" not in atoms.info


def test_unsupported_element_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--elements", "Cu,Fe"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "Fe" in proc.stderr
