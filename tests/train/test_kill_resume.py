"""A training process killed with SIGKILL mid-epoch, resumed, ends with the weights of a run
that was never killed (CPU, float64, one thread).

The process kills itself with SIGKILL right after the checkpoint of epoch 1, step 2 is on
disk, so the kill point does not depend on how fast the machine is (a poller outside the
process could miss a short epoch on a loaded machine)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mace_fast.model_file import load_model
from mace_fast.train.checkpoint import load_checkpoint

from .helpers import emt_frames, tiny_config, write_frames, write_yaml

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")


def _config(tmp_path: Path, train: Path, name: str) -> Path:
    data = tiny_config(
        tmp_path / name, train,
        run={"threads": 1, "deterministic": True},
        data={"batch_size": 2},
        optim={"max_epochs": 3, "scheduler": "plateau", "plateau_patience": 0, "clip_grad": 1.0},
        stage_two={"enabled": True, "start_epoch": 2},
        checkpoint={"every_steps": 1},
    )  # fmt: skip
    return write_yaml(tmp_path / f"{name}.yaml", data)


# `mace-fast-train` whose process sends itself SIGKILL once the checkpoint of epoch 1,
# step 2 has been saved: the same trainer, only the save wrapped.
_KILLED_AFTER_SAVE = """
import os, signal, sys
import mace_fast.train.trainer as trainer
save = trainer.save_checkpoint
def save_then_kill(state, path):
    save(state, path)
    p = state["progress"]
    if p["epoch"] == 1 and p["step_in_epoch"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
trainer.save_checkpoint = save_then_kill
from mace_fast.cli.train import main
sys.exit(main(sys.argv[1:]))
"""


def _train(config: Path, *extra: str, kill: bool = False) -> subprocess.Popen:
    entry = ["-c", _KILLED_AFTER_SAVE] if kill else ["-m", "mace_fast.cli.train"]
    cmd = [sys.executable, *entry, "--config", str(config), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    train = write_frames(tmp_path / "train.xyz", emt_frames(12, seed=20, reps=(2, 2, 2)))
    reference, killed = _config(tmp_path, train, "reference"), _config(tmp_path, train, "killed")

    proc = _train(killed, kill=True)
    latest = tmp_path / "killed" / "run" / "checkpoints" / "latest.ckpt"
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == -signal.SIGKILL, f"not killed (rc {proc.returncode}):\n{output}"
    at_kill = load_checkpoint(latest)["progress"]
    assert at_kill["epoch"] == 1 and at_kill["step_in_epoch"] == 2, at_kill  # mid-epoch (6 steps)

    ref = _train(reference)  # the uninterrupted run, meanwhile
    resumed = _train(killed, "--resume")
    out_resumed, out_ref = resumed.communicate(timeout=300)[0], ref.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out_resumed
    assert ref.returncode == 0, out_ref
    assert f"resumed from {latest}: epoch 2, step {at_kill['step_in_epoch']}" in out_resumed

    a = load_checkpoint(tmp_path / "reference" / "run" / "checkpoints" / "latest.ckpt")
    b = load_checkpoint(latest)
    assert a["progress"]["global_step"] == b["progress"]["global_step"] == 15
    for name, value in a["model"].items():
        assert value.dtype == torch.float64
        assert torch.allclose(value, b["model"][name], rtol=0, atol=1e-12), name
    final_a = load_model(tmp_path / "reference" / "run" / "model.pt").state_dict()
    final_b = load_model(tmp_path / "killed" / "run" / "model.pt").state_dict()
    for name, value in final_a.items():
        assert torch.allclose(value, final_b[name], rtol=0, atol=1e-12), name
