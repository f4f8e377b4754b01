"""The MACE model assembled from :mod:`mace_fast.nn`, in plain PyTorch.

This is the reference implementation: every fast kernel is tested against it. The energy
of a structure is

    E = sum_i E0[z_i] + sum_i (scale * (E_pair,i + sum_layers readout(h_i)) + shift)

and forces, virials and stress are its derivatives with respect to positions and a
symmetric strain (taken through autograd).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from . import keys as K
from .config import ModelConfig
from .irreps import Irrep, Irreps
from .nn.interaction import InteractionBlock, scatter_sum
from .nn.derived import derived
from .nn.linear import ElementEmbedding, ElementGroups, EquivariantLinear, element_groups
from .nn.radial import RadialEmbedding
from .nn.readout import LinearReadout, NonLinearReadout
from .nn.spherical_harmonics import spherical_harmonics
from .nn.symmetric_contraction import SymmetricContraction
from .nn.zbl import ZBLRepulsion

__all__ = ["MACE", "ProductBlock", "PAIRING_MIN_EDGES"]

# Below this many edges, MACE.forward(symmetric_edges=None) keeps one radial MLP row per edge.
PAIRING_MIN_EDGES = 1 << 16


@contextlib.contextmanager
def _parameters_as_constants(module: nn.Module, active: bool) -> Iterator[None]:
    """While ``active``, ``module``'s parameters that require grad are marked as not requiring
    it; restored on exit (also on an error).

    For an inference step, whose one differentiation is with respect to positions (and
    strain) and frees the graph: no parameter gradient can be asked for afterwards. Built-in
    PyTorch ops skip such gradients by themselves, but custom backwards (whose
    ``needs_input_grad`` is fixed at the forward) compute them, and derived weights
    (nn/derived.py) could not be cached. (H100, MP-medium Si 16^3, CUDA path, captured
    step: 37.1 ms with trainable parameters, 33.7 ms with constants.)
    """
    changed = [p for p in module.parameters() if p.requires_grad] if active else []
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


class ProductBlock(nn.Module):
    """Symmetric contraction, a linear map, and the residual: ``[N, C, D] -> [N, hidden.dim]``."""

    def __init__(self, irreps_in: Irreps, irreps_out: Irreps, correlation: int, num_elements: int) -> None:
        super().__init__()
        self.symmetric_contraction = SymmetricContraction(irreps_in, irreps_out, correlation, num_elements)
        self.linear = EquivariantLinear(irreps_out, irreps_out)

    def forward(
        self, x: torch.Tensor, sc: Optional[torch.Tensor], element: torch.Tensor, use_kernels: bool = False
    ) -> torch.Tensor:
        out = self.linear(self.symmetric_contraction(x, element, use_kernels))
        return out if sc is None else out + sc


class MACE(nn.Module):
    """MACE interatomic potential. ``forward(batch) -> dict`` of energies and derivatives.

    ``batch`` follows :mod:`mace_fast.keys`. Outputs: ``energy [G]``, ``node_energy [N]``,
    ``interaction_energy [G]`` and, when asked for, ``forces [N, 3]``, ``virials [G, 3, 3]``
    and ``stress [G, 3, 3]`` (ASE sign convention; zero where the cell has no volume).
    """

    BACKENDS = ("auto", "torch", "cuda")

    def __init__(self, config: ModelConfig, backend: str = "torch") -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.set_backend(backend)
        num_elements = len(config.atomic_numbers)
        hidden = Irreps(config.hidden_irreps)
        scalars = Irreps([(config.num_channels, Irrep(0, 1))])
        sh_irreps = Irreps.spherical_harmonics(config.max_ell)
        target = Irreps([(config.num_channels, ir) for _, ir in sh_irreps])
        self.sh_irreps = sh_irreps
        self.radial_intervals = 0  # radial weights from tables (tabulate_radial); 0: the MLPs

        self.register_buffer("atomic_numbers", torch.tensor(config.atomic_numbers, dtype=torch.long), persistent=False)
        self.register_buffer("atomic_energies", torch.tensor(config.atomic_energies, dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(config.scale, dtype=torch.float64))
        self.register_buffer("shift", torch.tensor(config.shift, dtype=torch.float64))

        self.node_embedding = ElementEmbedding(num_elements, config.num_channels)
        self.radial_embedding = RadialEmbedding(
            config.r_max,
            config.num_bessel,
            config.num_polynomial_cutoff,
            config.distance_transform,
            config.apply_cutoff,
        )
        self.pair_repulsion = ZBLRepulsion(p=config.num_polynomial_cutoff) if config.pair_repulsion else None

        self.interactions = nn.ModuleList()
        self.products = nn.ModuleList()
        self.readouts = nn.ModuleList()
        last = config.num_interactions - 1
        feats_in = scalars
        for i in range(config.num_interactions):
            hidden_out = scalars if i == last else hidden
            kind = config.interaction_first if i == 0 else config.interaction
            self.interactions.append(
                InteractionBlock(
                    kind=kind,
                    node_feats_irreps=feats_in,
                    sh_irreps=sh_irreps,
                    target_irreps=target,
                    hidden_irreps=hidden_out,
                    num_elements=num_elements,
                    num_radial=config.num_bessel,
                    radial_mlp=config.radial_mlp,
                    avg_num_neighbors=config.avg_num_neighbors,
                    radial_act_scale=config.radial_act_scale,
                )
            )
            per_channel = Irreps([(1, ir) for _, ir in target])
            self.products.append(ProductBlock(per_channel, hidden_out, config.correlations[i], num_elements))
            if i == last:
                self.readouts.append(
                    NonLinearReadout(hidden_out, Irreps(config.mlp_irreps), config.gate, config.readout_act_scale)
                )
            else:
                self.readouts.append(LinearReadout(hidden_out))
            feats_in = hidden_out

    @property
    def r_max(self) -> float:
        return self.config.r_max

    def set_backend(self, backend: str) -> "MACE":
        """``"torch"`` (reference), ``"cuda"`` (fused kernels) or ``"auto"``.

        The backend never changes the parameters. ``auto`` uses the kernels on a CUDA device
        when they build and the call is not a training step (the kernels have no double
        backward yet), and says once why when it falls back.
        """
        if backend not in self.BACKENDS:
            raise ValueError(f"backend must be one of {self.BACKENDS}, got {backend!r}")
        self.backend = backend
        self._fallback_said = False
        self._edge_kernel: Optional[bool] = None  # fused edge embedding usable (set on first CUDA use)
        self._first_from_base = False  # first message from the atomic base (set with the kernels)
        self._slot_tables: Dict[tuple, torch.Tensor] = {}
        return self

    def tabulate_radial(self, intervals: int = 2048) -> "MACE":
        """Evaluate the radial MLPs from tables, for float32 inference (0: the MLPs again).

        Each interaction's radial weights, a function of the edge length alone, are
        tabulated on ``intervals`` equal intervals of ``[0, r_max]`` as cubic Hermite splines
        (:mod:`mace_fast.ops.radial_spline`), the first time a float32 step needs them and
        again whenever the MLP's weights change. With 2048 intervals their error in values
        and slopes is below the float32 MLP's own for MP-medium; the tests check the
        energies, forces and stress against float64 as for the exact path.

        Used only outside training, in float32, when no radial MLP weight wants a gradient;
        float64 always runs the exact MLPs. Needs radial features that depend on the length
        alone (no distance transform).
        """
        intervals = int(intervals)
        if intervals and intervals < 2:
            raise ValueError(f"tabulate_radial: at least 2 intervals (or 0 to switch off), got {intervals}")
        if intervals and self.radial_embedding.transform is not None:
            raise ValueError(
                f"tabulate_radial: the radial features depend on the elements through the "
                f"distance transform {self.config.distance_transform!r}, not on the length alone"
            )
        self.radial_intervals = intervals
        return self

    def _radial_table(self, block: InteractionBlock, hidden: bool, dtype: torch.dtype) -> torch.Tensor:
        """``[n, P, 4]``: ``block``'s radial function (its MLP, or only the hidden layers for the
        atomic base, times the envelope) tabulated in float64, stored in ``dtype``; cached
        while the weights are unchanged."""
        mlp, embedding = block.radial_mlp, self.radial_embedding
        intervals = self.radial_intervals
        sources = [*mlp.layers, *embedding.buffers()]

        def make() -> torch.Tensor:
            from .ops.radial_spline import tabulate

            mlp64, embedding64 = copy.deepcopy(mlp).double(), copy.deepcopy(embedding).double()

            def fn(r: torch.Tensor) -> torch.Tensor:
                feats, cutoff = embedding64(r, None, None)
                out = mlp64.hidden(feats) if hidden else mlp64(feats)
                return out if cutoff is None else out * cutoff

            return tabulate(fn, self.r_max, intervals, dtype, device=mlp.layers[0].device)

        name = f"radial_table_{'hidden' if hidden else 'weights'}_{intervals}_{dtype}"
        return derived(block, name, sources, make, differentiable=False)

    def _tabulated_rows(
        self, vectors: torch.Tensor, csr, training: bool
    ) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """``(r [M], order [M] or None)``: the lengths of the radial-weight rows (edges, or
        pairs of edges with ``csr.pairs``; unused rows get ``r_max``, where the weights are
        zero) and, on the kernels' path (``csr``), the order they visit them in; None where
        the MLPs run."""
        if not self.radial_intervals or training or vectors.dtype != torch.float32:
            return None
        if torch.is_grad_enabled() and any(
            p.requires_grad for block in self.interactions for p in block.radial_mlp.parameters()
        ):
            return None  # the tables would give these weights no gradient
        from .ops.radial_spline import spline_order

        lengths = torch.linalg.norm(vectors, dim=-1)  # [E]
        pairs = None if csr is None else csr.pairs
        if pairs is None:
            r = lengths
        else:
            r = pairs.gather(lengths.unsqueeze(-1)).squeeze(-1)
            r = torch.where(pairs.pair_edge < lengths.shape[0], r, self.r_max)
        return r, (spline_order(r) if csr is not None else None)

    def _use_kernels(self, device: torch.device, training: bool) -> bool:
        if self.backend == "torch":
            return False
        reason = None
        if device.type != "cuda":
            if self.backend == "cuda":
                raise RuntimeError(f"backend='cuda' needs the model on a CUDA device, not {device.type}")
            return False  # nothing to fall back from: the kernels are for GPUs
        if training:
            reason = "training needs double backward, which the kernels do not have yet"
        if self.backend == "cuda" and reason:
            raise RuntimeError(f"backend='cuda' cannot be used: {reason}")
        if reason is None:
            try:
                self._compile_kernels()  # a no-op once every layer has its kernels
            except Exception as err:  # pragma: no cover - depends on the install
                reason = f"the kernels could not be built: {err}"
                if self.backend == "cuda":
                    raise
        if reason and not self._fallback_said:
            import warnings

            warnings.warn(f"mace_fast: backend 'auto' uses the torch reference: {reason}", stacklevel=3)
            self._fallback_said = True
        return reason is None

    def _compile_kernels(self) -> None:
        """Compile every layer's kernels at once (in parallel) before the first CUDA step."""
        from concurrent.futures import ThreadPoolExecutor

        from .ops import atomic_base, edge_embedding
        from .ops.channelwise_tp import compile_tp
        from .ops.symmetric_contraction import compile_symmetric_contraction

        from .ops.radial_mlp import compile_trunk, radial_mlp_supported

        tps = [i for i in self.interactions if i._tp_key is None]
        scs = [p.symmetric_contraction for p in self.products if p.symmetric_contraction._kernel_key is None]
        edges = self._edge_kernel is None
        if not tps and not scs and not edges:
            return
        with ThreadPoolExecutor(max_workers=len(tps) + len(scs) + 1) as pool:
            jobs = []
            if edges:  # distance transforms keep the torch path
                first = self.interactions[0]
                self._first_from_base = atomic_base.first_message_supported(first)
                if self._first_from_base:
                    width, num_sh = first.radial_mlp.sizes[-2], first.conv_tp.irreps_sh.dim
                    jobs.append(pool.submit(atomic_base.load_library, width, num_sh))
                lmax = self.config.max_ell
                self._edge_kernel = edge_embedding.edge_embedding_supported(self.radial_embedding, lmax)
                if self._edge_kernel:
                    jobs.append(pool.submit(edge_embedding.load_library, lmax))
            for block in tps:
                mlp = block.radial_mlp
                block._radial_kernel = radial_mlp_supported(mlp)
                if block._radial_kernel:
                    jobs.append(pool.submit(compile_trunk, mlp.sizes[:-1], self.atomic_energies.device))
            tp_keys = pool.map(lambda block: compile_tp(block.conv_tp, block.grouped_message), tps)
            sc_keys = pool.map(compile_symmetric_contraction, scs)
            for job in jobs:
                job.result()  # raises a build error here, where the fallback handles it
            for block, key in zip(tps, tp_keys):
                block._tp_key = key
            for block, key in zip(scs, sc_keys):
                block._kernel_key = key

    def save(self, path, metadata: Optional[dict] = None) -> None:
        """Write a model file (see :mod:`mace_fast.model_file`)."""
        from .model_file import save_model

        save_model(self, path, metadata)

    def forward(
        self,
        batch: Dict[str, torch.Tensor],
        compute_forces: bool = True,
        compute_virials: bool = False,
        compute_stress: bool = False,
        training: bool = False,
        groups: Optional[ElementGroups] = None,
        symmetric_edges: Optional[bool] = None,
    ) -> Dict[str, torch.Tensor]:
        """``groups`` (from :func:`~mace_fast.nn.linear.element_groups` of ``element_index``)
        may be passed by callers that reuse one batch layout: computing them costs a host
        synchronisation, which a captured CUDA graph cannot contain.

        Outside ``training``, forces, virials and stress are the graph's one and only
        derivative (it is freed after): the parameters are constants for that call.

        ``symmetric_edges`` (CUDA backend, forces or stress outside training): whether
        every edge shorter than ``r_max`` has its reverse in the batch, as in a full
        neighbour list; then the radial MLPs run once per pair of edges
        (:mod:`mace_fast.ops.edge_pairs`). ``None``: checked on the device, at the cost of
        one host synchronisation, for batches of at least ``PAIRING_MIN_EDGES`` edges;
        ``False`` for smaller ones and while a CUDA graph is captured.
        ``True`` is checked too, except during a capture, where a batch that is not
        symmetric turns the results into NaN: pass it only for edges that are.
        """
        single_derivative = (compute_forces or compute_virials or compute_stress) and not training
        with _parameters_as_constants(self, single_derivative):
            return self._forward(
                batch, compute_forces, compute_virials, compute_stress, training, groups, symmetric_edges
            )

    def _forward(
        self,
        batch: Dict[str, torch.Tensor],
        compute_forces: bool,
        compute_virials: bool,
        compute_stress: bool,
        training: bool,
        groups: Optional[ElementGroups],
        symmetric_edges: Optional[bool] = None,
    ) -> Dict[str, torch.Tensor]:
        element = batch[K.ELEMENT_INDEX]
        edge_index = batch[K.EDGE_INDEX]
        graph = batch[K.BATCH]
        num_graphs = batch[K.PTR].numel() - 1
        num_nodes = element.shape[0]
        sender, receiver = edge_index[0], edge_index[1]

        positions = batch[K.POSITIONS]
        cell = batch[K.CELL].reshape(-1, 3, 3)
        want_strain = compute_virials or compute_stress
        if compute_forces or want_strain:
            positions = positions.detach().requires_grad_(True)
        displacement = None
        if want_strain:
            # Derivative with respect to a symmetric strain applied to positions and cell.
            displacement = torch.zeros((num_graphs, 3, 3), dtype=positions.dtype, device=positions.device)
            displacement.requires_grad_(True)
            strain = 0.5 * (displacement + displacement.transpose(-1, -2))
            pos = positions + torch.einsum("ni,nij->nj", positions, strain[graph])
            cell = cell + torch.matmul(cell, strain)
            shifts = torch.einsum("ei,eij->ej", batch[K.UNIT_SHIFTS].to(pos.dtype), cell[graph[sender]])
        else:
            pos = positions
            shifts = batch[K.SHIFTS]

        csr = None
        if self._use_kernels(positions.device, training):
            from .ops.channelwise_tp import edge_csr, symmetric_flag
            from .ops.segment import edge_vectors

            csr = edge_csr(edge_index, batch[K.EDGE_PTR], num_nodes)
            vectors = edge_vectors(pos, shifts, csr)
            # The radial embedding is symmetric in sender and receiver (a function of the
            # length and of both elements alike), so an edge and its reverse have the same
            # weights: on a symmetric graph the tensor product's backward is one pass.
            edge_lengths = torch.linalg.norm(vectors.detach(), dim=-1)
            csr.symmetric = symmetric_flag(csr, batch[K.UNIT_SHIFTS], edge_lengths, self.r_max)
            if (compute_forces or want_strain) and not training:
                vectors = self._pair_edges(csr, vectors, edge_lengths, symmetric_edges)
        else:
            vectors = pos[receiver] - pos[sender] + shifts  # [E, 3]
        z = self.atomic_numbers[element]
        fused_edges = csr is not None and bool(self._edge_kernel)
        if not fused_edges or self.pair_repulsion is not None:
            lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)  # [E, 1]

        node_e0 = self.atomic_energies.to(pos.dtype)[element]
        if fused_edges:
            from .ops.edge_embedding import embed_edges

            # One kernel for harmonics, Bessel basis and envelope (and one for their backward).
            sh, edge_feats, cutoff = embed_edges(self.radial_embedding, vectors, self.config.max_ell, self.r_max)
        else:
            sh = spherical_harmonics(vectors, self.config.max_ell)
            edge_feats, cutoff = self.radial_embedding(lengths, z[sender], z[receiver])

        node_energies: List[torch.Tensor] = []
        if self.pair_repulsion is not None:
            node_energies.append(self.pair_repulsion(lengths, z[sender], z[receiver], receiver, num_nodes))
        feats = self.node_embedding(element)
        groups = element_groups(element) if groups is None else groups
        # The graph is differentiated exactly once, below, when forces or stress are asked
        # for outside training: the kernels' backward may then overwrite saved radial weights.
        grad_into_w = (compute_forces or want_strain) and not training
        by_element = self._by_element(groups, element) if csr is not None and self._first_from_base else None
        tabulated = self._tabulated_rows(vectors, csr, training)
        for interaction, product, readout in zip(self.interactions, self.products, self.readouts):
            radial = None
            if tabulated is not None:
                from .ops.radial_spline import TabulatedRadial

                table = self._radial_table(interaction, by_element is not None, pos.dtype)
                # Without an order (the torch backend) it stays plain torch, also on a GPU.
                radial = TabulatedRadial(tabulated[0], table, self.r_max, tabulated[1])
            x, sc = interaction(
                feats, element, sh, edge_feats, edge_index, cutoff, csr, groups, grad_into_w, by_element, radial
            )
            by_element = None  # only the first interaction's inputs depend on the element alone
            feats = product(x, sc, element, csr is not None)
            node_energies.append(readout(feats))

        node_inter = torch.stack(node_energies, dim=0).sum(dim=0)
        node_inter = self.scale.to(pos.dtype) * node_inter + self.shift.to(pos.dtype)
        inter_energy = scatter_sum(node_inter, graph, num_graphs)
        energy = scatter_sum(node_e0, graph, num_graphs) + inter_energy
        out = {
            K.ENERGY: energy,
            K.NODE_ENERGY: node_e0 + node_inter,
            K.INTERACTION_ENERGY: inter_energy,
        }
        if compute_forces or want_strain:
            out.update(self._derivatives(inter_energy, positions, displacement, cell, compute_forces, training))
        return out

    def edges_symmetric(self, batch: Dict[str, torch.Tensor]) -> bool:
        """Whether every edge of ``batch`` shorter than ``r_max`` has its reverse (and no pair
        of atoms has several images): what ``symmetric_edges=True`` promises. One host
        synchronisation."""
        from .ops.channelwise_tp import edge_csr, symmetric_flag

        edge_index, pos = batch[K.EDGE_INDEX], batch[K.POSITIONS]
        csr = edge_csr(edge_index, batch[K.EDGE_PTR], pos.shape[0])
        lengths = torch.linalg.norm(pos[edge_index[1]] - pos[edge_index[0]] + batch[K.SHIFTS], dim=-1)
        return bool(symmetric_flag(csr, batch[K.UNIT_SHIFTS], lengths, self.r_max).item())

    def _pair_edges(
        self, csr, vectors: torch.Tensor, lengths: torch.Tensor, symmetric_edges: Optional[bool]
    ) -> torch.Tensor:
        """Set ``csr.pairs`` where the radial weights can be shared by an edge and its
        reverse (see :meth:`forward`); returns ``vectors``, NaN where a promise made during
        a capture does not hold."""
        from .ops.edge_pairs import edge_pairs, flag_is_set

        capturing = vectors.is_cuda and torch.cuda.is_current_stream_capturing()
        if symmetric_edges is None:
            # Small batches are bound by kernel launches: the check's host sync would cost
            # more than sharing the weights saves (H100, MP-medium: the same 1.2 ms captured
            # step at 23k edges, 15 % less at 182k).
            big = vectors.shape[0] >= PAIRING_MIN_EDGES
            symmetric_edges = big and not capturing and flag_is_set(csr.symmetric)
        elif symmetric_edges and not capturing and not flag_is_set(csr.symmetric):
            raise ValueError(
                "symmetric_edges=True, but some edge shorter than r_max has no reverse in the batch "
                "(or a pair of atoms has several periodic images within the cutoff)"
            )
        if not symmetric_edges:
            return vectors
        csr.pairs = edge_pairs(csr.sender_perm, lengths, self.r_max)
        if capturing:  # the flag cannot be read now: make a broken promise visible
            vectors = vectors * torch.where(csr.symmetric.bool(), 1.0, float("nan")).to(vectors.dtype)
        return vectors

    def _by_element(self, groups: ElementGroups, element: torch.Tensor):
        """``(element_feats [Zp, C], slot [N] int32)`` for the first interaction's atomic base:
        the embedding of each element present (slot order) and each atom's slot; None when
        too many elements are present for the base to pay off."""
        from .ops.atomic_base import MAX_SLOTS

        present = tuple(z for z, _ in groups)
        if not 1 <= len(present) <= MAX_SLOTS:
            return None
        key = (present, element.device)
        lookup = self._slot_tables.get(key)
        if lookup is None:  # built on the first call, before any CUDA-graph capture
            table = torch.zeros(len(self.config.atomic_numbers), dtype=torch.int32)
            table[list(present)] = torch.arange(len(present), dtype=torch.int32)
            lookup = self._slot_tables[key] = table.to(element.device)
        embedding = self.node_embedding
        feats = derived(embedding, f"present_{present}", [embedding.weight],
                        lambda: torch.stack([embedding.table()[z] for z in present]))
        return feats, lookup[element]

    @staticmethod
    def _derivatives(
        energy: torch.Tensor,
        positions: torch.Tensor,
        displacement: Optional[torch.Tensor],
        cell: torch.Tensor,
        compute_forces: bool,
        training: bool,
    ) -> Dict[str, torch.Tensor]:
        inputs = [positions] + ([displacement] if displacement is not None else [])
        grads = torch.autograd.grad(
            [energy.sum()], inputs, create_graph=training, retain_graph=training, allow_unused=True
        )
        out: Dict[str, torch.Tensor] = {}
        if compute_forces:
            g = grads[0]
            out[K.FORCES] = -g if g is not None else torch.zeros_like(positions)
        if displacement is not None:
            g = grads[1] if grads[1] is not None else torch.zeros_like(displacement)
            volume = torch.linalg.det(cell).abs().reshape(-1, 1, 1)
            out[K.VIRIALS] = -g
            out[K.STRESS] = torch.where(volume > 0, g / torch.where(volume > 0, volume, 1.0), 0.0)
        return out
