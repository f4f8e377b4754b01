"""Error metrics of predictions against reference labels, in meV units.

Energies are compared per atom (meV/atom), forces per Cartesian component (meV/Å),
stress per component (meV/Å^3) and virials per atom (meV/atom). Only frames whose
property weight is non-zero (i.e. that have the label) are counted.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np
import torch

from .. import keys as K

__all__ = ["MetricsAccumulator", "format_table"]

UNITS = {"energy": "meV/atom", "forces": "meV/Å", "stress": "meV/Å³", "virials": "meV/atom"}


class MetricsAccumulator:
    """Collects reference/predicted values batch by batch; :meth:`compute` gives the metrics.

    Keeps the arrays (``pairs``) so that parity plots can be drawn from them.
    """

    def __init__(self) -> None:
        self.pairs: Dict[str, List[np.ndarray]] = {name: [] for name in UNITS}
        self.loss_sum = 0.0
        self.num_batches = 0

    def add(self, batch: Dict[str, torch.Tensor], pred: Dict[str, torch.Tensor], loss: Optional[float] = None) -> None:
        if loss is not None:
            self.loss_sum += float(loss)
            self.num_batches += 1
        ptr = batch[K.PTR]
        num_atoms = (ptr[1:] - ptr[:-1]).to(torch.float64)
        has_e = batch[K.ENERGY_WEIGHT] > 0
        if has_e.any():
            ref = batch[K.ENERGY].double() / num_atoms
            out = pred[K.ENERGY].detach().double() / num_atoms
            self._add("energy", ref[has_e], out[has_e])
        has_f = (batch[K.FORCES_WEIGHT] > 0)[batch[K.BATCH]]
        if has_f.any():
            self._add("forces", batch[K.FORCES][has_f].reshape(-1), pred[K.FORCES].detach()[has_f].reshape(-1))
        for name, wkey in (("stress", K.STRESS_WEIGHT), ("virials", K.VIRIALS_WEIGHT)):
            has = batch[wkey] > 0
            if name in pred and has.any():
                scale = num_atoms.view(-1, 1, 1) if name == "virials" else torch.ones_like(num_atoms).view(-1, 1, 1)
                ref = batch[name].double() / scale
                out = pred[name].detach().double() / scale
                self._add(name, ref[has].reshape(-1), out[has].reshape(-1))

    def _add(self, name: str, ref: torch.Tensor, out: torch.Tensor) -> None:
        stacked = torch.stack([ref.double(), out.double()], dim=-1).cpu().numpy()
        self.pairs[name].append(stacked)

    def arrays(self, name: str) -> Optional[np.ndarray]:
        """``[M, 2]`` (reference, predicted) in eV units, or None without data."""
        return np.concatenate(self.pairs[name]) if self.pairs[name] else None

    def compute(self) -> Dict[str, float]:
        """``loss`` plus ``<property>_rmse``/``_mae`` (meV units), ``forces_rms`` (of the
        reference) and ``forces_rel_rmse`` (%), for the properties seen."""
        out: Dict[str, float] = {}
        if self.num_batches:
            out["loss"] = self.loss_sum / self.num_batches
        for name in UNITS:
            data = self.arrays(name)
            if data is None:
                continue
            error = (data[:, 1] - data[:, 0]) * 1000.0
            out[f"{name}_rmse"] = float(np.sqrt(np.mean(error**2)))
            out[f"{name}_mae"] = float(np.mean(np.abs(error)))
            if name == "forces":
                rms = float(np.sqrt(np.mean(data[:, 0] ** 2))) * 1000.0
                out["forces_rms"] = rms
                out["forces_rel_rmse"] = 100.0 * out["forces_rmse"] / rms if rms > 0 else math.nan
        return out


def format_table(rows: Dict[str, Dict[str, float]]) -> str:
    """A text table, one row per data split, RMSE and MAE columns per property."""
    present = [n for n in UNITS if any(f"{n}_rmse" in m for m in rows.values())]
    header = ["split"]
    for n in present:
        header += [f"RMSE {n} [{UNITS[n]}]", f"MAE {n} [{UNITS[n]}]"]
        if n == "forces":
            header += ["rel. RMSE F [%]"]
    lines = [header]
    for split, m in rows.items():
        line = [split]
        for n in present:
            line += [_num(m.get(f"{n}_rmse")), _num(m.get(f"{n}_mae"))]
            if n == "forces":
                line += [_num(m.get("forces_rel_rmse"))]
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    rule = "-+-".join("-" * w for w in widths)
    text = [" | ".join(c.rjust(w) for c, w in zip(row, widths)) for row in lines]
    return "\n".join([text[0], rule] + text[1:])


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"
