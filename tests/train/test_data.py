"""Training data: splits, weights, missing labels, and bad frames that stop a run before it starts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mace_fast import keys as K
from mace_fast.data.errors import InputError
from mace_fast.train.config import config_from_dict
from mace_fast.train.data import GraphSet, batches, element_table, load_datasets
from mace_fast.train.run import run_training

from .helpers import emt_frames, tiny_config, write_frames


def _cfg(tmp_path, frames, **sections):
    path = write_frames(tmp_path / "train.xyz", frames)
    return config_from_dict(tiny_config(tmp_path, path, **sections))


def test_validation_split_is_seeded_disjoint_and_sized(tmp_path):
    frames = emt_frames(20, seed=0)
    for i, atoms in enumerate(frames):
        atoms.info["tag"] = i
    cfg = _cfg(tmp_path, frames, data={"valid_fraction": 0.3, "split_seed": 7})
    a, b = load_datasets(cfg.data), load_datasets(cfg.data)
    assert [c.frame for c in a.valid] == [c.frame for c in b.valid]
    assert len(a.valid) == 6 and len(a.train) == 14
    assert {c.frame for c in a.train} | {c.frame for c in a.valid} == set(range(20))
    assert not {c.frame for c in a.train} & {c.frame for c in a.valid}
    cfg.data.split_seed = 8
    assert [c.frame for c in load_datasets(cfg.data).valid] != [c.frame for c in a.valid]


def test_config_type_and_config_weights_multiply(tmp_path):
    frames = emt_frames(4, seed=1)
    frames[0].info["config_type"] = "md"
    frames[0].info["config_weight"] = 3.0
    frames[1].info["config_type"] = "md"
    cfg = _cfg(tmp_path, frames, data={"valid_file": str(write_frames(tmp_path / "v.xyz", emt_frames(2, seed=2))),
                                       "config_type_weights": {"md": 0.5}})  # fmt: skip
    data = load_datasets(cfg.data)
    assert [c.weight for c in data.train] == [1.5, 0.5, 1.0, 1.0]


def test_missing_labels_get_weight_zero_and_are_reported(tmp_path, caplog):
    frames = emt_frames(5, seed=3)
    del frames[2].info["REF_energy"]
    del frames[4].arrays["REF_forces"]
    cfg = _cfg(tmp_path, frames, data={"valid_file": str(write_frames(tmp_path / "v.xyz", emt_frames(2, seed=2)))})
    with caplog.at_level("WARNING", logger="mace_fast.train"):
        data = load_datasets(cfg.data)
    text = caplog.text
    assert "1 of 5 training frames have no 'REF_energy'" in text and "train.xyz, frame 2" in text
    assert "1 of 5 training frames have no 'REF_forces'" in text and "train.xyz, frame 4" in text
    graphs = GraphSet(data.train, 4.0, element_table(data), torch.float64)
    energy_w = [float(g[K.ENERGY_WEIGHT]) for g in graphs.graphs]
    forces_w = [float(g[K.FORCES_WEIGHT]) for g in graphs.graphs]
    assert energy_w == [1, 1, 0, 1, 1] and forces_w == [1, 1, 1, 1, 0]
    cfg.data.allow_missing_labels = False
    with pytest.raises(InputError, match=r"train.xyz, frame 2: no 'REF_energy' label"):
        load_datasets(cfg.data)


@pytest.mark.parametrize("where", ["forces", "energy", "stress"])
def test_nan_labels_stop_the_run_naming_file_frame_key(tmp_path, where):
    frames = emt_frames(6, seed=4)
    if where == "forces":
        frames[3].arrays["REF_forces"][1, 2] = np.nan
    elif where == "energy":
        frames[3].info["REF_energy"] = np.nan
    else:
        frames[3].info["REF_stress"][0] = np.inf
    cfg = _cfg(tmp_path, frames)
    with pytest.raises(InputError) as info:
        run_training(cfg)
    message = str(info.value)
    assert "train.xyz, frame 3" in message and f"REF_{where}" in message and "not finite" in message
    assert not (tmp_path / "run").exists()  # the run did not start


def test_a_missing_energy_everywhere_and_no_fit_possible(tmp_path):
    frames = emt_frames(4, seed=5)
    for atoms in frames:
        del atoms.info["REF_energy"]
    cfg = _cfg(tmp_path, frames)
    with pytest.raises(InputError, match="no training frame has an energy"):
        run_training(cfg)


def test_elements_missing_from_training_are_refused(tmp_path):
    valid = emt_frames(2, seed=6, symbols=("Cu", "Ag"))
    cfg = _cfg(tmp_path, emt_frames(4, seed=6), data={"valid_file": str(write_frames(tmp_path / "v.xyz", valid))})
    data = load_datasets(cfg.data)
    with pytest.raises(InputError, match=r"v.xyz, frame 0: element\(s\) Ag appear in no training frame"):
        element_table(data)


def test_isolated_atoms_are_separated(tmp_path):
    import ase

    frames = emt_frames(4, seed=7)
    iso = ase.Atoms("Cu", positions=[[0, 0, 0]], pbc=False)
    iso.info = {"REF_energy": 3.5, "config_type": "IsolatedAtom"}
    cfg = _cfg(tmp_path, frames + [iso])
    data = load_datasets(cfg.data)
    assert len(data.isolated) == 1 and len(data.train) + len(data.valid) == 4


def test_batches_follow_the_generator_and_skip(tmp_path):
    frames = emt_frames(7, seed=8)
    data = load_datasets(_cfg(tmp_path, frames, data={"valid_fraction": 0.3}).data)
    graphs = GraphSet(data.train, 4.0, element_table(data), torch.float64)
    order = torch.randperm(len(graphs), generator=torch.Generator().manual_seed(3)).tolist()
    full = list(batches(graphs, 2, torch.Generator().manual_seed(3)))
    assert len(full) == 3 and full[-1][K.PTR].numel() == 2  # 5 graphs: 2+2+1
    first = graphs.graphs[order[0]][K.POSITIONS]
    assert torch.equal(full[0][K.POSITIONS][: first.shape[0]], first)
    rest = list(batches(graphs, 2, torch.Generator().manual_seed(3), skip=1))
    assert len(rest) == 2 and all(torch.equal(a[K.POSITIONS], b[K.POSITIONS]) for a, b in zip(full[1:], rest))
