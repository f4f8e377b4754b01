"""Optimiser with MACE's parameter groups, and learning-rate schedules.

Weight decay goes only where MACE puts it: the equivariant linear and skip weights of the
interactions and the product (symmetric-contraction + linear) weights. Embeddings, radial
MLPs and readouts are not decayed.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn

from .config import OptimConfig

__all__ = ["parameter_groups", "build_optimizer", "build_scheduler"]


def _decayed(name: str) -> bool:
    """Whether parameter ``name`` of a MACE model gets weight decay."""
    if name.startswith("products."):
        return True
    if name.startswith("interactions."):
        return ".linear.weights" in name or ".skip.weights" in name
    return False


def parameter_groups(model: nn.Module, lr: float, weight_decay: float) -> List[Dict]:
    """``[decay, no_decay]`` groups of the trainable parameters (frozen ones left out)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if _decayed(name) else no_decay).append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay, "lr": lr},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0, "lr": lr},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (L2 decay) or AdamW (decoupled decay), with amsgrad as configured."""
    groups = parameter_groups(model, cfg.lr, cfg.weight_decay)
    if not groups:
        raise ValueError("no trainable parameters (is every layer frozen?)")
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), amsgrad=cfg.amsgrad)


def build_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer):
    """Learning-rate schedule stepped once per epoch (plateau: on the validation loss)."""
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
    if cfg.scheduler == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.exponential_gamma)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.max_epochs, eta_min=cfg.cosine_min_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=_constant)


def _constant(epoch: int) -> float:  # module-level so the scheduler's state stays picklable
    return 1.0
