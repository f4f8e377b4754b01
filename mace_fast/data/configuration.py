"""Reference structures and labels read from extended XYZ files (or ASE Atoms).

Labels are looked up by name (see :class:`DataKeys`, defaults as in mace-torch) in
``atoms.info`` (per structure) or ``atoms.arrays`` (per atom), and then in the results of
a ``SinglePointCalculator``: ASE's extxyz reader moves the plain keys ``energy``,
``forces`` and ``stress`` there. A label a frame does not have is ``None``; the graph
builder then gives that property weight 0 for the frame.

Stress and virials are stored as 3x3 matrices. Files may give them as a 3x3 matrix, as 9
numbers (row-major) or as 6 Voigt numbers in ASE order ``xx yy zz yz xz xy``. Stress keeps
ASE's sign convention (positive = tensile, ``stress = (1/V) dE/d(strain)``); it is never
flipped here.
"""

import os
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import ase
import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io.formats import string2index

from .errors import InputError, location


@dataclass(frozen=True)
class DataKeys:
    """Names of the labels in ``atoms.info`` / ``atoms.arrays`` (mace-torch defaults)."""

    energy_key: str = "REF_energy"
    forces_key: str = "REF_forces"
    stress_key: str = "REF_stress"
    virials_key: str = "REF_virials"
    weight_key: str = "config_weight"
    config_type_key: str = "config_type"


@dataclass
class Configuration:
    """One structure with its (optional) reference labels and its origin.

    Property weights come from ``atoms.info["config_<property>_weight"]`` (the
    mace-torch convention) and default to 1; a missing label overrides them to 0
    in the graph.
    """

    atomic_numbers: np.ndarray  # [N] int64
    positions: np.ndarray  # [N, 3] float64, Angstrom
    cell: np.ndarray  # [3, 3] float64, rows are lattice vectors (zeros if none)
    pbc: Tuple[bool, bool, bool]
    energy: Optional[float] = None  # eV
    forces: Optional[np.ndarray] = None  # [N, 3] eV/Angstrom
    stress: Optional[np.ndarray] = None  # [3, 3] eV/Angstrom^3, ASE sign
    virials: Optional[np.ndarray] = None  # [3, 3] eV
    weight: float = 1.0
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    stress_weight: float = 1.0
    virials_weight: float = 1.0
    config_type: str = "Default"
    source: Optional[str] = None  # file it was read from
    frame: Optional[int] = None  # frame index in that file, from 0

    @property
    def where(self) -> str:
        """Origin for error messages, e.g. ``"train.xyz, frame 3"``."""
        return location(self.source, self.frame)


def read_configurations(
    path: Union[str, os.PathLike],
    keys: DataKeys = DataKeys(),
    index: Union[str, int, slice] = ":",
) -> List[Configuration]:
    """Read the frames ``index`` (ASE syntax, e.g. ``":"``, ``"10:20"``, ``-1``) of an
    extended XYZ file. Always returns a list; frames keep their index in the file.

    Raises:
        InputError: the file is missing or unreadable (names the file), the index selects
            nothing, or a frame has a malformed or non-finite label or position (names the
            file, the frame and the key).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        # Read everything so that selected frames keep their true index for errors.
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as error:  # ASE raises many types for malformed files
        raise InputError(
            f"{path}: cannot be read as extended XYZ ({type(error).__name__}: {error})"
        ) from error
    if not frames:
        raise InputError(f"{path}: the file contains no frames")

    try:
        selector = string2index(index) if isinstance(index, str) else index
        selected = range(len(frames))[selector]
    except (IndexError, TypeError, ValueError) as error:
        raise InputError(
            f"{path}: index {index!r} is invalid for a file of {len(frames)} frames"
        ) from error
    if isinstance(selected, int):
        selected = [selected]
    if len(selected) == 0:
        raise InputError(f"{path}: index {index!r} selects no frames of {len(frames)}")
    return [
        configuration_from_atoms(frames[i], keys, source=path, frame=i) for i in selected
    ]


def configuration_from_atoms(
    atoms: ase.Atoms,
    keys: DataKeys = DataKeys(),
    source: Optional[str] = None,
    frame: Optional[int] = None,
) -> Configuration:
    """Convert one ``ase.Atoms``; labels it lacks are None.

    ``source``/``frame`` only label error messages and the result. Results of a live
    calculator are ignored: only a ``SinglePointCalculator`` holds stored labels.
    """
    where = location(source, frame)
    num_atoms = len(atoms)
    positions = np.array(atoms.positions, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise InputError(
            f"{where}: key 'positions': position of atom {bad[0]} is not finite: "
            f"{positions[bad[0]].tolist()}"
        )
    cell = np.array(atoms.cell.array, dtype=np.float64)
    if not np.isfinite(cell).all():
        raise InputError(f"{where}: the cell has non-finite entries: {cell.tolist()}")

    def label(key: str, per_atom: bool):
        value = (atoms.arrays if per_atom else atoms.info).get(key)
        if value is None and isinstance(atoms.calc, SinglePointCalculator):
            value = atoms.calc.results.get(key)
        return value

    def number(key: str, value, default, non_negative: bool = False) -> Optional[float]:
        if value is None:
            return default
        array = as_finite_array(value, where, key)
        if array.size != 1:
            raise InputError(f"{where}: key {key!r} must be one number, got {value!r}")
        result = float(array.reshape(()))
        if non_negative and result < 0:
            raise InputError(f"{where}: key {key!r} must be >= 0, got {result}")
        return result

    forces = label(keys.forces_key, per_atom=True)
    if forces is not None:
        forces = as_finite_array(forces, where, keys.forces_key)
        if forces.shape != (num_atoms, 3):
            raise InputError(
                f"{where}: key {keys.forces_key!r} must have shape [{num_atoms}, 3], "
                f"got {forces.shape}"
            )

    info = atoms.info
    return Configuration(
        atomic_numbers=np.array(atoms.numbers, dtype=np.int64),
        positions=positions,
        cell=cell,
        pbc=tuple(bool(p) for p in atoms.pbc),
        energy=number(keys.energy_key, label(keys.energy_key, per_atom=False), None),
        forces=forces,
        stress=_as_3x3(label(keys.stress_key, per_atom=False), where, keys.stress_key),
        virials=_as_3x3(label(keys.virials_key, per_atom=False), where, keys.virials_key),
        weight=number(keys.weight_key, info.get(keys.weight_key), 1.0, True),
        energy_weight=number(
            "config_energy_weight", info.get("config_energy_weight"), 1.0, True
        ),
        forces_weight=number(
            "config_forces_weight", info.get("config_forces_weight"), 1.0, True
        ),
        stress_weight=number(
            "config_stress_weight", info.get("config_stress_weight"), 1.0, True
        ),
        virials_weight=number(
            "config_virials_weight", info.get("config_virials_weight"), 1.0, True
        ),
        config_type=str(info.get(keys.config_type_key, "Default")),
        source=source,
        frame=frame,
    )


def as_finite_array(value, where: str, key: str) -> np.ndarray:
    """Finite float64 array, or an InputError naming the key."""
    try:
        if np.asarray(value).dtype == bool:  # extxyz parses "T"/"F" as booleans
            raise TypeError("booleans are not labels")
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{where}: key {key!r} is not numeric: {value!r}") from error
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        at = f" at index {bad.tolist()}" if bad.size else ""
        raise InputError(
            f"{where}: key {key!r} is not finite{at} (value {array[tuple(bad)]})"
        )
    return array


def _as_3x3(value, where: str, key: str) -> Optional[np.ndarray]:
    """3x3 matrix from 3x3, 9 (row-major) or 6 Voigt (xx yy zz yz xz xy) numbers."""
    if value is None:
        return None
    array = as_finite_array(value, where, key)
    if array.shape == (3, 3):
        return array
    if array.shape == (9,):
        return array.reshape(3, 3)
    if array.shape == (6,):
        xx, yy, zz, yz, xz, xy = array
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise InputError(
        f"{where}: key {key!r} must be a 3x3 matrix, 9 or 6 (Voigt) numbers, "
        f"got shape {array.shape}"
    )
