"""The first interaction's message from the atomic base, against the reference block (CPU).

The base is a regrouping of the reference sum (module docstring of
``mace_fast/ops/atomic_base.py``); here it is computed with the torch version of the base,
so these tests check the algebra (the table, the folded linear map, the layout) on any
machine. The CUDA kernel of the base is tested against the torch version in
``test_atomic_base_gpu.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from mace_fast import MACE, ModelConfig
from mace_fast import keys as K
from mace_fast.data.graph import ElementTable, build_graph
from mace_fast.nn.linear import element_groups
from mace_fast.ops.atomic_base import MAX_SLOTS, atomic_base_reference, first_message_supported
from mace_fast.ops.channelwise_tp import edge_csr

ELEMENTS = [1, 6, 8, 14]


def _model(seed, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(atomic_numbers=ELEMENTS, atomic_energies=[-0.5, -1.0, -2.0, -3.0], r_max=4.5, num_bessel=8,
                      radial_mlp=[24, 40], avg_num_neighbors=12.0, **kw)
    return MACE(cfg).double()


def _graph(model, rng, elements):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    atoms.numbers = rng.choice(elements, len(atoms))
    atoms.positions += rng.normal(0, 0.15, atoms.positions.shape)
    return build_graph(atoms.positions, atoms.numbers, np.asarray(atoms.cell), atoms.pbc, model.r_max,
                       ElementTable(model.config.atomic_numbers), torch.float64)


def _inputs(model, graph):
    vectors = graph[K.POSITIONS][graph[K.EDGE_INDEX][1]] - graph[K.POSITIONS][graph[K.EDGE_INDEX][0]]
    vectors = vectors + graph[K.SHIFTS]
    from mace_fast.nn.spherical_harmonics import spherical_harmonics

    lengths = vectors.norm(dim=-1, keepdim=True)
    z = model.atomic_numbers[graph[K.ELEMENT_INDEX]]
    sender, receiver = graph[K.EDGE_INDEX]
    feats, cutoff = model.radial_embedding(lengths, z[sender], z[receiver])
    return spherical_harmonics(vectors, model.config.max_ell), feats, cutoff


MODELS = {
    "mp_medium_like": dict(hidden_irreps="16x0e+16x1o", max_ell=3),
    "plain_first_lmax2": dict(hidden_irreps="8x0e+8x1o+8x2e", max_ell=2, interaction_first="RealAgnosticInteractionBlock"),
    "density_no_apply_cutoff": dict(hidden_irreps="16x0e+16x1o", max_ell=3, apply_cutoff=False,
                                    interaction_first="RealAgnosticDensityInteractionBlock",
                                    interaction="RealAgnosticDensityResidualInteractionBlock"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("elements", [[14], [1, 8, 14]])
def test_first_message_matches_reference_block(rng, name, elements):
    seed = int(torch.randint(1 << 30, (1,), generator=rng))
    model = _model(seed, **MODELS[name])
    graph = _graph(model, np.random.default_rng(seed), [ELEMENTS[i] for i in range(4) if ELEMENTS[i] in elements])
    element, edge_index = graph[K.ELEMENT_INDEX], graph[K.EDGE_INDEX]
    sh, feats, cutoff = _inputs(model, graph)
    first = model.interactions[0]
    assert first_message_supported(first)
    assert not first_message_supported(model.interactions[1])  # vector inputs: the general path

    node_feats = model.node_embedding(element)
    want, want_sc = first(node_feats, element, sh, feats, edge_index, cutoff)
    groups = element_groups(element)
    by_element = model._by_element(groups, element)
    assert by_element[0].shape[0] == len(elements)
    csr = edge_csr(edge_index, graph[K.EDGE_PTR], element.shape[0])
    got, got_sc = first(node_feats, element, sh, feats, edge_index, cutoff, csr, groups, False, by_element)
    assert want.shape == got.shape
    assert float((got - want).detach().norm() / want.detach().norm()) < 1e-12
    assert (want_sc is None) == (got_sc is None)
    if want_sc is not None:
        assert torch.equal(want_sc, got_sc)


def test_reference_base_is_the_grouped_sum(rng):
    n, e, k, s, slots = 7, 40, 5, 9, 3
    radial = torch.randn(e, k, generator=rng, dtype=torch.float64)
    sh = torch.randn(e, s, generator=rng, dtype=torch.float64)
    sender = torch.randint(0, n, (e,), generator=rng)
    receiver = torch.randint(0, n, (e,), generator=rng)
    slot = torch.randint(0, slots, (n,), generator=rng, dtype=torch.int32)
    base = atomic_base_reference(radial, sh, sender, receiver, slot, n, slots)
    assert base.shape == (s, n, slots * k)
    want = torch.zeros(s, n, slots, k, dtype=torch.float64)
    for edge in range(e):
        want[:, receiver[edge], slot[sender[edge]]] += sh[edge][:, None] * radial[edge][None, :]
    assert torch.allclose(base, want.reshape(s, n, -1), rtol=0, atol=1e-13)


def test_too_many_elements_keep_the_general_path():
    numbers = list(range(1, MAX_SLOTS + 3))
    cfg = ModelConfig(atomic_numbers=numbers, atomic_energies=[0.0] * len(numbers), r_max=4.0,
                      hidden_irreps="8x0e+8x1o", radial_mlp=[16], avg_num_neighbors=8.0)
    model = MACE(cfg)
    element = torch.arange(len(numbers))
    assert model._by_element(element_groups(element), element) is None
    few = torch.tensor([0, 3, 3, 1])
    feats, slot = model._by_element(element_groups(few), few)
    assert slot.tolist() == [0, 2, 2, 1] and slot.dtype == torch.int32
    assert torch.equal(feats, model.node_embedding.table()[[0, 1, 3]])


def test_tables_kept_for_a_bounded_number_of_element_sets(rng, monkeypatch):
    """Inference keeps one table per element set, for the most recent TABLES_KEPT sets only
    (a screening of many compositions must not grow memory without bound)."""
    import itertools

    import mace_fast.ops.atomic_base as ab

    monkeypatch.setattr(ab, "TABLES_KEPT", 3)
    model = _model(int(torch.randint(1 << 30, (1,), generator=rng)), hidden_irreps="8x0e+8x1o", max_ell=2)
    model.requires_grad_(False)
    first = model.interactions[0]
    graph = _graph(model, np.random.default_rng(0), ELEMENTS)
    sh, feats, cutoff = _inputs(model, graph)
    edge_index = graph[K.EDGE_INDEX]
    csr = edge_csr(edge_index, graph[K.EDGE_PTR], graph[K.ELEMENT_INDEX].shape[0])
    n = graph[K.ELEMENT_INDEX].shape[0]
    subsets = [s for k in (1, 2, 3) for s in itertools.combinations(range(4), k)]  # 14 element sets
    for subset in subsets + subsets[:2]:
        element = torch.tensor(subset)[torch.arange(n) % len(subset)]
        node_feats = model.node_embedding(element)
        groups = element_groups(element)
        with torch.no_grad():
            want, _ = first(node_feats, element, sh, feats, edge_index, cutoff)
            got, _ = first(node_feats, element, sh, feats, edge_index, cutoff, csr, groups, False,
                           model._by_element(groups, element))
        assert float((got - want).norm() / want.norm()) < 1e-12
        kept = [name for name in first._derived_cache if name.startswith("atomic_base_tables_")]
        assert len(kept) <= 3
    assert f"atomic_base_tables_{subsets[1]}" in kept  # the most recent ones stay
