"""Training checkpoints: the full state needed to continue a run, written atomically.

A checkpoint is a ``torch.save``-d dict of plain data (read back with
``weights_only=True``)::

    {"format": "mace_fast.checkpoint", "format_version": 1,
     "train_config": {...}, "model_config": {...}, "model": state_dict,
     "optimizer": ..., "scheduler": ..., "ema": ... or None,
     "progress": {"epoch", "step_in_epoch", "global_step", "stage", "best_loss", ...},
     "data_order": ByteTensor (data-order generator state at the start of the epoch),
     "rng": {"torch", "cuda", "numpy", "python"}}

Files are written to a temporary name and renamed (:func:`mace_fast.model_file.atomic_torch_save`),
so a crash while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from ..model_file import atomic_torch_save

__all__ = ["CheckpointError", "rng_states", "restore_rng_states", "save_checkpoint", "load_checkpoint"]

FORMAT = "mace_fast.checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable mace_fast training checkpoint."""


def rng_states() -> Dict[str, Any]:
    """Every global random state, as weights-only-loadable data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},  # fmt: skip
        "python": random.getstate(),
    }


def restore_rng_states(states: Dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(state: Dict[str, Any], path: Union[str, Path]) -> None:
    """Write ``state`` (without the header keys) atomically to ``path``."""
    atomic_torch_save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, path)


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a checkpoint (weights-only); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a mace_fast training checkpoint")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {data.get('format_version')!r} is not supported")
    return data
