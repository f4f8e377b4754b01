"""``mace-fast-convert`` on a pickled mace-torch model, and the isolated-atom energy."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms

from mace_fast import MaceFastCalculator, load_model
from mace_fast.interop.mace_torch import convert_mace_model

from .mace_models import build_mace_torch_model, graph_for, mace_batch, molecule

pytest.importorskip("mace", reason="mace-torch is not installed (optional extra 'mace')")


@pytest.fixture(scope="module")
def pickled_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("convert") / "tiny.model"
    model = build_mace_torch_model("tiny_l2_corr2")
    torch.save(model, path)
    return path, model


def test_console_script_converts_and_warns(pickled_model, tmp_path):
    src, ref = pickled_model
    out = tmp_path / "tiny.pt"
    exe = shutil.which("mace-fast-convert")
    cmd = [exe] if exe else [sys.executable, "-m", "mace_fast.cli.convert"]
    proc = subprocess.run(cmd + [str(src), "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "pickled" in proc.stderr and "trust" in proc.stderr
    model = load_model(out)
    graph = graph_for(molecule, model, torch.float64)
    expected = ref(mace_batch(graph, 3), compute_force=True)
    got = model(graph)
    assert torch.allclose(got["energy"], expected["energy"], rtol=1e-12, atol=0)
    assert torch.allclose(got["forces"], expected["forces"], rtol=0, atol=1e-12 * expected["forces"].norm())


def test_missing_input_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mace_fast.cli.convert", str(tmp_path / "nope.model"), "-o", str(tmp_path / "x.pt")],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0 and "does not exist" in proc.stderr


@pytest.mark.parametrize("arch", ["tiny_l2_corr2", "mpa_style"])
def test_isolated_atoms_match_mace_torch(arch):
    """An atom without neighbours: E0 + shift + what the skip path reads out, as mace-torch."""
    ref = build_mace_torch_model(arch)
    ours = convert_mace_model(ref)
    z = ours.config.atomic_numbers
    atoms = Atoms(numbers=[z[0], z[-1], z[1]], positions=[[0, 0, 0], [30.0, 0, 0], [0, 30.0, 0]], pbc=False)
    from mace_fast.data.graph import ElementTable, build_graph

    graph = build_graph(atoms.positions, atoms.numbers, np.zeros((3, 3)), atoms.pbc, ours.r_max,
                        ElementTable(z), torch.float64)
    assert graph["edge_index"].shape[1] == 0
    expected = ref(mace_batch(graph, len(z)), compute_force=True)
    got = ours(graph)
    assert torch.allclose(got["node_energy"], expected["node_energy"], rtol=1e-12, atol=1e-12)
    assert torch.equal(got["forces"], torch.zeros_like(got["forces"]))
    calc = MaceFastCalculator(ours)
    atoms.calc = calc
    assert abs(atoms.get_potential_energy() - float(expected["energy"].sum())) < 1e-10


def test_model_built_in_float32_is_reproduced_exactly():
    """A float32 mace-torch model stores its product basis and Bessel constants rounded to
    float32. Conversion accepts that rounding and keeps the stored Bessel constants; of the
    rounded basis it keeps the part in the exact symmetric basis (the rest, ~2e-8, is
    rounding noise). Cast to float64, both models then agree far below float32 precision
    (observed: energies ~1e-12, forces ~1e-9 relative)."""
    seed = int(np.random.default_rng().integers(1 << 30))
    ref = build_mace_torch_model("tiny_l2_corr2", dtype=torch.float32, seed=seed)
    assert ref.radial_embedding.bessel_fn.bessel_weights.dtype == torch.float32
    ours = convert_mace_model(ref).double()
    ref = ref.double()
    graph = graph_for(molecule, ours, torch.float64, seed=seed)
    expected = ref(mace_batch(graph, len(ours.config.atomic_numbers)), compute_force=True)
    got = ours(graph)
    assert torch.allclose(got["energy"], expected["energy"], rtol=1e-10, atol=0)
    assert torch.allclose(got["forces"], expected["forces"], rtol=0, atol=1e-7 * expected["forces"].norm())
