"""Model predictions over a set of graphs, with metrics (used in training and by mace-fast-eval)."""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import torch

from .. import keys as K
from ..model import MACE
from .data import GraphSet, batches, to_device
from .loss import TrainingLoss
from .metrics import MetricsAccumulator

__all__ = ["predict", "evaluate"]


def predict(
    model: MACE,
    graphs: GraphSet,
    batch_size: int,
    device: torch.device,
    stress: bool = True,
    virials: bool = False,
) -> Iterator[Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]]:
    """``(batch, prediction)`` pairs in data order; forces always, stress/virials on request.

    Predictions are detached; autograd is on only inside the forward (forces need it).
    """
    model.eval()
    for batch in batches(graphs, batch_size):
        batch = to_device(batch, device)
        with torch.enable_grad():
            pred = model(batch, compute_forces=True, compute_stress=stress, compute_virials=virials, training=False)
        yield batch, {k: v.detach() for k, v in pred.items()}


def evaluate(
    model: MACE,
    graphs: GraphSet,
    batch_size: int,
    device: torch.device,
    loss: Optional[TrainingLoss] = None,
) -> MetricsAccumulator:
    """Metrics (and the mean batch loss, when ``loss`` is given) of ``model`` on ``graphs``."""
    acc = MetricsAccumulator()
    stress = graphs.has(K.STRESS_WEIGHT)
    virials = graphs.has(K.VIRIALS_WEIGHT)
    for batch, pred in predict(model, graphs, batch_size, device, stress=stress, virials=virials):
        value = float(loss(batch, pred)[0]) if loss is not None else None
        acc.add(batch, pred, value)
    return acc
