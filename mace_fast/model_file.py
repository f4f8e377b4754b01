"""The model file: hyperparameters + weights, loadable without unpickling any code.

A model file is a ``torch.save``-d dict of plain data, read back with
``torch.load(weights_only=True)``::

    {"format": "mace_fast.model", "format_version": 1, "config": {...},
     "state_dict": {name: tensor}, "dtype": "float64",
     "units": {"energy": "eV", "length": "Angstrom"}, "metadata": {...}}

It is written atomically (temporary file + rename), so an interrupted save never leaves a
truncated model behind. Older format versions are upgraded on load.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from .config import ModelConfig
from .model import MACE

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "save_model", "load_model", "atomic_torch_save"]

FORMAT = "mace_fast.model"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Angstrom"}


class ModelFileError(ValueError):
    """A file that is not a readable mace_fast model file."""


def atomic_torch_save(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(model: MACE, path: Union[str, Path], metadata: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` to ``path`` (atomically)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    dtype = next(iter(model.parameters())).dtype
    atomic_torch_save(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": model.config.to_dict(),
            "state_dict": state,
            "dtype": str(dtype).replace("torch.", ""),
            "units": dict(UNITS),
            "metadata": dict(metadata or {}),
        },
        path,
    )


def _read(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as err:
        text = str(err)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise ModelFileError(
                f"{path} is not a mace_fast model file: it holds pickled Python objects (a mace-torch "
                f"model saved with torch.save?). mace_fast never unpickles code. Convert it once with "
                f"`mace-fast-convert {path} -o model.pt` (only for files you trust)."
            ) from None
        raise ModelFileError(f"cannot read model file {path}: {text}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a mace_fast model file (no '{FORMAT}' header)")
    return data


def load_model(
    path: Union[str, Path], device: Union[str, torch.device] = "cpu", dtype: Optional[torch.dtype] = None
) -> MACE:
    """Read a model file: ``MACE`` on ``device`` in ``dtype`` (default: the dtype it was saved in)."""
    path = Path(path)
    data = _read(path)
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ModelFileError(
            f"{path} has model format version {version!r}; this mace_fast reads versions 1..{FORMAT_VERSION}. "
            f"Upgrade mace_fast to read it."
        )
    config = ModelConfig.from_dict(data["config"])
    model = MACE(config)
    saved_dtype = getattr(torch, data.get("dtype", "float64"))
    model.to(saved_dtype)
    missing, unexpected = model.load_state_dict(data["state_dict"], strict=False)
    if missing or unexpected:
        raise ModelFileError(f"{path}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    model.to(device=device, dtype=dtype or saved_dtype)
    model.eval()
    return model
