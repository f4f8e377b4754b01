"""Training data: reading and splitting the files, weights, graphs and batches.

Frames are read with :func:`mace_fast.data.read_configurations`, which already refuses
non-finite positions and labels (naming file, frame and key). Here the split, the
config-type weights and missing labels are handled, and every frame becomes a graph once;
a batch is a collation of graphs in an order drawn from a ``torch.Generator``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from ..data.configuration import Configuration, DataKeys, read_configurations
from ..data.errors import InputError
from ..data.graph import ElementTable, collate, graph_from_configuration
from .config import DataConfig

__all__ = ["Datasets", "load_datasets", "GraphSet", "batches", "to_device"]

log = logging.getLogger("mace_fast.train")


@dataclass
class Datasets:
    """Configurations of each split; isolated atoms are kept apart (they only give E0s)."""

    train: List[Configuration]
    valid: List[Configuration]
    test: List[Configuration] = field(default_factory=list)
    isolated: List[Configuration] = field(default_factory=list)

    @property
    def all(self) -> List[Configuration]:
        return self.train + self.valid + self.test + self.isolated


def data_keys(cfg: DataConfig) -> DataKeys:
    return DataKeys(
        energy_key=cfg.energy_key, forces_key=cfg.forces_key, stress_key=cfg.stress_key,
        virials_key=cfg.virials_key, weight_key=cfg.weight_key, config_type_key=cfg.config_type_key,
    )  # fmt: skip


def _is_isolated(config: Configuration, cfg: DataConfig) -> bool:
    return config.config_type == cfg.isolated_atom_type or (len(config.atomic_numbers) == 1 and not any(config.pbc))


def _report_missing(configs: Sequence[Configuration], cfg: DataConfig, name: str) -> None:
    """Log (or, with allow_missing_labels false, refuse) frames lacking energy or forces."""
    for label, key in (("energy", cfg.energy_key), ("forces", cfg.forces_key)):
        missing = [c for c in configs if getattr(c, label) is None]
        if not missing:
            continue
        frames = ", ".join(c.where for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        if not cfg.allow_missing_labels:
            raise InputError(
                f"{missing[0].where}: no {key!r} label ({len(missing)} of {len(configs)} {name} frames lack it: "
                f"{frames}); set data.allow_missing_labels: true to train on them with {label} weight 0"
            )
        log.warning(
            "%d of %d %s frames have no %r label; their %s weight is 0: %s",
            len(missing), len(configs), name, key, label, frames,
        )  # fmt: skip


def _apply_config_type_weights(configs: Sequence[Configuration], weights: Dict[str, float]) -> None:
    for c in configs:
        if c.config_type in weights:
            c.weight = c.weight * weights[c.config_type]


def load_datasets(cfg: DataConfig) -> Datasets:
    """Read train/valid/test, split off validation if asked, separate isolated atoms.

    The validation split is a seeded permutation (``split_seed``) of the non-isolated
    training frames, so the same config always gives the same split.
    """
    keys = data_keys(cfg)
    frames = read_configurations(cfg.train_file, keys)
    isolated = [c for c in frames if _is_isolated(c, cfg)]
    train = [c for c in frames if not _is_isolated(c, cfg)]
    if not train:
        raise InputError(f"{cfg.train_file}: every frame is an isolated atom; there is nothing to train on")
    if cfg.valid_file is not None:
        valid = [c for c in read_configurations(cfg.valid_file, keys) if not _is_isolated(c, cfg)]
    else:
        order = np.random.default_rng(cfg.split_seed).permutation(len(train))
        num_valid = max(1, int(round(cfg.valid_fraction * len(train))))
        if num_valid >= len(train):
            raise InputError(
                f"{cfg.train_file}: {len(train)} frame(s) are too few to split off data.valid_fraction="
                f"{cfg.valid_fraction}; give more frames or a data.valid_file"
            )
        chosen = set(order[:num_valid].tolist())
        valid = [c for i, c in enumerate(train) if i in chosen]
        train = [c for i, c in enumerate(train) if i not in chosen]
    test = read_configurations(cfg.test_file, keys) if cfg.test_file is not None else []
    test = [c for c in test if not _is_isolated(c, cfg)]
    for name, configs in (("training", train), ("validation", valid), ("test", test)):
        _report_missing(configs, cfg, name)
        _apply_config_type_weights(configs, cfg.config_type_weights)
    unknown = set(cfg.config_type_weights) - {c.config_type for c in train + valid}
    if unknown:
        log.warning("data.config_type_weights names config types absent from the data: %s", sorted(unknown))
    return Datasets(train=train, valid=valid, test=test, isolated=isolated)


def element_table(data: Datasets, extra: Sequence[int] = ()) -> ElementTable:
    """Elements of all splits (plus ``extra``, e.g. a foundation model's).

    Raises:
        InputError: an element occurs in validation/test data but in no training frame
            (and not in ``extra``): the model could not learn it. Names a frame.
    """
    trained = {int(z) for c in data.train for z in np.unique(c.atomic_numbers)} | {int(z) for z in extra}
    for c in data.valid + data.test:
        unseen = sorted(set(np.unique(c.atomic_numbers).tolist()) - trained)
        if unseen:
            table = ElementTable(unseen)
            raise InputError(f"{c.where}: element(s) {', '.join(table.symbols)} appear in no training frame")
    numbers = trained | {int(z) for c in data.isolated for z in c.atomic_numbers}
    return ElementTable(numbers)


class GraphSet:
    """Graphs of a list of configurations, built once: ``[G]`` dicts of tensors."""

    def __init__(self, configs: Sequence[Configuration], r_max: float, elements: ElementTable, dtype: torch.dtype):
        self.configs = list(configs)
        self.graphs = [graph_from_configuration(c, r_max, elements, dtype) for c in self.configs]

    def __len__(self) -> int:
        return len(self.graphs)

    @property
    def num_atoms(self) -> int:
        return sum(int(g["positions"].shape[0]) for g in self.graphs)

    def has(self, weight_key: str) -> bool:
        """Whether any graph carries a non-zero weight for a property (e.g. "stress_weight")."""
        return any(float(g[weight_key].sum()) > 0 for g in self.graphs)


def batches(
    graphs: GraphSet, batch_size: int, generator: Optional[torch.Generator] = None, skip: int = 0
) -> Iterator[Dict[str, torch.Tensor]]:
    """Collated batches; shuffled by ``generator`` (one ``randperm`` per call) or in order.

    ``skip`` drops the first batches of that order (resuming mid-epoch).
    """
    n = len(graphs)
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    for start in range(skip * batch_size, n, batch_size):
        yield collate([graphs.graphs[i] for i in order[start : start + batch_size]])


def num_batches(graphs: GraphSet, batch_size: int) -> int:
    return (len(graphs) + batch_size - 1) // batch_size


def to_device(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
