"""Batched relaxation builds its batch with the torch cell list on a GPU: the same batch
as the per-structure matscipy path (run here on the CPU, where both work)."""

import os

import numpy as np
import torch
from ase.build import bulk, fcc111, molecule

from mace_fast.data.graph import ElementTable
from mace_fast.md import batch_relax


def test_device_batch_equals_per_structure_batch():
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    structures = [bulk("Si", "diamond", a=5.43) * (2, 2, 2), bulk("Cu", "fcc", a=3.6) * (2, 1, 1),
                  fcc111("Cu", (2, 2, 3), vacuum=4.0), molecule("CH3OH")]
    for atoms in structures:
        atoms.rattle(0.08, seed=int(rng.integers(1 << 30)))
        atoms.positions += rng.normal(0, 3.0, 3)  # not inside the home cell
    args = ([a.positions for a in structures], [a.cell.array for a in structures], [a.pbc for a in structures],
            [a.numbers for a in structures], float(rng.uniform(3.5, 5.5)), ElementTable([1, 6, 8, 14, 29]),
            torch.float64)
    ref = batch_relax._build_batch(*args, torch.device("cpu"))
    dev = batch_relax._build_batch_on_device(*args, torch.device("cpu"))
    assert ref.keys() == dev.keys() and ref["edge_index"].shape[1] > 100
    for key, value in ref.items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(dev[key], value, rtol=0, atol=1e-12)
        else:
            assert torch.equal(dev[key], value), key
