"""``mace_fast::edge_embedding``: the geometric features of every edge in one kernel.

From the edge vectors ``[E, 3]`` one pass computes what the torch path builds from ~150
small kernels per step (:func:`mace_fast.nn.spherical_harmonics.spherical_harmonics` and
:class:`mace_fast.nn.radial.RadialEmbedding` without a distance transform):

* ``sh [E, (lmax+1)^2]``: spherical harmonics of the directions,
* ``feats [E, nb]``: the Bessel basis of the lengths, times the envelope if ``apply_cutoff``,
* ``cutoff [E, 1]``: the polynomial envelope (always; ignore it when ``apply_cutoff``).

The backward gives the gradient with respect to the vectors in one pass, recomputing
everything from the vectors; it is not itself differentiable (training uses the torch
path). The kernels (``kernels/edge_embedding.cu``) have a small C interface and are called
through ``ctypes``; one library per ``lmax``, compiled once and cached.

Precision: everything runs in the dtype of ``vectors``; the Bessel buffers are cast to it.
A model's buffers already have its dtype (``model.to(dtype)`` casts them). Only when a
float32 ``lengths`` meets float64 buffers does the reference differ: torch promotes the
Bessel features to float64 there, while this op stays in float32.
"""

from __future__ import annotations

import ctypes
import math
import re
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import torch

from .build import kernel_source, launch, load_shared
from .build import pointer as _ptr

__all__ = [
    "MAX_LMAX",
    "MAX_BASIS",
    "edge_embedding",
    "edge_embedding_supported",
    "embed_edges",
    "edge_embedding_source",
]

MAX_LMAX = 5  # the shared-memory tile holds 128 rows of max((lmax+1)^2, nb) values (< 48 KB)
MAX_BASIS = 32


def _lit(x: float) -> str:
    return f"scalar_t({float(x)!r})"


def _sh_body(lmax: int) -> List[str]:
    """Straight-line harmonics, operation for operation as in ``nn/spherical_harmonics.py``."""
    norms = [
        [math.sqrt((2 * l + 1) * (1 if m == 0 else 2) * math.factorial(l - m) / math.factorial(l + m))
         for m in range(l + 1)]
        for l in range(lmax + 1)
    ]
    lines = []
    if lmax >= 2:  # |u|^2 keeps the terms homogeneous (a zero vector gives zeros for l > 0)
        lines.append("  const N r2 = x * x + y * y + z * z;")
    # c{m} + i s{m} = (x + i y)^m (c1 = x * 1 - y * 0 = x exactly)
    for m in range(1, lmax + 1):
        if m == 1:
            lines += ["  const N c1 = x;", "  const N s1 = y;"]
        else:
            lines.append(f"  const N c{m} = x * c{m - 1} - y * s{m - 1};")
            lines.append(f"  const N s{m} = x * s{m - 1} + y * c{m - 1};")
    # q{l}_{m} = P_l^m / sin^m, homogeneous in (z, r2)
    for l in range(lmax + 1):
        for m in range(l + 1):
            if m == l:
                value = _lit(math.prod(range(1, 2 * m, 2)))
                lines.append(f"  const N q{l}_{m} = N({value});")
            elif m == l - 1:
                lines.append(f"  const N q{l}_{m} = {_lit(2 * m + 1)} * z * q{l - 1}_{m};")
            else:
                lines.append(
                    f"  const N q{l}_{m} = ({_lit(2 * l - 1)} * z * q{l - 1}_{m}"
                    f" - {_lit(l + m - 1)} * r2 * q{l - 2}_{m}) / {_lit(l - m)};"
                )
    k = 0
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            a = abs(m)
            factor = "" if m == 0 else f" * {'s' if m < 0 else 'c'}{a}"  # cos_0 = 1: "* 1" is exact
            lines.append(f"  Y[{k}] = {_lit(norms[l][a])} * q{l}_{a}{factor};")
            k += 1
    return lines


@lru_cache(maxsize=None)
def edge_embedding_source(lmax: int) -> str:
    """Complete CUDA source of the edge-embedding kernels for one ``lmax``."""
    if not 0 <= lmax <= MAX_LMAX:
        raise ValueError(f"edge_embedding supports lmax 0..{MAX_LMAX}, got {lmax}")
    source = kernel_source("edge_embedding.cu")
    source = source.replace("@@LMAX@@", str(lmax)).replace("@@SH_BODY@@", "\n".join(_sh_body(lmax)))
    missing = sorted(set(re.findall(r"@@([A-Z_]+)@@", source)))
    if missing:
        raise RuntimeError(f"unfilled markers in edge_embedding.cu: {missing}")
    return source


_LIBS: Dict[int, ctypes.CDLL] = {}
_P = ctypes.c_void_p


def load_library(lmax: int) -> ctypes.CDLL:
    """The compiled kernels for ``lmax`` (compiled on first use, then cached)."""
    lib = _LIBS.get(lmax)
    if lib is None:
        lib = load_shared("mace_fast_edge", edge_embedding_source(lmax), "edge_embedding.h")
        tail = [ctypes.c_int64, ctypes.c_int, ctypes.c_double, ctypes.c_int, ctypes.c_int, _P]
        for suffix in ("f32", "f64"):
            fwd = getattr(lib, f"edge_embedding_forward_{suffix}")
            fwd.argtypes, fwd.restype = [_P] * 6 + tail, ctypes.c_int
            bwd = getattr(lib, f"edge_embedding_backward_{suffix}")
            bwd.argtypes, bwd.restype = [_P] * 7 + tail, ctypes.c_int
        if lib.edge_embedding_lmax() != lmax:
            raise RuntimeError(f"internal: edge_embedding library for lmax {lmax} reports {lib.edge_embedding_lmax()}")
        _LIBS[lmax] = lib
    return lib


@torch.library.custom_op("mace_fast::edge_embedding", mutates_args=())
def _edge_embedding(
    vectors: torch.Tensor, bessel_weights: torch.Tensor, prefactor: torch.Tensor,
    lmax: int, r_max: float, p: int, apply_cutoff: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    num_edges, nb = vectors.shape[0], bessel_weights.numel()
    sh = vectors.new_empty(num_edges, (lmax + 1) ** 2)
    feats = vectors.new_empty(num_edges, nb)
    cutoff = vectors.new_empty(num_edges, 1)
    if num_edges == 0:
        return sh, feats, cutoff
    launch(load_library(lmax), "edge_embedding_forward", vectors, _ptr(vectors), _ptr(bessel_weights),
           _ptr(prefactor), _ptr(sh), _ptr(feats), _ptr(cutoff), num_edges, nb, r_max, p, int(apply_cutoff))
    return sh, feats, cutoff


@_edge_embedding.register_fake
def _(vectors, bessel_weights, prefactor, lmax, r_max, p, apply_cutoff):
    num_edges = vectors.shape[0]
    return (vectors.new_empty(num_edges, (lmax + 1) ** 2), vectors.new_empty(num_edges, bessel_weights.numel()),
            vectors.new_empty(num_edges, 1))


@torch.library.custom_op("mace_fast::edge_embedding_backward", mutates_args=())
def _edge_embedding_backward(
    grad_sh: Optional[torch.Tensor], grad_feats: Optional[torch.Tensor], grad_cutoff: Optional[torch.Tensor],
    vectors: torch.Tensor, bessel_weights: torch.Tensor, prefactor: torch.Tensor,
    lmax: int, r_max: float, p: int, apply_cutoff: bool,
) -> torch.Tensor:
    grad_vectors = torch.empty_like(vectors)
    num_edges = vectors.shape[0]
    if num_edges == 0:
        return grad_vectors
    launch(load_library(lmax), "edge_embedding_backward", vectors, _ptr(vectors), _ptr(bessel_weights),
           _ptr(prefactor), _ptr(grad_sh), _ptr(grad_feats), _ptr(grad_cutoff), _ptr(grad_vectors), num_edges,
           bessel_weights.numel(), r_max, p, int(apply_cutoff))
    return grad_vectors


@_edge_embedding_backward.register_fake
def _(grad_sh, grad_feats, grad_cutoff, vectors, bessel_weights, prefactor, lmax, r_max, p, apply_cutoff):
    return torch.empty_like(vectors)


def _setup(ctx, inputs, output):
    vectors, bessel_weights, prefactor, lmax, r_max, p, apply_cutoff = inputs
    ctx.save_for_backward(vectors, bessel_weights, prefactor)
    ctx.args = (lmax, r_max, p, apply_cutoff)
    # Unused outputs (e.g. cutoff when apply_cutoff) arrive as None, not as zero tensors:
    # the kernel skips them instead of reading zeros.
    ctx.set_materialize_grads(False)


def _contiguous(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.contiguous()


def _backward(ctx, grad_sh, grad_feats, grad_cutoff):
    vectors, bessel_weights, prefactor = ctx.saved_tensors
    if grad_sh is None and grad_feats is None and grad_cutoff is None:
        return None, None, None, None, None, None, None
    grad_vectors = _edge_embedding_backward(
        _contiguous(grad_sh), _contiguous(grad_feats), _contiguous(grad_cutoff), vectors, bessel_weights,
        prefactor, *ctx.args,
    )
    return grad_vectors, None, None, None, None, None, None


_edge_embedding.register_autograd(_backward, setup_context=_setup)


def _check(vectors: torch.Tensor, lmax: int, bessel_weights: torch.Tensor, prefactor: torch.Tensor,
           r_max: float, p: int) -> None:
    if not isinstance(vectors, torch.Tensor) or not vectors.is_cuda:
        raise ValueError("edge_embedding: vectors must be a CUDA tensor (use the torch path on the CPU)")
    if vectors.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"edge_embedding: vectors must be float32 or float64, got {vectors.dtype}")
    if vectors.dim() != 2 or vectors.shape[1] != 3:
        raise ValueError(f"edge_embedding: vectors must have shape [E, 3], got {list(vectors.shape)}")
    if not vectors.is_contiguous():
        raise ValueError("edge_embedding: vectors must be contiguous")
    if not 0 <= lmax <= MAX_LMAX:
        raise ValueError(f"edge_embedding: lmax must be in 0..{MAX_LMAX}, got {lmax}")
    if bessel_weights.dim() != 1 or not 1 <= bessel_weights.numel() <= MAX_BASIS:
        raise ValueError(
            f"edge_embedding: bessel_weights must have shape [nb] with 1 <= nb <= {MAX_BASIS}, "
            f"got {list(bessel_weights.shape)}"
        )
    if prefactor.numel() != 1:
        raise ValueError(f"edge_embedding: prefactor must have one element, got shape {list(prefactor.shape)}")
    for name, t in (("bessel_weights", bessel_weights), ("prefactor", prefactor)):
        if t.device != vectors.device:
            raise ValueError(f"edge_embedding: {name} is on {t.device}, vectors on {vectors.device}")
        if not t.is_floating_point():
            raise TypeError(f"edge_embedding: {name} must be floating point, got {t.dtype}")
    if not r_max > 0:
        raise ValueError(f"edge_embedding: r_max must be positive, got {r_max}")
    if p < 1:
        raise ValueError(f"edge_embedding: the envelope exponent p must be >= 1, got {p}")


def edge_embedding(
    vectors: torch.Tensor,
    lmax: int,
    bessel_weights: torch.Tensor,
    prefactor: torch.Tensor,
    r_max: float,
    p: int,
    apply_cutoff: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``vectors [E, 3] -> (sh [E, (lmax+1)^2], feats [E, nb], cutoff [E, 1])`` in one kernel.

    Equals ``spherical_harmonics(vectors, lmax)``, the Bessel basis (``bessel_weights [nb]``,
    ``prefactor`` of :class:`~mace_fast.nn.radial.BesselBasis`) of ``|vectors|``, times the
    envelope ``polynomial_envelope(|v|, r_max, p)`` when ``apply_cutoff``, and the envelope.
    Differentiable once with respect to ``vectors`` (the buffers get no gradient).
    ``r_max`` is a Python float (the model's ``config.r_max``): it is passed by value, so
    the call needs no host synchronisation and can be captured in a CUDA graph.
    """
    r_max, lmax, p = float(r_max), int(lmax), int(p)
    _check(vectors, lmax, bessel_weights, prefactor, r_max, p)
    # No-ops when the buffers already have the working dtype (as in a cast model).
    weights = bessel_weights.detach().to(vectors.dtype).contiguous()
    pref = prefactor.detach().to(vectors.dtype).reshape(1)
    return _edge_embedding(vectors, weights, pref, lmax, r_max, p, bool(apply_cutoff))


def edge_embedding_supported(radial, lmax: int) -> bool:
    """Whether :func:`embed_edges` can replace ``radial`` (a ``RadialEmbedding``) at ``lmax``."""
    return (
        getattr(radial, "transform", None) is None
        and 0 <= int(lmax) <= MAX_LMAX
        and 1 <= radial.bessel.bessel_weights.numel() <= MAX_BASIS
        and radial.cutoff.p >= 1
    )


def embed_edges(
    radial, vectors: torch.Tensor, lmax: int, r_max: float
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Drop-in for the model's ``sh`` and ``radial(lengths, ...)``: ``(sh, feats, cutoff or None)``.

    ``radial`` is a ``RadialEmbedding`` without a distance transform (check with
    :func:`edge_embedding_supported`); ``r_max`` its cut-off as a Python float. As in
    ``RadialEmbedding.forward``, ``cutoff`` is None when the features include the envelope.
    """
    sh, feats, cutoff = edge_embedding(
        vectors, lmax, radial.bessel.bessel_weights, radial.bessel.prefactor, r_max, radial.cutoff.p,
        radial.apply_cutoff,
    )
    return sh, feats, (None if radial.apply_cutoff else cutoff)
