"""Graphs of single structures and their collation into batches.

A graph is a ``Dict[str, Tensor]`` with the keys of :mod:`mace_fast.keys` for one
structure (G = 1); :func:`collate` joins graphs (or batches) into one batch. Geometry is
computed in float64 numpy and cast to the requested dtype only at the end.

The stored cell is the caller's cell unchanged (zeros when there is none); rows of
non-periodic directions do not enter the geometry because their image shifts are zero.
"""

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import ase
import ase.data
import numpy as np
import torch
from torch import Tensor

from .. import keys as K
from .configuration import Configuration, as_finite_array
from .errors import InputError
from .neighbours import neighbour_list

# How each key is joined by collate(); the structural keys are rebuilt with offsets.
_PER_GRAPH = (
    K.CELL, K.PBC, K.ENERGY, K.STRESS, K.VIRIALS, K.WEIGHT,
    K.ENERGY_WEIGHT, K.FORCES_WEIGHT, K.STRESS_WEIGHT, K.VIRIALS_WEIGHT,
)  # fmt: skip
_PER_ATOM = (K.POSITIONS, K.ATOMIC_NUMBERS, K.ELEMENT_INDEX, K.FORCES)
_PER_EDGE = (K.UNIT_SHIFTS, K.SHIFTS)
_STRUCTURE = (K.EDGE_INDEX, K.EDGE_PTR, K.BATCH, K.PTR)
_GEOMETRY = _STRUCTURE + (
    K.POSITIONS, K.ATOMIC_NUMBERS, K.ELEMENT_INDEX, K.UNIT_SHIFTS, K.SHIFTS, K.CELL, K.PBC
)  # fmt: skip


def _symbol(z: int) -> str:
    return ase.data.chemical_symbols[z] if 0 < z < len(ase.data.chemical_symbols) else f"Z={z}"


class ElementTable:
    """The elements a model knows, as sorted atomic numbers; maps Z to a row index."""

    def __init__(self, atomic_numbers: Iterable[int]):
        numbers = set()
        for z in atomic_numbers:
            if isinstance(z, (bool, np.bool_)) or not isinstance(z, (int, np.integer)):
                raise InputError(f"element table: atomic number {z!r} is not an integer")
            if not 0 < int(z) < len(ase.data.chemical_symbols):
                raise InputError(f"element table: {int(z)} is not an atomic number")
            numbers.add(int(z))
        if not numbers:
            raise InputError("element table: no elements given")
        self._numbers = np.array(sorted(numbers), dtype=np.int64)

    @classmethod
    def from_configurations(cls, configurations: Iterable[Configuration]) -> "ElementTable":
        """Every element present in the configurations."""
        return cls(int(z) for c in configurations for z in np.unique(c.atomic_numbers))

    @property
    def numbers(self) -> Tuple[int, ...]:
        return tuple(int(z) for z in self._numbers)

    @property
    def symbols(self) -> List[str]:
        return [_symbol(z) for z in self.numbers]

    def __len__(self) -> int:
        return len(self._numbers)

    def __eq__(self, other) -> bool:
        return isinstance(other, ElementTable) and self.numbers == other.numbers

    def __hash__(self) -> int:
        return hash(self.numbers)

    def __repr__(self) -> str:
        return f"ElementTable([{', '.join(self.symbols)}])"

    def index(self, atomic_numbers: np.ndarray) -> np.ndarray:
        """[N] atomic numbers -> [N] int64 row indices into the table.

        Raises:
            InputError: naming the unknown elements and listing the table's elements.
        """
        z = np.asarray(atomic_numbers)
        if z.size and not np.issubdtype(z.dtype, np.integer):
            raise InputError(f"atomic numbers must be integers, got dtype {z.dtype}")
        z = z.astype(np.int64)
        rows = np.minimum(np.searchsorted(self._numbers, z), len(self._numbers) - 1)
        known = self._numbers[rows] == z
        if not known.all():
            unknown = ", ".join(_symbol(int(u)) for u in np.unique(z[~known]))
            raise InputError(
                f"element(s) {unknown} not in the element table "
                f"[{', '.join(self.symbols)}]"
            )
        return rows


def build_graph(
    positions: np.ndarray,
    atomic_numbers: np.ndarray,
    cell: Optional[np.ndarray],
    pbc: Sequence[bool],
    cutoff: float,
    elements: ElementTable,
    dtype: torch.dtype = torch.float64,
    min_distance: float = 1e-2,
) -> Dict[str, Tensor]:
    """Geometry keys of :mod:`mace_fast.keys` for one structure (G = 1, no labels).

    Args:
        positions: [N, 3] Angstrom. atomic_numbers: [N] integers.
        cell: [3, 3] rows are lattice vectors, or None (stored as zeros).
        pbc: three booleans. cutoff: Angstrom. elements: table for ``element_index``.
        dtype: floating dtype of positions, shifts and cell.
        min_distance: closer atoms are an error (see :func:`neighbour_list`).
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype must be a floating torch dtype, got {dtype!r}")
    # neighbour_list validates positions, cell and pbc first.
    sender, receiver, unit_shifts = neighbour_list(
        positions, cutoff, cell, pbc, min_distance=min_distance
    )
    positions = np.asarray(positions, dtype=np.float64)
    atomic_numbers = np.asarray(atomic_numbers)
    if atomic_numbers.shape != positions.shape[:1]:
        raise InputError(
            f"atomic_numbers has shape {atomic_numbers.shape}, expected "
            f"[{positions.shape[0]}] to match positions {positions.shape}"
        )
    element_index = elements.index(atomic_numbers)
    # Zeros stand for "no cell".
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    num_atoms = positions.shape[0]
    # Receivers are sorted, so each atom's edges form one contiguous run.
    edge_ptr = np.searchsorted(receiver, np.arange(num_atoms + 1))

    def real(array) -> Tensor:
        return torch.tensor(array, dtype=dtype)

    def integer(array) -> Tensor:
        return torch.tensor(array, dtype=torch.int64)

    return {
        K.POSITIONS: real(positions),
        K.ATOMIC_NUMBERS: integer(atomic_numbers),
        K.ELEMENT_INDEX: integer(element_index),
        K.EDGE_INDEX: integer(np.stack([sender, receiver]).reshape(2, -1)),
        K.EDGE_PTR: integer(edge_ptr),
        K.UNIT_SHIFTS: real(unit_shifts.reshape(-1, 3)),
        K.SHIFTS: real((unit_shifts @ cell).reshape(-1, 3)),
        K.CELL: real(cell[None]),
        K.PBC: torch.tensor([[bool(p) for p in pbc]], dtype=torch.bool),
        K.BATCH: torch.zeros(num_atoms, dtype=torch.int64),
        K.PTR: integer([0, num_atoms]),
    }


def graph_from_configuration(
    config: Configuration,
    cutoff: float,
    elements: ElementTable,
    dtype: torch.dtype = torch.float64,
    min_distance: float = 1e-2,
) -> Dict[str, Tensor]:
    """Geometry plus label keys for one configuration.

    A missing label is stored as zeros of the right shape with its property weight
    (``energy_weight`` etc.) set to 0, so every graph has the same keys.
    Errors name the configuration's file and frame.
    """
    try:
        graph = build_graph(
            config.positions, config.atomic_numbers, config.cell, config.pbc,
            cutoff, elements, dtype, min_distance,
        )  # fmt: skip
    except InputError as error:
        raise InputError(f"{config.where}: {error}") from error
    num_atoms = graph[K.POSITIONS].shape[0]

    def label(key: str, value, shape: Tuple[int, ...]) -> Tuple[np.ndarray, bool]:
        """The label as an array of ``shape`` and whether it exists (zeros if not)."""
        if value is None:
            return np.zeros(shape), False
        array = as_finite_array(value, config.where, key)
        if array.shape != shape:
            raise InputError(
                f"{config.where}: {key} has shape {array.shape}, expected {shape}"
            )
        return array, True

    energy, has_energy = label(K.ENERGY, config.energy, ())
    forces, has_forces = label(K.FORCES, config.forces, (num_atoms, 3))
    stress, has_stress = label(K.STRESS, config.stress, (3, 3))
    virials, has_virials = label(K.VIRIALS, config.virials, (3, 3))
    weights = {
        K.WEIGHT: config.weight,
        K.ENERGY_WEIGHT: config.energy_weight if has_energy else 0.0,
        K.FORCES_WEIGHT: config.forces_weight if has_forces else 0.0,
        K.STRESS_WEIGHT: config.stress_weight if has_stress else 0.0,
        K.VIRIALS_WEIGHT: config.virials_weight if has_virials else 0.0,
    }
    for key, value in weights.items():
        if not (np.isfinite(value) and value >= 0):
            raise InputError(f"{config.where}: {key} must be finite and >= 0, got {value}")

    graph.update(
        {
            K.ENERGY: torch.tensor(energy, dtype=dtype).reshape(1),
            K.FORCES: torch.tensor(forces, dtype=dtype),
            K.STRESS: torch.tensor(stress, dtype=dtype).reshape(1, 3, 3),
            K.VIRIALS: torch.tensor(virials, dtype=dtype).reshape(1, 3, 3),
        }
    )
    graph.update({k: torch.tensor([float(v)], dtype=dtype) for k, v in weights.items()})
    return graph


def collate(graphs: Sequence[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Join graphs (or batches) into one batch.

    Per-graph, per-atom and per-edge tensors are concatenated; ``edge_index``, ``batch``,
    ``ptr`` and ``edge_ptr`` are offset by the atoms, graphs and edges before them. The
    edges stay sorted by receiver globally because each graph's receivers are offset
    past the previous graph's atoms.

    Raises:
        InputError: no graphs, unknown keys, graphs with different keys or dtypes.
    """
    if len(graphs) == 0:
        raise InputError("collate: no graphs given")
    keys = set(graphs[0])
    missing = set(_GEOMETRY) - keys
    if missing:
        raise InputError(f"collate: graph 0 lacks the keys {sorted(missing)}")
    unknown = keys - set(_PER_GRAPH + _PER_ATOM + _PER_EDGE + _STRUCTURE)
    if unknown:
        raise InputError(f"collate: graph 0 has unknown keys {sorted(unknown)}")
    for g, graph in enumerate(graphs):
        if set(graph) != keys:
            raise InputError(
                f"collate: graph {g} has keys differing from graph 0: "
                f"missing {sorted(keys - set(graph))}, extra {sorted(set(graph) - keys)}"
            )
        for key in graphs[0]:  # dict order, so the first mismatch reported is stable
            if graph[key].dtype != graphs[0][key].dtype:
                raise InputError(
                    f"collate: graph {g} has {key} of dtype {graph[key].dtype}, "
                    f"graph 0 has {graphs[0][key].dtype}"
                )

    def exclusive_cumsum(counts: List[int]) -> List[int]:
        return np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()

    atom_offsets = exclusive_cumsum([g[K.POSITIONS].shape[0] for g in graphs])
    graph_offsets = exclusive_cumsum([g[K.CELL].shape[0] for g in graphs])
    edge_offsets = exclusive_cumsum([g[K.EDGE_INDEX].shape[1] for g in graphs])

    batch = {
        key: torch.cat([g[key] for g in graphs]) for key in graphs[0] if key not in _STRUCTURE
    }
    batch[K.EDGE_INDEX] = torch.cat(
        [g[K.EDGE_INDEX] + a for g, a in zip(graphs, atom_offsets)], dim=1
    )
    batch[K.BATCH] = torch.cat([g[K.BATCH] + n for g, n in zip(graphs, graph_offsets)])
    # Pointers: drop each graph's leading 0 and shift its other entries.
    zero = graphs[0][K.PTR][:1] * 0
    batch[K.PTR] = torch.cat(
        [zero] + [g[K.PTR][1:] + a for g, a in zip(graphs, atom_offsets)]
    )
    batch[K.EDGE_PTR] = torch.cat(
        [zero] + [g[K.EDGE_PTR][1:] + e for g, e in zip(graphs, edge_offsets)]
    )
    return batch


def batch_from_atoms(
    atoms_list: Sequence[ase.Atoms],
    cutoff: float,
    elements: ElementTable,
    dtype: torch.dtype = torch.float64,
    min_distance: float = 1e-2,
) -> Dict[str, Tensor]:
    """Geometry-only batch (no label keys) of ASE structures, e.g. for a calculator.

    Errors name the structure's position in ``atoms_list``.
    """
    graphs = []
    for s, atoms in enumerate(atoms_list):
        try:
            graphs.append(
                build_graph(
                    atoms.positions, atoms.numbers, atoms.cell.array, tuple(atoms.pbc),
                    cutoff, elements, dtype, min_distance,
                )  # fmt: skip
            )
        except InputError as error:
            raise InputError(f"structure {s}: {error}") from error
    return collate(graphs)
