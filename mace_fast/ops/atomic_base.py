"""The first interaction from the atomic base: an exact, cheaper route for its message.

In the first interaction every sender's features depend only on its element (they are the
element embedding, mapped by ``linear_up``), and they are scalars. The tensor product of a
scalar channel with the harmonics is the identity coupling, so the aggregated message of
receiver ``i`` is, for a harmonic component ``s`` of degree ``l`` and channel ``c``::

    m[i, s, c] = sum_j h[z_j, c] w[e_ij, l, c] Y[e_ij, s],   w[e, l, c] = sum_k R[e, k] W[k, l, c]

with ``R`` the radial MLP's last hidden layer (times the envelope where the block applies
it) and ``W`` its last layer. Summing over the neighbours first gives the *atomic base*

    B[s, i, q, k] = sum_{j: slot(z_j) = q} R[e_ij, k] Y[e_ij, s]

(``q`` runs over the elements present), and the block's output is one batched product
with a small table per receiving element::

    x[i, :, s] = sum_{q, k} B[s, i, q, k] T_z(i)[s, (q, k), :],
    T_z[s, (q, k), :] = h[z_q, c] W[k, l, c] L_l[c, :] S_l[z, :, :] / avg_num_neighbors

with the block's linear map ``L``, its per-element skip map ``S`` (non-residual blocks) and
the normalisation folded in (density blocks divide by their density instead).

Per edge that is ``K * S`` multiply-adds (1024 for MP-medium) in one kernel
(``kernels/atomic_base.cu``) instead of the last radial layer (``K * P * C``, 32k) and the
tensor product, and no ``[E, P * C]`` weights. Same function, other summation order: the
float64 results agree with the reference to rounding.

On a symmetric graph (``csr.pairs``, :mod:`.edge_pairs`) the radial trunk runs once per
pair of edges, as in the other interactions: the kernel reads each edge's row through its
signed row index, and its backward writes the two edges' gradients of a row to two halves
that are then added (one writer per element, no atomics). At 32k atoms of MP-medium on
an H100 this halves the first interaction's trunk, forward and backward (~1 ms a step).

:func:`atomic_base` is the op (a ``torch.library`` custom op over ctypes kernels, with its
backward); :func:`first_message` gives a block's output from it.
"""

from __future__ import annotations

import ctypes
import math
import re
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..irreps import Irrep
from ..nn.derived import derived
from .build import kernel_source, launch, load_shared
from .build import pointer as _ptr

__all__ = [
    "MAX_SLOTS",
    "atomic_base",
    "atomic_base_reference",
    "atomic_base_source",
    "first_message",
    "first_message_supported",
]

MAX_SLOTS = 8  # elements present; beyond this the base costs more than it saves
MAX_WIDTH = 128  # radial width K (registers: K / 32 * S accumulators per lane)
MAX_SH = 16  # harmonics S, lmax <= 3


@lru_cache(maxsize=None)
def atomic_base_source(width: int, num_sh: int) -> str:
    """CUDA source of the atomic-base kernels for radial width ``K`` and ``S`` harmonics."""
    if not (1 <= width <= MAX_WIDTH and 1 <= num_sh <= MAX_SH):
        raise ValueError(f"atomic_base: width {width} (1..{MAX_WIDTH}) or {num_sh} harmonics (1..{MAX_SH}) unsupported")
    source = kernel_source("atomic_base.cu").replace("@@WIDTH@@", str(width)).replace("@@NUM_SH@@", str(num_sh))
    missing = sorted(set(re.findall(r"@@([A-Z_]+)@@", source)))
    if missing:
        raise RuntimeError(f"unfilled markers in atomic_base.cu: {missing}")
    return source


_LIBS: Dict[Tuple[int, int], ctypes.CDLL] = {}
_P = ctypes.c_void_p


def load_library(width: int, num_sh: int) -> ctypes.CDLL:
    """The compiled kernels for ``(K, S)`` (compiled on first use, then cached)."""
    lib = _LIBS.get((width, num_sh))
    if lib is None:
        lib = load_shared("mace_fast_base", atomic_base_source(width, num_sh), ("atomic_base.h", "pair_rows.cuh"))
        tail = [ctypes.c_int64, ctypes.c_int, _P]
        for suffix in ("f32", "f64"):
            fwd = getattr(lib, f"atomic_base_forward_{suffix}")
            fwd.argtypes, fwd.restype = [_P] * 7 + tail, ctypes.c_int
            bwd = getattr(lib, f"atomic_base_backward_{suffix}")
            sizes = [ctypes.c_int64, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            bwd.argtypes, bwd.restype = [_P] * 9 + sizes + [_P], ctypes.c_int
        if (lib.atomic_base_width(), lib.atomic_base_num_sh()) != (width, num_sh):
            raise RuntimeError(f"internal: atomic_base library for {(width, num_sh)} reports other sizes")
        _LIBS[(width, num_sh)] = lib
    return lib


@torch.library.custom_op("mace_fast::atomic_base", mutates_args=())
def _atomic_base(
    radial: torch.Tensor, sh: torch.Tensor, sender: torch.Tensor, edge_ptr: torch.Tensor, slot: torch.Tensor,
    rows: Optional[torch.Tensor], num_slots: int,
) -> torch.Tensor:
    num_nodes, width, num_sh = edge_ptr.numel() - 1, radial.shape[1], sh.shape[1]
    base = radial.new_empty(num_sh, num_nodes, num_slots * width)
    if num_nodes > 0:
        launch(load_library(width, num_sh), "atomic_base_forward", radial, _ptr(radial), _ptr(sh), _ptr(sender),
               _ptr(edge_ptr), _ptr(slot), _ptr(rows), _ptr(base), num_nodes, num_slots)
    return base


@_atomic_base.register_fake
def _(radial, sh, sender, edge_ptr, slot, rows, num_slots):
    return radial.new_empty(sh.shape[1], edge_ptr.shape[0] - 1, num_slots * radial.shape[1])


@torch.library.custom_op("mace_fast::atomic_base_backward", mutates_args=())
def _atomic_base_backward(
    grad_base: torch.Tensor, radial: torch.Tensor, sh: torch.Tensor, sender: torch.Tensor, edge_ptr: torch.Tensor,
    slot: torch.Tensor, rows: Optional[torch.Tensor], num_slots: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    num_nodes, num_edges, num_rows = edge_ptr.numel() - 1, sh.shape[0], radial.shape[0]
    if rows is None and num_nodes == 0:  # no receivers: no edge carries gradient
        return torch.zeros_like(radial), torch.zeros_like(sh)
    # The kernel writes every row (zero outside the receivers' ranges, and for rows no edge
    # owns). With shared rows each edge writes its half of [2, M, K]: one writer per element.
    grad_radial = radial.new_empty((2,) + radial.shape if rows is not None else radial.shape)
    grad_sh = torch.empty_like(sh)
    if num_edges > 0 or rows is not None:
        launch(load_library(radial.shape[1], sh.shape[1]), "atomic_base_backward", radial, _ptr(grad_base),
               _ptr(radial), _ptr(sh), _ptr(sender), _ptr(edge_ptr), _ptr(slot), _ptr(rows), _ptr(grad_radial),
               _ptr(grad_sh), num_nodes, num_slots, num_edges, num_rows)
    if rows is not None:  # an edge and its reverse share the row: the sum of both halves
        grad_radial = grad_radial[0] + grad_radial[1]
    return grad_radial, grad_sh


@_atomic_base_backward.register_fake
def _(grad_base, radial, sh, sender, edge_ptr, slot, rows, num_slots):
    return torch.empty_like(radial), torch.empty_like(sh)


def _setup(ctx, inputs, output):
    radial, sh, sender, edge_ptr, slot, rows, num_slots = inputs
    ctx.save_for_backward(radial, sh, sender, edge_ptr, slot, rows)
    ctx.num_slots = num_slots


def _backward(ctx, grad_base):
    radial, sh, sender, edge_ptr, slot, rows = ctx.saved_tensors
    if torch.is_grad_enabled():
        raise RuntimeError("atomic_base has no double backward (training uses the torch path)")
    grad_radial, grad_sh = _atomic_base_backward(grad_base.contiguous(), radial, sh, sender, edge_ptr, slot, rows,
                                                 ctx.num_slots)
    return grad_radial, grad_sh, None, None, None, None, None


_atomic_base.register_autograd(_backward, setup_context=_setup)


def atomic_base(
    radial: torch.Tensor, sh: torch.Tensor, sender: torch.Tensor, edge_ptr: torch.Tensor, slot: torch.Tensor,
    num_slots: int, rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``radial [E, K], sh [E, S] -> base [S, N, num_slots * K]`` (see the module docstring).

    ``sender [E]`` and ``edge_ptr [N+1]`` (int64) describe receiver-sorted edges;
    ``slot [N]`` (int32, in ``0..num_slots-1``) is each atom's element slot. ``rows``
    (``EdgePairs.rows``, ``[E + 1]`` int64): ``radial`` is ``[M, K]``, one row per pair of
    edges (:mod:`.edge_pairs`), and edge ``e`` reads row ``|rows[e]|``. Differentiable once
    with respect to ``radial`` and ``sh``.
    """
    if not (radial.is_cuda and sh.is_cuda):
        raise ValueError("atomic_base: radial and sh must be CUDA tensors (use atomic_base_reference on the CPU)")
    if radial.dtype not in (torch.float32, torch.float64) or sh.dtype != radial.dtype:
        raise TypeError(f"atomic_base: radial and sh must share float32 or float64, got {radial.dtype}, {sh.dtype}")
    per_edge = rows is None and radial.shape[0] == sh.shape[0]
    per_pair = rows is not None and rows.shape == (sh.shape[0] + 1,) and radial.shape[0] >= 1
    if radial.dim() != 2 or sh.dim() != 2 or sender.shape != sh.shape[:1] or not (per_edge or per_pair):
        raise ValueError(
            f"atomic_base: shapes radial {list(radial.shape)}, sh {list(sh.shape)}, sender {list(sender.shape)}"
            + ("" if rows is None else f", rows {list(rows.shape)}") + " do not describe the same edges"
        )
    if sender.dtype != torch.int64 or edge_ptr.dtype != torch.int64 or slot.dtype != torch.int32:
        raise TypeError("atomic_base: sender and edge_ptr must be int64, slot int32")
    if rows is not None and rows.dtype != torch.int64:
        raise TypeError(f"atomic_base: rows must be int64, got {rows.dtype}")
    if slot.shape[0] != edge_ptr.shape[0] - 1:
        raise ValueError(f"atomic_base: slot has {slot.shape[0]} atoms, edge_ptr {edge_ptr.shape[0] - 1}")
    if not 1 <= num_slots <= MAX_SLOTS:
        raise ValueError(f"atomic_base: num_slots must be in 1..{MAX_SLOTS}, got {num_slots}")
    return _atomic_base(radial.contiguous(), sh.contiguous(), sender.contiguous(), edge_ptr.contiguous(),
                        slot.contiguous(), None if rows is None else rows.contiguous(), int(num_slots))


def atomic_base_reference(
    radial: torch.Tensor, sh: torch.Tensor, sender: torch.Tensor, receiver: torch.Tensor, slot: torch.Tensor,
    num_nodes: int, num_slots: int,
) -> torch.Tensor:
    """The same base in plain torch (any device, any order of edges): ``[S, N, num_slots * K]``."""
    width, num_sh = radial.shape[1], sh.shape[1]
    outer = sh.unsqueeze(2) * radial.unsqueeze(1)  # [E, S, K]
    index = receiver * num_slots + slot[sender].long()
    base = outer.new_zeros(num_nodes * num_slots, num_sh, width).index_add(0, index, outer)
    return base.reshape(num_nodes, num_slots, num_sh, width).permute(2, 0, 1, 3).reshape(num_sh, num_nodes, -1)


# --- the first interaction's message ---------------------------------------------------------


def _paths_by_output(block) -> Optional[List[int]]:
    """For each output block ``o`` of ``block.linear``: the TP path it reads, which must couple
    the harmonics block ``o`` (so that the per-channel layout follows the harmonics); else None."""
    paths = block.conv_tp.paths
    path_of_block = {p.i_out: k for k, p in enumerate(paths)}
    order = []
    for o, idx in enumerate(block.linear.sources):
        if len(idx) != 1 or idx[0] not in path_of_block or paths[path_of_block[idx[0]]].i_sh != o:
            return None
        order.append(path_of_block[idx[0]])
    return order if sorted(order) == list(range(len(paths))) else None


def first_message_supported(block) -> bool:
    """Whether :func:`first_message` computes ``block``'s output.

    Needs scalar sender features (one ``0e`` block), identity couplings (every path
    ``0e x l -> l``, one per harmonics block, mapped by the linear map to the target block
    of the same index), a non-residual skip that maps each target block to itself, a radial
    width up to ``MAX_WIDTH`` and at most ``MAX_SH`` harmonics.
    """
    tp = block.conv_tp
    if len(block.node_feats_irreps) != 1 or block.node_feats_irreps[0][1] != Irrep(0, 1):
        return False
    if tp.irreps_sh.dim > MAX_SH or len(block.target_irreps) != len(tp.irreps_sh):
        return False
    for k, p in enumerate(tp.paths):
        cg = getattr(tp, f"cg_{k}")
        eye = torch.eye(cg.shape[1], dtype=cg.dtype, device=cg.device)
        if cg.shape[0] != 1 or not torch.allclose(cg[0], eye, atol=1e-12):
            return False
    if _paths_by_output(block) is None:
        return False
    if not block.residual and block.skip.sources != [[o] for o in range(len(block.target_irreps))]:
        return False
    return 1 <= block.radial_mlp.sizes[-2] <= MAX_WIDTH


def _tables(block, element_feats: torch.Tensor, present: Sequence[int]) -> torch.Tensor:
    """``T [Zp, S, Q, C]`` of the module docstring, ``Q = Zp * K``, one per *receiving* element.

    Folded in: the linear map, ``1 / avg_num_neighbors`` (blocks without density) and the
    receiver's element map (non-residual blocks). ``element_feats [Zp, C]`` are the features of
    the elements ``present`` (model element indices), which are also the receivers' slots.
    """
    tp = block.conv_tp
    h = block.linear_up(element_feats)  # [Zp, C]
    w = block.radial_mlp.scaled_weight(len(block.radial_mlp.layers) - 1)  # [K, P * C]
    offsets = [0]
    for p in tp.paths:
        offsets.append(offsets[-1] + p.mul)
    scale = 1.0 if block.density else 1.0 / block.avg_num_neighbors
    per_block = []  # [Q, C] per target block
    for o, k in enumerate(_paths_by_output(block)):
        wp = w[:, offsets[k] : offsets[k + 1]]  # [K, C]
        v = (h.unsqueeze(1) * wp.unsqueeze(0)).reshape(-1, wp.shape[1])  # [Zp * K, C]: (q, k) rows
        lw = block.linear.weights[o]
        per_block.append(v @ (lw * (scale / math.sqrt(lw.shape[0]))))
    tables = []
    for z in present:
        rows = []
        for o, ((_, ir), v) in enumerate(zip(block.target_irreps, per_block)):
            if not block.residual:
                sw = block.skip.weights[o]  # [Z, C, C]
                v = v @ (sw[z] / math.sqrt(sw.shape[1] * block.skip.num_elements))
            rows += [v] * ir.dim
        tables.append(torch.stack(rows))
        if block.residual:  # no receiver-dependent part: one table serves all
            break
    return torch.stack(tables)


TABLES_KEPT = 16  # compositions whose tables a block keeps for inference (besides pinned ones)


def _cached_tables(block, present: Tuple[int, ...], sources: Sequence[torch.Tensor], make) -> torch.Tensor:
    """``make()`` through the derived-tensor cache, one entry per set of ``present`` elements.

    A batch relaxation of many different structures meets many element sets; the tables
    (up to tens of MB each) are kept for the ``TABLES_KEPT`` most recent ones, plus every set
    a CUDA graph was captured with (the graph reads the cached tensor, so it must stay).
    """
    name = f"atomic_base_tables_{present}"
    tables = derived(block, name, sources, make)
    cache = block.__dict__.get("_derived_cache", {})
    if name not in cache:  # not cached (gradients wanted): nothing to keep
        return tables
    order: List[str] = block.__dict__.setdefault("_tables_order", [])
    pinned = block.__dict__.setdefault("_tables_pinned", set())
    if name in order:
        order.remove(name)
    order.append(name)
    if tables.is_cuda and torch.cuda.is_current_stream_capturing():
        pinned.add(name)
    while len(order) > TABLES_KEPT + len(pinned & set(order)):
        victim = next(n for n in order if n not in pinned)
        order.remove(victim)
        cache.pop(victim, None)
    return tables


def first_message(
    block,
    element_feats: torch.Tensor,
    slot: torch.Tensor,
    groups,
    sh: torch.Tensor,
    edge_feats: torch.Tensor,
    cutoff: Optional[torch.Tensor],
    density: Optional[torch.Tensor],
    csr,
    radial: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The first interaction's output ``x [N, C, D]`` (as ``InteractionBlock.forward`` returns it).

    ``element_feats [Zp, C]``: the sender features of each element present, in the order of
    ``groups`` (``[(element, atoms)]``); ``slot [N]`` int32: each atom's index in it;
    ``density [N, 1]`` for density blocks; ``csr``: the batch's :class:`EdgeCSR`;
    ``radial``: the radial MLP's hidden layers times the envelope, per row, when given
    (from a table), instead of evaluating them.
    """
    mlp = block.radial_mlp
    layers = list(mlp.layers)
    pairs = csr.pairs
    if radial is None:
        if pairs is not None:  # one trunk row per pair of edges (ops/edge_pairs.py)
            edge_feats = pairs.gather(edge_feats)
            cutoff = None if cutoff is None else pairs.gather(cutoff)
        if block._radial_kernel:
            from .radial_mlp import radial_trunk

            radial = radial_trunk(edge_feats, layers[:-1], mlp.act.scale, owner=mlp)
        else:
            radial = mlp.hidden(edge_feats)
        if cutoff is not None:
            radial = radial * cutoff
    num_slots, num_nodes = element_feats.shape[0], slot.shape[0]
    rows = None if pairs is None else pairs.rows
    if radial.is_cuda:
        base = atomic_base(radial, sh, csr.sender, csr.edge_ptr, slot, num_slots, rows)  # [S, N, Q]
    else:
        if rows is not None:
            radial = radial[rows[:-1].abs()]
        base = atomic_base_reference(radial, sh, csr.sender, csr.receiver, slot, num_nodes, num_slots)
    present = tuple(z for z, _ in groups)
    sources: Sequence[torch.Tensor] = [
        element_feats, layers[-1], *block.linear_up.weights, *block.linear.weights,
        *([] if block.residual else block.skip.weights),
    ]
    tables = _cached_tables(block, present, sources, lambda: _tables(block, element_feats, present)).to(base.dtype)
    if tables.shape[0] == 1:
        out = torch.bmm(base, tables[0])  # [S, N, C]
    else:  # receivers grouped by element, one product per group
        out = base.new_empty(base.shape[0], num_nodes, tables.shape[-1])
        for q, (_, atoms) in enumerate(groups):
            out = out.index_copy(1, atoms, torch.bmm(base.index_select(1, atoms), tables[q]))
    if density is not None:
        out = out / (density + 1).reshape(1, num_nodes, 1)
    # [N, C, S], the per-channel layout, as a view: the symmetric contraction reads the
    # component-major [S, N, C] in place.
    return out.permute(1, 2, 0)
