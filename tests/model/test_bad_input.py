"""Bad input through the calculator gets a clear error, never a NaN or a silent answer."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mace_fast import MaceFastCalculator

from .test_physics import make_model


@pytest.fixture(scope="module")
def calc():
    return MaceFastCalculator(make_model())


def test_unknown_element_is_named_with_the_model_elements(calc):
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = calc
    with pytest.raises(ValueError) as err:
        atoms.get_potential_energy()
    message = str(err.value)
    assert "Cu" in message and all(s in message for s in ("H", "C", "O", "Si"))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions(calc, bad):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions[3, 1] = bad
    atoms.calc = calc
    with pytest.raises(ValueError, match="3"):
        atoms.get_forces()


def test_atoms_on_top_of_each_other(calc):
    atoms = Atoms("CO", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    atoms.calc = calc
    with pytest.raises(ValueError, match="0.*1|1.*0"):
        atoms.get_potential_energy()


def test_singular_cell_with_pbc(calc):
    atoms = Atoms("Si2", positions=[[0, 0, 0], [1.3, 1.3, 1.3]], cell=[[5, 0, 0], [10, 0, 0], [0, 0, 5]], pbc=True)
    atoms.calc = calc
    with pytest.raises(ValueError, match="cell"):
        atoms.get_potential_energy()


def test_stress_of_a_molecule_is_not_invented(calc):
    from ase.calculators.calculator import PropertyNotImplementedError

    atoms = Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]])
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()
