"""Physical properties of the reference model, on fresh random models and structures.

Invariance of the energy (rotation, translation, permutation), covariance of forces and
stress, forces and stress equal to central finite differences, extensivity.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from mace_fast import MACE, MaceFastCalculator, ModelConfig
from mace_fast.nn.clebsch_gordan import random_rotation

ELEMENTS = [1, 6, 8, 14]


def make_model(hidden="16x0e+16x1o+16x2e", interaction_first="RealAgnosticResidualInteractionBlock", **kw) -> MACE:
    rng = np.random.default_rng()
    config = ModelConfig(
        atomic_numbers=ELEMENTS,
        atomic_energies=list(rng.normal(-2, 1, len(ELEMENTS))),
        r_max=4.0,
        num_bessel=6,
        hidden_irreps=hidden,
        mlp_irreps="8x0e",
        radial_mlp=[16, 16],
        avg_num_neighbors=10.0,
        scale=1.3,
        shift=0.2,
        interaction_first=interaction_first,
        **kw,
    )
    return MACE(config).double()


def random_cell_atoms(rng, n=6, size=5.0) -> Atoms:
    cell = np.eye(3) * size + rng.uniform(-0.6, 0.6, (3, 3))
    atoms = Atoms(numbers=rng.choice(ELEMENTS, n), cell=cell, pbc=True)
    frac = rng.uniform(0, 1, (n, 3))
    atoms.set_scaled_positions(frac)
    # keep atoms apart so the structure is physical
    while np.min(atoms.get_all_distances(mic=True) + np.eye(n) * 10) < 1.0:
        atoms.set_scaled_positions(rng.uniform(0, 1, (n, 3)))
    return atoms


MODELS = {
    "residual_l2": dict(),
    "plain_first_l1": dict(hidden="16x0e+16x1o", interaction_first="RealAgnosticInteractionBlock"),
    "density_zbl_agnesi": dict(
        hidden="16x0e+16x1o",
        interaction="RealAgnosticDensityResidualInteractionBlock",
        interaction_first="RealAgnosticDensityInteractionBlock",
        pair_repulsion=True,
        distance_transform="Agnesi",
    ),
    "scalars_only_three_layers": dict(hidden="16x0e", num_interactions=3, correlation=[3, 2, 1]),
}


@pytest.fixture(params=sorted(MODELS))
def calc(request):
    return MaceFastCalculator(make_model(**MODELS[request.param]))


def test_rotation_invariance_and_covariance(calc):
    rng = np.random.default_rng()
    atoms = random_cell_atoms(rng)
    atoms.calc = calc
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    rot = random_rotation(dtype=torch.float64).numpy()
    turned = atoms.copy()
    turned.set_cell(atoms.cell @ rot.T, scale_atoms=True)
    turned.calc = calc
    e2, f2, s2 = turned.get_potential_energy(), turned.get_forces(), turned.get_stress(voigt=False)
    assert abs(e2 - e) < 1e-10 * max(1.0, abs(e))
    np.testing.assert_allclose(f2, f @ rot.T, atol=1e-10)
    np.testing.assert_allclose(s2, rot @ s @ rot.T, atol=1e-10)
    assert np.linalg.norm(f) > 1e-3


def test_translation_and_permutation_invariance(calc):
    rng = np.random.default_rng()
    atoms = random_cell_atoms(rng)
    atoms.calc = calc
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    moved = atoms.copy()
    moved.positions += rng.normal(0, 3.0, 3)
    moved.calc = calc
    assert abs(moved.get_potential_energy() - e) < 1e-10 * max(1.0, abs(e))
    np.testing.assert_allclose(moved.get_forces(), f, atol=1e-10)
    perm = rng.permutation(len(atoms))
    shuffled = atoms[perm]
    shuffled.calc = calc
    assert abs(shuffled.get_potential_energy() - e) < 1e-10 * max(1.0, abs(e))
    np.testing.assert_allclose(shuffled.get_forces(), f[perm], atol=1e-10)
    np.testing.assert_allclose(shuffled.get_potential_energies(), atoms.get_potential_energies()[perm], atol=1e-10)


def test_forces_and_stress_are_finite_differences(calc):
    rng = np.random.default_rng()
    atoms = random_cell_atoms(rng, n=4)
    atoms.calc = calc
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False)
    h = 1e-5
    for i, k in [(0, 0), (1, 2), (3, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        plus.calc = minus.calc = calc
        fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert abs(fd - forces[i, k]) < 1e-6 * max(1.0, abs(forces[i, k]))
    volume = atoms.get_volume()
    for a, b in [(0, 0), (1, 2), (2, 2)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h / 2 if a != b else h
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell @ (np.eye(3) + sign * eps), scale_atoms=True)
            strained.calc = calc
            energies.append(strained.get_potential_energy())
        fd = (energies[0] - energies[1]) / (2 * h * volume)
        assert abs(fd - stress[a, b]) < 1e-6 * max(1.0, abs(stress[a, b]))


def test_supercell_energy_is_extensive(calc):
    rng = np.random.default_rng()
    atoms = random_cell_atoms(rng, n=3, size=3.2)  # smaller than r_max: many images
    atoms.calc = calc
    e = atoms.get_potential_energy()
    big = atoms.repeat((2, 2, 2))
    big.calc = calc
    assert abs(big.get_potential_energy() - 8 * e) < 1e-9 * max(1.0, abs(8 * e))
    np.testing.assert_allclose(big.get_forces()[: len(atoms)], atoms.get_forces(), atol=1e-9)


def test_isolated_atom_gets_finite_energy_and_zero_force(calc):
    model = calc.model
    atoms = Atoms("CO", positions=[[0, 0, 0], [20.0, 0, 0]], pbc=False)
    atoms.calc = calc
    e = atoms.get_potential_energy()
    assert np.isfinite(e)
    assert np.all(atoms.get_forces() == 0.0)
    # The two isolated atoms add up to the pair far apart, one by one.
    single = []
    for symbol in "CO":
        a = Atoms(symbol, positions=[[0, 0, 0]], pbc=False)
        a.calc = calc
        single.append(a.get_potential_energy())
    assert abs(sum(single) - e) < 1e-10
    assert model.config.shift != 0.0


def test_bulk_si_batch_of_two_equals_two_singles():
    from mace_fast.data.graph import ElementTable, build_graph, collate

    model = make_model()
    rng = np.random.default_rng()
    table = ElementTable(ELEMENTS)
    structures = [random_cell_atoms(rng), bulk("Si", "diamond", a=5.43, cubic=True)]
    graphs = [build_graph(a.positions, a.numbers, np.asarray(a.cell), a.pbc, 4.0, table, torch.float64) for a in structures]
    together = model(collate(graphs), compute_stress=True)
    for g, graph in enumerate(graphs):
        alone = model(graph, compute_stress=True)
        assert torch.allclose(together["energy"][g], alone["energy"][0], atol=1e-10)
        assert torch.allclose(together["stress"][g], alone["stress"][0], atol=1e-10)


def test_inference_step_treats_parameters_as_constants():
    """Forces outside training: the same numbers whether the parameters are trainable or
    not, no parameter gradient, and every flag restored; with ``training`` the parameter
    gradients through the forces still flow (against finite differences of one weight)."""
    from mace_fast.data.graph import ElementTable, build_graph

    model = make_model()
    rng = np.random.default_rng()
    atoms = random_cell_atoms(rng)
    graph = build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, 4.0,
                        ElementTable(ELEMENTS), torch.float64)
    params = dict(model.named_parameters())
    frozen = sorted(params)[::3]  # some stay frozen: the flags are restored, not set
    for name in frozen:
        params[name].requires_grad_(False)
    out = model(graph, compute_stress=True)
    assert [p.requires_grad for p in params.values()] == [n not in frozen for n in params]
    assert all(p.grad is None for p in params.values())
    model.requires_grad_(False)
    constant = model(graph, compute_stress=True)
    model.requires_grad_(True)
    for key in ("energy", "forces", "stress"):
        assert torch.equal(out[key], constant[key]), key
        assert out[key].abs().max() > 1e-6

    # Training: a loss on the forces reaches a weight.
    name = sorted(n for n in params if "radial_mlp" in n)[0]
    weight = params[name]
    loss = lambda: (model(graph, training=True)["forces"] ** 2).sum()  # noqa: E731
    loss().backward()
    analytic = weight.grad.flatten()[0].item()
    step = 1e-5

    def shifted(by):
        with torch.no_grad():
            weight.view(-1)[0] += by
        return loss().item()

    up, down = shifted(step), shifted(-2 * step)
    shifted(step)
    assert abs(analytic) > 1e-8
    assert abs(analytic - (up - down) / (2 * step)) < 1e-6 * max(1.0, abs(analytic))
