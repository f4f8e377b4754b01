"""All-pairs neighbour list for small structures on the GPU: a few kernels, few syncs.

For a few hundred atoms the cell list (:mod:`mace_fast.data.cell_list`) is bound by its
launches and host synchronisations (~8 ms on an H100 whatever the size), while testing
every pair against every lattice image that can be in range is a handful of element-wise
kernels over ``N * N * images`` entries. The MD step uses this list when that product is
small; the output is the cell list's exactly (same edges, order and shifts).
"""

from __future__ import annotations

import itertools
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .cell_list import _check_min_distance, _csr_pointer

__all__ = ["dense_images", "neighbour_list_dense"]

# Largest N * N * images tested at once (~16.7M entries, ~130 MB per float64 temporary).
MAX_ENTRIES = 1 << 24


def dense_images(num_atoms: int, cutoff: float, cell: np.ndarray, pbc) -> Optional[np.ndarray]:
    """The lattice images ``[M, 3]`` (int) the all-pairs search needs, or None where it does
    not apply: mixed periodicity, or more than :data:`MAX_ENTRIES` pairs times images."""
    pbc = np.asarray(pbc, dtype=bool)
    if pbc.all():
        if abs(np.linalg.det(cell)) < 1e-9:
            return None
        # Positions are wrapped into the cell, so fractional differences lie in (-1, 1) and
        # an image within the cutoff is at most ceil(cutoff / height) cells away.
        heights = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
        reach = np.ceil(cutoff / heights).astype(int)
        if np.prod(2 * reach + 1) * num_atoms**2 > MAX_ENTRIES:
            return None
        ranges = [range(-r, r + 1) for r in reach]
        return np.array(list(itertools.product(*ranges)), dtype=np.int64)
    if not pbc.any():
        return np.zeros((1, 3), dtype=np.int64) if num_atoms**2 <= MAX_ENTRIES else None
    return None


def neighbour_list_dense(
    positions: Tensor, cutoff: float, cell: Tensor, images: np.ndarray, min_distance: float = 1e-2
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(edge_index [2, E], unit_shifts [E, 3], edge_ptr [N + 1])`` as from
    :func:`~mace_fast.data.cell_list.neighbour_list_torch` for one structure.

    ``positions [N, 3]``, ``cell [3, 3]`` (rows), ``images`` from :func:`dense_images`.
    Edges ``i -> j`` with ``|pos[j] - pos[i] + S @ cell| < cutoff``, sorted by receiver,
    sender, then shift. Raises InputError for atoms closer than ``min_distance``.
    """
    device, dtype = positions.device, torch.float64
    pos = positions.to(dtype)
    cell = cell.to(device=device, dtype=dtype)
    num = pos.shape[0]
    periodic = images.shape[0] > 1 or bool(np.any(images))
    if periodic:
        wrap = torch.floor(pos @ torch.linalg.inv(cell))  # [N, 3] cells to move back by
        pos = pos - wrap @ cell
    else:
        wrap = torch.zeros_like(pos)
    image = torch.as_tensor(images, device=device)  # [M, 3]
    offsets = image.to(dtype) @ cell  # [M, 3]
    # [receiver, sender, image] -> squared length of pos[receiver] - pos[sender] + offset,
    # one Cartesian component at a time (no [N, N, M, 3] temporary).
    d2 = torch.zeros(num, num, image.shape[0], dtype=dtype, device=device)
    for c in range(3):
        d = pos[:, None, None, c] - pos[None, :, None, c] + offsets[None, None, :, c]
        d2.addcmul_(d, d)
    within = d2 < cutoff * cutoff
    zero = int(np.flatnonzero(~images.any(axis=1))[0]) if periodic else 0
    within[torch.arange(num, device=device), torch.arange(num, device=device), zero] = False  # self
    receiver, sender, k = torch.nonzero(within, as_tuple=True)  # sorted: receiver, sender, image
    # Back from wrapped to given positions: pos_w[r] - pos_w[s] + I @ cell
    #   = pos[r] - pos[s] + (I - wrap[r] + wrap[s]) @ cell
    shifts = image[k].to(positions.dtype) - wrap[receiver].to(positions.dtype) + wrap[sender].to(positions.dtype)
    if min_distance > 0:
        batch = torch.zeros(num, dtype=torch.long, device=device)
        _check_min_distance(sender, receiver, shifts, d2[receiver, sender, k], min_distance, batch, batch[:1])
    return torch.stack([sender, receiver]), shifts, _csr_pointer(receiver, num)
