"""Fine-tuning a converted mace-torch model on EMT molecules: its test error falls, a new
element (N) is added, E0s are refitted, frozen layers stay put, and it loads in ASE.
(Keeping the foundation's E0s for known elements is tested in test_statistics.)"""

from __future__ import annotations

import ase
import ase.io
import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT

from mace_fast import MaceFastCalculator, load_model
from mace_fast.train.config import config_from_dict
from mace_fast.train.data import GraphSet
from mace_fast.train.evaluate import evaluate
from mace_fast.train.run import run_training
from mace_fast.train.statistics import fit_e0s
from mace_fast.data import read_configurations
from mace_fast.data.graph import ElementTable

from .helpers import tiny_config, write_frames

pytest.importorskip("mace", reason="mace-torch is not installed (optional extra 'mace')")

MOLECULES = ["CH4", "H2O", "NH3", "CO2", "C2H6", "CH3OH", "HCN", "C2H4", "H2CO", "CH3CN"]


def emt_molecules(n: int, seed: int):
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = molecule(MOLECULES[i % len(MOLECULES)])
        atoms.positions += rng.normal(0.0, 0.04, atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        atoms.info = {"REF_energy": energy, "config_type": "molecule"}
        atoms.arrays["REF_forces"] = forces
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def foundation(tmp_path_factory):
    from mace_fast.interop.mace_torch import convert_mace_model

    from ..interop.mace_models import build_mace_torch_model

    path = tmp_path_factory.mktemp("foundation") / "foundation.pt"
    convert_mace_model(build_mace_torch_model("tiny_l2_corr2")).save(path)  # H, C, O
    return path


def test_finetuning_a_converted_model_lowers_its_test_error(tmp_path, foundation):
    train = write_frames(tmp_path / "train.xyz", emt_molecules(16, seed=0))
    test = write_frames(tmp_path / "test.xyz", emt_molecules(10, seed=1))
    data = tiny_config(tmp_path, train, data={"test_file": str(test), "batch_size": 2, "e0s": "fit"},
                       optim={"max_epochs": 14, "lr": 0.01, "scheduler": "constant"},
                       finetune={"model": str(foundation), "freeze": ["interactions.0"]})  # fmt: skip
    del data["model"]  # the architecture comes from the model file
    cfg = config_from_dict(data)

    before = load_model(foundation)
    assert before.config.atomic_numbers == [1, 6, 8]
    results = run_training(cfg)

    after = load_model(tmp_path / "run" / "model.pt")
    assert after.config.atomic_numbers == [1, 6, 7, 8]  # N added
    train_configs = read_configurations(train)
    fitted = fit_e0s([c for c in train_configs if c.frame not in _valid_frames(cfg)], ElementTable([1, 6, 7, 8]))
    assert np.allclose(after.config.atomic_energies, fitted, rtol=1e-12)  # E0s refitted, N's too
    assert after.config.hidden_irreps == before.config.hidden_irreps and after.config.r_max == before.config.r_max
    frozen_before = before.interactions[0].linear.weights[0]
    assert torch.equal(after.interactions[0].linear.weights[0], frozen_before)  # frozen
    assert not torch.equal(after.products[0].linear.weights[0], before.products[0].linear.weights[0])

    # The foundation model's error on the test molecules without nitrogen, before and after.
    no_n = [c for c in read_configurations(test) if 7 not in c.atomic_numbers]
    errors = []
    for model in (before, after):
        graphs = GraphSet(no_n, model.r_max, ElementTable(model.config.atomic_numbers), torch.float64)
        errors.append(evaluate(model, graphs, 8, torch.device("cpu")).compute())
    assert errors[1]["forces_rmse"] < 0.7 * errors[0]["forces_rmse"], errors
    assert errors[1]["energy_rmse"] < 0.5 * errors[0]["energy_rmse"], errors
    assert results["test"]["forces_rmse"] < errors[0]["forces_rmse"]

    atoms = ase.io.read(test, index=2)  # NH3: the new element
    atoms.calc = MaceFastCalculator(tmp_path / "run" / "model.pt")
    assert np.isfinite(atoms.get_potential_energy()) and np.isfinite(atoms.get_forces()).all()


def _valid_frames(cfg):
    from mace_fast.train.data import load_datasets

    return {c.frame for c in load_datasets(cfg.data).valid}


def test_finetuning_refuses_freezing_an_unknown_layer(tmp_path, foundation):
    from mace_fast.train.config import ConfigError

    train = write_frames(tmp_path / "train.xyz", emt_molecules(6, seed=2))
    data = tiny_config(tmp_path, train, finetune={"model": str(foundation), "freeze": ["embedding"]})
    del data["model"]
    with pytest.raises(ConfigError, match=r"finetune.freeze: 'embedding' matches no parameter \(did you mean 'node_embedding'"):
        run_training(config_from_dict(data))
    assert not (tmp_path / "run").exists()
