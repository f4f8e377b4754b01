"""The training configuration: a typed YAML schema, validated before any work starts.

A config file is YAML with the sections below (see ``configs/example.yaml`` for every
key with its default). ``extends: other.yaml`` merges this file over another (presets);
``--set optim.lr=0.005`` overrides any key from the command line (the value is YAML).

Input paths (data files, the fine-tuning model) written in a YAML file are relative to
that file; paths given with ``--set`` are relative to the working directory.
``run.output_dir`` is relative to the working directory.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Set, Tuple, Union

import yaml

from .schema import ConfigError, build, dotted_fields, suggest, to_dict

__all__ = ["ConfigError", "TrainConfig", "load_config", "config_from_dict", "parse_override", "PATH_KEYS"]


@dataclass
class RunConfig:
    """Where and how the run happens."""

    output_dir: str = "runs/mace"  # relative to the working directory
    seed: int = 123  # model initialisation and data order
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    dtype: Literal["float32", "float64"] = "float64"
    threads: Optional[int] = None  # torch.set_num_threads; null: torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms(True)


@dataclass
class DataConfig:
    """Reference data and how it is split and weighted."""

    train_file: str  # extxyz
    valid_file: Optional[str] = None  # null: split valid_fraction off the training file
    valid_fraction: float = 0.1
    test_file: Optional[str] = None
    split_seed: int = 1234
    energy_key: str = "REF_energy"
    forces_key: str = "REF_forces"
    stress_key: str = "REF_stress"
    virials_key: str = "REF_virials"
    weight_key: str = "config_weight"
    config_type_key: str = "config_type"
    config_type_weights: Dict[str, float] = field(default_factory=dict)  # multiplies config weights
    isolated_atom_type: str = "IsolatedAtom"  # config_type of the isolated-atom (E0) frames
    e0s: Union[Literal["fit", "isolated", "foundation"], Dict[str, float]] = "fit"
    allow_missing_labels: bool = True  # false: a frame without energy/forces is an error
    batch_size: int = 10
    valid_batch_size: int = 20


@dataclass
class ModelSection:
    """Architecture (names as in :class:`mace_fast.config.ModelConfig`) and its statistics."""

    r_max: float = 5.0
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    max_ell: int = 3
    hidden_irreps: str = "128x0e+128x1o"
    mlp_irreps: str = "16x0e"
    num_interactions: int = 2
    correlation: Union[int, List[int]] = 3
    interaction: str = "RealAgnosticResidualInteractionBlock"
    interaction_first: str = "RealAgnosticInteractionBlock"
    radial_mlp: List[int] = field(default_factory=lambda: [64, 64, 64])
    gate: Optional[Literal["silu", "tanh"]] = "silu"
    pair_repulsion: bool = False
    distance_transform: Literal["None", "Agnesi", "Soft"] = "None"
    avg_num_neighbors: Optional[float] = None  # null: from the training set
    scaling: Literal["rms_forces", "std_energy", "none"] = "rms_forces"
    shift: Literal["mean", "zero"] = "mean"  # per-atom interaction-energy shift


@dataclass
class FinetuneConfig:
    """Start from a trained model instead of a fresh one."""

    model: Optional[str] = None  # mace_fast model file (e.g. from mace-fast-convert)
    freeze: List[str] = field(default_factory=list)  # parameter-name prefixes, e.g. "interactions.0"


@dataclass
class LossConfig:
    """Weighted sum of energy-per-atom, forces, stress and virials terms."""

    kind: Literal["weighted", "huber", "universal"] = "weighted"
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 1.0
    virials_weight: float = 1.0
    huber_delta: float = 0.01


@dataclass
class OptimConfig:
    """Optimiser, learning-rate schedule, clipping and weight averaging."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    amsgrad: bool = True
    weight_decay: float = 5e-7  # on interaction linear/skip and product weights only
    scheduler: Literal["plateau", "exponential", "cosine", "constant"] = "plateau"
    plateau_factor: float = 0.8
    plateau_patience: int = 50  # epochs
    exponential_gamma: float = 0.9993  # per epoch
    cosine_min_lr: float = 0.0
    clip_grad: Optional[float] = 10.0  # max gradient norm; null: no clipping
    ema: bool = True
    ema_decay: float = 0.99
    max_epochs: int = 100
    early_stop_patience: Optional[int] = None  # epochs without a better validation loss


@dataclass
class StageTwoConfig:
    """Late switch of loss weights and learning rate (MACE's stage two / SWA)."""

    enabled: bool = False
    start_epoch: Optional[int] = None  # stage two begins after this many epochs; null: 3/4 of max_epochs
    energy_weight: float = 1000.0
    forces_weight: float = 100.0
    stress_weight: float = 1.0
    virials_weight: float = 1.0
    lr: float = 0.001  # held constant during stage two


@dataclass
class CheckpointConfig:
    """Full training state for --resume; written atomically."""

    every_steps: int = 0  # also write latest every N optimiser steps (0: end of epoch only)
    keep_best: bool = True


@dataclass
class LogConfig:
    """What a person watching the run sees."""

    progress_bar: bool = True
    eval_interval: int = 1  # epochs between validations
    plots: bool = True
    final_eval_train: bool = True  # include the training set in the final metrics table


@dataclass
class TrainConfig:
    data: DataConfig
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelSection = field(default_factory=ModelSection)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage_two: StageTwoConfig = field(default_factory=StageTwoConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # Dotted keys given explicitly (not defaults); filled by the loader.
    explicit: Set[str] = field(default_factory=set, repr=False, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        out = to_dict(self)
        out.pop("explicit")
        return out


PATH_KEYS = ("data.train_file", "data.valid_file", "data.test_file", "finetune.model")
ALL_KEYS = [k for k, _, _ in dotted_fields(TrainConfig) if k != "explicit"]


def _read_yaml(path: Path, chain: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    """One YAML file with its ``extends`` chain merged in; input paths made absolute."""
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: 'extends' forms a cycle: {' -> '.join(map(str, chain + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"{chain[-1] if chain else 'config'}: config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    _absolutise(data, path.parent, str(path))
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a file name, got {parent!r}")
    base = _read_yaml(path.parent / parent, chain + (path,))
    return _merge(base, data)


def _absolutise(data: Dict[str, Any], base: Path, source: str) -> None:
    for key in PATH_KEYS:
        section, name = key.split(".")
        block = data.get(section)
        if isinstance(block, dict) and isinstance(block.get(name), str):
            block[name] = str((base / os.path.expanduser(block[name])).resolve())


def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "e0s" and key != "config_type_weights":
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# mace_run_train flag names people will type, mapped to keys here.
MACE_TORCH_NAMES = {
    "learning_rate": "optim.lr", "max_num_epochs": "optim.max_epochs", "E0s": "data.e0s",
    "swa": "stage_two.enabled", "start_swa": "stage_two.start_epoch", "swa_lr": "stage_two.lr",
    "swa_energy_weight": "stage_two.energy_weight", "swa_forces_weight": "stage_two.forces_weight",
    "MLP_irreps": "model.mlp_irreps", "radial_MLP": "model.radial_mlp", "foundation_model": "finetune.model",
    "patience": "optim.early_stop_patience", "clip_grad": "optim.clip_grad", "loss": "loss.kind",
    "default_dtype": "run.dtype", "valid_batch_size": "data.valid_batch_size", "lr_factor": "optim.plateau_factor",
}  # fmt: skip


def _closest_key(key: str) -> str:
    """Suggestion for an unknown dotted key: a close name in its section, the same name in
    another section, a mace-torch flag name, else the closest dotted key."""
    parts = key.split(".")
    leaf = parts[-1]
    sections = sorted({k.split(".")[0] for k in ALL_KEYS})
    if len(parts) == 1 and suggest(leaf, sections):
        return suggest(leaf, sections)
    if len(parts) == 2:
        siblings = [k.split(".")[1] for k in ALL_KEYS if k.startswith(parts[0] + ".")]
        close = suggest(leaf, siblings)
        if close:
            return close.replace("'", f"'{parts[0]}.", 1)
    same_leaf = [k for k in ALL_KEYS if k.split(".")[-1] == leaf]
    if same_leaf:
        return f" (did you mean {same_leaf[0]!r}?)"
    for name, target in MACE_TORCH_NAMES.items():
        if name.lower() == leaf.lower():
            return f" (did you mean {target!r}? mace-torch's --{name})"
    return suggest(key, ALL_KEYS + sections)


def parse_override(text: str) -> Tuple[str, Any]:
    """``"optim.lr=0.005"`` -> ``("optim.lr", 0.005)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.lr=0.005")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in ALL_KEYS and not any(k.startswith(key + ".") for k in ALL_KEYS):
        raise ConfigError(f"--set {key}: unknown key{_closest_key(key)}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML: {error}") from None
    if key in PATH_KEYS and isinstance(value, str):
        value = str(Path(os.path.expanduser(value)).resolve())
    return key, value


def _apply_override(data: Dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    block = data
    for part in parts[:-1]:
        if not isinstance(block.get(part), dict):
            block[part] = {}
        block = block[part]
    if isinstance(value, dict) and isinstance(block.get(parts[-1]), dict) and len(parts) == 1:
        block[parts[-1]] = _merge(block[parts[-1]], value)  # "--set optim={lr: 0.1}" keeps the other keys
    else:
        block[parts[-1]] = value


def _explicit_keys(data: Dict[str, Any]) -> Set[str]:
    keys = set()
    for section, block in data.items():
        if isinstance(block, dict):
            keys.update(f"{section}.{name}" for name in block)
    return keys


def config_from_dict(data: Dict[str, Any], source: str = "config", check_files: bool = True) -> TrainConfig:
    """Validate a plain dict (sections of YAML) into a :class:`TrainConfig`."""
    for section in data:
        if section not in {s for s in (k.split(".")[0] for k in ALL_KEYS)}:
            raise ConfigError(f"{source}: {section}: unknown section{_closest_key(section)}")
    try:
        config = build(TrainConfig, data)
    except ConfigError as error:
        message = str(error)
        if message.split(":", 1)[1].startswith(" unknown key"):
            key = message.split(":")[0]
            message = f"{key}: unknown key{_closest_key(key)}"
        raise ConfigError(f"{source}: {message}") from None
    config.explicit = _explicit_keys(data)
    try:
        validate(config, check_files)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return config


def load_config(
    path: Optional[Union[str, Path]], overrides: Sequence[str] = (), check_files: bool = True
) -> TrainConfig:
    """Read ``path`` (with its ``extends``), apply ``--set`` overrides and validate."""
    data = _read_yaml(Path(path)) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        _apply_override(data, key, value)
    source = str(path) if path is not None else "command line"
    return config_from_dict(data, source, check_files)


def validate(config: TrainConfig, check_files: bool = True) -> None:
    """Cross-field checks; raises ConfigError naming the key."""
    d, o = config.data, config.optim
    if check_files:
        for key in PATH_KEYS:
            section, name = key.split(".")
            value = getattr(getattr(config, section), name)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"{key}: file {value} does not exist")
    if d.valid_file is None and not 0.0 < d.valid_fraction < 1.0:
        raise ConfigError(f"data.valid_fraction: must be between 0 and 1 (exclusive), got {d.valid_fraction}")
    for key, value in (("data.batch_size", d.batch_size), ("data.valid_batch_size", d.valid_batch_size),
                       ("optim.max_epochs", o.max_epochs), ("log.eval_interval", config.log.eval_interval)):
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
    for name, weight in d.config_type_weights.items():
        if weight < 0:
            raise ConfigError(f"data.config_type_weights.{name}: must be >= 0, got {weight}")
    if isinstance(d.e0s, dict):
        _check_elements(d.e0s)
    if d.e0s == "foundation" and config.finetune.model is None:
        raise ConfigError("data.e0s: 'foundation' needs finetune.model (the model whose E0s to keep)")
    if o.lr <= 0:
        raise ConfigError(f"optim.lr: must be positive, got {o.lr}")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise ConfigError(f"optim.betas: expected two numbers in [0, 1), got {o.betas}")
    if o.clip_grad is not None and o.clip_grad <= 0:
        raise ConfigError(f"optim.clip_grad: must be positive or null, got {o.clip_grad}")
    if not 0.0 <= o.ema_decay < 1.0:
        raise ConfigError(f"optim.ema_decay: must be in [0, 1), got {o.ema_decay}")
    for section in ("loss", "stage_two"):
        for name in ("energy_weight", "forces_weight", "stress_weight", "virials_weight"):
            if getattr(getattr(config, section), name) < 0:
                raise ConfigError(f"{section}.{name}: must be >= 0")
    if config.loss.huber_delta <= 0:
        raise ConfigError(f"loss.huber_delta: must be positive, got {config.loss.huber_delta}")
    s = config.stage_two
    if s.enabled and s.start_epoch is not None and not 0 <= s.start_epoch < o.max_epochs:
        raise ConfigError(f"stage_two.start_epoch: must be in [0, optim.max_epochs={o.max_epochs}), got {s.start_epoch}")
    if config.checkpoint.every_steps < 0:
        raise ConfigError("checkpoint.every_steps: must be >= 0")
    _check_device(config.run.device)
    if config.finetune.model is not None:
        fixed = sorted(k for k in config.explicit if k.startswith("model."))
        if fixed:
            raise ConfigError(
                f"{fixed[0]}: the architecture comes from finetune.model ({config.finetune.model}); "
                f"remove the model section when fine-tuning"
            )
    elif config.finetune.freeze:
        raise ConfigError("finetune.freeze: freezing layers needs finetune.model")
    else:
        _check_architecture(config.model)


def _check_elements(e0s: Dict[str, float]) -> None:
    import ase.data

    for name in e0s:
        if name not in ase.data.atomic_numbers or name == "X":
            raise ConfigError(f"data.e0s.{name}: not a chemical symbol{suggest(name, ase.data.chemical_symbols[1:])}")


def _check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device: {device!r} requested but CUDA is not available")
        return
    raise ConfigError(f"run.device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _check_architecture(model: ModelSection) -> None:
    from ..config import ModelConfig

    arch = {k: v for k, v in to_dict(model).items() if k not in ("avg_num_neighbors", "scaling", "shift")}
    try:
        ModelConfig(atomic_numbers=[1], atomic_energies=[0.0], **arch)
    except ValueError as error:
        raise ConfigError(f"model: {error}") from None
