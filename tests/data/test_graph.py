"""Graphs of single structures, labels, and collation into batches."""

import ase
import ase.io
import numpy as np
import pytest
import torch

from mace_fast import keys as K
from mace_fast.data.configuration import Configuration, read_configurations
from mace_fast.data.errors import InputError
from mace_fast.data.graph import (
    ElementTable,
    batch_from_atoms,
    build_graph,
    collate,
    graph_from_configuration,
)

from .structures import random_cell, random_positions

TABLE = ElementTable([8, 1, 6])


def _structure(rng, pbc, num_atoms):
    cell = random_cell(rng) if any(pbc) else None
    positions = random_positions(rng, num_atoms, cell, pbc)
    return positions, rng.choice([1, 6, 8], num_atoms), cell, pbc


def _check_edges(graph, cutoff):
    """edge_ptr matches the receivers; vectors lie within the cutoff; shifts match."""
    sender, receiver = graph[K.EDGE_INDEX]
    num_atoms = graph[K.POSITIONS].shape[0]
    assert torch.all(receiver[1:] >= receiver[:-1])
    counts = torch.bincount(receiver, minlength=num_atoms)
    expected_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    assert torch.equal(graph[K.EDGE_PTR], expected_ptr)
    cell = graph[K.CELL][graph[K.BATCH][sender]]  # [E, 3, 3]
    torch.testing.assert_close(
        graph[K.SHIFTS], torch.einsum("ei,eij->ej", graph[K.UNIT_SHIFTS], cell)
    )
    positions = graph[K.POSITIONS]
    vectors = positions[receiver] - positions[sender] + graph[K.SHIFTS]
    assert torch.all(vectors.norm(dim=1) < cutoff)
    assert torch.all(graph[K.BATCH][sender] == graph[K.BATCH][receiver])


def test_element_table():
    assert TABLE.numbers == (1, 6, 8) and TABLE.symbols == ["H", "C", "O"]
    assert TABLE.index(np.array([8, 1, 1, 6])).tolist() == [2, 0, 0, 1]
    assert TABLE.index(np.array([8])).dtype == np.int64
    assert TABLE == ElementTable([1, 6, 8, 8]) and len(TABLE) == 3
    assert ElementTable(np.array([26, 1])).symbols == ["H", "Fe"]


def test_unknown_element_is_named():
    message = r"element\(s\) Fe, U not in the element table \[H, C, O\]"
    with pytest.raises(InputError, match=message):
        TABLE.index(np.array([1, 26, 92, 26]))
    with pytest.raises(InputError, match=r"Z=200 not in"):
        TABLE.index(np.array([200]))


@pytest.mark.parametrize("numbers", [[], [0], [1, 119], [1.0], [True]])
def test_bad_element_table(numbers):
    with pytest.raises(InputError, match="element table"):
        ElementTable(numbers)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False,) * 3])
def test_build_graph(np_rng, dtype, pbc):
    positions, numbers, cell, pbc = _structure(np_rng, pbc, 9)
    graph = build_graph(positions, numbers, cell, pbc, 4.0, TABLE, dtype)

    assert set(graph) == {
        K.POSITIONS, K.ATOMIC_NUMBERS, K.ELEMENT_INDEX, K.EDGE_INDEX, K.EDGE_PTR,
        K.UNIT_SHIFTS, K.SHIFTS, K.CELL, K.PBC, K.BATCH, K.PTR,
    }  # fmt: skip
    num_edges = graph[K.EDGE_INDEX].shape[1]
    assert num_edges > 0
    shapes = {
        K.POSITIONS: (9, 3), K.ATOMIC_NUMBERS: (9,), K.ELEMENT_INDEX: (9,),
        K.EDGE_INDEX: (2, num_edges), K.EDGE_PTR: (10,), K.UNIT_SHIFTS: (num_edges, 3),
        K.SHIFTS: (num_edges, 3), K.CELL: (1, 3, 3), K.PBC: (1, 3), K.BATCH: (9,),
        K.PTR: (2,),
    }  # fmt: skip
    assert {k: tuple(v.shape) for k, v in graph.items()} == shapes
    for key in (K.POSITIONS, K.UNIT_SHIFTS, K.SHIFTS, K.CELL):
        assert graph[key].dtype == dtype
    for key in (K.ATOMIC_NUMBERS, K.ELEMENT_INDEX, K.EDGE_INDEX, K.EDGE_PTR, K.BATCH, K.PTR):
        assert graph[key].dtype == torch.int64
    assert graph[K.PBC].dtype == torch.bool and graph[K.PBC][0].tolist() == list(pbc)
    assert graph[K.PTR].tolist() == [0, 9] and not graph[K.BATCH].any()
    assert graph[K.ELEMENT_INDEX].tolist() == TABLE.index(numbers).tolist()
    expected_cell = np.zeros((3, 3)) if cell is None else cell
    np.testing.assert_allclose(graph[K.CELL][0].double().numpy(), expected_cell, rtol=1e-6)
    _check_edges(graph, 4.0 + 1e-5)


def test_build_graph_errors_name_the_problem(np_rng):
    positions, numbers, cell, pbc = _structure(np_rng, (True,) * 3, 5)
    with pytest.raises(InputError, match="Fe not in the element table"):
        build_graph(positions, np.array([1, 1, 26, 1, 1]), cell, pbc, 4.0, TABLE)
    with pytest.raises(InputError, match="atomic_numbers has shape"):
        build_graph(positions, numbers[:4], cell, pbc, 4.0, TABLE)
    with pytest.raises(InputError, match="dtype"):
        build_graph(positions, numbers, cell, pbc, 4.0, TABLE, torch.int64)


def _labelled_file(tmp_path, rng):
    """Three frames: fully labelled, missing energy (and virials), molecule with Voigt stress."""
    frames = []
    for k, pbc in enumerate([True, True, False]):
        positions, numbers, cell, _ = _structure(rng, (pbc,) * 3, 4 + k)
        atoms = ase.Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
        atoms.info["REF_energy"] = float(rng.normal())
        atoms.arrays["REF_forces"] = rng.normal(size=(len(atoms), 3))
        atoms.info["REF_stress"] = rng.normal(size=6)
        frames.append(atoms)
    frames[0].info["REF_virials"] = rng.normal(size=(3, 3))
    del frames[1].info["REF_energy"]
    path = tmp_path / "labelled.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def test_graph_from_configuration_labels(tmp_path, np_rng):
    configs = read_configurations(_labelled_file(tmp_path, np_rng))
    graphs = [graph_from_configuration(c, 4.0, TABLE) for c in configs]

    g = graphs[0]
    torch.testing.assert_close(g[K.ENERGY], torch.tensor([configs[0].energy], dtype=torch.float64))
    torch.testing.assert_close(g[K.FORCES], torch.tensor(configs[0].forces))
    torch.testing.assert_close(g[K.STRESS][0], torch.tensor(configs[0].stress))
    torch.testing.assert_close(g[K.VIRIALS][0], torch.tensor(configs[0].virials))
    for key in (K.WEIGHT, K.ENERGY_WEIGHT, K.FORCES_WEIGHT, K.STRESS_WEIGHT, K.VIRIALS_WEIGHT):
        assert g[key].tolist() == [1.0]

    g = graphs[1]  # no energy, no virials: zeros with weight 0
    assert g[K.ENERGY].tolist() == [0.0] and g[K.ENERGY_WEIGHT].tolist() == [0.0]
    assert g[K.VIRIALS].shape == (1, 3, 3) and not g[K.VIRIALS].any()
    assert g[K.VIRIALS_WEIGHT].tolist() == [0.0]
    assert g[K.FORCES_WEIGHT].tolist() == [1.0] and g[K.STRESS_WEIGHT].tolist() == [1.0]

    shapes = {K.ENERGY: (1,), K.STRESS: (1, 3, 3), K.VIRIALS: (1, 3, 3), K.WEIGHT: (1,)}
    for graph in graphs:
        assert all(tuple(graph[k].shape) == s for k, s in shapes.items())
        assert graph[K.FORCES].shape == graph[K.POSITIONS].shape


def test_graph_from_configuration_errors_name_file_and_frame(tmp_path, np_rng):
    configs = read_configurations(_labelled_file(tmp_path, np_rng))
    with pytest.raises(InputError, match=r"labelled.xyz, frame 2: element\(s\) .* \[H\]"):
        graph_from_configuration(configs[2], 4.0, ElementTable([1]))
    config = configs[1]
    config.positions[2] = config.positions[0]
    with pytest.raises(InputError, match=r"labelled.xyz, frame 1: atoms 0 and 2 are at the same"):
        graph_from_configuration(config, 4.0, TABLE)

    hand_made = Configuration(
        atomic_numbers=np.array([1, 1]),
        positions=np.array([[0.0, 0, 0], [1, 0, 0]]),
        cell=np.zeros((3, 3)),
        pbc=(False, False, False),
        forces=np.full((2, 3), np.nan),
        source="made.xyz",
        frame=4,
    )
    with pytest.raises(InputError, match=r"made.xyz, frame 4: key 'forces' is not finite"):
        graph_from_configuration(hand_made, 4.0, TABLE)


def test_collate_three_graphs(tmp_path, np_rng):
    configs = read_configurations(_labelled_file(tmp_path, np_rng))
    graphs = [graph_from_configuration(c, 4.0, TABLE) for c in configs]
    batch = collate(graphs)

    atoms = [g[K.POSITIONS].shape[0] for g in graphs]
    edges = [g[K.EDGE_INDEX].shape[1] for g in graphs]
    assert set(batch) == set(graphs[0])
    assert batch[K.PTR].tolist() == [0, atoms[0], atoms[0] + atoms[1], sum(atoms)]
    assert batch[K.BATCH].tolist() == sum(([g] * n for g, n in enumerate(atoms)), [])
    assert batch[K.EDGE_PTR].shape == (sum(atoms) + 1,)
    graph_edge_starts = [0, edges[0], edges[0] + edges[1], sum(edges)]
    assert batch[K.EDGE_PTR][batch[K.PTR]].tolist() == graph_edge_starts
    per_graph = {K.CELL: (3, 3, 3), K.PBC: (3, 3), K.ENERGY: (3,), K.STRESS: (3, 3, 3)}
    for key, shape in per_graph.items():
        assert tuple(batch[key].shape) == shape
    assert batch[K.ENERGY_WEIGHT].tolist() == [1.0, 0.0, 1.0]

    # Each graph's edges are its own edges offset by the atoms before it.
    start = 0
    for g, graph in enumerate(graphs):
        block = batch[K.EDGE_INDEX][:, start : start + edges[g]]
        assert torch.equal(block, graph[K.EDGE_INDEX] + batch[K.PTR][g])
        start += edges[g]
    # Globally sorted by receiver, so edge_ptr is a valid CSR pointer for the batch.
    receiver = batch[K.EDGE_INDEX][1]
    assert torch.all(receiver[1:] >= receiver[:-1])
    _check_edges(batch, 4.0)

    # Collating batches is the same as collating their graphs.
    nested = collate([collate(graphs[:2]), graphs[2]])
    assert nested.keys() == batch.keys()
    assert all(torch.equal(nested[k], batch[k]) for k in batch)


def test_collate_rejects_mismatched_graphs(np_rng):
    a = build_graph(*_structure(np_rng, (True,) * 3, 3), 4.0, TABLE)
    b = build_graph(*_structure(np_rng, (True,) * 3, 3), 4.0, TABLE, torch.float32)
    with pytest.raises(InputError, match=r"graph 1 has positions of dtype torch.float32"):
        collate([a, b])
    with pytest.raises(InputError, match="graph 1 has keys differing"):
        collate([a, {k: v for k, v in a.items() if k != K.SHIFTS}])
    with pytest.raises(InputError, match="unknown keys"):
        collate([dict(a, charges=torch.zeros(3))])
    with pytest.raises(InputError, match="no graphs"):
        collate([])


def test_batch_from_atoms(np_rng):
    structures = []
    for pbc in [(True,) * 3, (True, True, False), (False,) * 3]:
        positions, numbers, cell, _ = _structure(np_rng, pbc, 5)
        structures.append(ase.Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc))
    batch = batch_from_atoms(structures, 4.0, TABLE, torch.float32)
    assert batch[K.PTR].tolist() == [0, 5, 10, 15]
    assert batch[K.POSITIONS].dtype == torch.float32 and K.ENERGY not in batch
    _check_edges(batch, 4.0 + 1e-4)
    structures[1].positions[4, 0] = np.nan
    with pytest.raises(InputError, match="structure 1: position of atom 4 is not finite"):
        batch_from_atoms(structures, 4.0, TABLE)
