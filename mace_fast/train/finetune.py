"""Fine-tuning: extend a trained model to new elements, and freeze layers.

Element-dependent weights (embedding rows, per-element skip and product weights) are found
by comparing each tensor's shape in the old model with a model built for the larger element
table: the dimension that grew is the element dimension. Rows of known elements are
copied; new elements keep the fresh initialisation. The embedding and the skip weights are
normalised by ``1/sqrt(num_elements)`` (e3nn's one-hot convention), so their copied rows
are rescaled by ``sqrt(new/old)``. Structures made only of known elements therefore get the
predictions of the original model, which :func:`extend_elements` checks on a probe structure.
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence

import torch

from ..data.graph import ElementTable, build_graph
from ..model import MACE
from ..nn.linear import ElementEmbedding, ElementLinear
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
    # Parameters whose forward divides by sqrt(num_elements).
    normalised = {f"{m}.{p}" for m, module in model.named_modules() if isinstance(module, (ElementEmbedding, ElementLinear))
                  for p, _ in module.named_parameters()}  # fmt: skip
    ratio = (len(union) / len(old)) ** 0.5
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
        copied = value.to(target.dtype) * (ratio if name in normalised else 1.0)
        extended.index_copy_(grown[0], rows, copied)
        new_state[name] = extended
    bigger.load_state_dict(new_state)
    bigger.to(next(model.parameters()).device)
    _check_same_function(model, bigger, old)
    return bigger


def _check_same_function(model: MACE, bigger: MACE, numbers: Sequence[int]) -> None:
    """Both models must agree on a structure of the original elements."""
    generator = torch.Generator().manual_seed(0)
    positions = torch.rand(6, 3, generator=generator, dtype=torch.float64) * 4.0
    positions[:, 0] += torch.arange(6, dtype=torch.float64) * 1.1  # keep atoms apart
    species = [numbers[i % len(numbers)] for i in range(6)]
    r_max = model.config.r_max
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    outs = []
    for m in (model, bigger):
        graph = build_graph(positions.numpy(), species, None, (False,) * 3, r_max, ElementTable(m.config.atomic_numbers),
                            dtype)  # fmt: skip
        outs.append(m({k: v.to(device) for k, v in graph.items()}, compute_forces=False)["energy"].detach())
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    if not torch.allclose(outs[0], outs[1], rtol=tol, atol=tol):  # pragma: no cover - a new layout
        raise ValueError(f"extending the element table changed the model's energies ({outs[0]} -> {outs[1]})")


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

