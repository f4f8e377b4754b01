"""One evaluation of energy, forces and stress per MD or relaxation step, with little overhead.

Three things make a step cheap:

* a Verlet (skin) neighbour list: edges are found within ``r_max + skin`` and kept until
  some atom has moved more than ``skin / 2`` or the cell has changed. Edges longer than
  ``r_max`` add exactly zero, because every radial function of the model carries the
  cutoff envelope, which is exactly zero beyond ``r_max``, and the radial MLPs have no bias;
* on a GPU the list is built there (:func:`~mace_fast.data.cell_list.neighbour_list_torch`):
  positions cross to the device once per step and one packed array of results comes back;
* on a GPU the whole step, model forward and backward, is captured once as a CUDA graph
  and replayed: one launch instead of hundreds. A graph needs fixed shapes, so the edge
  arrays have a fixed capacity. Unused slots hold edges between "ghost" atoms that form a
  second graph of the batch, with no edge to the real atoms and placed so far apart that
  their edges contribute exactly zero; the ghosts' energy, forces and stress are dropped.
  The padding is spread over several ghost receivers so that none of them becomes a long
  serial segment for the per-receiver kernels. Each new list is checked once for symmetry
  (every edge within the cutoff has its reverse), which lets the captured step run its
  radial MLPs once per pair of edges (:mod:`mace_fast.ops.edge_pairs`).

Atoms are evaluated in a spatial order of their own (:func:`~mace_fast.data.ordering.morton_order`),
made when a structure is first seen and again every ``_RESORT_BUILDS`` list rebuilds (atoms
diffuse), so that the per-receiver kernels read neighbours' rows from cache whatever the
caller's order; results come back in the caller's order.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch

from . import keys as K
from .data.graph import ElementTable
from .data.neighbours import neighbour_list
from .data.ordering import morton_order
from .model import MACE
from .nn.linear import element_groups

__all__ = ["ModelStep", "StepResult", "capture_cuda_graph"]

# Extra edge slots allocated above the current count, so that the list can grow a little
# between rebuilds without a new capture. Padding edges cost as much as real ones, so the
# margin is small: in MD the count moves by a percent or two between rebuilds.
_CAPACITY_MARGIN = 0.05
_MIN_SPARE_EDGES = 64
_CAPACITY_GROWTH = 1.10
# Neighbour-list rebuilds between two spatial sorts of the atoms: atoms move little between
# rebuilds, and a sort costs a host pass over the positions.
_RESORT_BUILDS = 20
# Distance between ghost atoms (at least twice the cutoff): beyond any cutoff, ZBL's included.
_GHOST_SPACING = 20.0


@dataclass
class StepResult:
    """Results of one structure, float64 numpy on the host."""

    energy: float
    forces: np.ndarray  # [N, 3] eV/Å
    energies: np.ndarray  # [N] eV, per-atom energies
    stress: Optional[np.ndarray]  # [3, 3] eV/Å^3 (ASE sign), None when not computed


class ModelStep:
    """``step(positions, numbers, cell, pbc, stress) -> StepResult`` for one structure at a time.

    Args:
        model: a MACE model (its device and dtype are used; it is put in eval mode).
        skin: Verlet buffer in Å (0 rebuilds the list whenever any atom moved).
        cuda_graph: capture and replay the step as a CUDA graph (default: on CUDA devices).
        static_shapes: keep fixed-capacity, ghost-padded edge arrays (implied by
            ``cuda_graph``; on its own it exists to test the padding without a GPU).
        sort_atoms: evaluate the atoms in spatial (Z-curve) order; results are returned in
            the caller's order either way. On a GPU this is what keeps a structure whose atoms
            come in random order (or a liquid after its atoms have mixed) as fast as a
            well-ordered one (Si 16^3 in random order: 30 % slower unsorted).

    ``num_builds`` and ``num_captures`` count neighbour-list builds and graph captures.
    """

    def __init__(
        self, model: MACE, skin: float = 0.5, cuda_graph: Optional[bool] = None, static_shapes: bool = False,
        sort_atoms: bool = True,
    ) -> None:
        if skin < 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        self.model = model.eval()
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.skin = float(skin)
        self.cutoff = float(model.r_max) + self.skin
        self.use_graph = self.device.type == "cuda" if cuda_graph is None else bool(cuda_graph)
        if self.use_graph and self.device.type != "cuda":
            raise ValueError("cuda_graph=True needs the model on a CUDA device")
        self.static_shapes = self.use_graph or static_shapes
        self.elements = ElementTable(model.config.atomic_numbers)
        self.sort_atoms = bool(sort_atoms)
        self.num_builds = 0
        self.num_captures = 0
        self._layout = None
        self._ref_positions: Optional[np.ndarray] = None
        self._ref_cell: Optional[np.ndarray] = None
        self._batch: Dict[str, torch.Tensor] = {}
        self._capacity = -1
        self._graph: Optional[torch.cuda.CUDAGraph] = None
        self._packed: Optional[torch.Tensor] = None
        self._symmetric: Optional[bool] = None  # the edge list's, for a captured step
        # Internal atom k is the caller's atom _order[k] (None: the caller's order, when not
        # sorting); the same on the device, and its inverse (caller atom i is internal atom
        # _inverse[i]), updated in place so that a captured step stays valid.
        self._order: Optional[np.ndarray] = None
        self._order_dev: Optional[torch.Tensor] = None
        self._inverse_dev: Optional[torch.Tensor] = None
        self._sorted_at = -1  # num_builds when the atoms were last sorted (-1: not yet)

    # ------------------------------------------------------------------ public
    def __call__(
        self,
        positions: np.ndarray,
        numbers: np.ndarray,
        cell: Optional[np.ndarray],
        pbc: Sequence[bool],
        stress: bool = False,
    ) -> StepResult:
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        numbers = np.asarray(numbers)
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        pbc = tuple(bool(p) for p in pbc)
        layout = (positions.shape, numbers.tobytes(), pbc, bool(stress))
        if layout != self._layout:
            self._element_caller = self.elements.index(numbers)  # checked in the caller's order
            self._layout, self._ref_positions, self._capacity, self._graph = layout, None, -1, None
            self._sorted_at = -1
            self._set_order(np.arange(len(numbers)))
        n = positions.shape[0]
        rebuilt = self._needs_rebuild(positions, cell)
        if rebuilt and self.sort_atoms and (self._sorted_at < 0 or self.num_builds - self._sorted_at >= _RESORT_BUILDS):
            self._set_order(morton_order(positions, cell, pbc))
            self._sorted_at = self.num_builds
        pos_dev = torch.from_numpy(positions).to(self.device, non_blocking=False)
        if self._order is not None:  # into the internal order, on the device (a host gather costs ~1 ms)
            pos_dev = pos_dev[self._order_dev]
        if rebuilt:
            self._rebuild(positions if self._order is None else positions[self._order], pos_dev, cell, pbc)
            self._ref_positions, self._ref_cell = positions.copy(), cell.copy()
        self._batch[K.POSITIONS][:n].copy_(pos_dev)
        if rebuilt and self.use_graph:
            # A captured step cannot check whether the radial MLP may run once per pair of
            # edges (a full list): check once per list, recapture if the answer changed.
            symmetric = self.model.edges_symmetric(self._batch)
            if symmetric != self._symmetric:
                self._symmetric, self._graph = symmetric, None
        packed = self._run()
        return StepResult(
            energy=float(packed[0]),
            stress=packed[1:10].reshape(3, 3) if stress else None,
            forces=packed[10 : 10 + 3 * n].reshape(n, 3),
            energies=packed[10 + 3 * n :],
        )

    def _set_order(self, order: np.ndarray) -> None:
        """Evaluate the atoms as ``caller[order]`` from now on (a permutation of ``[N]``).

        A batch already allocated is updated in place (the same tensors, so a captured
        step stays valid): per-atom element data and each element's atom indices, whose
        counts a permutation keeps.
        """
        self._element = torch.as_tensor(self._element_caller[order], device=self.device)
        if not self.sort_atoms:
            return
        self._order = order
        order_dev = torch.as_tensor(order, device=self.device)
        inverse = torch.empty_like(order_dev)
        inverse[order_dev] = torch.arange(len(order), device=self.device)
        if self._capacity < 0:  # no batch (nor captured step) for this layout yet
            self._order_dev, self._inverse_dev = order_dev, inverse
            return
        self._order_dev.copy_(order_dev)
        self._inverse_dev.copy_(inverse)
        n = self._num_atoms
        self._batch[K.ELEMENT_INDEX][:n].copy_(self._element)
        self._batch[K.ATOMIC_NUMBERS][:n].copy_(self.model.atomic_numbers[self._element])
        for (z, index), (z_new, index_new) in zip(self._groups, element_groups(self._batch[K.ELEMENT_INDEX])):
            assert z == z_new and index.shape == index_new.shape
            index.copy_(index_new)

    # ---------------------------------------------------------- neighbour list
    def _needs_rebuild(self, positions: np.ndarray, cell: np.ndarray) -> bool:
        if self._ref_positions is None or not np.array_equal(cell, self._ref_cell):
            return True
        moved = positions - self._ref_positions
        moved2 = np.einsum("ij,ij->i", moved, moved).max()
        return bool(moved2 > (0.5 * self.skin) ** 2)

    def _edges(self, positions: np.ndarray, pos_dev: torch.Tensor, cell: np.ndarray, pbc):
        """``(edge_index [2, E], unit_shifts [E, 3] float64, edge_ptr [N+1])`` on the device."""
        if self.device.type == "cuda":
            from .data.cell_list import neighbour_list_torch
            from .data.dense_neighbours import dense_images, neighbour_list_dense

            images = dense_images(positions.shape[0], self.cutoff, cell, pbc)
            if images is not None:  # small structures: all pairs, fewer launches and syncs
                return neighbour_list_dense(pos_dev, self.cutoff, torch.from_numpy(cell).to(self.device), images)
            cell_dev = torch.from_numpy(cell).to(self.device)[None]
            pbc_dev = torch.tensor([pbc], device=self.device)
            return neighbour_list_torch(pos_dev, self.cutoff, cell_dev, pbc_dev)
        sender, receiver, unit_shifts = neighbour_list(positions, self.cutoff, cell, pbc)
        edge_index = torch.from_numpy(np.stack([sender, receiver]).astype(np.int64)).reshape(2, -1)
        edge_ptr = torch.from_numpy(np.searchsorted(receiver, np.arange(positions.shape[0] + 1)).astype(np.int64))
        return edge_index, torch.from_numpy(unit_shifts.reshape(-1, 3)), edge_ptr

    def _rebuild(self, positions: np.ndarray, pos_dev: torch.Tensor, cell: np.ndarray, pbc) -> None:
        edge_index, unit_shifts, edge_ptr = self._edges(positions, pos_dev, cell, pbc)
        self.num_builds += 1
        num_edges = edge_index.shape[1]
        if not self.static_shapes:
            self._allocate(positions.shape[0], num_edges, 0, pbc)
        elif num_edges > self._capacity:
            # Grow by at least a tenth when the list outgrows its capacity, so that a
            # structure that keeps densifying is recaptured a few times, not at every rebuild.
            capacity = max(num_edges + max(int(_CAPACITY_MARGIN * num_edges), _MIN_SPARE_EDGES),
                           int(_CAPACITY_GROWTH * self._capacity))
            degree = max(num_edges / max(positions.shape[0], 1), 1.0)
            ghosts = max(2, int(np.ceil((capacity - num_edges) / degree)))
            self._allocate(positions.shape[0], capacity, ghosts, pbc)
        self._fill_edges(edge_index, unit_shifts, edge_ptr, cell)

    # ------------------------------------------------------------ static batch
    def _allocate(self, n: int, capacity: int, ghosts: int, pbc) -> None:
        """Fixed-shape batch of ``n`` atoms (+ ``ghosts`` in a second graph) and ``capacity`` edges."""
        dev, dt, lng = self.device, self.dtype, torch.long
        graphs = 1 + (ghosts > 0)
        positions = torch.zeros(n + ghosts, 3, dtype=dt, device=dev)
        spacing = max(_GHOST_SPACING, 2.0 * self.cutoff)
        positions[n:, 0] = spacing * torch.arange(ghosts, dtype=dt, device=dev)
        # Ghosts take an element the structure has: another element would add its own group
        # to every per-element GEMM and a slot to the atomic base, for rows nobody reads
        # (H100, MP-medium, captured step of Si 16^3 with skin 0.5: 27.9 -> 26.8 ms; 4096 atoms 4.26 -> 4.00).
        fill = self._element[:1] if n else torch.zeros(1, dtype=lng, device=dev)
        element = torch.cat([self._element, fill.expand(ghosts)])
        self._batch = {
            K.POSITIONS: positions,
            K.ELEMENT_INDEX: element,
            K.ATOMIC_NUMBERS: self.model.atomic_numbers[element],
            K.BATCH: torch.cat([torch.zeros(n, dtype=lng, device=dev), torch.ones(ghosts, dtype=lng, device=dev)]),
            K.PTR: torch.tensor([0, n, n + ghosts][: graphs + 1], dtype=lng, device=dev),
            K.CELL: torch.zeros(graphs, 3, 3, dtype=dt, device=dev),
            K.PBC: torch.tensor([list(pbc), [False] * 3][:graphs], device=dev),
            K.EDGE_INDEX: torch.zeros(2, capacity, dtype=lng, device=dev),
            K.EDGE_PTR: torch.zeros(n + ghosts + 1, dtype=lng, device=dev),
            K.UNIT_SHIFTS: torch.zeros(capacity, 3, dtype=dt, device=dev),
            K.SHIFTS: torch.zeros(capacity, 3, dtype=dt, device=dev),
        }
        self._num_atoms, self._ghosts, self._capacity = n, ghosts, capacity
        self._groups = element_groups(element)  # the one host sync, here rather than per step
        self._graph = None

    def _fill_edges(self, edge_index, unit_shifts, edge_ptr, cell: np.ndarray) -> None:
        b, n, ghosts = self._batch, self._num_atoms, self._ghosts
        num_edges = edge_index.shape[1]
        pad = self._capacity - num_edges
        dev = self.device
        b[K.EDGE_INDEX][:, :num_edges].copy_(edge_index)
        b[K.EDGE_PTR][: n + 1].copy_(edge_ptr)
        b[K.UNIT_SHIFTS][:num_edges].copy_(unit_shifts)
        b[K.UNIT_SHIFTS][num_edges:].zero_()
        if ghosts:
            # Padding edge j goes to ghost floor(j K / pad) from the next ghost: receiver-sorted.
            k = torch.arange(pad, device=dev) * ghosts // max(pad, 1)
            b[K.EDGE_INDEX][1, num_edges:].copy_(n + k)
            b[K.EDGE_INDEX][0, num_edges:].copy_(n + (k + 1) % ghosts)
            bounds = torch.arange(1, ghosts + 1, device=dev)
            b[K.EDGE_PTR][n + 1 :].copy_(num_edges + (bounds * pad + ghosts - 1) // ghosts)
        cell_dev = torch.from_numpy(cell).to(dev)
        b[K.CELL][0].copy_(cell_dev)
        b[K.SHIFTS].copy_(b[K.UNIT_SHIFTS].double() @ cell_dev)

    # -------------------------------------------------------------- evaluation
    def _forward(self) -> torch.Tensor:
        """The step: ``[energy, stress (9), forces (3N), per-atom energies (N)]`` of graph 0."""
        stress = self._layout[3]
        out = self.model(self._batch, compute_forces=True, compute_stress=stress, groups=self._groups,
                         symmetric_edges=self._symmetric if self.use_graph else None)
        n = self._num_atoms
        forces, energies = out[K.FORCES][:n], out[K.NODE_ENERGY][:n]
        if self._order is not None:  # back to the caller's order
            forces, energies = forces[self._inverse_dev], energies[self._inverse_dev]
        parts = [
            out[K.ENERGY][:1],
            out[K.STRESS][0].reshape(9) if stress else out[K.ENERGY].new_zeros(9),
            forces.reshape(-1),
            energies,
        ]
        return torch.cat([p.detach() for p in parts]).to(torch.float64)

    def _run(self) -> np.ndarray:
        if not self.use_graph:
            return self._forward().cpu().numpy()
        if self._graph is None:
            self._capture()
        self._graph.replay()
        return self._packed.cpu().numpy()

    def _capture(self) -> None:
        self._graph = self._packed = None  # free the previous graph's pool first
        # Warm-up before a first capture initialises libraries (cuBLAS handles, kernels);
        # a recapture after the list outgrew its capacity needs only the new shapes' run.
        warmup = 2 if self.num_captures == 0 else 1
        self._graph, self._packed = capture_cuda_graph(self._forward, self.device, warmup)
        self.num_captures += 1


def capture_cuda_graph(fn: Callable[[], Any], device: Optional[torch.device] = None, warmup: int = 2):
    """``(graph, out)``: ``fn`` captured as a CUDA graph; ``graph.replay()`` refills ``out``
    (``fn``'s return value: a tensor or a tuple of them).

    ``fn`` runs ``warmup`` times on a side stream first (kernels compiled, cuBLAS handles
    made), as capture requires; its inputs must stay at the same addresses between replays.
    """
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # No garbage collection inside the capture: a collected object that owns device memory
    # (an earlier graph and its pool) may free it there, which invalidates the capture.
    # torch.cuda.graph collects once on entry.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with torch.cuda.graph(graph):
            out = fn()
    finally:
        if collecting:
            gc.enable()
    return graph, out
