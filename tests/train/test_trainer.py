"""Whole runs of a tiny model: learning, outputs, EMA, stage two, resuming, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mace_fast import MaceFastCalculator, load_model
from mace_fast.train.checkpoint import load_checkpoint
from mace_fast.train.config import config_from_dict
from mace_fast.train.run import RunError, run_training
from mace_fast.train.trainer import Trainer

from .helpers import emt_frames, tiny_config, write_frames


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trainer")
    train = write_frames(folder / "train.xyz", emt_frames(12, seed=10, rattle=0.15))
    test = write_frames(folder / "test.xyz", emt_frames(4, seed=11, rattle=0.15))
    return train, test


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_learns_and_writes_its_outputs(tmp_path, files):
    train, test = files
    cfg = config_from_dict(tiny_config(tmp_path, train, data={"test_file": str(test)},
                                       optim={"max_epochs": 6, "lr": 0.02}, log={"plots": True}))  # fmt: skip
    results = run_training(cfg)
    run = tmp_path / "run"
    records = _records(run)
    assert [r["epoch"] for r in records] == list(range(6))
    assert records[-1]["valid"]["loss"] < 0.5 * records[0]["valid"]["loss"]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    for name in ("config.yaml", "train.log", "model.pt", "final_metrics.json", "checkpoints/latest.ckpt",
                 "checkpoints/best.ckpt", "plots/learning_curves.png", "plots/parity_test.png"):  # fmt: skip
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert (run / "plots/parity_test.png").read_bytes()[:4] == b"\x89PNG"
    log = (run / "train.log").read_text()
    assert "epoch    6/6" in log and "meV/atom" in log and "meV/Å" in log and "final metrics" in log
    assert set(results) == {"valid", "test"} and results["test"]["forces_rmse"] > 0
    # The saved model is usable and reproduces the reported test metrics.
    import ase.io

    atoms = ase.io.read(test, index=0)
    atoms.calc = MaceFastCalculator(run / "model.pt")
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_stress().shape == (6,)
    # A second run in the same folder is refused unless asked for.
    with pytest.raises(RunError, match="--resume to continue it, --overwrite"):
        run_training(cfg)


def test_validation_and_saved_model_use_the_ema_weights(tmp_path, files):
    cfg = config_from_dict(tiny_config(tmp_path, files[0], optim={"max_epochs": 1, "ema_decay": 0.9}))
    run_training(cfg)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.ckpt")
    saved = load_model(tmp_path / "run" / "model.pt").state_dict()
    for name, shadow in state["ema"]["shadow"].items():
        assert torch.equal(saved[name], shadow), name
    assert any(not torch.equal(state["model"][n], s) for n, s in state["ema"]["shadow"].items())


def test_stage_two_switches_weights_and_lr(tmp_path, files):
    cfg = config_from_dict(tiny_config(
        tmp_path, files[0], optim={"max_epochs": 4, "scheduler": "exponential", "exponential_gamma": 0.5},
        stage_two={"enabled": True, "start_epoch": 2, "lr": 0.0007, "energy_weight": 123.0},
    ))  # fmt: skip
    run_training(cfg)
    records = _records(tmp_path / "run")
    assert [r["stage"] for r in records] == [1, 1, 2, 2]
    assert [r["lr"] for r in records] == pytest.approx([0.01, 0.005, 0.0007, 0.0007])
    assert "stage two from epoch 3" in (tmp_path / "run" / "train.log").read_text()


def test_resume_after_an_interruption_is_exact(tmp_path, files, monkeypatch):
    sections = dict(optim={"max_epochs": 3, "scheduler": "plateau", "plateau_patience": 0},
                    stage_two={"enabled": True, "start_epoch": 2}, checkpoint={"every_steps": 1})  # fmt: skip
    reference = config_from_dict(tiny_config(tmp_path / "a", files[0], **sections))
    run_training(reference)

    interrupted = config_from_dict(tiny_config(tmp_path / "b", files[0], **sections))
    original, calls = Trainer._train_step, []

    def crash_on_step_8(self, batch):
        calls.append(1)
        if len(calls) == 8:  # second step of the second epoch (5 steps per epoch)
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", crash_on_step_8)
    with pytest.raises(KeyboardInterrupt):
        run_training(interrupted)
    monkeypatch.setattr(Trainer, "_train_step", original)
    saved = load_checkpoint(tmp_path / "b" / "run" / "checkpoints" / "latest.ckpt")["progress"]
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 2)
    run_training(interrupted, resume=True)

    a = load_checkpoint(tmp_path / "a" / "run" / "checkpoints" / "latest.ckpt")
    b = load_checkpoint(tmp_path / "b" / "run" / "checkpoints" / "latest.ckpt")
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert _records(tmp_path / "a" / "run") == [dict(r, time_s=x["time_s"]) for r, x in
                                              zip(_records(tmp_path / "b" / "run"), _records(tmp_path / "a" / "run"))]


def test_resume_refuses_a_changed_config_but_allows_more_epochs(tmp_path, files):
    data = tiny_config(tmp_path, files[0], optim={"max_epochs": 1})
    run_training(config_from_dict(data))
    changed = dict(data, data=dict(data["data"], batch_size=3))
    with pytest.raises(RunError, match=r"data.batch_size \(2 -> 3\)"):
        run_training(config_from_dict(changed), resume=True)
    longer = dict(data, optim=dict(data["optim"], max_epochs=2))
    run_training(config_from_dict(longer), resume=True)
    assert [r["epoch"] for r in _records(tmp_path / "run")] == [0, 1]
    with pytest.raises(RunError, match="no checkpoint"):
        run_training(config_from_dict(tiny_config(tmp_path / "other", files[0])), resume=True)
