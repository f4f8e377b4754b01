"""Checkpoint files: a crash while writing keeps the last good one; random states round-trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mace_fast.train.checkpoint import CheckpointError, load_checkpoint, restore_rng_states, rng_states, save_checkpoint


def test_a_crash_mid_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "latest.ckpt"
    save_checkpoint({"step": 1, "w": torch.arange(5.0)}, path)
    real_save = torch.save

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # partial bytes, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "w": torch.zeros(5)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(5.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.ckpt"]  # no temporary left behind


def test_unreadable_and_foreign_files_are_named(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        load_checkpoint(bad)
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(CheckpointError, match="not a mace_fast training checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_random_states_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    save_checkpoint({"rng": rng_states()}, tmp_path / "c.ckpt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_states(load_checkpoint(tmp_path / "c.ckpt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
