"""Neighbour lists for periodic, mixed-periodic and non-periodic structures.

The search itself is matscipy's cell-list algorithm. This module validates the input,
gives matscipy the non-degenerate cell it needs when some directions are not periodic,
and returns the edges in a deterministic order: sorted by receiver (the order the batch
contract in ``mace_fast.keys`` requires), then sender, then image shift.

Convention (as matscipy's and ASE's): for an edge ``(sender i, receiver j, shift S)``
the edge vector is ``positions[j] - positions[i] + S @ cell``.
"""

from typing import Optional, Sequence, Tuple

import numpy as np
from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list

from .errors import InputError

# A periodic lattice vector shorter than this (Angstrom) counts as missing.
_MIN_LATTICE_VECTOR = 1e-6
# Volume (area for two periodic directions) of the periodic lattice vectors divided by the
# product of their lengths; below this the cell is singular for all practical purposes
# (and a near-singular cell would make matscipy enumerate an absurd number of images).
_MIN_NORMALISED_VOLUME = 1e-6


def neighbour_list(
    positions: np.ndarray,
    cutoff: float,
    cell: Optional[np.ndarray] = None,
    pbc: Sequence[bool] = (False, False, False),
    min_distance: float = 1e-2,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All directed edges ``i -> j`` with ``|pos[j] - pos[i] + S @ cell| < cutoff``.

    Args:
        positions: [N, 3] Cartesian positions, Angstrom (N >= 1).
        cutoff: radial cutoff, Angstrom.
        cell: [3, 3] lattice vectors as rows, or None for a structure without a cell.
            Rows of non-periodic directions are ignored (they may be zero). Not modified.
        pbc: periodicity of the three cell directions.
        min_distance: two atoms (or an atom and a periodic image) closer than this, in
            Angstrom, are an error: they are almost surely a duplicated atom.

    Returns:
        sender [E] int64, receiver [E] int64, unit_shifts [E, 3] float64 (integer
        image counts of the sender), sorted by receiver, then sender, then shift.
        Only the self-edge with zero shift is dropped: an atom does see its own
        periodic images.

    Raises:
        InputError: non-finite positions (names the atom), overlapping atoms (names both),
            a missing or singular cell in a periodic direction, or malformed arguments.
    """
    positions = _check_positions(positions)
    cutoff = _check_positive("cutoff", cutoff)
    min_distance = _check_positive("min_distance", min_distance, allow_zero=True)
    pbc = _check_pbc(pbc)
    cell = _check_cell(cell, pbc)

    search_positions, search_cell = _search_box(positions, cell, pbc, cutoff)
    i, j, S = _matscipy_neighbour_list(
        "ijS",
        positions=search_positions,
        cell=search_cell,
        pbc=np.array(pbc),
        cutoff=cutoff,
    )
    sender = i.astype(np.int64)
    receiver = j.astype(np.int64)
    unit_shifts = S.astype(np.float64)

    is_self_edge = (sender == receiver) & np.all(S == 0, axis=1)
    sender, receiver, unit_shifts = (
        sender[~is_self_edge],
        receiver[~is_self_edge],
        unit_shifts[~is_self_edge],
    )

    # matscipy sorts by sender only; np.lexsort takes its primary key last.
    order = np.lexsort(
        (unit_shifts[:, 2], unit_shifts[:, 1], unit_shifts[:, 0], sender, receiver)
    )
    sender, receiver, unit_shifts = sender[order], receiver[order], unit_shifts[order]

    _check_min_distance(positions, cell, sender, receiver, unit_shifts, min_distance)
    return sender, receiver, unit_shifts


def _check_positions(positions) -> np.ndarray:
    try:
        positions = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"positions are not numeric: {error}") from error
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise InputError(f"positions must have shape [N, 3], got {positions.shape}")
    if positions.shape[0] == 0:
        raise InputError("the structure has no atoms")
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        more = f" (and {bad.size - 1} more atoms)" if bad.size > 1 else ""
        raise InputError(
            f"position of atom {bad[0]} is not finite: {positions[bad[0]].tolist()}{more}"
        )
    return positions


def _check_positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be a number, got {value!r}") from error
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be finite and {bound}, got {value}")
    return value


def _check_pbc(pbc) -> Tuple[bool, bool, bool]:
    try:
        flags = tuple(pbc)
    except TypeError:
        flags = ()
    if len(flags) != 3 or not all(isinstance(f, (bool, np.bool_)) for f in flags):
        raise InputError(f"pbc must be three booleans, got {pbc!r}")
    return tuple(bool(f) for f in flags)


def _check_cell(cell, pbc: Tuple[bool, bool, bool]) -> np.ndarray:
    """Validated [3, 3] float64 copy of the cell; zeros when there is none."""
    if cell is None:
        if any(pbc):
            raise InputError(f"pbc={pbc} has periodic directions but no cell was given")
        return np.zeros((3, 3))
    try:
        cell = np.array(cell, dtype=np.float64)  # a copy: the caller's cell stays as is
    except (TypeError, ValueError) as error:
        raise InputError(f"cell is not numeric: {error}") from error
    if cell.shape != (3, 3):
        raise InputError(f"cell must have shape [3, 3], got {cell.shape}")
    if not np.isfinite(cell).all():
        raise InputError(f"cell has non-finite entries: {cell.tolist()}")

    periodic = [k for k in range(3) if pbc[k]]
    lengths = np.linalg.norm(cell, axis=1)
    for k in periodic:
        if lengths[k] < _MIN_LATTICE_VECTOR:
            raise InputError(
                f"cell is singular: lattice vector {k} is zero but direction {k} "
                f"is periodic (pbc={pbc}, cell={cell.tolist()})"
            )
    if len(periodic) >= 2:
        rows = cell[periodic]
        # sqrt(det(Gram)) is the volume (3 rows) or area (2 rows) they span.
        span = np.sqrt(max(np.linalg.det(rows @ rows.T), 0.0))
        if span / np.prod(lengths[periodic]) < _MIN_NORMALISED_VOLUME:
            raise InputError(
                f"cell is singular: the periodic lattice vectors {periodic} are linearly "
                f"dependent (zero volume; pbc={pbc}, cell={cell.tolist()})"
            )
    return cell


def _search_box(
    positions: np.ndarray, cell: np.ndarray, pbc: Tuple[bool, bool, bool], cutoff: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Positions and a non-degenerate cell to hand to matscipy.

    matscipy bins atoms into the cell even along non-periodic directions, so it needs
    a full-rank cell. Each non-periodic row is replaced by an axis orthogonal to the
    periodic rows (so the periodic fractional coordinates are untouched), long enough to
    hold all atoms plus a cutoff on each side, and the atoms are translated into that
    box (atoms outside it would all land in the edge bins: correct but quadratic).
    A common translation changes no edge vector, so the shifts hold for the originals.
    """
    periodic = [k for k in range(3) if pbc[k]]
    free = [k for k in range(3) if not pbc[k]]
    if not free:
        return positions, cell
    if periodic:
        # Rows of vt past the rank span the orthogonal complement of the periodic rows.
        _, _, vt = np.linalg.svd(cell[periodic])
        axes = vt[len(periodic):]
    else:
        axes = np.eye(3)

    search_cell = cell.copy()
    translation = np.zeros(3)
    for k, axis in zip(free, axes):
        height = positions @ axis
        search_cell[k] = (height.max() - height.min() + 2.0 * cutoff) * axis
        translation += (cutoff - height.min()) * axis
    return positions + translation, search_cell


def _check_min_distance(
    positions: np.ndarray,
    cell: np.ndarray,
    sender: np.ndarray,
    receiver: np.ndarray,
    unit_shifts: np.ndarray,
    min_distance: float,
) -> None:
    vectors = positions[receiver] - positions[sender] + unit_shifts @ cell
    lengths = np.linalg.norm(vectors, axis=1)
    close = np.flatnonzero(lengths < min_distance)
    if not close.size:
        return
    e = close[0]
    a, b = sorted((int(sender[e]), int(receiver[e])))
    shift = unit_shifts[e].astype(int).tolist()
    if a == b:
        raise InputError(
            f"atom {a} is {lengths[e]:.3g} A from its own periodic image {shift}: "
            f"a lattice vector is shorter than min_distance={min_distance} A"
        )
    image = f" (through periodic image {shift})" if any(shift) else ""
    raise InputError(
        f"atoms {a} and {b} are at the same place: {lengths[e]:.3g} A apart{image}, "
        f"closer than min_distance={min_distance} A"
    )
