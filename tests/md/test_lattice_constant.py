"""scripts/lattice_constant.py: its two routes to a0 agree, with EMT standing in for a model.

This checks the measuring procedure (cell relaxation of a strained, rattled cell against an
E(V) fit of the primitive cell), not any model: both must give EMT's fcc Cu lattice
constant to 0.1 %. The strain and rattle are drawn afresh every run.

The measurement runs in a child process with one OpenBLAS thread: the cell filter calls
scipy's expm/logm on 3x3 matrices ~10 times per step, and with OpenBLAS's threads on a busy
machine each call costs ~10 ms of thread hand-off (a 2 s relaxation took up to 90 s); the
thread count can only be set before numpy is loaded.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lattice_constant.py"

CHILD = """
import importlib.util, json, sys
import numpy as np
from ase.calculators.emt import EMT
spec = importlib.util.spec_from_file_location("lattice_constant", sys.argv[1])
lc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lc)
rng = np.random.default_rng(int(sys.argv[2]))
relax = lc.relax_lattice_constant(EMT(), rng, size=2, strain=0.03, shear=0.02, rattle=0.05, fmax=0.01)
eos = lc.eos_lattice_constant(EMT())
eos.pop("volumes"); eos.pop("energies")
print(json.dumps({"relax": relax, "eos": eos}))
"""


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location("lattice_constant", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_relax_and_eos_agree_on_emt():
    seed = int.from_bytes(os.urandom(4), "little")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(SCRIPT), str(seed)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    relax, eos = out["relax"], out["eos"]
    msg = f"seed {seed}: relax {relax}, eos a0 {eos['a0']}"
    assert relax["converged"] and relax["fmax_final"] < 0.01, msg
    assert relax["steps"] > 0, msg
    # the relaxed cell is cubic again: equal edges, right angles
    assert relax["edge_spread"] < 5e-3 and relax["angle_dev_deg"] < 0.3, msg
    assert abs(relax["a0"] - eos["a0"]) / eos["a0"] < 1e-3, msg
    # EMT's Cu is near 3.59 Å; the E(V) grid brackets it and the bulk modulus is sensible
    assert 3.55 < eos["a0"] < 3.63 and 100 < eos["bulk_modulus_GPa"] < 180, eos


def test_start_is_strained_and_rattled(lc):
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    atoms = lc.strained_rattled_fcc(3.6, 2, 0.03, 0.02, 0.05, rng)
    assert len(atoms) == 32
    assert abs(atoms.cell.angles() - 90).max() > 0  # sheared
    atoms.calc = EMT()
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() > 0.01  # not at a minimum
