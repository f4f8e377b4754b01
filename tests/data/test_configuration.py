"""Reading labelled structures from extended XYZ."""

import ase
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from mace_fast.data.configuration import (
    DataKeys,
    configuration_from_atoms,
    read_configurations,
)
from mace_fast.data.errors import InputError

from .structures import random_cell, random_positions


def _symmetric(rng):
    a = rng.normal(size=(3, 3))
    return a + a.T


def _voigt(matrix):
    """ASE Voigt order xx yy zz yz xz xy."""
    return matrix[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


def _atoms(rng, num_atoms=5, pbc=True):
    cell = random_cell(rng)
    flags = (pbc,) * 3
    positions = random_positions(rng, num_atoms, cell, flags)
    numbers = rng.choice([1, 6, 8], num_atoms)
    return ase.Atoms(numbers=numbers, positions=positions, cell=cell, pbc=flags)


def test_round_trip(tmp_path, np_rng):
    frames = [_atoms(np_rng) for _ in range(4)]
    energies = np_rng.normal(size=4)
    forces = [np_rng.normal(size=(len(a), 3)) for a in frames]
    stresses = [_symmetric(np_rng) for _ in frames]
    virials = np_rng.normal(size=(3, 3))  # asymmetric: catches a transposed read
    for a, e, f in zip(frames, energies, forces):
        a.info["REF_energy"] = e
        a.arrays["REF_forces"] = f
    frames[0].info["REF_stress"] = stresses[0]  # 3x3
    frames[1].info["REF_stress"] = _voigt(stresses[1])  # Voigt 6
    frames[1].info["REF_virials"] = virials.reshape(9)  # 9 numbers, row-major
    frames[2].info["REF_stress"] = stresses[2].reshape(9)
    frames[2].info["config_type"] = "bulk"
    frames[2].info["config_weight"] = 2.5
    frames[2].info["config_forces_weight"] = 0.5
    del frames[3].info["REF_energy"]  # a frame without energy
    path = tmp_path / "train.xyz"
    ase.io.write(path, frames, format="extxyz")

    configs = read_configurations(path)
    assert [c.frame for c in configs] == [0, 1, 2, 3]
    assert all(c.source == str(path) for c in configs)
    for c, a, e, f in zip(configs, frames, energies, forces):
        np.testing.assert_array_equal(c.atomic_numbers, a.numbers)
        np.testing.assert_allclose(c.positions, a.positions, atol=1e-7)
        np.testing.assert_allclose(c.cell, a.cell.array, atol=1e-7)
        assert c.pbc == (True, True, True)
        np.testing.assert_allclose(c.forces, f, atol=1e-7)
    for k in range(3):
        np.testing.assert_allclose(configs[k].energy, energies[k], atol=1e-7)
        np.testing.assert_allclose(configs[k].stress, stresses[k], atol=1e-7)
    np.testing.assert_allclose(configs[1].virials, virials, atol=1e-7)
    assert configs[0].virials is None
    assert configs[3].energy is None and configs[3].stress is None
    assert (configs[0].config_type, configs[0].weight) == ("Default", 1.0)
    assert (configs[2].config_type, configs[2].weight) == ("bulk", 2.5)
    assert (configs[2].forces_weight, configs[2].energy_weight) == (0.5, 1.0)

    selected = read_configurations(path, index="1:3")
    assert [c.frame for c in selected] == [1, 2]
    assert [c.frame for c in read_configurations(path, index=-1)] == [3]


def test_plain_keys_come_from_the_single_point_calculator(tmp_path, np_rng):
    atoms = _atoms(np_rng)
    energy, forces, stress = 1.25, np_rng.normal(size=(len(atoms), 3)), _symmetric(np_rng)
    atoms.calc = SinglePointCalculator(
        atoms, energy=energy, forces=forces, stress=_voigt(stress)
    )
    path = tmp_path / "plain.xyz"
    ase.io.write(path, atoms, format="extxyz")

    keys = DataKeys(energy_key="energy", forces_key="forces", stress_key="stress")
    (config,) = read_configurations(path, keys)
    np.testing.assert_allclose(config.energy, energy)
    np.testing.assert_allclose(config.forces, forces, atol=1e-7)
    np.testing.assert_allclose(config.stress, stress, atol=1e-7)
    # With the default REF_ keys the same file has no labels.
    (unlabelled,) = read_configurations(path)
    assert unlabelled.energy is None and unlabelled.forces is None


def test_live_calculator_results_are_not_labels(np_rng):
    from ase.calculators.lj import LennardJones

    atoms = _atoms(np_rng)
    atoms.calc = LennardJones()
    atoms.get_potential_energy()
    config = configuration_from_atoms(atoms, DataKeys(energy_key="energy"))
    assert config.energy is None
    assert config.source is None and config.frame is None


def test_molecule_without_cell(np_rng):
    atoms = _atoms(np_rng, pbc=False)
    atoms.cell = np.zeros((3, 3))
    config = configuration_from_atoms(atoms)
    assert config.pbc == (False, False, False)
    np.testing.assert_array_equal(config.cell, np.zeros((3, 3)))


# ---------------------------------------------------------------- bad input


def _write_with(tmp_path, rng, frame, edit, name="bad.xyz"):
    frames = [_atoms(rng) for _ in range(4)]
    for a in frames:
        a.info["REF_energy"] = 0.0
        a.arrays["REF_forces"] = np.zeros((len(a), 3))
    edit(frames[frame])
    path = tmp_path / name
    ase.io.write(path, frames, format="extxyz")
    return path


@pytest.mark.parametrize(
    "key, edit",
    [
        ("REF_forces", lambda a: a.arrays["REF_forces"].__setitem__((1, 2), np.nan)),
        ("REF_energy", lambda a: a.info.__setitem__("REF_energy", np.inf)),
        ("REF_stress", lambda a: a.info.__setitem__("REF_stress", [1, 2, 3, np.nan, 5, 6])),
        ("REF_virials", lambda a: a.info.__setitem__("REF_virials", np.full(9, -np.inf))),
        ("config_weight", lambda a: a.info.__setitem__("config_weight", np.nan)),
        ("positions", lambda a: a.positions.__setitem__((3, 0), np.nan)),
    ],
)
def test_non_finite_value_names_file_frame_and_key(tmp_path, np_rng, key, edit):
    path = _write_with(tmp_path, np_rng, 2, edit)
    with pytest.raises(InputError) as error:
        read_configurations(path)
    message = str(error.value)
    assert str(path) in message and "frame 2" in message and repr(key) in message
    if key == "positions":
        assert "atom 3" in message


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("REF_stress", [1.0, 2.0, 3.0, 4.0], "3x3 matrix, 9 or 6"),
        ("REF_energy", "high", "not numeric"),
        ("REF_energy", [1.0, 2.0], "one number"),
        ("REF_energy", True, "not numeric"),
        ("config_weight", -1.0, ">= 0"),
    ],
)
def test_malformed_label(tmp_path, np_rng, key, value, message):
    path = _write_with(tmp_path, np_rng, 1, lambda a: a.info.__setitem__(key, value))
    with pytest.raises(InputError, match=message) as error:
        read_configurations(path)
    assert "frame 1" in str(error.value) and str(path) in str(error.value)


def test_forces_of_the_wrong_shape(np_rng):
    atoms = _atoms(np_rng)
    atoms.arrays["REF_forces"] = np.zeros((len(atoms), 2))
    with pytest.raises(InputError, match=r"x.xyz, frame 7: key 'REF_forces'.*shape"):
        configuration_from_atoms(atoms, DataKeys(), source="x.xyz", frame=7)


def test_unreadable_files(tmp_path):
    missing = tmp_path / "missing.xyz"
    with pytest.raises(InputError, match=f"{missing}: no such file"):
        read_configurations(missing)
    with pytest.raises(InputError, match="no such file"):
        read_configurations(tmp_path)  # a directory
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is\nnot an xyz file\n")
    with pytest.raises(InputError, match=f"{garbage}: cannot be read as extended XYZ"):
        read_configurations(garbage)
    truncated = tmp_path / "truncated.xyz"
    truncated.write_text('3\nLattice="5 0 0 0 5 0 0 0 5" pbc="T T T"\nH 0 0 0\nH 1 0 0\n')
    with pytest.raises(InputError, match=f"{truncated}: cannot be read"):
        read_configurations(truncated)
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(InputError, match=str(empty)):
        read_configurations(empty)


def test_index_out_of_range(tmp_path, np_rng):
    path = _write_with(tmp_path, np_rng, 0, lambda a: None)
    with pytest.raises(InputError, match="invalid for a file of 4 frames"):
        read_configurations(path, index=7)
    with pytest.raises(InputError, match="invalid for a file of 4 frames"):
        read_configurations(path, index="first")
    with pytest.raises(InputError, match="selects no frames"):
        read_configurations(path, index="5:")
