"""Tiny EMT-labelled data sets and configs for the training tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import ase
import ase.io
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT


def emt_frames(n: int, seed: int, symbols: Sequence[str] = ("Cu",), reps=(1, 1, 1), rattle: float = 0.1):
    """``n`` rattled, strained fcc cells labelled with EMT (REF_energy/forces/stress)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6 * rng.uniform(0.97, 1.03), cubic=True).repeat(reps)
        atoms.set_chemical_symbols(list(rng.choice(list(symbols), size=len(atoms))))
        atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = None
        atoms.info = {"REF_energy": energy, "REF_stress": stress, "config_type": "bulk"}
        atoms.arrays["REF_forces"] = forces
        frames.append(atoms)
    return frames


def write_frames(path: Path, frames) -> Path:
    ase.io.write(path, frames, format="extxyz")
    return path


def tiny_config(tmp_path: Path, train_file: Path, **sections: Dict[str, Any]) -> Dict[str, Any]:
    """A config dict for a tiny, fast model; ``sections`` update the defaults section-wise."""
    config = {
        # One thread: tiny tensors gain nothing from two, and on a busy machine a second
        # OpenMP thread makes each small scatter wait for a descheduled core.
        "run": {"output_dir": str(tmp_path / "run"), "dtype": "float64", "seed": 0, "threads": 1},
        "data": {"train_file": str(train_file), "valid_fraction": 0.25, "batch_size": 2, "valid_batch_size": 8},
        "model": {"r_max": 4.0, "num_bessel": 4, "max_ell": 1, "hidden_irreps": "8x0e+8x1o", "radial_mlp": [8],
                  "correlation": 2, "mlp_irreps": "8x0e"},
        "optim": {"max_epochs": 2, "lr": 0.01},
        "log": {"progress_bar": False, "plots": False, "final_eval_train": False},
    }  # fmt: skip
    for name, values in sections.items():
        config.setdefault(name, {}).update(copy.deepcopy(values))
    return config


def write_yaml(path: Path, config: Dict[str, Any], extends: Optional[str] = None) -> Path:
    import yaml

    data = dict(config)
    if extends:
        data = {"extends": extends, **data}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
