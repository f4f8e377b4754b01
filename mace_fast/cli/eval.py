"""``mace-fast-eval --model M --configs X.extxyz -o out.extxyz``: predictions and metrics.

Predictions are written into the frames as ``<prefix>energy`` (info), ``<prefix>forces``
(arrays) and ``<prefix>stress`` (info, Voigt, only for periodic cells with a volume); the
reference labels are kept. When the frames have reference labels, a metrics table is
printed (and written as JSON with ``--metrics``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mace-fast-eval", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("--model", required=True, type=Path, help="mace_fast model file")
    parser.add_argument("--configs", required=True, type=Path, help="extended XYZ file to evaluate")
    parser.add_argument("-o", "--output", type=Path, default=None, help="extended XYZ file with the predictions")
    parser.add_argument("--prefix", default="MACE_", help="prefix of the written keys (default MACE_)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--energy-key", default="REF_energy")
    parser.add_argument("--forces-key", default="REF_forces")
    parser.add_argument("--stress-key", default="REF_stress")
    parser.add_argument("--metrics", type=Path, default=None, help="also write the metrics as JSON here")
    args = parser.parse_args(argv)

    import ase.io
    import numpy as np
    import torch
    from ase.stress import full_3x3_to_voigt_6_stress

    from mace_fast import keys as K
    from mace_fast.data.configuration import DataKeys, read_configurations
    from mace_fast.data.errors import InputError
    from mace_fast.data.graph import ElementTable
    from mace_fast.model_file import ModelFileError, load_model
    from mace_fast.train.data import GraphSet
    from mace_fast.train.evaluate import predict
    from mace_fast.train.metrics import MetricsAccumulator, format_table

    try:
        model = load_model(args.model, device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None)
        keys = DataKeys(energy_key=args.energy_key, forces_key=args.forces_key, stress_key=args.stress_key)
        configs = read_configurations(args.configs, keys)
        dtype = next(model.parameters()).dtype
        graphs = GraphSet(configs, model.r_max, ElementTable(model.config.atomic_numbers), dtype)
    except (FileNotFoundError, ModelFileError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    frames = ase.io.read(args.configs, index=":", format="extxyz")
    acc = MetricsAccumulator()
    start = 0
    for batch, pred in predict(model, graphs, args.batch_size, torch.device(args.device), stress=True):
        acc.add(batch, pred)
        ptr = batch[K.PTR].cpu().numpy()
        energy = pred[K.ENERGY].double().cpu().numpy()
        forces = pred[K.FORCES].double().cpu().numpy()
        stress = pred[K.STRESS].double().cpu().numpy()
        for g in range(len(ptr) - 1):
            atoms = frames[configs[start + g].frame]
            atoms.info[f"{args.prefix}energy"] = float(energy[g])
            atoms.arrays[f"{args.prefix}forces"] = forces[ptr[g] : ptr[g + 1]]
            if atoms.pbc.all() and abs(np.linalg.det(atoms.cell.array)) > 1e-12:
                atoms.info[f"{args.prefix}stress"] = full_3x3_to_voigt_6_stress(stress[g])
        start += len(ptr) - 1
    if args.output is not None:
        ase.io.write(args.output, frames, format="extxyz")
        print(f"wrote {args.output}: {len(frames)} frames with {args.prefix}energy/forces/stress")
    metrics = acc.compute()
    if metrics:
        print(format_table({args.configs.name: metrics}))
    else:
        print("no reference labels found: no metrics")
    if args.metrics is not None:
        args.metrics.write_text(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
