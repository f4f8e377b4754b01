"""The training loop: epochs of optimiser steps, validation, schedules, EMA, checkpoints.

Resuming is exact on the CPU: a checkpoint holds the model, optimiser, scheduler, EMA,
every random state and the state of the data-order generator at the start of the epoch,
plus how many batches of that epoch are done. A resumed run regenerates the epoch's order,
skips the batches already done and continues on the same trajectory.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from .. import keys as K
from ..model import MACE
from .checkpoint import restore_rng_states, rng_states, save_checkpoint
from .config import TrainConfig
from .data import GraphSet, batches, num_batches, to_device
from .ema import ExponentialMovingAverage
from .evaluate import evaluate
from .loss import LossWeights, TrainingLoss
from .optim import build_optimizer, build_scheduler

__all__ = ["Trainer", "Progress", "RunPaths", "NonFiniteLossError"]

log = logging.getLogger("mace_fast.train")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint is left untouched."""


@dataclass
class RunPaths:
    """Files of a run under ``root``."""

    root: Path

    @property
    def latest(self) -> Path:
        return self.root / "checkpoints" / "latest.ckpt"

    @property
    def best(self) -> Path:
        return self.root / "checkpoints" / "best.ckpt"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


@dataclass
class Progress:
    epoch: int = 0  # epoch in progress, from 0
    step_in_epoch: int = 0  # batches of that epoch already done
    global_step: int = 0
    stage: int = 1
    best_loss: float = math.inf
    best_epoch: int = -1
    epochs_since_best: int = 0
    epoch_loss_sum: float = 0.0
    epoch_terms: Dict[str, float] = field(default_factory=dict)
    finished: bool = False  # stopped early


def _stage_weights(section) -> LossWeights:
    return LossWeights(section.energy_weight, section.forces_weight, section.stress_weight, section.virials_weight)


class Trainer:
    """Trains ``model`` on ``train`` graphs, validating on ``valid``.

    ``extra_state`` (plain data, e.g. the statistics) is stored in every checkpoint;
    ``save_model(model, path)`` writes the model file (with the EMA weights applied).
    """

    def __init__(
        self,
        model: MACE,
        cfg: TrainConfig,
        train: GraphSet,
        valid: GraphSet,
        paths: RunPaths,
        device: torch.device,
        save_model: Callable[[MACE, Path], None],
        extra_state: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.model, self.cfg, self.train, self.valid = model, cfg, train, valid
        self.paths, self.device, self._save_model = paths, device, save_model
        self.extra_state = dict(extra_state or {})
        self.loss = TrainingLoss(cfg.loss.kind, _stage_weights(cfg.loss), cfg.loss.huber_delta)
        self.optimizer = build_optimizer(cfg.optim, model)
        self.scheduler = build_scheduler(cfg.optim, self.optimizer)
        self.ema = ExponentialMovingAverage(model, cfg.optim.ema_decay) if cfg.optim.ema else None
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.order = torch.Generator().manual_seed(cfg.run.seed)
        self.order_state = self.order.get_state()
        self.progress = Progress()
        s = cfg.stage_two
        self.stage_two_start = (s.start_epoch if s.start_epoch is not None else (3 * cfg.optim.max_epochs) // 4) \
            if s.enabled else None  # fmt: skip
        # Stress/virials cost an extra derivative: only when some frame has them and a stage weighs them.
        weighs = lambda name: getattr(cfg.loss, name) > 0 or (s.enabled and getattr(s, name) > 0)  # noqa: E731
        self.want_stress = train.has(K.STRESS_WEIGHT) and weighs("stress_weight")
        self.want_virials = train.has(K.VIRIALS_WEIGHT) and weighs("virials_weight")

    # -- state ---------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        return {
            "train_config": self.cfg.to_dict(),
            "model_config": self.model.config.to_dict(),
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "progress": asdict(self.progress),
            "data_order": self.order_state.clone(),
            "rng": rng_states(),
            "extra": self.extra_state,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.progress = Progress(**state["progress"])
        self.order_state = state["data_order"].clone()
        self.order.set_state(self.order_state)
        restore_rng_states(state["rng"])
        if self.progress.stage == 2:
            self.loss.weights = _stage_weights(self.cfg.stage_two)

    def save(self, path: Path) -> None:
        save_checkpoint(self.state_dict(), path)

    # -- loop ----------------------------------------------------------------------------

    def fit(self) -> Progress:
        """Train until ``optim.max_epochs`` or early stopping; returns the final progress."""
        p, o = self.progress, self.cfg.optim
        while p.epoch < o.max_epochs and not p.finished:
            self._maybe_enter_stage_two()
            start = time.perf_counter()
            self.order.set_state(self.order_state)
            train_loss, terms = self._train_epoch()
            record = {"epoch": p.epoch, "stage": p.stage, "lr": self.optimizer.param_groups[0]["lr"],
                      "train_loss": train_loss, "train_terms": terms, "global_step": p.global_step}  # fmt: skip
            last = p.epoch + 1 == o.max_epochs
            if (p.epoch + 1) % self.cfg.log.eval_interval == 0 or last:
                metrics = self._validate()
                record["valid"] = metrics
                self._track_best(metrics["loss"], record)
            self._step_scheduler(record.get("valid", {}).get("loss"))
            record["time_s"] = time.perf_counter() - start
            self._log_epoch(record)
            p.epoch += 1
            p.step_in_epoch, p.epoch_loss_sum, p.epoch_terms = 0, 0.0, {}
            self.order_state = self.order.get_state()
            stop = o.early_stop_patience is not None and p.epochs_since_best >= o.early_stop_patience
            if stop:
                log.info("early stop: no better validation loss for %d epochs", p.epochs_since_best)
            p.finished = stop
            self.save(self.paths.latest)
        return p

    def _maybe_enter_stage_two(self) -> None:
        p = self.progress
        if self.stage_two_start is None or p.stage == 2 or p.epoch < self.stage_two_start:
            return
        s = self.cfg.stage_two
        p.stage = 2
        self.loss.weights = _stage_weights(s)
        for group in self.optimizer.param_groups:
            group["lr"] = s.lr
        # Losses of the two stages are not comparable: stage two picks its own best model.
        p.best_loss, p.epochs_since_best = math.inf, 0
        log.info("stage two from epoch %d: loss weights %s, lr %g", p.epoch + 1, asdict(self.loss.weights), s.lr)

    def _train_epoch(self):
        p = self.progress
        total = num_batches(self.train, self.cfg.data.batch_size)
        bar = None
        if self.cfg.log.progress_bar:
            from tqdm import tqdm

            # disable=None: no bar when stderr is not a terminal (logs stay readable).
            bar = tqdm(total=total, initial=p.step_in_epoch, desc=f"epoch {p.epoch + 1}", leave=False,
                       file=sys.stderr, dynamic_ncols=True, disable=None, mininterval=0.5)  # fmt: skip
        every = self.cfg.checkpoint.every_steps
        self.model.train()
        for batch in batches(self.train, self.cfg.data.batch_size, self.order, skip=p.step_in_epoch):
            loss, terms = self._train_step(batch)
            p.step_in_epoch += 1
            p.global_step += 1
            p.epoch_loss_sum += loss
            for name, value in terms.items():
                p.epoch_terms[name] = p.epoch_terms.get(name, 0.0) + value
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{p.epoch_loss_sum / p.step_in_epoch:.4g}")
            if every and p.global_step % every == 0 and p.step_in_epoch < total:
                self.save(self.paths.latest)
        if bar is not None:
            bar.close()
        n = max(p.step_in_epoch, 1)
        return p.epoch_loss_sum / n, {k: v / n for k, v in p.epoch_terms.items()}

    def _train_step(self, batch: Dict[str, torch.Tensor]):
        batch = to_device(batch, self.device)
        pred = self.model(batch, compute_forces=True, compute_virials=self.want_virials,
                          compute_stress=self.want_stress, training=True)  # fmt: skip
        loss, terms = self.loss(batch, pred)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"the training loss became {value} at epoch {self.progress.epoch + 1}, step "
                f"{self.progress.step_in_epoch + 1}; {self.paths.latest} holds the last good state. "
                f"Try a lower optim.lr or check the data."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.optim.clip_grad)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return value, {k: float(v) for k, v in terms.items()}

    def averaged(self):
        """Context in which the model holds the weights used for validation and saving."""
        import contextlib

        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()

    def _validate(self) -> Dict[str, float]:
        with self.averaged():
            acc = evaluate(self.model, self.valid, self.cfg.data.valid_batch_size, self.device, self.loss)
        return acc.compute()

    def _track_best(self, valid_loss: float, record: Dict[str, Any]) -> None:
        p = self.progress
        if valid_loss < p.best_loss:
            p.best_loss, p.best_epoch, p.epochs_since_best = valid_loss, p.epoch, 0
            record["best"] = True
            with self.averaged():
                self._save_model(self.model, self.paths.model)
            if self.cfg.checkpoint.keep_best:
                # The state after this epoch (before its scheduler step): a snapshot, not for --resume.
                state = self.state_dict()
                state["progress"].update(epoch=p.epoch + 1, step_in_epoch=0, epoch_loss_sum=0.0, epoch_terms={})
                state["data_order"] = self.order.get_state()
                save_checkpoint(state, self.paths.best)
        else:
            p.epochs_since_best += self.cfg.log.eval_interval

    def _step_scheduler(self, valid_loss: Optional[float]) -> None:
        if self.progress.stage == 2:
            return  # stage two holds its learning rate
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if valid_loss is not None:
                self.scheduler.step(valid_loss)
        else:
            self.scheduler.step()

    def _log_epoch(self, record: Dict[str, Any]) -> None:
        with open(self.paths.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
        log.info(epoch_line(record, self.cfg.optim.max_epochs))


def epoch_line(record: Dict[str, Any], max_epochs: int) -> str:
    """One human-readable line for an epoch record."""
    parts = [f"epoch {record['epoch'] + 1:>4}/{max_epochs}", f"lr {record['lr']:.2e}",
             f"loss {record['train_loss']:.4g}"]  # fmt: skip
    valid = record.get("valid")
    if valid:
        parts.append(f"valid {valid['loss']:.4g}")
        if "energy_rmse" in valid:
            parts.append(f"E {valid['energy_rmse']:.1f}/{valid['energy_mae']:.1f} meV/atom")
        if "forces_rmse" in valid:
            parts.append(f"F {valid['forces_rmse']:.1f}/{valid['forces_mae']:.1f} meV/Å "
                         f"({valid['forces_rel_rmse']:.1f}%)")  # fmt: skip
        if "stress_rmse" in valid:
            parts.append(f"S {valid['stress_rmse']:.2f}/{valid['stress_mae']:.2f} meV/Å³")
    parts.append(f"{record['time_s']:.1f}s" + (" *" if record.get("best") else ""))
    return "  ".join(parts)


def read_records(path: Path) -> List[Dict[str, Any]]:
    """The epoch records of a ``metrics.jsonl``."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
