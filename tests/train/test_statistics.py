"""E0s, neighbour counts and scale/shift from the training set, checked against known numbers."""

from __future__ import annotations

import ase
import numpy as np
import pytest
import torch
from ase.build import bulk

from mace_fast.data.configuration import Configuration, configuration_from_atoms
from mace_fast.data.errors import InputError
from mace_fast.data.graph import ElementTable, graph_from_configuration
from mace_fast.train.statistics import average_num_neighbors, fit_e0s, resolve_e0s, scale_and_shift

TABLE = ElementTable([13, 29])  # Al, Cu


def _config(numbers, energy, forces=None) -> Configuration:
    n = len(numbers)
    return Configuration(atomic_numbers=np.array(numbers), positions=np.arange(3 * n, dtype=float).reshape(n, 3) * 3,
                         cell=np.zeros((3, 3)), pbc=(False, False, False), energy=energy, forces=forces)  # fmt: skip


def test_least_squares_recovers_e0s():
    rng = np.random.default_rng(0)
    e0 = {13: -2.5, 29: -1.25}
    configs = []
    for _ in range(30):
        numbers = rng.choice([13, 29], size=rng.integers(2, 9)).tolist()
        configs.append(_config(numbers, sum(e0[z] for z in numbers) + rng.normal(0, 1e-3)))
    configs.append(_config([29], None))  # no energy: ignored
    fitted = fit_e0s(configs, TABLE)
    assert np.allclose(fitted, [-2.5, -1.25], atol=2e-3)
    exact = [_config([13, 29, 29], -5.0), _config([13], -2.5), _config([29, 29], -2.5)]
    assert np.allclose(fit_e0s(exact, TABLE), [-2.5, -1.25], atol=1e-12)


def test_isolated_given_and_foundation_e0s():
    iso = [_config([13], -0.3), _config([29], -0.7)]
    train = [_config([13, 29, 29], -6.0), _config([29, 29], -4.0)]
    assert resolve_e0s("isolated", train, iso, TABLE).tolist() == [-0.3, -0.7]
    with pytest.raises(InputError, match="no isolated-atom frame for Cu"):
        resolve_e0s("isolated", train, iso[:1], TABLE)
    assert resolve_e0s({"Al": 1.0, "Cu": 2.0}, train, [], TABLE).tolist() == [1.0, 2.0]
    with pytest.raises(InputError, match="no E0 given for Al"):
        resolve_e0s({"Cu": 2.0}, train, [], TABLE)
    # Foundation knows Cu (-2.0); Al is fitted on what is left: -6 - 2 * (-2) = -2.
    assert resolve_e0s("foundation", train, [], TABLE, foundation={29: -2.0}).tolist() == [-2.0, -2.0]
    assert resolve_e0s({"Al": 0.5}, train, [], TABLE, foundation={29: -2.0}).tolist() == [0.5, -2.0]


def test_average_num_neighbors_of_fcc():
    """fcc with a = 3.6 Å and r_max 3.0 Å: exactly the 12 nearest neighbours (2.55 Å)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    config = configuration_from_atoms(atoms)
    graph = graph_from_configuration(config, 3.0, ElementTable([29]), torch.float64)
    assert average_num_neighbors([graph]) == 12.0
    isolated = graph_from_configuration(configuration_from_atoms(ase.Atoms("Cu")), 3.0, ElementTable([29]))
    assert average_num_neighbors([graph, isolated]) == 48 / 5  # an atom without neighbours counts as 0


def test_scale_and_shift():
    forces_a = np.array([[3.0, 0.0, 0.0], [0.0, -3.0, 0.0]])
    forces_b = np.array([[0.0, 0.0, 0.0]])
    configs = [_config([29, 29], -1.0, forces_a), _config([13], 3.0, forces_b)]
    e0s = np.array([1.0, -1.0])  # Al, Cu
    # Per-atom interaction energies: (-1 - (-2)) / 2 = 0.5 and (3 - 1) / 1 = 2.0.
    scale, shift = scale_and_shift(configs, TABLE, e0s, "rms_forces", "mean")
    assert scale == pytest.approx(np.sqrt(18.0 / 9.0)) and shift == pytest.approx(1.25)
    scale, shift = scale_and_shift(configs, TABLE, e0s, "std_energy", "zero")
    assert scale == pytest.approx(0.75) and shift == 0.0
    assert scale_and_shift(configs, TABLE, e0s, "none", "zero") == (1.0, 0.0)
