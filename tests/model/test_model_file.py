"""The model file: round trip, weights-only loading, clear refusals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from ase.build import bulk

from mace_fast import MACE, MaceFastCalculator, load_model
from mace_fast.model_file import FORMAT_VERSION, ModelFileError

from .test_physics import make_model


def test_round_trip_gives_identical_numbers(tmp_path):
    model = make_model()
    path = tmp_path / "model.pt"
    model.save(path)
    raw = torch.load(path, weights_only=True)  # plain data, no code
    assert raw["format_version"] == FORMAT_VERSION and raw["units"]["energy"] == "eV"
    assert raw["config"]["atomic_numbers"] == model.config.atomic_numbers
    loaded = load_model(path)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=int(np.random.default_rng().integers(1 << 30)))
    results = []
    for m in (model, loaded):
        atoms.calc = MaceFastCalculator(m)
        results.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][2], results[1][2])


def test_load_casts_dtype_and_device(tmp_path):
    path = tmp_path / "model.pt"
    make_model().save(path)
    m32 = load_model(path, device="cpu", dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in m32.parameters())
    assert isinstance(m32, MACE)


def test_unknown_format_version_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    make_model().save(path)
    data = torch.load(path, weights_only=True)
    data["format_version"] = FORMAT_VERSION + 1
    torch.save(data, path)
    with pytest.raises(ModelFileError, match=f"format version {FORMAT_VERSION + 1}"):
        load_model(path)


def test_pickled_module_is_refused_with_a_pointer_to_convert(tmp_path):
    path = tmp_path / "pickled.model"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ModelFileError, match="mace-fast-convert"):
        load_model(path)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="not a mace_fast model file"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_loading_does_not_import_e3nn(tmp_path):
    path = tmp_path / "model.pt"
    make_model().save(path)
    code = (
        "import sys, mace_fast\n"
        "from ase.build import bulk\n"
        f"a = bulk('Si', 'diamond', a=5.43); a.calc = mace_fast.MaceFastCalculator({str(path)!r})\n"
        "a.get_forces()\n"
        "assert 'e3nn' not in sys.modules, 'e3nn imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_calculator_keeps_the_global_default_dtype(tmp_path):
    before = torch.get_default_dtype()
    model = make_model().float()
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.calc = MaceFastCalculator(model, default_dtype="float64")
    atoms.get_potential_energy()
    assert torch.get_default_dtype() == before
    assert atoms.calc.dtype == torch.float64
