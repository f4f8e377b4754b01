"""PNG plots of a run: learning curves, and predicted against reference values (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["plot_learning_curves", "plot_parity"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed; set before pyplot is imported anywhere
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(records: List[Dict[str, Any]], path: Path) -> Optional[Path]:
    """Loss (train, valid) and validation RMSEs of energy and forces against the epoch."""
    if not records:
        return None
    plt = _pyplot()
    epochs = np.array([r["epoch"] + 1 for r in records])
    valid = [(r["epoch"] + 1, r["valid"]) for r in records if "valid" in r]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.semilogy(epochs, [r["train_loss"] for r in records], label="train")
    if valid:
        ax.semilogy([e for e, _ in valid], [v["loss"] for _, v in valid], label="valid (EMA)")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    for panel, key, unit in ((axes[1], "energy", "meV/atom"), (axes[2], "forces", "meV/Å")):
        points = [(e, v[f"{key}_rmse"], v[f"{key}_mae"]) for e, v in valid if f"{key}_rmse" in v]
        if points:
            e, rmse, mae = map(np.array, zip(*points))
            panel.semilogy(e, rmse, label="RMSE")
            panel.semilogy(e, mae, label="MAE", linestyle="--")
        panel.set(xlabel="epoch", ylabel=unit, title=f"Validation error: {key}")
    from matplotlib.ticker import FuncFormatter

    # Plain numbers (20, 50) rather than 2x10^1; minor ticks labelled at 2 and 5 only.
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    sparse = FuncFormatter(lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** np.floor(np.log10(v))) in (2, 5) else "")
    stage_two = [r["epoch"] + 1 for r in records if r.get("stage") == 2]
    for ax in axes:
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(sparse)
        if stage_two:
            ax.axvline(stage_two[0], color="grey", linestyle=":", label="stage two")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_parity(pairs: Dict[str, Optional[np.ndarray]], path: Path, title: str = "test set") -> Optional[Path]:
    """Predicted against reference: energy per atom (eV/atom), force components (eV/Å),
    stress components (eV/Å^3) where present. ``pairs[name]`` is ``[M, 2]`` (ref, pred)."""
    units = {"energy": "eV/atom", "forces": "eV/Å", "stress": "eV/Å³"}
    present = [n for n in units if pairs.get(n) is not None and len(pairs[n])]
    if not present:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 4.8), squeeze=False)
    for ax, name in zip(axes[0], present):
        ref, pred = pairs[name][:, 0], pairs[name][:, 1]
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", linewidth=1)
        ax.scatter(ref, pred, s=6, alpha=0.5, edgecolors="none")
        rmse = 1000.0 * float(np.sqrt(np.mean((pred - ref) ** 2)))
        unit = units[name].replace("eV", "meV")
        ax.set(xlabel=f"reference [{units[name]}]", ylabel=f"predicted [{units[name]}]",
               title=f"{name} ({title})\nRMSE {rmse:.2f} {unit}, {len(ref)} values")  # fmt: skip
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
