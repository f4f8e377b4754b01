"""Batched FIRE relaxation: many structures go through the model together, one batch per step.

This is the screening path: on a GPU one forward/backward over a batch of a few thousand atoms
costs about as much as one over a single small structure, so relaxing structures together
is far faster than relaxing them one after another with an ASE optimizer.

Per structure the trajectory is the one of ASE's ``FIRE`` (default parameters, no downhill
check) on the atoms, or on ``FrechetCellFilter(atoms)`` with ``cell=True``: the same
update rule, the same ``maxstep`` clipping of the whole step, the same ``fmax`` test and
step count. Only round-off differs (the tests check the positions against ASE to ~1e-8).

Scheduling: structures enter the batch in input order until ``max_atoms_per_batch`` is
reached. A structure that converges (or runs out of steps, or fails) leaves the batch
at once, its result is recorded, and waiting structures take its place, so the batch
stays full and finished structures cost nothing more. A structure's trajectory does not
depend on which others share its batch.

The FIRE state is kept in float64 on the model's device whatever the model's dtype;
only the positions handed to the model are cast.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress
from torch import Tensor

from .. import keys as K
from ..data.errors import InputError
from ..data.graph import ElementTable, build_graph, collate
from .relax import RelaxResult, check_structure

__all__ = ["FireParameters", "relax_batch"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class FireParameters:
    """FIRE constants; the defaults are those of ``ase.optimize.FIRE``."""

    dt: float = 0.1
    maxstep: float = 0.2
    dtmax: float = 1.0
    Nmin: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99
    a: float = 0.1


class _StructureError(Exception):
    """Graph building failed for structure ``index`` (position in the lists given)."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def _build_batch(
    positions: Sequence[np.ndarray],
    cells: Sequence[np.ndarray],
    pbcs: Sequence[np.ndarray],
    numbers: Sequence[np.ndarray],
    cutoff: float,
    elements: ElementTable,
    dtype: torch.dtype,
    device: torch.device,
) -> Dict[str, Tensor]:
    """Batch dict (:mod:`mace_fast.keys`) of G structures, on ``device``.

    Args (one entry per structure): positions [n_g, 3] float64, cells [3, 3] rows are
    lattice vectors, pbcs [3] bool, numbers [n_g] atomic numbers.

    The only place the neighbour list is built; a GPU neighbour list can replace the
    body as long as it keeps this contract, including raising :class:`_StructureError`
    naming the structure that cannot be built (e.g. atoms that ran into each other).
    """
    if device.type == "cuda":
        try:
            return _build_batch_on_device(positions, cells, pbcs, numbers, cutoff, elements, dtype, device)
        except InputError:
            pass  # the per-structure path below finds the structure at fault and names it
    graphs = []
    for g, (pos, cell, pbc, z) in enumerate(zip(positions, cells, pbcs, numbers)):
        try:
            graphs.append(build_graph(pos, z, cell, tuple(bool(p) for p in pbc), cutoff, elements, dtype))
        except InputError as err:
            raise _StructureError(g, str(err)) from err
    return {k: v.to(device, non_blocking=True) for k, v in collate(graphs).items()}


def _build_batch_on_device(positions, cells, pbcs, numbers, cutoff, elements, dtype, device) -> Dict[str, Tensor]:
    """:func:`_build_batch` with the neighbour list of all structures built at once on the GPU."""
    from ..data.cell_list import neighbour_list_torch

    counts = torch.tensor([len(p) for p in positions])
    element = torch.as_tensor(elements.index(np.concatenate(numbers)), device=device)
    pos = torch.from_numpy(np.concatenate(positions).astype(np.float64)).to(device)
    cell = torch.from_numpy(np.stack([np.asarray(c, dtype=np.float64) for c in cells])).to(device)
    pbc = torch.tensor(np.stack([np.asarray(p, dtype=bool) for p in pbcs]), device=device)
    graph = torch.repeat_interleave(torch.arange(len(positions)), counts).to(device)
    edge_index, unit_shifts, edge_ptr = neighbour_list_torch(pos, cutoff, cell, pbc, graph, len(positions))
    shifts = torch.einsum("ei,eij->ej", unit_shifts, cell[graph[edge_index[0]]])
    return {
        K.POSITIONS: pos.to(dtype),
        K.ATOMIC_NUMBERS: torch.as_tensor(np.concatenate(numbers), dtype=torch.int64, device=device),
        K.ELEMENT_INDEX: element,
        K.EDGE_INDEX: edge_index,
        K.EDGE_PTR: edge_ptr,
        K.UNIT_SHIFTS: unit_shifts.to(dtype),
        K.SHIFTS: shifts.to(dtype),
        K.CELL: cell.to(dtype),
        K.PBC: pbc,
        K.BATCH: graph,
        K.PTR: torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(device),
    }


def _segment_sum(values: Tensor, seg: Tensor, num: int) -> Tensor:
    """[N] per-atom values -> [G] per-structure sums."""
    return torch.zeros(num, dtype=values.dtype, device=values.device).index_add_(0, seg, values)


def _segment_max(values: Tensor, seg: Tensor, num: int) -> Tensor:
    """[N] non-negative per-atom values -> [G] per-structure maxima (0 for none)."""
    out = torch.zeros(num, dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(0, seg, values, reduce="amax", include_self=True)


class _Batch:
    """Packed FIRE state of the structures currently in the batch (G of them, N atoms).

    ``x`` [N, 3] are the optimised atom coordinates: Cartesian positions, or with a cell
    the positions in the undeformed cell, ``u = r F^-T`` (FrechetCellFilter's). With a
    cell, ``xc`` [G, 3, 3] is ``exp_cell_factor * log(F)`` for the deformation gradient
    ``F`` (cell = cell0 F^T); ASE's filter stores ``exp_cell_factor * log(n F)``, which
    differs by a constant and so moves identically. Kept as state, so no matrix log is
    ever needed (F = I at the start, log F = 0).
    """

    def __init__(self, cell: bool, device: torch.device):
        self.cell, self.device = cell, device
        f64, i64 = dict(dtype=torch.float64, device=device), dict(dtype=torch.int64, device=device)
        self.ids: List[int] = []  # input index of each structure, in batch order
        self.counts: List[int] = []  # atoms of each
        self.x = torch.zeros(0, 3, **f64)
        self.v = torch.zeros(0, 3, **f64)
        self.xc = torch.zeros(0, 3, 3, **f64)
        self.vc = torch.zeros(0, 3, 3, **f64)
        self.cell0 = torch.zeros(0, 3, 3, **f64)
        self.cell_factor = torch.zeros(0, **f64)  # exp_cell_factor: number of atoms
        self.dt = torch.zeros(0, **f64)
        self.a = torch.zeros(0, **f64)
        self.n_pos = torch.zeros(0, **i64)  # FIRE's Nsteps: steps since the last uphill one
        self.first = torch.zeros(0, dtype=torch.bool, device=device)  # no velocity yet
        self.steps = torch.zeros(0, **i64)  # optimizer steps taken
        self.seg = torch.zeros(0, **i64)  # [N] batch position of each atom
        self.f: Optional[Tensor] = None  # [G, 3, 3] F of the last geometry() (with a cell)

    @property
    def num_atoms(self) -> int:
        return sum(self.counts)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, indices: Sequence[int], atoms_list: Sequence[Atoms], fire: FireParameters) -> None:
        """Append the structures ``atoms_list[i] for i in indices`` with fresh FIRE state."""
        if not indices:
            return
        f64 = dict(dtype=torch.float64, device=self.device)
        new = [atoms_list[i] for i in indices]
        g = len(new)
        counts = [len(a) for a in new]
        n = sum(counts)
        self.ids += list(indices)
        self.counts += counts
        # One concatenation per call: adding structures one at a time would copy the state
        # once per structure.
        self.x = torch.cat([self.x, torch.as_tensor(np.concatenate([a.positions for a in new]), **f64)])
        self.v = torch.cat([self.v, torch.zeros(n, 3, **f64)])
        self.xc = torch.cat([self.xc, torch.zeros(g, 3, 3, **f64)])
        self.vc = torch.cat([self.vc, torch.zeros(g, 3, 3, **f64)])
        self.cell0 = torch.cat([self.cell0, torch.as_tensor(np.stack([a.cell.array for a in new]), **f64)])
        self.cell_factor = torch.cat([self.cell_factor, torch.tensor(counts, **f64)])
        self.dt = torch.cat([self.dt, torch.full((g,), fire.dt, **f64)])
        self.a = torch.cat([self.a, torch.full((g,), fire.a, **f64)])
        self.n_pos = torch.cat([self.n_pos, self.n_pos.new_zeros(g)])
        self.first = torch.cat([self.first, self.first.new_ones(g)])
        self.steps = torch.cat([self.steps, self.steps.new_zeros(g)])
        self._reindex()

    def keep(self, mask: Sequence[bool]) -> None:
        """Drop the structures where ``mask`` is False."""
        mask_g = torch.tensor(list(mask), dtype=torch.bool, device=self.device)
        mask_n = mask_g[self.seg]
        self.ids = [i for i, m in zip(self.ids, mask) if m]
        self.counts = [c for c, m in zip(self.counts, mask) if m]
        self.x, self.v = self.x[mask_n], self.v[mask_n]
        for name in ("xc", "vc", "cell0", "cell_factor", "dt", "a", "n_pos", "first", "steps"):
            setattr(self, name, getattr(self, name)[mask_g])
        self._reindex()

    def _reindex(self) -> None:
        counts = torch.tensor(self.counts, dtype=torch.int64, device=self.device)
        self.seg = torch.repeat_interleave(torch.arange(len(self.counts), device=self.device), counts)

    def deformation(self) -> Tensor:
        """[G, 3, 3] deformation gradient F = exp(xc / exp_cell_factor) (I without a cell)."""
        return torch.linalg.matrix_exp(self.xc / self.cell_factor[:, None, None])

    def geometry(self) -> tuple:
        """Cartesian positions [N, 3] and cells [G, 3, 3] (rows are lattice vectors).

        With a cell, also stores the deformation gradient F [G, 3, 3] as ``self.f``.
        """
        if not self.cell:
            return self.x, self.cell0
        self.f = self.deformation()
        ft = self.f.transpose(1, 2)
        return torch.einsum("ni,nij->nj", self.x, ft[self.seg]), self.cell0 @ ft


def _generalised_forces(batch: _Batch, forces: Tensor, stress: Tensor, cells: Tensor) -> tuple:
    """Forces conjugate to the optimised coordinates, as FrechetCellFilter.get_forces.

    forces [N, 3] and stress [G, 3, 3] (ASE sign) of the model at the current geometry,
    cells [G, 3, 3]. Returns atom rows [N, 3] and cell rows [G, 3, 3]; without a cell the
    atom rows are the forces and the cell rows zero. Needs ``batch.geometry()`` first.
    """
    if not batch.cell:
        return forces, torch.zeros_like(batch.xc)
    f = batch.f
    # Energy derivatives wrt u and F: r = u F^T, so dE/du = dE/dr F; the cell gradient
    # is the virial (-V sigma, scalar_pressure 0) times F^-T.
    atom_rows = torch.einsum("ni,nij->nj", forces, f[batch.seg])
    volume = torch.linalg.det(cells).abs()[:, None, None]
    stress = 0.5 * (stress + stress.transpose(1, 2))  # ASE's Voigt round trip symmetrises
    ucf_grad = (-volume * stress) @ torch.linalg.inv(f.transpose(1, 2))
    # Through F = exp(L) the derivative wrt L is the adjoint of exp's Frechet derivative
    # at L applied to ucf_grad, which is the Frechet derivative at L^T in direction
    # ucf_grad: the upper-right block of exp([[L^T, G], [0, L^T]]).
    lt = (batch.xc / batch.cell_factor[:, None, None]).transpose(1, 2)
    block = torch.zeros(len(batch), 6, 6, dtype=lt.dtype, device=lt.device)
    block[:, :3, :3] = lt
    block[:, 3:, 3:] = lt
    block[:, :3, 3:] = ucf_grad
    dlog = torch.linalg.matrix_exp(block)[:, :3, 3:]
    return atom_rows, dlog / batch.cell_factor[:, None, None]


def _fire_step(batch: _Batch, f: Tensor, fc: Tensor, p: FireParameters) -> None:
    """One ASE FIRE step for every structure, with per-structure dt, a and Nsteps.

    f [N, 3] atom rows, fc [G, 3, 3] cell rows of the generalised forces (zero without a
    cell, so the cell terms drop out of every dot product). Updates ``batch`` in place.
    """
    seg, g = batch.seg, len(batch)
    vf = _segment_sum((f * batch.v).sum(1), seg, g) + (fc * batch.vc).sum((1, 2))
    f2 = _segment_sum((f * f).sum(1), seg, g) + (fc * fc).sum((1, 2))
    v2 = _segment_sum((batch.v * batch.v).sum(1), seg, g) + (batch.vc * batch.vc).sum((1, 2))
    # ASE skips this mixing on its very first step (it has no velocity yet).
    downhill = ~batch.first & (vf > 0.0)
    uphill = ~batch.first & ~(vf > 0.0)
    # Mix the velocity towards the force direction: v <- (1-a) v + a |v| f/|f|.
    mix = torch.where(downhill, batch.a / torch.sqrt(torch.where(downhill, f2, 1.0)) * torch.sqrt(v2), 0.0)
    keep_v = torch.where(downhill, 1.0 - batch.a, torch.where(uphill, 0.0, 1.0))
    batch.v = keep_v[seg, None] * batch.v + mix[seg, None] * f
    batch.vc = keep_v[:, None, None] * batch.vc + mix[:, None, None] * fc
    grow = downhill & (batch.n_pos > p.Nmin)
    batch.dt = torch.where(grow, torch.clamp(batch.dt * p.finc, max=p.dtmax), batch.dt)
    batch.a = torch.where(grow, batch.a * p.fa, batch.a)
    batch.n_pos = torch.where(downhill, batch.n_pos + 1, batch.n_pos)
    batch.n_pos = torch.where(uphill, 0, batch.n_pos)
    batch.a = torch.where(uphill, torch.full_like(batch.a, p.astart), batch.a)
    batch.dt = torch.where(uphill, batch.dt * p.fdec, batch.dt)
    batch.first = torch.zeros_like(batch.first)

    batch.v = batch.v + batch.dt[seg, None] * f
    batch.vc = batch.vc + batch.dt[:, None, None] * fc
    dr = batch.dt[seg, None] * batch.v
    drc = batch.dt[:, None, None] * batch.vc
    # maxstep bounds the norm of the whole step of a structure (all atoms and cell rows).
    norm = torch.sqrt(_segment_sum((dr * dr).sum(1), seg, g) + (drc * drc).sum((1, 2)))
    scale = torch.where(norm > p.maxstep, p.maxstep / torch.where(norm > 0, norm, 1.0), 1.0)
    batch.x = batch.x + dr * scale[seg, None]
    batch.xc = batch.xc + drc * scale[:, None, None]
    batch.steps = batch.steps + 1


def _finished_atoms(atoms: Atoms, positions: np.ndarray, cell: Optional[np.ndarray], energy: float,
                    forces: np.ndarray, stress: np.ndarray) -> Atoms:
    """Copy of ``atoms`` at the final geometry with a SinglePointCalculator, as relax_one writes."""
    out = atoms.copy()
    if cell is not None:
        out.set_cell(cell, scale_atoms=False)
    out.positions = positions
    props = {"energy": energy, "forces": forces}
    if out.pbc.any() and abs(out.cell.volume) > 1e-12:
        props["stress"] = full_3x3_to_voigt_6_stress(stress)
    out.calc = SinglePointCalculator(out, **props)
    return out


def _precheck(atoms: Atoms, elements: ElementTable, cell: bool) -> None:
    if len(atoms) == 0:
        raise InputError("the structure has no atoms")
    if atoms.constraints:
        raise InputError("constraints are not supported by the batched relaxation (relax it one by one)")
    check_structure(atoms, elements.numbers)
    if cell and not atoms.pbc.all():
        raise InputError("--cell needs a structure periodic in all three directions")
    if cell and abs(atoms.cell.volume) < 1e-12:
        raise InputError("--cell needs a cell with a non-zero volume")


def relax_batch(
    atoms_list: Sequence[Atoms],
    model: torch.nn.Module,
    fmax: float = 0.01,
    steps: int = 500,
    cell: bool = False,
    *,
    device: Union[str, torch.device, None] = None,
    dtype: Union[str, torch.dtype, None] = None,
    max_atoms_per_batch: Optional[int] = 4096,
    fire: FireParameters = FireParameters(),
    sources: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[RelaxResult], None]] = None,
) -> List[RelaxResult]:
    """Relax every structure with FIRE, many at a time in one model batch.

    Args:
        atoms_list: structures (not modified). model: a :class:`~mace_fast.model.MACE`.
        fmax: a structure is converged when its largest force row (with ``cell``, also
            its FrechetCellFilter cell rows) is below this, eV/Å.
        steps: maximum FIRE steps per structure. cell: relax the cell too (needs pbc on
            all three axes), as ``FrechetCellFilter`` (exp_cell_factor = number of atoms,
            scalar_pressure = 0).
        device, dtype: where and in what precision to evaluate the model; default: the
            model's. A model that has to be moved or cast is copied first.
        max_atoms_per_batch: atoms in one batch at most (a bigger structure still gets a
            batch of its own); None: all structures at once.
        fire: FIRE constants (default: ASE's).
        sources: a name per structure for the report (e.g. ``"in.xyz, frame 3"``).
        progress: called with each result as its structure finishes.

    Returns:
        One :class:`RelaxResult` per structure, in input order. Failures (unknown element,
        overlapping atoms, atoms that run into each other, non-finite energy) have
        ``error`` set; the others still run. ``steps`` is the number of FIRE steps taken
        and ``fmax`` the final largest (generalised) force, as with ASE.
    """
    if fmax <= 0 or steps < 0:
        raise ValueError(f"need fmax > 0 and steps >= 0, got fmax={fmax}, steps={steps}")
    if max_atoms_per_batch is not None and max_atoms_per_batch < 1:
        raise ValueError(f"max_atoms_per_batch must be >= 1 or None, got {max_atoms_per_batch}")
    model_param = next(model.parameters())
    device = model_param.device if device is None else torch.device(device)
    if device.type == model_param.device.type and device.index is None:
        device = model_param.device  # "cuda" names the model's "cuda:k" too
    dtype = model_param.dtype if dtype is None else _DTYPES.get(dtype, dtype)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be 'float32', 'float64' or a floating torch dtype, got {dtype!r}")
    if (model_param.device, model_param.dtype) != (device, dtype):
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
    elements = ElementTable(model.config.atomic_numbers)
    cutoff = float(model.r_max)

    results: List[Optional[RelaxResult]] = [None] * len(atoms_list)

    def name(i: int) -> str:
        return sources[i] if sources is not None else f"structure {i}"

    def finish(result: RelaxResult) -> None:
        results[result.index] = result
        if progress is not None:
            progress(result)

    queue = []
    for i, atoms in enumerate(atoms_list):
        try:
            _precheck(atoms, elements, cell)
        except Exception as err:  # noqa: BLE001 - a bad structure is reported, the others run
            finish(RelaxResult(index=i, source=name(i), error=f"{type(err).__name__}: {err}"))
        else:
            queue.append(i)
    queue.reverse()  # pop() from the end takes them in input order

    batch = _Batch(cell, device)
    was_training = model.training
    model.eval()
    try:
        while queue or len(batch):
            # Refill: waiting structures take the places of the finished ones.
            joining, num_atoms = [], batch.num_atoms
            while queue and ((len(batch) == 0 and not joining) or max_atoms_per_batch is None
                             or num_atoms + len(atoms_list[queue[-1]]) <= max_atoms_per_batch):
                joining.append(queue.pop())
                num_atoms += len(atoms_list[joining[-1]])
            batch.add(joining, atoms_list, fire)

            positions, cells = batch.geometry()
            pos_np = np.split(positions.cpu().numpy(), np.cumsum(batch.counts)[:-1])
            cells_np = cells.cpu().numpy()
            try:
                graph = _build_batch(pos_np, list(cells_np), [atoms_list[i].pbc for i in batch.ids],
                                     [atoms_list[i].numbers for i in batch.ids], cutoff, elements, dtype, device)
            except _StructureError as err:
                g = err.index
                i = batch.ids[g]
                finish(RelaxResult(index=i, source=name(i), steps=int(batch.steps[g]),
                                   error=f"InputError: after {int(batch.steps[g])} steps: {err}"))
                batch.keep([k != g for k in range(len(batch))])
                continue

            want_stress = any(atoms_list[i].pbc.any() for i in batch.ids)
            try:
                out = model(graph, compute_forces=True, compute_stress=want_stress)
            except Exception as err:  # noqa: BLE001 - e.g. out of memory: fail this batch, go on
                for g, i in enumerate(batch.ids):
                    finish(RelaxResult(index=i, source=name(i), steps=int(batch.steps[g]),
                                       error=f"{type(err).__name__} in a batch of {batch.num_atoms} atoms: {err}"))
                batch.keep([False] * len(batch))
                continue
            energy = out[K.ENERGY].detach().double()
            forces = out[K.FORCES].detach().double()
            stress = (out[K.STRESS].detach().double() if want_stress
                      else torch.zeros(len(batch), 3, 3, dtype=torch.float64, device=device))

            f_rows, fc_rows = _generalised_forces(batch, forces, stress, cells)
            g_num = len(batch)
            fmax_now = torch.maximum(_segment_max(torch.linalg.norm(f_rows, dim=1), batch.seg, g_num),
                                     torch.linalg.norm(fc_rows, dim=2).amax(1))
            finite = torch.isfinite(energy) & (_segment_sum((~torch.isfinite(forces)).any(1).double(),
                                                            batch.seg, g_num) == 0)
            if cell:
                finite &= torch.isfinite(stress).all(2).all(1)
            converged = fmax_now < fmax
            done = converged | (batch.steps >= steps) | ~finite

            done_list = done.tolist()
            if any(done_list):
                # Move everything of the finished structures to the host in one go.
                e_np, f_np, s_np = energy.cpu().numpy(), forces.cpu().numpy(), stress.cpu().numpy()
                f_split = np.split(f_np, np.cumsum(batch.counts)[:-1])
                fmax_np, conv_np, fin_np, steps_np = (fmax_now.cpu().numpy(), converged.tolist(),
                                                      finite.tolist(), batch.steps.tolist())
                for g, i in enumerate(batch.ids):
                    if not done_list[g]:
                        continue
                    result = RelaxResult(index=i, source=name(i), steps=int(steps_np[g]), fmax=float(fmax_np[g]),
                                         converged=bool(conv_np[g]), energy=float(e_np[g]),
                                         extra={"batched": True})
                    if not fin_np[g]:
                        result.error = "energy, forces or stress not finite"
                    else:
                        result.atoms = _finished_atoms(atoms_list[i], pos_np[g], cells_np[g] if cell else None,
                                                       result.energy, f_split[g], s_np[g])
                    finish(result)

            if not all(done_list):
                _fire_step(batch, f_rows, fc_rows, fire)
            if any(done_list):
                batch.keep([not d for d in done_list])
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]
