"""Batched FIRE against ASE's FIRE (and FrechetCellFilter) run on each structure alone.

The oracle is ASE itself: per structure, the batched trajectory must be the one ASE's FIRE
gives with the same model through MaceFastCalculator, to round-off. Every run draws a
new model and new structures; the seed is in the assertion messages.
"""

import os
import subprocess
import sys

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.filters import FrechetCellFilter

from mace_fast.calculator import MaceFastCalculator
from mace_fast.config import ModelConfig
from mace_fast.md.batch_relax import relax_batch
from mace_fast.md.relax import relax_structures
from mace_fast.model import MACE

ELEMENTS = [1, 6, 8, 14, 29]


def random_model(seed: int) -> MACE:
    """Small random float64 model (H, C, O, Si, Cu); scale=20 so forces are well above the tolerances.

    With ZBL pair repulsion: random weights alone are sometimes attractive at short range,
    and then atoms (or a collapsing cell's images) run into each other during a relaxation.
    """
    torch.manual_seed(seed)
    config = ModelConfig(
        atomic_numbers=ELEMENTS, atomic_energies=[-1.0, -2.0, -3.0, -4.0, -5.0], r_max=4.0, num_bessel=6,
        hidden_irreps="8x0e", mlp_irreps="8x0e", radial_mlp=[16, 16], avg_num_neighbors=8.0,
        scale=20.0, shift=0.0, pair_repulsion=True,
    )
    return MACE(config).double()


def rattled_cu(rng, repeat=(2, 2, 2)) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6).repeat(repeat)
    atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
    return atoms


def strained_si(rng) -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.set_cell(atoms.cell @ (np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))), scale_atoms=True)
    atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
    return atoms


def cluster(rng, n=6) -> Atoms:
    """Non-periodic molecule-like C/H/O cluster, atoms at least 1.1 Å apart."""
    points = []
    while len(points) < n:
        p = rng.uniform(-1.8, 1.8, 3)
        if all(np.linalg.norm(p - q) > 1.1 for q in points):
            points.append(p)
    return Atoms(numbers=rng.choice([1, 6, 8], size=n), positions=np.array(points), pbc=False)


def slab(rng) -> Atoms:
    """Cu(111) slab, periodic in two directions only."""
    atoms = fcc111("Cu", size=(2, 2, 2), vacuum=5.0, a=3.6)
    atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
    return atoms


def _openblas_thread_setters():
    """(get, set) for each OpenBLAS loaded in this process (numpy's, scipy's), best effort."""
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line and ".so" in line})
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("64_", "", "_"):
            get = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None)
            set_ = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                found.append((get, set_))
                break
    return found


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread for torch and OpenBLAS while these tests run.

    The models are tiny, and ASE's FrechetCellFilter (the oracle) calls scipy on 3x3
    matrices many times a step: extra threads only contend, which on a busy 2-core machine
    makes the oracle ~10x slower.
    """
    import scipy.linalg  # noqa: F401  (load scipy's OpenBLAS now so that it is limited too)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    blas = [(get, set_, get()) for get, set_ in _openblas_thread_setters()]
    for _, set_, _ in blas:
        set_(1)
    yield
    torch.set_num_threads(threads)
    for _, set_, before in blas:
        set_(before)


@pytest.fixture
def seed(rng):
    return int(torch.randint(0, 2**31 - 1, (1,), generator=rng))


def one_by_one(structures, model, fmax, steps, cell):
    """ASE's FIRE (on FrechetCellFilter with ``cell``) on each structure alone."""
    return relax_structures(structures, MaceFastCalculator(model), "FIRE", fmax, steps, cell)


def assert_same(batched, reference, seed, tol=1e-8):
    for b, r in zip(batched, reference):
        msg = f"seed {seed}, {r.atoms.get_chemical_formula() if r.atoms else r.error}"
        assert b.ok and r.ok, (b.error, r.error, msg)
        assert b.steps == r.steps and b.converged == r.converged, msg
        assert np.abs(b.atoms.positions - r.atoms.positions).max() < tol, msg
        assert np.abs(b.atoms.cell.array - r.atoms.cell.array).max() < tol, msg
        assert abs(b.energy - r.energy) < tol * max(1.0, abs(r.energy)), msg
        assert abs(b.fmax - r.fmax) < tol, msg
        assert np.abs(b.atoms.get_forces() - r.atoms.get_forces()).max() < 1e-6, msg
        if "stress" in r.atoms.calc.results:
            assert np.abs(b.atoms.get_stress() - r.atoms.get_stress()).max() < 1e-6, msg


def max_deviation(batched, reference) -> float:
    return max(np.abs(b.atoms.positions - r.atoms.positions).max() for b, r in zip(batched, reference))


def test_positions_match_ase_fire(seed):
    """(a) After k steps every structure is where ASE's FIRE puts it alone, also when the
    batch is capped so that structures wait and join as others leave."""
    rng = np.random.default_rng(seed)
    model = random_model(seed)
    structures = [rattled_cu(rng), cluster(rng), slab(rng), strained_si(rng), cluster(rng, 4)]
    before = [a.positions.copy() for a in structures]
    k = 25
    reference = one_by_one(structures, model, 1e-9, k, cell=False)
    batched = relax_batch(structures, model, fmax=1e-9, steps=k, max_atoms_per_batch=None)
    assert_same(batched, reference, seed)
    print(f"max |dr| vs ASE FIRE after {k} steps: {max_deviation(batched, reference):.3g} Å")
    # The trajectories moved, and the inputs did not.
    assert all(np.abs(r.atoms.positions - p).max() > 1e-3 for r, p in zip(batched, before)), seed
    assert all(np.array_equal(a.positions, p) for a, p in zip(structures, before))
    # Capped batches (structures wait in the queue and join as others leave): the same.
    staggered = relax_batch(structures, model, fmax=1e-9, steps=k, max_atoms_per_batch=12)
    assert_same(staggered, reference, seed)


def test_cell_relaxation_matches_frechet_cell_filter(seed):
    """(b) With cell=True the trajectory is that of FIRE on FrechetCellFilter."""
    rng = np.random.default_rng(seed)
    model = random_model(seed)
    structures = [strained_si(rng), rattled_cu(rng, (1, 2, 2))]
    structures[1].set_cell(structures[1].cell * 1.04, scale_atoms=True)  # under tension: the cell must move
    k = 20
    reference = one_by_one(structures, model, 1e-9, k, cell=True)
    batched = relax_batch(structures, model, fmax=1e-9, steps=k, cell=True)
    assert_same(batched, reference, seed)
    print(f"max |dr| vs FrechetCellFilter+FIRE after {k} steps: {max_deviation(batched, reference):.3g} Å")
    for r, a in zip(batched, structures):
        assert np.abs(r.atoms.cell.array - a.cell.array).max() > 1e-3, seed


@pytest.mark.parametrize("cell", [False, True])
def test_converges_to_ase_energies(seed, cell):
    """(c) Relaxed to fmax, with the energies (and geometries) of ASE's own relaxations."""
    rng = np.random.default_rng(seed)
    model = random_model(seed)
    structures = [rattled_cu(rng, (1, 1, 2)), strained_si(rng)] + ([] if cell else [cluster(rng, 4)])
    # Well below every structure's starting fmax, so that each has to move.
    start = relax_batch(structures, model, fmax=1e-9, steps=0, cell=cell)
    fmax = min(0.05, 0.5 * min(r.fmax for r in start))
    reference = one_by_one(structures, model, fmax, 1000, cell)
    batched = relax_batch(structures, model, fmax=fmax, steps=1000, cell=cell, max_atoms_per_batch=4)
    calc = MaceFastCalculator(model)
    for b, r, a in zip(batched, reference, structures):
        assert r.converged, f"seed {seed}: ASE did not converge, the test proves nothing"
        assert b.converged and b.fmax < fmax and b.steps > 0, (seed, b)
        # The criterion recomputed by ASE at the relaxed geometry: forces, or with a cell
        # FrechetCellFilter's rows relative to the starting cell.
        final = b.atoms.copy()
        final.calc = calc
        target = final
        if cell:
            target = FrechetCellFilter(final)
            target.orig_cell = a.cell.array
        f_rows = np.linalg.norm(target.get_forces(), axis=1).max()
        assert f_rows < fmax and abs(f_rows - b.fmax) < 1e-8, (seed, f_rows, b.fmax)
        assert abs(b.energy - r.energy) < 1e-6, (seed, b.energy, r.energy)
        assert b.steps == r.steps, seed
        print(f"cell={cell}: {b.atoms.get_chemical_formula()} converged in {b.steps} steps, "
              f"|E - E_ase| = {abs(b.energy - r.energy):.2g} eV")


def test_bad_structures_reported_others_relax(seed):
    """(d) Unknown elements, overlapping atoms and a cell relaxation without pbc are reported by
    source; the good structures in the same batch relax exactly as alone."""
    rng = np.random.default_rng(seed)
    model = random_model(seed)
    good = [strained_si(rng), rattled_cu(rng, (1, 1, 2))]
    gold = Atoms("Au2", positions=[[0, 0, 0], [0, 0, 2.5]], cell=[5, 5, 5], pbc=True)
    overlap = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.05]], cell=[5, 5, 5], pbc=True)
    structures = [good[0], gold, overlap, good[1]]
    sources = [f"in.xyz, frame {i}" for i in range(4)]
    seen = []
    results = relax_batch(structures, model, fmax=1e-9, steps=10, sources=sources, progress=seen.append)
    assert sorted(r.index for r in seen) == [0, 1, 2, 3]
    assert [r.source for r in results] == sources
    assert not results[1].ok and "Au" in results[1].error
    assert not results[2].ok and "overlap" in results[2].error
    reference = one_by_one(good, model, 1e-9, 10, cell=False)
    assert_same([results[0], results[3]], reference, seed)

    cluster_atoms = cluster(rng)
    with_cluster = relax_batch([good[0], cluster_atoms], model, fmax=1e-9, steps=3, cell=True)
    assert with_cluster[0].ok and not with_cluster[1].ok and "periodic" in with_cluster[1].error


def test_failure_during_relaxation_leaves_the_others(seed, monkeypatch):
    """A structure whose graph cannot be built mid-run (atoms ran into each other) is reported
    with its step count; the rest of the batch carries on unchanged."""
    import mace_fast.md.batch_relax as br

    rng = np.random.default_rng(seed)
    model = random_model(seed)
    structures = [strained_si(rng), cluster(rng), rattled_cu(rng, (1, 1, 2))]
    real, calls = br._build_batch, []

    def failing_fourth_time(*args, **kwargs):
        calls.append(len(args[0]))
        if len(calls) == 4:  # all three in the batch, after 3 steps: fail the second
            raise br._StructureError(1, "atoms 0 and 1 are at the same place")
        return real(*args, **kwargs)

    monkeypatch.setattr(br, "_build_batch", failing_fourth_time)
    results = relax_batch(structures, model, fmax=1e-9, steps=10)
    assert calls[:5] == [3, 3, 3, 3, 2]
    assert not results[1].ok and results[1].steps == 3 and "after 3 steps" in results[1].error
    reference = one_by_one([structures[0], structures[2]], model, 1e-9, 10, cell=False)
    assert_same([results[0], results[2]], reference, seed)


def test_float32_and_step_zero(seed):
    """dtype casts a copy of the model; steps=0 is a single evaluation, like ASE's."""
    rng = np.random.default_rng(seed)
    model = random_model(seed)
    structures = [strained_si(rng), cluster(rng)]
    r64 = relax_batch(structures, model, fmax=1e-9, steps=5)
    r32 = relax_batch(structures, model, fmax=1e-9, steps=5, dtype="float32")
    assert next(model.parameters()).dtype == torch.float64
    for a, b in zip(r64, r32):
        assert np.abs(a.atoms.positions - b.atoms.positions).max() < 1e-3, seed
    (r0,) = relax_batch(structures[:1], model, fmax=1e-9, steps=0)
    assert r0.steps == 0 and np.allclose(r0.atoms.positions, structures[0].positions)
    with pytest.raises(ValueError):
        relax_batch(structures, model, fmax=0.0)


def run_cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mace_fast.cli.relax", *map(str, args), "--no-progress"],
                          capture_output=True, text=True, timeout=120, env=env)


def test_cli_batched_equals_one_by_one(seed, tmp_path):
    """(e) ``mace-fast-relax`` batches FIRE by default; ``--one-by-one`` gives the same structures."""
    rng = np.random.default_rng(seed)
    model_file = tmp_path / "model.pt"
    random_model(seed).save(model_file)
    inp = tmp_path / "in.extxyz"
    ase.io.write(inp, [strained_si(rng), bulk("Au", "fcc", a=4.1), strained_si(rng)], format="extxyz")
    outs = {}
    for mode in ("batched", "one-by-one"):
        out = tmp_path / f"{mode}.extxyz"
        extra = ["--one-by-one"] if mode == "one-by-one" else []
        proc = run_cli(inp, "--model", model_file, "-o", out, "--cell", "--fmax", "0.05", "--steps", "20", *extra)
        assert proc.returncode == 1, proc.stderr
        assert f"{inp}, frame 1" in proc.stdout and "Au" in proc.stdout
        assert f"error: {inp}, frame 1" in proc.stderr
        assert "2 relaxed" in proc.stdout and "1 failed" in proc.stdout
        assert "Si2" in proc.stdout and "energy" in proc.stdout
        outs[mode] = ase.io.read(out, index=":")
    assert len(outs["batched"]) == 2
    for b, r in zip(outs["batched"], outs["one-by-one"]):
        assert np.abs(b.positions - r.positions).max() < 1e-7, seed  # extxyz keeps 8 decimals
        assert np.abs(b.cell.array - r.cell.array).max() < 1e-7, seed
        assert abs(b.get_potential_energy() - r.get_potential_energy()) < 1e-7, seed
        assert b.get_forces().shape == (2, 3) and b.get_stress().shape == (6,)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", [False, True])
def test_gpu_batch_follows_the_cpu_batch(seed, cell):
    """On CUDA the batch is built by the GPU cell list and the model runs its kernels: in
    float64 the trajectory equals the CPU one (matscipy list, torch reference)."""
    rng = np.random.default_rng(seed)
    model = random_model(seed)
    structures = [rattled_cu(rng), strained_si(rng), rattled_cu(rng, (1, 1, 2))]
    if not cell:
        structures.append(cluster(rng))
    cpu = relax_batch(structures, model, fmax=1e-9, steps=15, cell=cell, device="cpu")
    gpu = relax_batch(structures, model, fmax=1e-9, steps=15, cell=cell, device="cuda")
    for a, b in zip(cpu, gpu):
        assert a.ok and b.ok and a.steps == b.steps == 15, (seed, a.error, b.error)
        assert np.abs(a.atoms.positions - b.atoms.positions).max() < 1e-9, seed
        assert np.abs(a.atoms.cell.array - b.atoms.cell.array).max() < 1e-9, seed
        assert abs(a.energy - b.energy) < 1e-9 * max(1.0, abs(a.energy)), seed
