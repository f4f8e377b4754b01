"""The YAML schema: every kind of bad config is refused with a message naming the key."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mace_fast.train.config import ALL_KEYS, ConfigError, TrainConfig, config_from_dict, load_config
from mace_fast.train.schema import dotted_fields

from .helpers import emt_frames, tiny_config, write_frames, write_yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_frames(tmp_path_factory.mktemp("cfg") / "train.xyz", emt_frames(4, seed=0))


def _error(data, check_files=True) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "run.yaml", check_files)
    return str(info.value)


def test_valid_config_types_and_defaults(tmp_path, train_file):
    cfg = config_from_dict(tiny_config(tmp_path, train_file, optim={"lr": 1}))
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)  # an int is a fine float
    assert cfg.data.batch_size == 2 and cfg.loss.kind == "weighted" and cfg.optim.ema_decay == 0.99
    assert "optim.lr" in cfg.explicit and "optim.ema" not in cfg.explicit


@pytest.mark.parametrize(
    "section, key, expected",
    [
        ("optim", "learning_rate", "optim.lr"),  # mace-torch's name
        ("optim", "lrr", "optim.lr"),  # typo in the section
        ("optim", "energy_weight", "loss.energy_weight"),  # right name, wrong section
        ("data", "bach_size", "data.batch_size"),
        ("model", "hiden_irreps", "model.hidden_irreps"),
        ("optim", "max_num_epochs", "optim.max_epochs"),
    ],
)
def test_unknown_key_suggests_the_closest(tmp_path, train_file, section, key, expected):
    message = _error(tiny_config(tmp_path, train_file, **{section: {key: 1}}))
    assert message.startswith(f"run.yaml: {section}.{key}: unknown key")
    assert f"did you mean '{expected}'" in message


def test_unknown_section_suggests_the_closest(tmp_path, train_file):
    data = tiny_config(tmp_path, train_file)
    data["optimizer"] = data.pop("optim")
    assert "optimizer: unknown section (did you mean 'optim'" in _error(data)


@pytest.mark.parametrize(
    "section, values, fragments",
    [
        ("optim", {"lr": "fast"}, ["optim.lr", "expected a number", "'fast'"]),
        ("optim", {"amsgrad": "yes"}, ["optim.amsgrad", "expected a boolean"]),
        ("data", {"batch_size": 2.5}, ["data.batch_size", "expected an integer"]),
        ("model", {"radial_mlp": [8, "x"]}, ["model.radial_mlp[1]", "expected an integer"]),
        ("loss", {"kind": "hubber"}, ["loss.kind", "'huber'"]),
        ("optim", {"scheduler": "cosin"}, ["optim.scheduler", "did you mean 'cosine'"]),
        ("run", {"dtype": "float16"}, ["run.dtype", "'float32'", "'float64'"]),
        ("data", {"e0s": {"Xx": 1.0}}, ["data.e0s.Xx", "not a chemical symbol"]),
        ("data", {"e0s": "average"}, ["data.e0s", "'fit'"]),
        ("optim", {"lr": -1}, ["optim.lr", "positive"]),
        ("data", {"valid_fraction": 1.5}, ["data.valid_fraction"]),
        ("optim", {"betas": [0.9]}, ["optim.betas"]),
        ("model", {"hidden_irreps": "8x0e+4x1o"}, ["model", "hidden_irreps"]),
        ("model", {"max_ell": 5}, ["model", "max_ell"]),
        ("run", {"device": "tpu"}, ["run.device"]),
        ("stage_two", {"enabled": True, "start_epoch": 7}, ["stage_two.start_epoch", "max_epochs=2"]),
        ("finetune", {"freeze": ["interactions.0"]}, ["finetune.freeze", "finetune.model"]),
    ],
)
def test_wrong_values_name_the_key(tmp_path, train_file, section, values, fragments):
    message = _error(tiny_config(tmp_path, train_file, **{section: values}))
    for fragment in fragments:
        assert fragment in message, message


def test_missing_required_key_and_missing_files(tmp_path, train_file):
    data = tiny_config(tmp_path, train_file)
    del data["data"]["train_file"]
    assert "data.train_file: missing required key" in _error(data)
    data = tiny_config(tmp_path, tmp_path / "nope.xyz")
    message = _error(data)
    assert "data.train_file" in message and "nope.xyz" in message and "does not exist" in message
    data = tiny_config(tmp_path, train_file, data={"test_file": str(tmp_path / "t.xyz")})
    assert "data.test_file" in _error(data)
    data = tiny_config(tmp_path, train_file, finetune={"model": str(tmp_path / "m.pt")})
    del data["model"]
    assert "finetune.model" in _error(data)


def test_finetune_refuses_an_architecture_section(tmp_path, train_file):
    model_file = tmp_path / "m.pt"
    model_file.write_bytes(b"")
    data = tiny_config(tmp_path, train_file, finetune={"model": str(model_file)})
    assert "model.correlation: the architecture comes from finetune.model" in _error(data)


def test_cuda_without_cuda(tmp_path, train_file):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert "run.device: 'cuda' requested but CUDA is not available" in _error(
        tiny_config(tmp_path, train_file, run={"device": "cuda"})
    )


def test_set_overrides_and_relative_paths(tmp_path, train_file, monkeypatch):
    folder = tmp_path / "cfgdir"
    folder.mkdir()
    (folder / "data").mkdir()
    write_frames(folder / "data" / "t.xyz", emt_frames(2, seed=1))
    data = tiny_config(tmp_path, "data/t.xyz")  # relative to the YAML file
    path = write_yaml(folder / "run.yaml", data)
    write_frames(tmp_path / "test.xyz", emt_frames(2, seed=2))
    monkeypatch.chdir(tmp_path)  # --set paths are relative to the working directory
    cfg = load_config(path, ["optim.lr=0.005", "data.e0s={Cu: -0.5}", "stage_two.enabled=true",
                             "data.test_file=test.xyz"])  # fmt: skip
    assert cfg.data.train_file == str((folder / "data" / "t.xyz").resolve())
    assert cfg.data.test_file == str((tmp_path / "test.xyz").resolve())
    assert cfg.optim.lr == 0.005 and cfg.data.e0s == {"Cu": -0.5} and cfg.stage_two.enabled is True
    cfg = load_config(path, ["optim={lr: 0.1}"])  # a whole section merges into the file's
    assert cfg.optim.lr == 0.1 and cfg.optim.max_epochs == 2
    with pytest.raises(ConfigError, match=r"--set optim.learning_rate: unknown key \(did you mean 'optim.lr'"):
        load_config(path, ["optim.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["optim.lr"])
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        load_config(path, ["optim.lr=[1, 2]"])


def test_extends_merges_and_detects_cycles(tmp_path, train_file):
    write_yaml(tmp_path / "base.yaml", tiny_config(tmp_path, train_file, optim={"lr": 0.002}))
    child = write_yaml(tmp_path / "child.yaml", {"optim": {"max_epochs": 7}}, extends="base.yaml")
    cfg = load_config(child)
    assert cfg.optim.lr == 0.002 and cfg.optim.max_epochs == 7 and cfg.model.hidden_irreps == "8x0e+8x1o"
    write_yaml(tmp_path / "a.yaml", {}, extends="b.yaml")
    write_yaml(tmp_path / "b.yaml", {}, extends="a.yaml")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_example_config_lists_every_key_with_its_default():
    raw = yaml.safe_load((CONFIGS / "example.yaml").read_text())
    listed = {f"{s}.{k}" for s, block in raw.items() for k in block}
    assert listed == set(ALL_KEYS), f"missing {set(ALL_KEYS) - listed}, extra {listed - set(ALL_KEYS)}"
    cfg = config_from_dict(raw, "example.yaml", check_files=False)
    for key, field, _ in dotted_fields(TrainConfig):
        if key == "explicit" or key == "data.train_file":
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == default, key


@pytest.mark.parametrize("preset, hidden", [("small", "128x0e"), ("medium", "128x0e+128x1o"),
                                            ("large", "128x0e+128x1o+128x2e")])  # fmt: skip
def test_presets_validate_with_mp0_sizes(preset, hidden):
    cfg = load_config(CONFIGS / f"{preset}.yaml")
    assert cfg.model.hidden_irreps == hidden and cfg.model.r_max == 6.0 and cfg.model.correlation == 3
    assert cfg.loss.kind == "universal" and cfg.stage_two.enabled
    assert Path(cfg.data.train_file).is_file()


def test_cli_reports_config_errors_and_prints_config(tmp_path, train_file):
    path = write_yaml(tmp_path / "run.yaml", tiny_config(tmp_path, train_file, optim={"lrr": 0.1}))
    cmd = [sys.executable, "-m", "mace_fast.cli.train", "--config", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "optim.lrr: unknown key (did you mean 'optim.lr'" in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing started
    path = write_yaml(tmp_path / "run.yaml", tiny_config(tmp_path, train_file))
    proc = subprocess.run(cmd + ["--set", "optim.lr=0.003", "--print-config"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["optim"]["lr"] == 0.003
