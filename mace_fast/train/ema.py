"""Exponential moving average of the weights; validation and saved models use it."""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator

import torch
from torch import nn

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage:
    """EMA of the trainable parameters: ``s <- d s + (1 - d) p`` after each optimiser step.

    As in torch_ema (used by mace-torch), the decay warms up: ``d = min(decay, (1 + n) / (10 + n))``
    for the ``n``-th update, so early averages are not dominated by the initial weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = {n: params[n].detach().clone() for n in self.names}
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        params = dict(model.named_parameters())
        for n in self.names:
            self.shadow[n].mul_(d).add_(params[n].detach(), alpha=1.0 - d)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into ``model``."""
        params = dict(model.named_parameters())
        backup = {n: params[n].detach().clone() for n in self.names}
        with torch.no_grad():
            for n in self.names:
                params[n].copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n in self.names:
                    params[n].copy_(backup[n])

    def state_dict(self) -> Dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: Dict) -> None:
        if sorted(state["shadow"]) != sorted(self.names):
            raise ValueError("EMA state does not match the model's trainable parameters")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for n in self.names:
            self.shadow[n].copy_(state["shadow"][n])
