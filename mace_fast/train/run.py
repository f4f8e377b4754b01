"""A training run from a validated config: data, statistics, model, training, final report.

Nothing is written to the output folder until the data has been read and checked and the
model built, so a bad file stops the run before it leaves anything behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import yaml

from ..config import ModelConfig
from ..data.graph import ElementTable
from ..model import MACE
from ..model_file import load_model, save_model
from .checkpoint import CheckpointError, load_checkpoint
from .config import TrainConfig
from .data import GraphSet, element_table, load_datasets
from .evaluate import evaluate
from .finetune import extend_elements, freeze
from .metrics import format_table
from .schema import to_dict
from .statistics import average_num_neighbors, resolve_e0s, scale_and_shift
from .trainer import RunPaths, Trainer, read_records

__all__ = ["run_training", "final_report", "RunError"]

log = logging.getLogger("mace_fast.train")

# Keys that may differ between a checkpoint's config and the config it is resumed with.
RESUMABLE_CHANGES = ("optim.max_epochs", "optim.early_stop_patience", "run.device", "run.threads",
                     "checkpoint.every_steps", "log.")  # fmt: skip


class RunError(RuntimeError):
    """The run cannot start or continue as asked (e.g. output folder in use)."""


def _setup_logging(path: Optional[Path]) -> None:
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)


def _flat(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("e0s", "config_type_weights"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_resumable(saved: Dict[str, Any], current: Dict[str, Any], path: Path) -> None:
    a, b = _flat(saved), _flat(current)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES))
    if changed:
        details = ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in changed[:5])
        raise RunError(f"cannot resume {path}: the config differs from the checkpoint's in {details}")


def _prepare_output(paths: RunPaths, resume: bool, overwrite: bool) -> None:
    if resume:
        if not paths.latest.is_file():
            raise RunError(f"--resume: no checkpoint {paths.latest} to continue from")
        return
    if paths.latest.is_file() or paths.metrics.is_file():
        if not overwrite:
            raise RunError(
                f"{paths.root} already holds a run; pass --resume to continue it, --overwrite to start over, "
                f"or set run.output_dir"
            )


def _clear_outputs(paths: RunPaths) -> None:
    for p in (paths.latest, paths.best, paths.model, paths.metrics, paths.log, paths.root / "final_metrics.json"):
        p.unlink(missing_ok=True)
    shutil.rmtree(paths.plots, ignore_errors=True)


def _build_model(cfg: TrainConfig, data, dtype: torch.dtype):
    """``(model, training GraphSet or None)``, from scratch (statistics from the training
    set, whose graphs are returned for reuse) or from finetune.model."""
    arch = {k: v for k, v in to_dict(cfg.model).items() if k not in ("avg_num_neighbors", "scaling", "shift")}
    if cfg.finetune.model is None:
        elements = element_table(data)
        e0s = resolve_e0s(cfg.data.e0s, data.train, data.isolated, elements)
        train = GraphSet(data.train, cfg.model.r_max, elements, dtype)
        avg = cfg.model.avg_num_neighbors or average_num_neighbors(train.graphs)
        scale, shift = scale_and_shift(data.train, elements, e0s, cfg.model.scaling, cfg.model.shift)
        torch.manual_seed(cfg.run.seed)
        config = ModelConfig(atomic_numbers=list(elements.numbers), atomic_energies=e0s.tolist(),
                             avg_num_neighbors=avg, scale=scale, shift=shift, **arch)  # fmt: skip
        return MACE(config).to(dtype), train
    else:
        foundation = load_model(cfg.finetune.model, dtype=dtype)
        known = dict(zip(foundation.config.atomic_numbers, foundation.config.atomic_energies))
        elements = element_table(data, extra=foundation.config.atomic_numbers)
        e0s = resolve_e0s(cfg.data.e0s, data.train, data.isolated, elements, foundation=known)
        new = {z: float(e) for z, e in zip(elements.numbers, e0s) if z not in known}
        if new:
            log.info("adding elements %s to the foundation model", ElementTable(new).symbols)
        model = extend_elements(foundation, elements.numbers, new, seed=cfg.run.seed)
        model.config.atomic_energies = [float(e) for e in e0s]
        with torch.no_grad():
            model.atomic_energies.copy_(torch.tensor(e0s, dtype=model.atomic_energies.dtype))
        frozen = freeze(model, cfg.finetune.freeze)
        if frozen:
            log.info("frozen: %d parameter tensors (%s)", len(frozen), ", ".join(cfg.finetune.freeze))
        return model, None


def _describe(model: MACE, data, graphs: Dict[str, GraphSet]) -> None:
    c = model.config
    e0 = ", ".join(f"{s}: {e:.4f}" for s, e in zip(ElementTable(c.atomic_numbers).symbols, c.atomic_energies))
    log.info("data: %s", ", ".join(f"{k} {len(g)} frames / {g.num_atoms} atoms" for k, g in graphs.items()))
    log.info("E0s [eV]: %s", e0)
    log.info("avg_num_neighbors %.3f, scale %.4f, shift %.4f", c.avg_num_neighbors, c.scale, c.shift)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model: hidden %s, %d interactions, r_max %.2f Å, %d parameters (%d trainable)",
             c.hidden_irreps, c.num_interactions, c.r_max, total, trainable)  # fmt: skip


def run_training(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> Dict[str, Dict[str, float]]:
    """Train as ``cfg`` says; returns the final metrics per split (meV units)."""
    paths = RunPaths(Path(cfg.run.output_dir))
    _setup_logging(None)
    _prepare_output(paths, resume, overwrite)
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    if cfg.run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True)
    dtype = getattr(torch, cfg.run.dtype)
    device = torch.device(cfg.run.device)
    np.random.seed(cfg.run.seed)
    torch.manual_seed(cfg.run.seed)

    data = load_datasets(cfg.data)
    state = None
    if resume:
        state = load_checkpoint(paths.latest)
        _check_resumable(state["train_config"], cfg.to_dict(), paths.latest)
        model = MACE(ModelConfig.from_dict(state["model_config"])).to(dtype)
        freeze(model, cfg.finetune.freeze)
        elements = ElementTable(model.config.atomic_numbers)
        element_table(data, extra=elements.numbers)  # refuses elements the model lacks, naming a frame
        train = None
    else:
        model, train = _build_model(cfg, data, dtype)
        elements = ElementTable(model.config.atomic_numbers)
    model.to(device)
    if train is None:
        train = GraphSet(data.train, model.config.r_max, elements, dtype)
    graphs = {"train": train, "valid": GraphSet(data.valid, model.config.r_max, elements, dtype)}
    if data.test:
        graphs["test"] = GraphSet(data.test, model.config.r_max, elements, dtype)

    # Inputs are good: from here on the output folder is written.
    if not resume:
        _clear_outputs(paths)
    paths.root.mkdir(parents=True, exist_ok=True)
    _setup_logging(paths.log)
    (paths.root / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    _describe(model, data, graphs)

    def write_model(m: MACE, path: Path) -> None:
        save_model(m, path, metadata={"trained_with": "mace-fast-train", "output_dir": str(paths.root)})

    trainer = Trainer(model, cfg, graphs["train"], graphs["valid"], paths, device, write_model)
    if state is not None:
        trainer.load_state_dict(state)
        p = trainer.progress
        records = [r for r in read_records(paths.metrics) if r["epoch"] < p.epoch]
        atomic_text(paths.metrics, "".join(json.dumps(r) + "\n" for r in records))
        log.info("resumed from %s: epoch %d, step %d of it", paths.latest, p.epoch + 1, p.step_in_epoch)
    trainer.fit()
    log.info("training done: best validation loss %.5g at epoch %d",
             trainer.progress.best_loss, trainer.progress.best_epoch + 1)  # fmt: skip
    return final_report(cfg, paths, graphs, device, dtype)


def atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def final_report(cfg: TrainConfig, paths: RunPaths, graphs: Dict[str, GraphSet], device, dtype):
    """Metrics of the saved model (best EMA weights) per split, a table, plots, JSON."""
    from .plots import plot_learning_curves, plot_parity

    if not paths.model.is_file():
        raise CheckpointError(f"no model was saved in {paths.root}")
    model = load_model(paths.model, device=device, dtype=dtype)
    results, accumulators = {}, {}
    for name, g in graphs.items():
        if name == "train" and not cfg.log.final_eval_train:
            continue
        accumulators[name] = evaluate(model, g, cfg.data.valid_batch_size, device)
        results[name] = accumulators[name].compute()
    log.info("final metrics of %s:\n%s", paths.model, format_table(results))
    atomic_text(paths.root / "final_metrics.json", json.dumps(results, indent=2))
    if cfg.log.plots:
        made = [plot_learning_curves(read_records(paths.metrics), paths.plots / "learning_curves.png")]
        split = "test" if "test" in accumulators else "valid"
        acc = accumulators[split]
        made.append(plot_parity({n: acc.arrays(n) for n in ("energy", "forces", "stress")},
                                paths.plots / f"parity_{split}.png", title=f"{split} set"))  # fmt: skip
        log.info("plots: %s", ", ".join(str(p) for p in made if p is not None))
    return results

