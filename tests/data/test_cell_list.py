"""Torch cell-list neighbour list against the matscipy-based one (the oracle).

Every test draws fresh random structures (``np_rng`` prints its seed on failure). The
comparison is exact: same edges, same order, same shifts, per graph.
"""

import time

import numpy as np
import pytest
import torch

from mace_fast.data.cell_list import neighbour_list_torch
from mace_fast.data.errors import InputError
from mace_fast.data.neighbours import neighbour_list

from .structures import edge_set, named_structure, random_cell, random_positions


NAMES = [
    "triclinic",
    "left_handed",
    "two_atoms_in_a_2.5_A_cube_cutoff_5",
    "triclinic_smaller_than_cutoff",
    "thinner_than_cutoff_in_one_direction",
    "big_cell_few_atoms",
    "slab",
    "slab_without_c",
    "slab_periodic_in_x_and_z",
    "wire",
    "wire_along_z_with_cell",
    "molecule",
    "molecule_with_cell",
    "far_outside_the_cell",
]


def _run(positions, cell, pbc, cutoff, dtype=torch.float64, device="cpu", **kwargs):
    """neighbour_list_torch on one numpy structure (G = 1)."""
    cell = np.zeros((3, 3)) if cell is None else cell
    return neighbour_list_torch(
        torch.tensor(positions, dtype=dtype, device=device),
        cutoff,
        torch.tensor(cell, dtype=torch.float64, device=device)[None],
        torch.tensor(pbc, device=device)[None],
        **kwargs,
    )


def _oracle_batch(structures, min_distance=1e-2):
    """matscipy's lists of each structure, offset by the atoms before it and joined:
    sender [E], receiver [E], unit_shifts [E, 3]."""
    senders, receivers, shifts, offset = [], [], [], 0
    for positions, cell, pbc, cutoff in structures:
        s, r, S = neighbour_list(positions, cutoff, cell, pbc, min_distance=min_distance)
        senders.append(s + offset)
        receivers.append(r + offset)
        shifts.append(S)
        offset += len(positions)
    return np.concatenate(senders), np.concatenate(receivers), np.concatenate(shifts)


def _assert_matches(result, expected, num_atoms, dtype=torch.float64):
    """Same edges in the same order as the oracle, and the output contract."""
    edge_index, unit_shifts, edge_ptr = (t.cpu() for t in result)
    sender, receiver, shifts = expected
    num_edges = len(sender)
    assert edge_index.dtype == torch.int64 and edge_index.shape == (2, num_edges)
    assert unit_shifts.dtype == dtype and unit_shifts.shape == (num_edges, 3)
    assert edge_ptr.dtype == torch.int64 and edge_ptr.shape == (num_atoms + 1,)
    if num_edges < 20000:  # readable failures; large cases rely on the arrays below
        ours = edge_set(edge_index[0].numpy(), edge_index[1].numpy(), unit_shifts.numpy())
        assert ours == edge_set(sender, receiver, shifts)
    np.testing.assert_array_equal(edge_index[1].numpy(), receiver)
    np.testing.assert_array_equal(edge_index[0].numpy(), sender)
    np.testing.assert_array_equal(unit_shifts.numpy(), shifts)
    # The ordering contract on its own: strictly increasing (receiver, sender, shift)
    # rows, hence also no duplicates.
    keys = np.column_stack([edge_index[1].numpy(), edge_index[0].numpy(), unit_shifts.numpy()])
    step = keys[1:] - keys[:-1]
    first_change = np.argmax(step != 0, axis=1)
    assert np.all(step[np.arange(len(step)), first_change] > 0)
    # CSR pointer over receivers.
    counts = np.bincount(receiver, minlength=num_atoms)
    np.testing.assert_array_equal(edge_ptr.numpy(), np.concatenate([[0], np.cumsum(counts)]))


@pytest.mark.parametrize("name", NAMES)
def test_matches_matscipy(name, np_rng):
    for _ in range(3):
        positions, cell, pbc, cutoff = named_structure(name, np_rng)
        result = _run(positions, cell, pbc, cutoff)
        expected = neighbour_list(positions, cutoff, cell, pbc)
        _assert_matches(result, expected, len(positions))

        # The edge vector from the caller's (unwrapped) positions is inside the cutoff.
        edge_index, unit_shifts, _ = result
        lattice = np.zeros((3, 3)) if cell is None else cell
        sender, receiver = edge_index.numpy()
        vectors = positions[receiver] - positions[sender] + unit_shifts.numpy() @ lattice
        lengths = np.linalg.norm(vectors, axis=1)
        assert np.all((lengths > 0) & (lengths < cutoff))
        assert np.all(unit_shifts.numpy()[:, ~np.array(pbc)] == 0)


def test_batch_of_different_structures(np_rng):
    """One call over many structures of every kind (shared cutoff) equals matscipy per
    graph, offset and joined; edges never cross graphs."""
    cutoff = 4.0
    structures = []
    for name in NAMES * 2:
        positions, cell, pbc, _ = named_structure(name, np_rng)
        structures.append((positions, cell, pbc, cutoff))
    order = np_rng.permutation(len(structures))
    structures = [structures[k] for k in order]
    positions = torch.tensor(np.concatenate([s[0] for s in structures]))
    cell = torch.tensor(
        np.stack([np.zeros((3, 3)) if s[1] is None else s[1] for s in structures])
    )
    pbc = torch.tensor([s[2] for s in structures])
    sizes = torch.tensor([len(s[0]) for s in structures])
    batch = torch.repeat_interleave(torch.arange(len(structures)), sizes)
    result = neighbour_list_torch(positions, cutoff, cell, pbc, batch, len(structures))
    _assert_matches(result, _oracle_batch(structures), len(positions))
    edge_index = result[0]
    assert torch.equal(batch[edge_index[0]], batch[edge_index[1]])


def test_screening_batch_of_64_atom_cells(np_rng):
    """Hundreds of small periodic cells at once, as in screening."""
    structures = []
    for _ in range(200):
        cell = random_cell(np_rng, 9.0, 11.0)
        positions = np_rng.uniform(-0.2, 1.2, (64, 3)) @ cell
        structures.append((positions, cell, (True, True, True), 5.0))
    positions = torch.tensor(np.concatenate([s[0] for s in structures]))
    cell = torch.tensor(np.stack([s[1] for s in structures]))
    pbc = torch.ones((len(structures), 3), dtype=torch.bool)
    batch = torch.arange(len(structures)).repeat_interleave(64)
    # Random points can overlap: that check is not what this test is about.
    result = neighbour_list_torch(positions, 5.0, cell, pbc, batch, min_distance=0.0)
    _assert_matches(result, _oracle_batch(structures, min_distance=0.0), len(positions))


def test_graph_without_atoms_in_a_batch(np_rng):
    a = named_structure("triclinic", np_rng)
    b = named_structure("molecule", np_rng)
    positions = torch.tensor(np.concatenate([a[0], b[0]]))
    cell = torch.tensor(np.stack([a[1], 5 * np.eye(3), np.zeros((3, 3))]))
    pbc = torch.tensor([[True] * 3, [True] * 3, [False] * 3])
    batch = torch.tensor([0] * len(a[0]) + [2] * len(b[0]))
    result = neighbour_list_torch(positions, 3.0, cell, pbc, batch)
    expected = _oracle_batch([(a[0], a[1], a[2], 3.0), (b[0], None, b[2], 3.0)])
    _assert_matches(result, expected, len(positions))


def test_chunking_does_not_change_the_result(np_rng):
    positions, cell, pbc, cutoff = named_structure("triclinic_smaller_than_cutoff", np_rng)
    reference = _run(positions, cell, pbc, cutoff)
    for max_candidates in (1, 7, 100):
        chunked = _run(positions, cell, pbc, cutoff, max_candidates=max_candidates)
        for a, b in zip(reference, chunked):
            assert torch.equal(a, b)


def test_float32_positions_give_the_same_edges_away_from_ties(np_rng):
    """Rounding positions to float32 moves atoms by ~1e-7 A: only pairs that close to
    the cutoff may change."""
    for name in ("triclinic", "slab", "molecule", "far_outside_the_cell"):
        positions, cell, pbc, cutoff = named_structure(name, np_rng)
        single = _run(positions, cell, pbc, cutoff, dtype=torch.float32)
        double = _run(positions, cell, pbc, cutoff)
        assert single[1].dtype == torch.float32 and double[1].dtype == torch.float64

        def edges(result):
            edge_index, unit_shifts, _ = result
            return edge_set(*edge_index.numpy(), unit_shifts.double().numpy())

        lattice = np.zeros((3, 3)) if cell is None else cell
        for i, j, shift in edges(single) ^ edges(double):
            length = np.linalg.norm(positions[j] - positions[i] + np.array(shift) @ lattice)
            assert abs(length - cutoff) < 1e-4, (i, j, shift, length)


def test_atoms_exactly_on_cell_faces():
    """Fractions of exactly 0 and 1 (and -0.0) wrap into the first and last bins."""
    a = 3.0
    cell = a * np.eye(3)
    positions = np.array(
        [[0.0, 0.0, 0.0], [a, a, a], [-0.0, a, 0.0], [1.5, 1.5, 1.5], [a, 0.0, 1.5]]
    )
    result = _run(positions, cell, (True,) * 3, 4.0, min_distance=0.0)
    _assert_matches(
        result, neighbour_list(positions, 4.0, cell, (True,) * 3, min_distance=0.0), 5
    )


def test_cutoff_is_strict():
    positions = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [1.5, 2.0, 0.0]])
    edge_index, _, _ = neighbour_list_torch(positions, 3.0, None, torch.tensor([False] * 3))
    # Atoms 0 and 1 are exactly 3 A apart: not an edge.
    assert edge_index.tolist() == [[2, 2, 0, 1], [0, 1, 2, 2]]


def test_isolated_atoms_have_no_edges():
    for cell, pbc in [(None, [False] * 3), (20.0 * torch.eye(3), [True] * 3)]:
        edge_index, unit_shifts, edge_ptr = neighbour_list_torch(
            torch.ones((1, 3)), 5.0, cell, torch.tensor(pbc)
        )
        assert edge_index.shape == (2, 0) and unit_shifts.shape == (0, 3)
        assert edge_ptr.tolist() == [0, 0]


def test_small_cell_sees_many_images_of_itself():
    edge_index, unit_shifts, _ = neighbour_list_torch(
        torch.zeros((1, 3)), 5.0, 2.0 * torch.eye(3), torch.tensor([True] * 3)
    )
    grid = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    expected = {tuple(g) for g in grid if 0 < np.linalg.norm(2.0 * g) < 5.0}
    assert torch.all(edge_index == 0)
    assert {tuple(s) for s in unit_shifts.long().tolist()} == expected


def _silicon(rng, repeats):
    """Perturbed, strained diamond Si supercell with atoms scattered over images."""
    a = 5.43
    corners = [[0, 0, 0], [0, 2, 2], [2, 0, 2], [2, 2, 0]]
    basis = np.array(corners + [[c + 1 for c in corner] for corner in corners]) * (a / 4)
    grid = np.stack(np.meshgrid(*[np.arange(r) for r in repeats], indexing="ij"), -1)
    positions = (grid.reshape(-1, 1, 3) * a + basis).reshape(-1, 3)
    strain = np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))
    cell = np.diag(np.array(repeats) * a) @ strain
    positions = positions @ strain + rng.normal(0, 0.1, positions.shape)
    positions = positions + rng.integers(-2, 3, positions.shape) @ cell
    return positions, cell


def test_large_structure_on_cpu(np_rng):
    """~20k atoms of Si at a 6 A cutoff (~40 neighbours each)."""
    positions, cell = _silicon(np_rng, (14, 14, 13))
    start = time.perf_counter()
    result = _run(positions, cell, (True,) * 3, 6.0)
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    expected = neighbour_list(positions, 6.0, cell, (True,) * 3)
    oracle_elapsed = time.perf_counter() - start
    print(f"{len(positions)} atoms: torch {elapsed:.2f} s, matscipy {oracle_elapsed:.2f} s")
    _assert_matches(result, expected, len(positions))


@pytest.mark.gpu
def test_large_structure_on_gpu(np_rng):
    """~100k atoms of Si at a 6 A cutoff on CUDA against matscipy."""
    positions, cell = _silicon(np_rng, (23, 23, 23))
    _run(positions, cell, (True,) * 3, 6.0, device="cuda")  # warm up
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = _run(positions, cell, (True,) * 3, 6.0, device="cuda")
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    expected = neighbour_list(positions, 6.0, cell, (True,) * 3)
    oracle_elapsed = time.perf_counter() - start
    print(f"{len(positions)} atoms: cuda {elapsed:.3f} s, matscipy {oracle_elapsed:.2f} s")
    assert all(t.device.type == "cuda" for t in result)
    _assert_matches(result, expected, len(positions))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_position_names_the_atom(value, np_rng):
    positions = torch.tensor(random_positions(np_rng, 6, None, (False,) * 3))
    positions[3, 1] = value
    batch = torch.tensor([0, 0, 1, 1, 1, 1])
    cell, pbc = torch.zeros((2, 3, 3)), torch.zeros((2, 3), dtype=torch.bool)
    with pytest.raises(InputError, match=r"atom 3 \(graph 1, atom 1 of the graph\) is not"):
        neighbour_list_torch(positions, 3.0, cell, pbc, batch)


@pytest.mark.parametrize(
    "cell, pbc",
    [
        ([[3, 0, 0], [0, 3, 0], [3, 3, 0]], (True, True, True)),  # coplanar rows
        ([[3, 0, 0], [0, 3, 0], [0, 0, 0]], (True, True, True)),  # zero row, periodic
        ([[3, 0, 0], [6, 0, 0], [0, 0, 4]], (True, True, False)),  # parallel periodic rows
        (np.zeros((3, 3)), (False, True, False)),
    ],
)
def test_singular_cell_names_the_graph(cell, pbc):
    cells = torch.tensor(np.stack([4.0 * np.eye(3), np.array(cell, dtype=float)]))
    pbcs = torch.tensor([(True,) * 3, pbc])
    with pytest.raises(InputError, match="graph 1: cell is singular"):
        neighbour_list_torch(torch.zeros((2, 3)), 3.0, cells, pbcs, torch.tensor([0, 1]))


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_cutoff(cutoff):
    with pytest.raises(InputError, match="cutoff"):
        neighbour_list_torch(torch.zeros((1, 3)), cutoff, None, torch.tensor([False] * 3))


def test_overlapping_atoms_are_named(np_rng):
    first = random_positions(np_rng, 3, None, (False,) * 3)
    second = random_positions(np_rng, 6, None, (False,) * 3)
    second[5] = second[2] + 1e-3
    positions = torch.tensor(np.concatenate([first, second]))
    batch = torch.tensor([0] * 3 + [1] * 6)
    cell, pbc = torch.zeros((2, 3, 3)), torch.zeros((2, 3), dtype=torch.bool)
    message = r"graph 1: atoms 5 and 8 \(atoms 2 and 5 of the graph\) are at the same place"
    with pytest.raises(InputError, match=message):
        neighbour_list_torch(positions, 3.0, cell, pbc, batch)
    neighbour_list_torch(positions, 3.0, cell, pbc, batch, min_distance=0.0)  # disabled


def test_atom_on_a_periodic_image_of_another_is_named(np_rng):
    cell = random_cell(np_rng)
    positions = random_positions(np_rng, 4, cell, (True,) * 3)
    positions[1] = positions[0] + cell[2] - cell[0]
    with pytest.raises(InputError, match=r"atoms 0 and 1 .* periodic image"):
        _run(positions, cell, (True,) * 3, 3.0)


def test_lattice_vector_shorter_than_min_distance():
    cell = torch.diag(torch.tensor([3.0, 3.0, 1e-3], dtype=torch.float64))
    with pytest.raises(InputError, match="own periodic image"):
        neighbour_list_torch(torch.zeros((1, 3)), 3.0, cell, torch.tensor([True] * 3))


def test_min_distance_is_a_parameter():
    positions = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    pbc = torch.tensor([False] * 3)
    neighbour_list_torch(positions, 3.0, None, pbc)
    with pytest.raises(InputError, match="atoms 0 and 1"):
        neighbour_list_torch(positions, 3.0, None, pbc, min_distance=0.6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cell=None, pbc=torch.tensor([True, False, False])), "no cell"),
        (dict(cell=torch.eye(3)[:2]), "shape"),
        (dict(cell=torch.full((3, 3), float("nan"))), "graph 0: cell has non-finite"),
        (dict(pbc=torch.tensor([1, 0, 0])), "bool"),
        (dict(pbc=torch.tensor([True, False])), "shape"),
        (dict(positions=torch.zeros((2, 2))), r"\[N, 3\]"),
        (dict(positions=torch.zeros((0, 3))), "no atoms"),
        (dict(positions=torch.zeros((2, 3), dtype=torch.long)), "floating"),
        (dict(batch=torch.tensor([0, 1])), r"outside \[0, 1\)"),
        (dict(batch=torch.tensor([0])), "shape"),
        (dict(num_graphs=2), "num_graphs"),
        (
            dict(cell=torch.zeros((2, 3, 3)), pbc=torch.zeros((2, 3), dtype=torch.bool)),
            "batch is None",
        ),
    ],
)
def test_malformed_arguments(kwargs, message):
    arguments = dict(
        positions=torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),
        cutoff=3.0,
        cell=torch.zeros((3, 3)),
        pbc=torch.tensor([False] * 3),
    )
    arguments.update(kwargs)
    with pytest.raises(InputError, match=message):
        neighbour_list_torch(**arguments)


def test_unsorted_batch_is_refused():
    positions = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    cell, pbc = torch.zeros((2, 3, 3)), torch.zeros((2, 3), dtype=torch.bool)
    with pytest.raises(InputError, match="non-decreasing"):
        neighbour_list_torch(positions, 3.0, cell, pbc, torch.tensor([1, 0, 1]))
