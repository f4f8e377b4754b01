"""Generate the CUDA sources of one architecture's kernels from the templates in ``kernels/``.

The templates have ``@@NAME@@`` markers; this module fills them
with straight-line code: one register per accumulator and one multiply-add per non-zero
Clebsch–Gordan coefficient, so that the compiler sees every index as a constant.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Dict, List, Tuple

import torch

from ..irreps import Irreps
from ..nn.grouped_layout import GroupedLayout
from ..nn.tensor_product import ChannelwiseTensorProduct
from .build import kernel_source

__all__ = ["channelwise_tp_source", "symmetric_contraction_source"]

Entry = Tuple[int, int, int, float]  # (m1, global m2, m3, coefficient)


def _lit(x: float) -> str:
    return f"scalar_t({x!r})"


def _sparse(tp: ChannelwiseTensorProduct) -> List[List[Entry]]:
    sh_offsets = [s.start for s in tp.irreps_sh.slices()]
    out = []
    for k, p in enumerate(tp.paths):
        cg = getattr(tp, f"cg_{k}").to(torch.float64)
        entries = []
        for m1, m2, m3 in (cg.abs() > 1e-12).nonzero().tolist():
            entries.append((m1, sh_offsets[p.i_sh] + m2, m3, float(cg[m1, m2, m3])))
        out.append(entries)
    return out


def _sum(terms: List[str]) -> str:
    return " + ".join(terms) if terms else "scalar_t(0)"


def channelwise_tp_source(tp: ChannelwiseTensorProduct, grouped: bool = False) -> str:
    """Complete CUDA/C++ source (kernels + bindings) for the paths of ``tp``.

    ``grouped``: the aggregated message (and its gradient) in the grouped layout of
    :mod:`mace_fast.nn.grouped_layout` instead of ``mul_ir``.
    """
    irreps_in: Irreps = tp.irreps_in1
    if len({mul for mul, _ in irreps_in}) != 1:  # one thread per channel of every block
        raise ValueError(f"channel-wise tensor product kernels need one multiplicity, got {irreps_in}")
    in_off = [s.start for s in irreps_in.slices()]
    in_dim = [ir.dim for _, ir in irreps_in]
    out_off = [s.start for s in tp.irreps_out.slices()]
    sparse = _sparse(tp)
    paths = tp.paths
    d3 = [p.ir_out.dim for p in paths]
    o_p = [out_off[p.i_out] for p in paths]
    used_blocks = sorted({p.i_in1 for p in paths})
    S = tp.irreps_sh.dim
    # Y(-r) = (-1)^l Y(r): the sign of each harmonic component on the reverse edge.
    parity = [(-1) ** ir.l for mul, ir in tp.irreps_sh for _ in range(mul * ir.dim)]

    L: Dict[str, List[str]] = defaultdict(list)
    for b in used_blocks:
        for m in range(in_dim[b]):
            L["LOAD_X"].append(f"    const scalar_t x{b}_{m} = hs[{in_off[b]} + c * {in_dim[b]} + {m}];")
            L["LOAD_XN"].append(f"  const scalar_t xn{b}_{m} = hn[{in_off[b]} + c * {in_dim[b]} + {m}];")
    for m in range(S):
        L["LOAD_Y"].append(f"    const scalar_t y{m} = ye[{m}];")
    layout = GroupedLayout(tp.irreps_out) if grouped else None

    def mid(k: int, m3: int) -> str:
        """Column of path ``k``'s component ``m3`` of channel ``c`` in a message row."""
        if layout is None:
            return f"c * {d3[k]} + {o_p[k] + m3}"
        return f"c + {layout.column(paths[k].i_out, m3)}"

    for k in range(len(paths)):
        L["LOAD_W"].append(f"    const scalar_t w{k} = we[{k} * C];")
        # Through RowWeights (channelwise_tp.cu): a row of w, or cubics of a radial table,
        # whose slopes s{k} the pair backward turns into the length's gradient.
        L["LOAD_W_ROW"].append(f"    const scalar_t w{k} = W.value({k} * C);")
        L["LOAD_W_PAIR"].append(f"    scalar_t s{k};")
        L["LOAD_W_PAIR"].append(f"    const scalar_t w{k} = W.value({k} * C, s{k});")
        for m3 in range(d3[k]):
            L["ACC_DECL"].append(f"  scalar_t acc{k}_{m3} = 0;")
            L["STORE_ACC"].append(f"  o[{mid(k, m3)}] = acc{k}_{m3};")
            L["LOAD_G"].append(f"  const scalar_t g{k}_{m3} = go[{mid(k, m3)}];")
            L["LOAD_G_RECEIVER"].append(f"    const scalar_t g{k}_{m3} = go[{mid(k, m3)}];")
            L["LOAD_GJ"].append(f"      const scalar_t gr{k}_{m3} = gj[{mid(k, m3)}];")

    for k, (p, entries) in enumerate(zip(paths, sparse)):
        b = p.i_in1
        by_m3: Dict[int, List[str]] = defaultdict(list)
        by_m2: Dict[int, List[str]] = defaultdict(list)
        by_m1: Dict[int, List[str]] = defaultdict(list)
        by_m2_rev: Dict[int, List[str]] = defaultdict(list)  # the reverse edge n -> j (pair kernel)
        by_m1_rev: Dict[int, List[str]] = defaultdict(list)  # the reverse edge (edges kernel, REVERSE)
        for m1, m2, m3, coef in entries:
            by_m3[m3].append(f"{_lit(coef)} * x{b}_{m1} * y{m2}")
            by_m2[m2].append(f"{_lit(coef)} * x{b}_{m1} * g{k}_{m3}")
            by_m2_rev[m2].append(f"{_lit(coef)} * xn{b}_{m1} * gr{k}_{m3}")
            by_m1[m1].append(f"{_lit(coef)} * y{m2} * g{k}_{m3}")
            by_m1_rev[m1].append(f"{_lit(coef * parity[m2])} * y{m2} * gr{k}_{m3}")
        for m3, terms in sorted(by_m3.items()):
            L["FORWARD_ACC"].append(f"    acc{k}_{m3} += w{k} * ({_sum(terms)});")
        # The edges kernel shares partial sums between the gradients that contract the same
        # two of a path's three factors (a third fewer multiply-adds than one sum each;
        # the kernel issues instructions about 60 % of its cycles):
        #   u[m2] = sum C x[m1] g[m3]   ->  grad Y[m2] += w u[m2],   grad w = sum_m2 Y[m2] u[m2]
        #   v[m1] = sum C' Y[m2] gr[m3] ->  grad x_n[m1] += w v[m1]
        # (C' = C with the sign of Y(-r); gr is the sender's gradient row, see the template.)
        for m2, terms in sorted(by_m2.items()):
            L["BACKWARD_EDGE"].append(f"    const scalar_t u{k}_{m2} = {_sum(terms)};")
            L["BACKWARD_EDGE"].append(f"    gy[{m2}] += w{k} * u{k}_{m2};")
        gw_terms = [f"y{m2} * u{k}_{m2}" for m2 in sorted(by_m2)]
        L["BACKWARD_EDGE"].append(f"    const scalar_t gw{k} = {_sum(gw_terms)};")
        L["BACKWARD_EDGE"].append(f"    if (active) gwe[{k} * C] = gw{k};")
        for m1, terms in sorted(by_m1_rev.items()):
            L["BACKWARD_NODE_REV"].append(f"      const scalar_t v{k}_{m1} = {_sum(terms)};")
            L["BACKWARD_NODE_REV"].append(f"      gx{b}_{m1} += w{k} * v{k}_{m1};")
        for m1, terms in sorted(by_m1.items()):
            L["BACKWARD_NODE"].append(f"    gx{b}_{m1} += w{k} * ({_sum(terms)});")
        # The pair kernel: both messages of a pair, j -> n (x, Y, gradient g of n) and
        # n -> j (xn, Y(-r), gradient gr of j), each contracted two ways:
        #   u  = sum C x g     -> grad Y[m2];        vr = sum C Y g      -> grad x_j, grad w
        #   ur = sum C xn gr   -> grad Y(-r)[m2];    v  = sum C' Y gr    -> grad x_n, grad w
        pair = L["PAIR_BACKWARD"]
        for m2, terms in sorted(by_m2.items()):
            pair.append(f"    gy[{m2}] += w{k} * ({_sum(terms)});")
        for m2, terms in sorted(by_m2_rev.items()):
            pair.append(f"    gy[{S + m2}] += w{k} * ({_sum(terms)});")
        for m1, terms in sorted(by_m1_rev.items()):
            pair.append(f"    const scalar_t v{k}_{m1} = {_sum(terms)};")
            pair.append(f"    gx{b}_{m1} += w{k} * v{k}_{m1};")
        for m1, terms in sorted(by_m1.items()):
            pair.append(f"    const scalar_t vr{k}_{m1} = {_sum(terms)};")
            pair.append(f"    gxj{b}_{m1} += w{k} * vr{k}_{m1};")
        gw_pair = [f"x{b}_{m1} * vr{k}_{m1}" for m1 in sorted(by_m1)]
        gw_pair += [f"xn{b}_{m1} * v{k}_{m1}" for m1 in sorted(by_m1_rev)]
        pair.append(f"    if (active) W.gradient({k} * C, s{k}, {_sum(gw_pair)});")
    for b in range(len(irreps_in)):
        for m in range(in_dim[b]):
            L["GX_DECL"].append(f"  scalar_t gx{b}_{m} = 0;")
            L["STORE_GX"].append(f"  gh[{in_off[b]} + c * {in_dim[b]} + {m}] = gx{b}_{m};")
            L["GXJ_DECL"].append(f"    scalar_t gxj{b}_{m} = 0;")
            L["STORE_GXJ"].append(f"      pg[{in_off[b]} + c * {in_dim[b]} + {m}] = gxj{b}_{m};")

    values = {
        "CHANNELS": str(irreps_in[0][0]),  # every block has the same multiplicity
        "F_IN": str(irreps_in.dim),
        "S": str(S),
        "F_MID": str(tp.irreps_out.dim),
        "P": str(len(paths)),
    }
    return _fill(kernel_source("channelwise_tp.cu"), values, L, "channelwise_tp.cu")


def symmetric_contraction_source(sc) -> str:
    """Complete CUDA source for a :class:`~mace_fast.nn.symmetric_contraction.SymmetricContraction`.

    Weights are expected concatenated over output blocks then degrees: ``[Z, K_total, C]``.
    """
    dim = sc.irreps_in.dim
    out_off = [s.start for s in sc.irreps_out.slices()]
    k_off, k_total = {}, 0
    for b in range(len(sc.irreps_out)):
        for degree in range(1, sc.correlation + 1):
            k_off[b, degree] = k_total
            k_total += sc.num_params[b][degree - 1]
    # Non-zero entries grouped by monomial: (degree, row) -> {(block, m): [(weight index, coef)]}
    groups: Dict[Tuple[int, int], Dict[Tuple[int, int], List[Tuple[int, float]]]] = {}
    monomials = {}
    for b, (_, ir) in enumerate(sc.irreps_out):
        for degree in range(1, sc.correlation + 1):
            k = sc.num_params[b][degree - 1]
            if k == 0:
                continue
            basis = getattr(sc, f"basis_{b}_{degree}").to(torch.float64).reshape(-1, ir.dim, k)
            idx = getattr(sc, f"monomials_{degree}").tolist()
            for row, m, kk in (basis.abs() > 1e-12).nonzero().tolist():
                monomials[degree, row] = idx[row]
                entry = groups.setdefault((degree, row), {}).setdefault((b, m), [])
                entry.append((k_off[b, degree] + kk, float(basis[row, m, kk])))

    L: Dict[str, List[str]] = defaultdict(list)
    for i in range(dim):
        L["LOAD_X"].append(f"  const scalar_t x{i} = xn[{i} * xs.component];")
        L["GX_DECL"].append(f"  scalar_t gx{i} = 0;")
        L["STORE_GX"].append(f"  gx[{i} * xs.component] = gx{i};")
    for kk in range(k_total):
        L["LOAD_W"].append(f"  const scalar_t w{kk} = wz[{kk} * C];")
    for b, (_, ir) in enumerate(sc.irreps_out):
        for m in range(ir.dim):
            L["ACC_DECL"].append(f"  scalar_t acc{b}_{m} = 0;")
            L["STORE"].append(f"  o[{out_off[b]} + c * {ir.dim} + {m}] = acc{b}_{m};")
            L["LOAD_G"].append(f"  const scalar_t g{b}_{m} = go[{out_off[b]} + c * {ir.dim} + {m}];")
    for key in sorted(groups):
        factors = [f"x{i}" for i in monomials[key]]
        L["FORWARD"].append(f"  {{ const scalar_t p = {' * '.join(factors)};")
        alpha_terms = []
        for (b, m), terms in sorted(groups[key].items()):
            weighted = _sum([f"{_lit(coef)} * w{kk}" for kk, coef in terms])
            L["FORWARD"].append(f"    acc{b}_{m} += ({weighted}) * p;")
            alpha_terms.append(f"({weighted}) * g{b}_{m}")
        # d p / d x_i for each factor: the product of the other factors.
        L["BACKWARD"].append(f"  {{ const scalar_t alpha = {_sum(alpha_terms)};")
        for j, i in enumerate(monomials[key]):
            others = factors[:j] + factors[j + 1:]
            L["BACKWARD"].append(f"    gx{i} += alpha{''.join(' * ' + f for f in others)};")
        L["FORWARD"].append("  }")
        L["BACKWARD"].append("  }")
    values = {"D": str(dim), "K": str(k_total), "F_OUT": str(sc.irreps_out.dim)}
    return _fill(kernel_source("symmetric_contraction.cu"), values, L, "symmetric_contraction.cu")


def _fill(source: str, values: Dict[str, str], lines: Dict[str, List[str]], name: str) -> str:
    for key, val in values.items():
        source = source.replace(f"@@{key}@@", val)
    for key, block in lines.items():
        source = source.replace(f"@@{key}@@", "\n".join(block))
    missing = sorted(set(re.findall(r"@@([A-Z_]+)@@", source)))
    if missing:
        raise RuntimeError(f"unfilled markers in {name}: {missing}")
    return source
