"""Fine-tuning: extend a trained model to new elements, and freeze layers.

Element-dependent weights (embedding rows, per-element skip and product weights) are found
by comparing each tensor's shape in the old model with a model built for the larger element
table: the dimension that grew is the element dimension. Rows of known elements are
copied; new elements keep the fresh initialisation. Structures made only of known elements
therefore get exactly the predictions of the original model.
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence

import torch

from ..model import MACE
from .schema import ConfigError, suggest

__all__ = ["extend_elements", "freeze"]


def extend_elements(model: MACE, atomic_numbers: Sequence[int], new_e0s: dict, seed: int = 0) -> MACE:
    """A copy of ``model`` for the union of its elements and ``atomic_numbers``.

    ``new_e0s`` maps each added atomic number to its E0 (eV). Returns ``model`` itself
    when nothing is added.
    """
    old = list(model.config.atomic_numbers)
    union = sorted(set(old) | {int(z) for z in atomic_numbers})
    if union == old:
        return model
    old_e0 = dict(zip(old, model.config.atomic_energies))
    missing = [z for z in union if z not in old_e0 and z not in new_e0s]
    if missing:
        raise ValueError(f"no E0 for the new element(s) {missing}")
    config = dataclasses.replace(
        model.config, atomic_numbers=union, atomic_energies=[old_e0.get(z, new_e0s.get(z)) for z in union]
    )
    dtype = next(model.parameters()).dtype
    torch.manual_seed(seed)
    bigger = MACE(config).to(dtype)
    rows = torch.tensor([union.index(z) for z in old])
    new_state = bigger.state_dict()
    for name, value in model.state_dict().items():
        target = new_state[name]
        if name == "atomic_energies" or target.shape == value.shape:
            if name != "atomic_energies":
                new_state[name] = value.clone()
            continue
        grown = [d for d in range(value.dim()) if value.shape[d] == len(old) and target.shape[d] == len(union)]
        if len(grown) != 1 or any(
            value.shape[d] != target.shape[d] for d in range(value.dim()) if d != grown[0]
        ):  # pragma: no cover - would mean a new element-dependent layout
            raise ValueError(f"cannot map {name} from {tuple(value.shape)} to {tuple(target.shape)}")
        extended = target.clone()
        extended.index_copy_(grown[0], rows, value.to(target.dtype))
        new_state[name] = extended
    bigger.load_state_dict(new_state)
    return bigger.to(next(model.parameters()).device)


def freeze(model: MACE, prefixes: Sequence[str]) -> List[str]:
    """Stop training the parameters whose names start with one of ``prefixes``.

    Returns the frozen parameter names. A prefix matching no parameter is a
    :class:`ConfigError` suggesting the closest module name.
    """
    names = [n for n, _ in model.named_parameters()]
    modules = sorted({n.rsplit(".", k)[0] for n in names for k in range(1, n.count(".") + 1)})
    frozen = []
    for prefix in prefixes:
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            raise ConfigError(f"finetune.freeze: {prefix!r} matches no parameter{suggest(prefix, modules + names)}")
        frozen += hits
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return sorted(set(frozen))

