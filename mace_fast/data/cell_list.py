"""O(N) cell-list neighbour list in torch tensor ops, batched over graphs (GPU or CPU).

It returns the same edges, in the same order and with the same conventions, as the
matscipy-based :func:`mace_fast.data.neighbours.neighbour_list`, applied graph by graph:

* an edge ``(sender i, receiver j, unit shift S)`` has the vector
  ``positions[j] - positions[i] + S @ cell`` (computed from the caller's, unwrapped,
  positions) and is kept when its length is strictly below the cutoff;
* only the zero-shift self-edge is dropped: an atom sees its own periodic images;
* edges are sorted by receiver, then sender, then shift (lexicographic); they never
  cross graphs, so with contiguous graphs the receivers are sorted globally.

Algorithm. Each graph gets a full-rank "search cell": its periodic lattice vectors plus
orthonormal axes orthogonal to them for the non-periodic directions. Atoms are wrapped
into fractional [0, 1) along periodic directions (the integer wrap is remembered and
folded back into the shifts) and binned: periodic directions in fractional coordinates
with bins whose perpendicular height is >= the cutoff (or one bin and several image
offsets when the cell is thinner than the cutoff), non-periodic directions over the
bounding box of the graph's atoms. Atoms are sorted by bin. Each atom searches half
of the neighbour-bin offsets (o = 0 and the lexicographically positive ones; in its own
bin only the atoms after it), so every pair is found once and mirrored into the two
directed edges. The (receiver, bin offset) pairs are expanded into the atoms of the
target bin with cumsum/repeat_interleave gathers, in chunks of bounded size, the
candidates are filtered by distance in float64, and the edges are sorted by one key.

Ties: the distance test is done in float64 like matscipy's, but not with the same
operations, so a pair whose distance is within ~1e-9 relative of the cutoff (a
rounding-error band) may be decided differently by the two lists. Bins are made a
relative 1e-8 taller than the cutoff so that no pair inside the cutoff is missed by
rounding in the fractional coordinates.
"""

import math
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .errors import InputError

# The same thresholds as mace_fast.data.neighbours, so both lists reject the same cells.
_MIN_LATTICE_VECTOR = 1e-6
_MIN_NORMALISED_VOLUME = 1e-6
# Bins are at least cutoff * (1 + margin) tall: fractional coordinates carry rounding
# errors of ~1e-15, and the margin keeps a pair just inside the cutoff within +-1 bin.
_BIN_MARGIN = 1e-8
# Bins are about cutoff / m tall, with m chosen per graph from these to minimise the
# estimated cost: _PAIR_COST per (atom, bin offset) pair plus 1 per candidate pair.
# Finer bins search less volume around each atom but need (2m + 1)^3 offsets: m = 1
# suits large cells, m = 2 or 3 small cells (a 64-atom cell at cutoff 5 A).
_SUBDIVISIONS = (1, 2, 3)
_PAIR_COST = 4.0
# At most this many bins per atom (plus a constant) in a graph: a big empty box (vacuum,
# a sparse molecule) would otherwise cost memory and time proportional to its volume.
_MAX_BINS_PER_ATOM = 2
_MIN_BINS_CAP = 27
# Bins per direction before the cap above (keeps products of counts far from overflow).
_MAX_BINS_PER_DIRECTION = 2**20
# A cell so thin that an atom would need more image offsets than this is refused.
_MAX_OFFSETS = 2**20
# Default number of candidate pairs (and of (receiver, bin offset) pairs) held at once;
# each candidate costs ~100 bytes of temporaries, so 2**21 is ~200 MB at the peak.
_DEFAULT_MAX_CANDIDATES = 2**21


def neighbour_list_torch(
    positions: Tensor,
    cutoff: float,
    cell: Optional[Tensor],
    pbc: Tensor,
    batch: Optional[Tensor] = None,
    num_graphs: Optional[int] = None,
    *,
    min_distance: float = 1e-2,
    max_candidates: int = _DEFAULT_MAX_CANDIDATES,
) -> Tuple[Tensor, Tensor, Tensor]:
    """All directed edges ``i -> j`` with ``|pos[j] - pos[i] + S @ cell[g]| < cutoff``.

    Args:
        positions: [N, 3] float Cartesian positions, Angstrom, not necessarily inside
            the cell (N >= 1).
        cutoff: radial cutoff, Angstrom (> 0).
        cell: [G, 3, 3] lattice vectors as rows ([3, 3] is taken as G = 1; None means
            zeros). Rows of non-periodic directions are ignored and may be zero.
        pbc: [G, 3] bool periodicity ([3] is taken as G = 1).
        batch: [N] int64 graph of each atom, non-decreasing (atoms of a graph are
            contiguous, graphs in order); None puts every atom in graph 0 (G must be 1).
        num_graphs: G, optional; if given it must equal ``cell.shape[0]``.
        min_distance: two atoms (or an atom and a periodic image) closer than this, in
            Angstrom, are an error (almost surely a duplicated atom); 0 disables.
        max_candidates: how many candidate pairs are held in memory at once.

    Returns:
        edge_index: [2, E] int64, row 0 sender, row 1 receiver.
        unit_shifts: [E, 3] integer-valued, ``positions.dtype``: lattice images of the
            sender (zero along non-periodic directions).
        edge_ptr: [N + 1] int64 CSR pointer: the edges of receiver j are
            ``edge_ptr[j]:edge_ptr[j + 1]``.
        All on ``positions.device``; edges sorted by receiver, then sender, then shift.

    Raises:
        InputError: non-finite positions (names the atom and its graph), cutoff <= 0,
            a zero or singular cell along a periodic direction (names the graph),
            atoms closer than ``min_distance`` (names both and the graph), malformed
            arguments.
    """
    pos, cutoff, min_distance, cell, pbc, batch = _check_inputs(
        positions, cutoff, cell, pbc, batch, num_graphs, min_distance
    )
    if int(max_candidates) < 1:
        raise InputError(f"max_candidates must be >= 1, got {max_candidates}")
    max_candidates = int(max_candidates)
    device = pos.device
    num_atoms, num_graphs = pos.shape[0], cell.shape[0]
    atoms_per_graph = torch.bincount(batch, minlength=num_graphs)  # [G]
    graph_start = torch.cumsum(atoms_per_graph, 0) - atoms_per_graph  # [G]
    _check_cell(cell, pbc, atoms_per_graph, graph_start, min_distance)

    # --- Wrap into the search cell. dual[g, :, k] is the dual vector of row k: the
    # fractional coordinate along periodic k, the Cartesian height along free axis k.
    search_cell = _search_cell(cell, pbc)  # [G, 3, 3]
    dual = torch.linalg.inv(search_cell)  # [G, 3, 3]
    atom_pbc = pbc[batch]  # [N, 3]
    frac = torch.einsum("ni,nik->nk", pos, dual[batch])  # [N, 3]
    wrap = torch.where(atom_pbc, torch.floor(frac), torch.zeros_like(frac))  # [N, 3]
    frac_wrapped = frac - wrap
    # Wrapped Cartesian positions: same edge vectors once the shifts absorb the wrap.
    pos_wrapped = pos - torch.einsum("nk,nkc->nc", wrap, cell[batch])  # [N, 3]
    wrap = wrap.long()

    # --- Bins per graph and direction.
    bin_cutoff = cutoff * (1.0 + _BIN_MARGIN)
    inf = torch.full((num_graphs, 3), float("inf"), dtype=pos.dtype, device=device)
    index = batch[:, None].expand(-1, 3)
    low = inf.scatter_reduce(0, index, frac, "amin", include_self=True)
    high = (-inf).scatter_reduce(0, index, frac, "amax", include_self=True)
    has_atoms = (atoms_per_graph > 0)[:, None]  # [G, 1]
    extent = torch.where(has_atoms, high - low, torch.zeros_like(low))  # free directions
    low = torch.where(has_atoms, low, torch.zeros_like(low))
    height = 1.0 / torch.linalg.vector_norm(dual, dim=1)  # [G, 3] periodic heights
    length = torch.where(pbc, height, extent)  # [G, 3]
    # Per graph, the bin size (cutoff / m for m in _SUBDIVISIONS) of least estimated cost.
    layouts = [
        _bin_layout(length, pbc, atoms_per_graph, bin_cutoff, m) for m in _SUBDIVISIONS
    ]
    best = torch.stack([cost for _, _, cost in layouts]).argmin(0)  # [G]
    graphs = torch.arange(num_graphs, device=device)
    num_bins = torch.stack([bins for bins, _, _ in layouts])[best, graphs]  # [G, 3]
    reach = torch.stack([r for _, r, _ in layouts])[best, graphs].long()  # [G, 3]
    safe_height = length / num_bins
    safe_height = torch.where(safe_height > 0, safe_height, torch.ones_like(safe_height))
    num_bins = num_bins.long()
    width = 2 * reach + 1
    offsets_per_graph = width.prod(1)  # [G]
    _check_offsets(offsets_per_graph, height, pbc, cutoff)

    # --- Sort atoms by bin.
    coordinate = torch.where(
        atom_pbc,
        frac_wrapped * num_bins[batch],
        (frac - low[batch]) / safe_height[batch],
    )
    atom_bin = torch.floor(coordinate).long()
    # Rounding can put a wrapped fraction at exactly 1.0 (and the top atom of a free
    # direction sits at exactly num_bins): both belong in the last bin.
    atom_bin = torch.minimum(atom_bin.clamp(min=0), num_bins[batch] - 1)  # [N, 3]
    bins_per_graph = num_bins.prod(1)  # [G]
    bin_start_of_graph = torch.cumsum(bins_per_graph, 0) - bins_per_graph
    total_bins = int(bins_per_graph.sum())
    flat_bin = bin_start_of_graph[batch] + _flatten(atom_bin, num_bins[batch])  # [N]
    atoms_by_bin = torch.argsort(flat_bin, stable=True)  # [N] atom at each slot
    bin_count = torch.bincount(flat_bin, minlength=total_bins)  # [B]
    bin_first = torch.cumsum(bin_count, 0) - bin_count  # [B]

    # --- Half of the bin offsets of each graph: o = 0 and the lexicographically
    # positive ones. Every pair of atoms within the cutoff is found once from one end
    # and mirrored, (i -> j, S) <-> (j -> i, -S): half the candidates of a full shell.
    # In the mixed-radix enumeration of all (2r+1)^3 offsets, o = 0 is the middle rank
    # (K - 1) / 2 and the positive offsets are the ranks after it.
    half_offsets = (offsets_per_graph + 1) // 2  # [G]
    offset_graph = torch.repeat_interleave(
        torch.arange(num_graphs, device=device), half_offsets
    )
    offset_start = torch.cumsum(half_offsets, 0) - half_offsets  # [G]
    rank = (
        torch.arange(offset_graph.shape[0], device=device)
        - offset_start[offset_graph]
        + (offsets_per_graph[offset_graph] - 1) // 2
    )
    offsets = torch.empty((offset_graph.shape[0], 3), dtype=torch.long, device=device)
    for k in (2, 1, 0):
        w = width[offset_graph, k]
        offsets[:, k] = rank % w - reach[offset_graph, k]
        rank = rank // w
    slot_of_atom = torch.empty_like(atoms_by_bin)
    slot_of_atom[atoms_by_bin] = torch.arange(num_atoms, device=device)

    geometry = _Geometry(
        pos_wrapped=pos_wrapped.T.contiguous(),  # [3, N]
        pos_sorted=pos_wrapped[atoms_by_bin].T.contiguous(),  # [3, N] in bin order
        cell_rows=cell.permute(1, 2, 0).contiguous(),  # [3 rows, 3 xyz, G]
        pbc=pbc,
        batch=batch,
        num_bins=num_bins,
        atom_bin=atom_bin,
        slot_of_atom=slot_of_atom,
        bin_start_of_graph=bin_start_of_graph,
        bin_count=bin_count,
        bin_first=bin_first,
        offsets=offsets,
        offset_start=offset_start,
        offsets_per_graph=half_offsets,
        cutoff_squared=cutoff * cutoff,
    )
    # Receivers in chunks of at most ~max_candidates (receiver, offset) pairs.
    parts = [
        _half_edges(geometry, first, last, max_candidates)
        for first, last in _chunks(half_offsets[batch], max_candidates)
    ]
    slot = torch.cat([p[0] for p in parts])  # [H] sender, as a slot in bin order
    receiver = torch.cat([p[1] for p in parts])  # [H]
    image = torch.cat([p[2] for p in parts])  # [H, 3]
    distance_squared = torch.cat([p[3] for p in parts])  # [H]
    del parts
    sender = _take(atoms_by_bin, slot)
    del slot
    # Back to the caller's positions: wrapped = original - wrap @ cell, hence
    # S = wrap[sender] - wrap[receiver] - image.
    shift = _take(wrap, sender) - _take(wrap, receiver) - image
    del image
    # Mirror: each pair found once gives both directed edges.
    sender, receiver = torch.cat([sender, receiver]), torch.cat([receiver, sender])
    shift = torch.cat([shift, -shift])
    distance_squared = torch.cat([distance_squared, distance_squared])
    order = _edge_order(receiver, sender, shift, num_atoms)
    sender, receiver, shift = _take(sender, order), _take(receiver, order), _take(shift, order)
    if min_distance > 0:
        _check_min_distance(
            sender, receiver, shift, _take(distance_squared, order), min_distance, batch,
            graph_start,
        )  # fmt: skip
    del distance_squared, order

    edge_index = torch.stack([sender, receiver])
    unit_shifts = shift.to(positions.dtype)
    return edge_index, unit_shifts, _csr_pointer(receiver, num_atoms)


class _Geometry:
    """Per-call tensors shared by the chunks (a plain record)."""

    def __init__(self, **tensors):
        self.__dict__.update(tensors)


def _half_edges(
    geo: _Geometry, first: int, last: int, max_candidates: int
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pairs within the cutoff found from receivers ``first:last`` through the half
    shell of bin offsets, unsorted: sender slot in bin order [H], receiver [H],
    image [H, 3] int64 (the sender's image, for the wrapped positions), squared
    length [H] float64."""
    device = geo.batch.device
    per_atom = _take(geo.offsets_per_graph, geo.batch[first:last])  # [R]
    num_pairs = int(per_atom.sum())
    # (receiver, offset) pairs.
    local = torch.repeat_interleave(
        torch.arange(last - first, device=device), per_atom, output_size=num_pairs
    )  # [P]
    receiver = local + first
    graph = _take(geo.batch, receiver)
    rank = torch.arange(num_pairs, device=device)
    rank -= _take(torch.cumsum(per_atom, 0) - per_atom, local)
    offset = _take(geo.offsets, _take(geo.offset_start, graph) + rank)  # [P, 3]
    del local, rank

    # Target bin (b + o) mod nb along periodic directions, with the image that the
    # wrap-around crosses, floor((b + o) / nb); along free directions b + o must exist.
    num_bins = _take(geo.num_bins, graph)  # [P, 3]
    unwrapped = _take(geo.atom_bin, receiver) + offset
    image = torch.where(
        _take(geo.pbc, graph),
        torch.div(unwrapped, num_bins, rounding_mode="floor"),
        torch.zeros_like(unwrapped),
    )  # [P, 3]
    target = unwrapped - image * num_bins
    valid = ((target >= 0) & (target < num_bins)).all(1)
    target_bin = _take(geo.bin_start_of_graph, graph) + _flatten(target.clamp(min=0), num_bins)
    target_bin = torch.where(valid, target_bin, torch.zeros_like(target_bin))
    begin = _take(geo.bin_first, target_bin)  # [P] slot of the bin's first atom
    end = begin + _take(geo.bin_count, target_bin)
    # The receiver's own bin (o = 0, image 0) holds each pair twice and the receiver
    # itself: search only the atoms after the receiver in bin order.
    home = (offset == 0).all(1)
    begin = torch.where(home, _take(geo.slot_of_atom, receiver) + 1, begin)
    size = torch.where(valid, end - begin, torch.zeros_like(begin))
    del offset, unwrapped, target, valid, target_bin, end, home, num_bins
    keep = torch.nonzero(size > 0).squeeze(1)
    receiver, graph, image = _take(receiver, keep), _take(graph, keep), _take(image, keep)
    begin, size = _take(begin, keep), _take(size, keep)
    # The sender's image sits at wrapped position + image @ cell, so a candidate's vector
    # is base - wrapped sender with base = wrapped receiver - image @ cell.  [3, P]
    base = torch.index_select(geo.pos_wrapped, 1, receiver)
    for k in range(3):  # one lattice row at a time: no [P, 3, 3] gather
        base -= image[:, k].to(base.dtype) * torch.index_select(geo.cell_rows[k], 1, graph)

    # Expand pairs into candidates chunk by chunk. Candidates address the bin-sorted
    # atoms by slot, so the sender positions are read in contiguous runs.
    pairs, slots, lengths = [], [], []
    for lo, hi in _chunks(size, max_candidates):
        sizes = size[lo:hi]
        num_candidates = int(sizes.sum())
        pair = torch.repeat_interleave(
            torch.arange(hi - lo, device=device), sizes, output_size=num_candidates
        )  # [C] pair of each candidate, relative to lo
        # slot = begin[pair] + rank of the candidate within its pair
        slot = torch.arange(num_candidates, device=device)
        slot += _take(begin[lo:hi] - (torch.cumsum(sizes, 0) - sizes), pair)
        distance_squared = torch.zeros(num_candidates, dtype=base.dtype, device=device)
        for c in range(3):
            d = _take(base[c, lo:hi], pair)
            d -= _take(geo.pos_sorted[c], slot)
            distance_squared.addcmul_(d, d)
        del d
        kept = torch.nonzero(distance_squared < geo.cutoff_squared).squeeze(1)
        pairs.append(_take(pair, kept) + lo)
        slots.append(_take(slot, kept))
        lengths.append(_take(distance_squared, kept))
        del pair, slot, distance_squared, kept

    empty = receiver.new_zeros(0)
    pair = torch.cat(pairs) if pairs else empty
    slot = torch.cat(slots) if slots else empty
    distance_squared = torch.cat(lengths) if lengths else base.new_zeros(0)
    return slot, _take(receiver, pair), _take(image, pair), distance_squared


def _bin_layout(
    length: Tensor, pbc: Tensor, atoms_per_graph: Tensor, bin_cutoff: float, subdivision: int
) -> Tuple[Tensor, Tensor, Tensor]:
    """Bins about ``cutoff / subdivision`` tall: number of bins [G, 3] and offset reach
    [G, 3] (floats holding integers), and the estimated cost per atom [G]."""
    num_bins = torch.floor(length * subdivision / bin_cutoff)
    num_bins = num_bins.clamp(1, _MAX_BINS_PER_DIRECTION)
    # Cap the bins of a graph at O(its atoms) by coarsening all directions alike
    # (coarser bins are taller, so the reach below never grows).
    cap = (_MAX_BINS_PER_ATOM * atoms_per_graph + _MIN_BINS_CAP).to(length.dtype)
    scale = (num_bins.prod(1) / cap).clamp(min=1.0) ** (1.0 / 3.0)  # [G]
    num_bins = torch.floor(num_bins / scale[:, None]).clamp(min=1.0)
    bin_height = length / num_bins
    bin_height = torch.where(bin_height > 0, bin_height, torch.ones_like(bin_height))
    # Offsets needed so that every image within the cutoff lies in a searched bin:
    # ceil(cutoff / bin height), several when a periodic cell is thinner than the
    # cutoff. Along free directions offsets past the bounding box find nothing.
    reach = torch.ceil(bin_cutoff / bin_height)
    reach = torch.where(pbc, reach, torch.minimum(reach, num_bins - 1))
    reach = torch.where(atoms_per_graph[:, None] > 0, reach, torch.zeros_like(reach))
    width = 2 * reach + 1
    # Cost per atom: (receiver, offset) pairs plus candidates, for uniform density
    # (each offset searches 1 / num_bins of the cell along each direction).
    searched = torch.where(pbc, width, torch.minimum(width, num_bins)) / num_bins
    cost = _PAIR_COST * width.prod(1) + atoms_per_graph * searched.prod(1)
    return num_bins, reach, cost


def _csr_pointer(receiver: Tensor, num_atoms: int) -> Tensor:
    """[N + 1] int64 segment pointer of receiver-sorted edges."""
    edge_ptr = torch.zeros(num_atoms + 1, dtype=torch.long, device=receiver.device)
    edge_ptr[1:] = torch.cumsum(torch.bincount(receiver, minlength=num_atoms), 0)
    return edge_ptr


def _take(values: Tensor, index: Tensor) -> Tensor:
    """values[index] along dim 0; index_select is much faster than indexing on CPU."""
    return torch.index_select(values, 0, index)


def _flatten(bins: Tensor, num_bins: Tensor) -> Tensor:
    """[M, 3] bin coordinates -> [M] row-major index within the graph's bins."""
    return (bins[:, 0] * num_bins[:, 1] + bins[:, 1]) * num_bins[:, 2] + bins[:, 2]


def _chunks(sizes: Tensor, budget: int) -> List[Tuple[int, int]]:
    """Split ``range(len(sizes))`` into consecutive runs whose summed size is at most
    ``budget`` plus one item (an item bigger than the budget gets a run of its own)."""
    if sizes.shape[0] == 0:
        return []
    total = torch.cumsum(sizes, 0)
    num = int(total[-1]) // budget + 1
    marks = torch.arange(1, num + 1, device=sizes.device, dtype=total.dtype) * budget
    bounds = torch.searchsorted(total, marks, right=True).tolist()
    edges = sorted({0, sizes.shape[0], *(min(b, sizes.shape[0]) for b in bounds)})
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _edge_order(receiver: Tensor, sender: Tensor, shift: Tensor, num_atoms: int) -> Tensor:
    """Permutation sorting edges by receiver, then sender, then shift (lexicographic).

    One sort of a combined int64 key when it fits, else a chain of stable sorts.
    """
    if receiver.shape[0] == 0:
        return receiver.new_zeros(0)
    low = shift.min(0).values
    span = shift.max(0).values - low + 1  # [3]
    spans = span.tolist()
    shift_range = spans[0] * spans[1] * spans[2]
    atoms_range = (int(receiver.max()) + 1) * num_atoms
    if atoms_range * shift_range < 2**62:
        s = shift - low
        key = (receiver * num_atoms + sender) * shift_range + (
            (s[:, 0] * spans[1] + s[:, 1]) * spans[2] + s[:, 2]
        )
        # Keys are unique, so stability is irrelevant. numpy's sort is several times
        # faster than torch's on CPU.
        if key.device.type == "cpu":
            return torch.from_numpy(np.argsort(key.numpy()))
        return torch.argsort(key)
    order = torch.arange(receiver.shape[0], device=receiver.device)
    for column in (shift[:, 2], shift[:, 1], shift[:, 0], sender, receiver):
        order = order[torch.argsort(column[order], stable=True)]
    return order


def _search_cell(cell: Tensor, pbc: Tensor) -> Tensor:
    """[G, 3, 3] full-rank cell: periodic rows kept, free rows replaced by orthonormal
    axes orthogonal to the periodic rows (so periodic fractional coordinates are those
    of the periodic lattice alone, and free coordinates are Cartesian heights)."""
    periodic_rows = torch.where(pbc[:, :, None], cell, torch.zeros_like(cell))
    # Rows of Vh past the rank (= number of periodic directions, checked independent)
    # span the orthogonal complement of the periodic rows.
    _, _, vh = torch.linalg.svd(periodic_rows)
    free = ~pbc
    row = pbc.sum(1, keepdim=True) + torch.cumsum(free.long(), 1) - 1  # [G, 3]
    row = row.clamp(0, 2)
    axes = torch.gather(vh, 1, row[:, :, None].expand(-1, -1, 3))
    return torch.where(pbc[:, :, None], cell, axes)


# ---------------------------------------------------------------- input checks


def _check_inputs(positions, cutoff, cell, pbc, batch, num_graphs, min_distance):
    if not isinstance(positions, Tensor) or not positions.is_floating_point():
        raise InputError(
            f"positions must be a floating-point tensor, got {type(positions).__name__}"
            + (f" of dtype {positions.dtype}" if isinstance(positions, Tensor) else "")
        )
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise InputError(f"positions must have shape [N, 3], got {tuple(positions.shape)}")
    if positions.shape[0] == 0:
        raise InputError("the structure has no atoms")
    device = positions.device
    num_atoms = positions.shape[0]
    cutoff = _positive("cutoff", cutoff)
    min_distance = _positive("min_distance", min_distance, allow_zero=True)

    # pbc and cell
    try:
        pbc = torch.as_tensor(pbc, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"pbc must be a bool tensor of shape [G, 3]: {error}") from error
    if pbc.dtype != torch.bool:
        raise InputError(f"pbc must be a bool tensor, got dtype {pbc.dtype}")
    if pbc.dim() == 1:
        pbc = pbc[None]
    if pbc.dim() != 2 or pbc.shape[1] != 3:
        raise InputError(f"pbc must have shape [G, 3], got {tuple(pbc.shape)}")
    if cell is None:
        if bool(pbc.any()):
            raise InputError("pbc has periodic directions but no cell was given")
        cell = torch.zeros((pbc.shape[0], 3, 3), dtype=torch.float64, device=device)
    try:
        cell = torch.as_tensor(cell, device=device).to(torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"cell is not numeric: {error}") from error
    if cell.dim() == 2:
        cell = cell[None]
    if cell.dim() != 3 or cell.shape[1:] != (3, 3):
        raise InputError(f"cell must have shape [G, 3, 3], got {tuple(cell.shape)}")
    num = cell.shape[0]
    if pbc.shape[0] != num:
        raise InputError(f"pbc has {pbc.shape[0]} graphs but cell has {num}")
    if num_graphs is not None and int(num_graphs) != num:
        raise InputError(f"num_graphs={num_graphs} but cell has {num} graphs")
    bad_cell = torch.nonzero(~torch.isfinite(cell).reshape(num, 9).all(1)).flatten()
    if bad_cell.numel():
        g = int(bad_cell[0])
        raise InputError(f"graph {g}: cell has non-finite entries: {cell[g].tolist()}")

    # batch
    if batch is None:
        if num != 1:
            raise InputError(f"batch is None but cell has {num} graphs (expected 1)")
        batch = torch.zeros(num_atoms, dtype=torch.long, device=device)
    else:
        if not isinstance(batch, Tensor) or batch.dtype.is_floating_point or (
            batch.dtype == torch.bool
        ):
            raise InputError("batch must be an integer tensor of shape [N]")
        if batch.shape != (num_atoms,):
            raise InputError(
                f"batch has shape {tuple(batch.shape)}, expected [{num_atoms}] to match "
                f"positions"
            )
        batch = batch.to(device=device, dtype=torch.long)
        if bool((batch < 0).any()) or bool((batch >= num).any()):
            raise InputError(f"batch has graph indices outside [0, {num})")
        if num_atoms > 1 and bool((batch[1:] < batch[:-1]).any()):
            raise InputError("batch must be non-decreasing (atoms of a graph contiguous)")

    # positions
    pos = positions.to(torch.float64)
    bad = torch.nonzero(~torch.isfinite(pos).all(1)).flatten()
    if bad.numel():
        a = int(bad[0])
        g = int(batch[a])
        local = a - int(torch.searchsorted(batch, batch[a : a + 1]))
        more = f" (and {bad.numel() - 1} more atoms)" if bad.numel() > 1 else ""
        raise InputError(
            f"position of atom {a} (graph {g}, atom {local} of the graph) is not finite: "
            f"{positions[a].tolist()}{more}"
        )
    return pos, cutoff, min_distance, cell, pbc, batch


def _positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"{name} must be a number, got {value!r}") from error
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be finite and {bound}, got {value}")
    return value


def _check_cell(
    cell: Tensor, pbc: Tensor, atoms_per_graph: Tensor, graph_start: Tensor, min_distance
) -> None:
    """Periodic lattice vectors non-zero, independent, and not shorter than min_distance."""
    lengths = torch.linalg.vector_norm(cell, dim=2)  # [G, 3]
    zero = torch.nonzero(pbc & (lengths < _MIN_LATTICE_VECTOR))
    if zero.numel():
        g, k = zero[0].tolist()
        raise InputError(
            f"graph {g}: cell is singular: lattice vector {k} is zero but direction {k} "
            f"is periodic (pbc={pbc[g].tolist()}, cell={cell[g].tolist()})"
        )
    # det of the Gram matrix of the unit periodic rows (identity on free rows) is the
    # squared volume (area) they span divided by the squared product of their lengths.
    unit = torch.where(pbc[:, :, None], cell / lengths[:, :, None].clamp(min=1e-300), 0.0)
    gram = unit @ unit.transpose(1, 2) + torch.diag_embed((~pbc).to(cell.dtype))
    normalised = torch.linalg.det(gram).clamp(min=0).sqrt()  # [G]
    flat = torch.nonzero((pbc.sum(1) >= 2) & (normalised < _MIN_NORMALISED_VOLUME))
    if flat.numel():
        g = int(flat[0])
        periodic = torch.nonzero(pbc[g]).flatten().tolist()
        raise InputError(
            f"graph {g}: cell is singular: the periodic lattice vectors {periodic} are "
            f"linearly dependent (zero volume; pbc={pbc[g].tolist()}, "
            f"cell={cell[g].tolist()})"
        )
    # An atom would be within min_distance of its own image; refusing it here also
    # keeps an absurdly thin cell from asking for millions of image offsets.
    short = torch.nonzero(pbc & (lengths < min_distance) & (atoms_per_graph > 0)[:, None])
    if short.numel():
        g, k = short[0].tolist()
        a = int(graph_start[g])
        shift = [0, 0, 0]
        shift[k] = 1
        raise InputError(
            f"graph {g}: atom {a} is {float(lengths[g, k]):.3g} A from its own periodic "
            f"image {shift}: a lattice vector is shorter than min_distance={min_distance} A"
        )


def _check_offsets(offsets_per_graph: Tensor, height: Tensor, pbc: Tensor, cutoff) -> None:
    too_many = torch.nonzero(offsets_per_graph > _MAX_OFFSETS).flatten()
    if too_many.numel():
        g = int(too_many[0])
        heights = torch.where(pbc[g], height[g], float("nan")).tolist()
        raise InputError(
            f"graph {g}: the cell is too thin for cutoff {cutoff} A (perpendicular "
            f"heights {heights} A): each atom would have to search "
            f"{int(offsets_per_graph[g])} periodic images (limit {_MAX_OFFSETS})"
        )


def _check_min_distance(
    sender: Tensor,
    receiver: Tensor,
    shift: Tensor,
    distance_squared: Tensor,
    min_distance: float,
    batch: Tensor,
    graph_start: Tensor,
) -> None:
    close = torch.nonzero(distance_squared < min_distance * min_distance).flatten()
    if not close.numel():
        return
    e = int(close[0])
    a, b = sorted((int(sender[e]), int(receiver[e])))
    g = int(batch[a])
    start = int(graph_start[g])
    distance = float(distance_squared[e]) ** 0.5
    image_shift = shift[e].tolist()
    if a == b:
        raise InputError(
            f"graph {g}: atom {a} (atom {a - start} of the graph) is {distance:.3g} A from "
            f"its own periodic image {image_shift}: a lattice vector is shorter than "
            f"min_distance={min_distance} A"
        )
    image = f" (through periodic image {image_shift})" if any(image_shift) else ""
    raise InputError(
        f"graph {g}: atoms {a} and {b} (atoms {a - start} and {b - start} of the graph) "
        f"are at the same place: {distance:.3g} A apart{image}, closer than "
        f"min_distance={min_distance} A"
    )
