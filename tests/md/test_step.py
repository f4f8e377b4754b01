"""ModelStep: the Verlet list and the ghost-padded static batch give the exact results.

Oracle: the same model evaluated on a fresh, exact neighbour list at every step (skin 0,
no padding). Edges in the skin and the ghost padding must add exactly nothing.
"""

import os

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from mace_fast.calculator import MaceFastCalculator
from mace_fast.config import ModelConfig
from mace_fast.model import MACE
from mace_fast.step import ModelStep


def random_model(seed: int, hidden: str = "8x0e+8x1o", zbl: bool = False) -> MACE:
    torch.manual_seed(seed)
    config = ModelConfig(
        atomic_numbers=[1, 6, 8, 14, 29], atomic_energies=[-1.0, -2.0, -3.0, -4.0, -5.0], r_max=4.0,
        num_bessel=6, max_ell=2, hidden_irreps=hidden, mlp_irreps="8x0e", radial_mlp=[16, 16],
        avg_num_neighbors=8.0, scale=20.0, shift=0.1, pair_repulsion=zbl,
        interaction_first="RealAgnosticDensityInteractionBlock" if zbl else "RealAgnosticInteractionBlock",
    )
    return MACE(config).double()


def structures(rng):
    si = bulk("Si", "diamond", a=5.43) * (2, 2, 1)
    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    mol = molecule("CH3CH2OH")
    tiny = Atoms("Si2", positions=[[0, 0, 0], [1.3, 1.4, 1.2]], cell=np.diag([2.7, 2.9, 3.1]) + 0.2, pbc=True)
    out = [si, slab, mol, tiny]
    for atoms in out:
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
    return out


@pytest.fixture
def np_rng():
    return np.random.default_rng(int.from_bytes(os.urandom(4), "little"))


@pytest.mark.parametrize("zbl", [False, True])
def test_skin_and_padding_are_exact(np_rng, zbl):
    model = random_model(int(np_rng.integers(1 << 30)), zbl=zbl)
    for atoms in structures(np_rng):
        stress = bool(atoms.pbc.all())
        exact = ModelStep(model, skin=0.0)
        padded = ModelStep(model, skin=0.6, static_shapes=True)
        for i in range(6):
            a = exact(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, stress)
            b = padded(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, stress)
            # Not a trivial comparison: forces far above the 1e-11 tolerance (a random model's
            # forces on a near-ideal Si cell can be as small as ~1e-3, so the bar is set lower).
            assert abs(a.energy) > 1e-3 and np.abs(a.forces).max() > 1e-6
            assert b.energy == pytest.approx(a.energy, rel=1e-12, abs=1e-12)
            np.testing.assert_allclose(b.forces, a.forces, rtol=0, atol=1e-11)
            np.testing.assert_allclose(b.energies, a.energies, rtol=0, atol=1e-11)
            if stress:
                np.testing.assert_allclose(b.stress, a.stress, rtol=0, atol=1e-11)
            # Small moves (the list is kept) and, twice, one atom far enough to force a rebuild.
            atoms.positions += np_rng.normal(0, 0.02, atoms.positions.shape)
            if i in (1, 3):
                atoms.positions[np_rng.integers(len(atoms))] += 0.35
        assert padded._ghosts >= 2 and padded._capacity > 0
        # The ghosts take an element of the structure: no group of their own in the GEMMs.
        assert [int(z) for z, _ in padded._groups] == sorted(set(padded.elements.index(atoms.numbers).tolist()))
        assert exact.num_builds == 6 and 3 <= padded.num_builds <= 4


def test_rebuild_rules(np_rng):
    model = random_model(1)
    atoms = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    step = ModelStep(model, skin=0.4, static_shapes=True)
    call = lambda: step(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, True)  # noqa: E731
    call()
    assert step.num_builds == 1
    atoms.positions[3] += [0.19, 0, 0]  # less than skin / 2
    call()
    assert step.num_builds == 1
    atoms.positions[3] += [0.02, 0, 0]  # now 0.21 > 0.2 from where the list was built
    call()
    assert step.num_builds == 2
    atoms.set_cell(atoms.cell.array * 1.001, scale_atoms=False)  # any cell change
    call()
    assert step.num_builds == 3
    atoms.numbers[0] = 14 if atoms.numbers[0] != 14 else 6  # a new composition: a fresh layout
    capacity = step._capacity
    call()
    assert step.num_builds == 4 and step._capacity >= capacity


@pytest.mark.parametrize("static_shapes", [False, True])
def test_atoms_in_spatial_order_inside_results_in_callers_order(np_rng, monkeypatch, static_shapes):
    """A shuffled, mixed structure: the step sorts its atoms (again every rebuild here), and
    forces and per-atom energies still come back for the caller's atoms."""
    import mace_fast.step as step_module

    monkeypatch.setattr(step_module, "_RESORT_BUILDS", 1)
    model = random_model(int(np_rng.integers(1 << 30)))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    atoms.numbers[np_rng.choice(len(atoms), 20, replace=False)] = 6
    atoms.rattle(0.05, seed=int(np_rng.integers(1 << 30)))
    atoms = atoms[np_rng.permutation(len(atoms))]
    sorted_step = ModelStep(model, skin=0.4, static_shapes=static_shapes)
    plain = ModelStep(model, skin=0.0, sort_atoms=False)
    orders = []
    for i in range(4):
        a = plain(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, True)
        b = sorted_step(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, True)
        assert np.abs(a.forces).max() > 1e-3
        assert b.energy == pytest.approx(a.energy, rel=1e-12)
        np.testing.assert_allclose(b.forces, a.forces, rtol=0, atol=1e-11)
        np.testing.assert_allclose(b.energies, a.energies, rtol=0, atol=1e-11)
        np.testing.assert_allclose(b.stress, a.stress, rtol=0, atol=1e-12)
        assert plain._order is None and sorted_step._order is not None
        orders.append(sorted_step._order.copy())
        atoms.positions += np_rng.normal(0, 0.15, atoms.positions.shape)  # a rebuild each time
    assert sorted_step.num_builds == 4
    assert any(not np.array_equal(o, orders[0]) for o in orders[1:])  # re-sorted as atoms moved


def test_layout_change_and_unknown_element():
    model = random_model(2)
    step = ModelStep(model, skin=0.3, static_shapes=True)
    si = bulk("Si", "diamond", a=5.43)
    small = step(si.positions, si.numbers, si.cell.array, si.pbc, True)
    big = si * (2, 1, 1)
    large = step(big.positions, big.numbers, big.cell.array, big.pbc, True)
    assert large.energy == pytest.approx(2 * small.energy, rel=1e-10)
    from mace_fast.data.errors import InputError

    with pytest.raises(InputError, match="Fe"):
        step(si.positions, [26, 14], si.cell.array, si.pbc, True)


def test_calculator_md_loop_matches_fresh_lists(np_rng):
    """Through ASE: a calculator with a skin gives the forces of one without, step after step."""
    from ase.md.verlet import VelocityVerlet

    model = random_model(int(np_rng.integers(1 << 30)))
    atoms = bulk("Si", "diamond", a=5.43) * (2, 2, 1)
    atoms.set_momenta(np_rng.normal(0.0, 0.5, (len(atoms), 3)))  # hot: about 2000 K for Si
    atoms.calc = MaceFastCalculator(model, skin=0.5)
    atoms.calc.step.static_shapes = True
    fresh = MaceFastCalculator(model, skin=0.0)
    dyn = VelocityVerlet(atoms, timestep=2.0 * 0.09822694788464063)  # 2 fs in ASE units
    for _ in range(5):
        dyn.run(4)
        check = atoms.copy()
        check.calc = fresh
        np.testing.assert_allclose(atoms.get_forces(), check.get_forces(), rtol=0, atol=1e-11)
        np.testing.assert_allclose(atoms.get_stress(), check.get_stress(), rtol=0, atol=1e-12)
    assert atoms.calc.step.num_builds < 21


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_graph_step_matches_eager(np_rng, dtype):
    """The captured step replays the eager result (kernels or not) across list rebuilds."""
    model = random_model(int(np_rng.integers(1 << 30)), hidden="16x0e+16x1o", zbl=True).to("cuda", dtype)
    model.set_backend("auto")
    graph = ModelStep(model, skin=0.5)
    eager = ModelStep(model, skin=0.0, cuda_graph=False)
    assert graph.use_graph
    atoms = bulk("Si", "diamond", a=5.43) * (3, 3, 3)
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    for i in range(8):
        # Rattled first: in the perfect crystal the forces vanish by symmetry, and comparing
        # rounding noise (which the summation order sets) to itself says nothing.
        atoms.positions += np_rng.normal(0, 0.05 if i % 3 else 0.3, atoms.positions.shape)
        a = eager(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, True)
        b = graph(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, True)
        scale = np.abs(a.forces).max()
        assert np.abs(b.forces - a.forces).max() <= tol * scale
        assert abs(b.energy - a.energy) <= tol * abs(a.energy)
        np.testing.assert_allclose(b.stress, a.stress, rtol=0, atol=tol * np.abs(a.stress).max())
    assert graph.num_builds >= 2
    assert graph.num_captures <= 2  # recaptured only when the edge count outgrew the capacity
    assert graph._symmetric  # the captured step ran its radial MLPs once per pair of edges


@pytest.mark.gpu
def test_cuda_graph_step_resorts_atoms_in_place(np_rng, monkeypatch):
    """Re-sorting the atoms of a captured step (every rebuild here) updates its batch in
    place: no recapture, and the replay still matches an eager, unsorted step."""
    import mace_fast.step as step_module

    monkeypatch.setattr(step_module, "_RESORT_BUILDS", 1)
    model = random_model(int(np_rng.integers(1 << 30)), hidden="16x0e+16x1o").to("cuda", torch.float64)
    model.set_backend("auto")
    atoms = bulk("Si", "diamond", a=5.43) * (3, 3, 3)
    atoms.numbers[np_rng.choice(len(atoms), 15, replace=False)] = 8
    atoms = atoms[np_rng.permutation(len(atoms))]
    graph = ModelStep(model, skin=0.5)
    eager = ModelStep(model, skin=0.0, cuda_graph=False, sort_atoms=False)
    for i in range(5):
        atoms.positions += np_rng.normal(0, 0.2, atoms.positions.shape)  # a rebuild each step
        a = eager(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, True)
        b = graph(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc, True)
        assert np.abs(a.forces).max() > 1e-3
        np.testing.assert_allclose(b.forces, a.forces, rtol=0, atol=1e-10 * np.abs(a.forces).max())
        np.testing.assert_allclose(b.energies, a.energies, rtol=0, atol=1e-10 * np.abs(a.energies).max())
        assert abs(b.energy - a.energy) <= 1e-10 * abs(a.energy)
    assert graph.num_builds == 5 and graph._order is not None
    assert graph.num_captures <= 2  # only when the edge count outgrew the capacity
