"""float32 products on the tensor cores at float32 accuracy (3xTF32): operands and builds.

Host side of ``kernels/tf32x3.cuh`` (the method and the operand layout are described
there) and of the kernels built on it, ``kernels/radial_trunk_tc.cu``: the float32
radial-MLP trunk, forward and backward (:mod:`.radial_mlp` launches it), with its weights
prepared once (:func:`fragments`, cached by the caller).

On an H100, in the model step at Si 16^3 (1.46M edges, [10] -> 64 -> 64 -> 64), the trunk
takes 0.81 ms forward (1.11 ms writing the split bf16x6 output) and 1.59 ms backward,
against 1.00 (1.18) and 2.33 ms on the float32 units. A general tall-by-narrow product
written the same way (the last layer's backward, ``[E, 1280] @ [1280, 64]``) measured
8.8 ms against cuBLAS's 5.1 ms in float32 (its loads stalled), and 5.1-5.2 ms with a
three-stage ``cp.async`` pipeline: no faster than cuBLAS, so that product stays there.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
from typing import Dict, Sequence, Tuple

import torch

from .build import kernel_source, load_shared

__all__ = ["round_tf32", "fragments", "trunk_operands", "trunk_tc_source", "compile_trunk_tc",
           "tensor_cores_available"]


def round_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 rounded to tf32 (10 mantissa bits), to nearest with ties away from zero, as
    the kernels' ``cvt.rna.tf32.f32``: add half of the dropped range, then drop it."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & -0x2000).view(torch.float32)


def fragments(b: torch.Tensor) -> torch.Tensor:
    """The prepared B operand of ``b [K, N]`` float32: ``[ceil(K/8), ceil(N/8), 32, 4]``.

    Element ``[s, j, 4 g + t]`` is ``(hi(b[8s+2t, 8j+g]), hi(b[8s+2t+1, 8j+g]), lo(..), lo(..))``
    with ``b = hi + lo`` split into tf32 terms (zero past ``K`` and ``N``).
    """
    if b.dim() != 2 or b.dtype != torch.float32:
        raise ValueError(f"fragments: expected a float32 matrix, got {b.dtype} {tuple(b.shape)}")
    k, n = b.shape
    kt, nt = math.ceil(k / 8), math.ceil(n / 8)
    padded = b.new_zeros(8 * kt, 8 * nt)
    padded[:k, :n] = b
    hi = round_tf32(padded)
    lo = round_tf32(padded - hi)

    def arrange(m: torch.Tensor) -> torch.Tensor:
        # rows 8s + 2t + pair, columns 8j + g -> [s, j, g, t, pair] -> [s, j, lane = 4g + t, pair]
        return m.view(kt, 4, 2, nt, 8).permute(0, 3, 4, 1, 2).reshape(kt, nt, 32, 2)

    return torch.cat([arrange(hi), arrange(lo)], dim=-1).contiguous()


def trunk_operands(weights: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The trunk kernel's two weight operands: every ``W_l`` and every ``W_l^T``, prepared and
    concatenated (raw weights, ``[fan_in, fan_out]``, float32)."""
    forward = torch.cat([fragments(w.float()).reshape(-1) for w in weights])
    transposed = torch.cat([fragments(w.float().t()).reshape(-1) for w in weights])
    return forward, transposed


def width_markers(widths: Sequence[int]) -> Dict[str, str]:
    """The markers every trunk template takes, for ``widths = [n0, h1, ..., hL]``."""
    return {
        "NUM_LAYERS": str(len(widths) - 1),
        "WIDTHS": ", ".join(str(int(w)) for w in widths),
        "INV_SQRT_FAN_IN": ", ".join(repr(1.0 / math.sqrt(k)) for k in widths[:-1]),
    }


def fill(name: str, values: Dict[str, str]) -> str:
    """Kernel template ``name`` with its ``@@MARKER@@``s replaced by ``values``."""
    source = kernel_source(name)
    for key, value in values.items():
        source = source.replace(f"@@{key}@@", value)
    if "@@" in source:
        raise RuntimeError(f"unfilled markers in {name}")
    return source


def trunk_tc_source(widths: Sequence[int]) -> str:
    """CUDA source of the tensor-core trunk for ``widths = [n0, h1, ..., hL]``."""
    return fill("radial_trunk_tc.cu", width_markers(widths))


class _TrunkDims(ctypes.Structure):
    _fields_ = [("layers", ctypes.c_int), ("width", ctypes.c_int * 5)]


@functools.lru_cache(maxsize=None)
def compile_trunk_tc(widths: Tuple[int, ...]) -> ctypes.CDLL:
    """Compile (or find cached) and open the tensor-core trunk for ``widths``."""
    lib = load_shared("mace_fast_trunk_tc", trunk_tc_source(widths), ("radial_trunk_tc.h", "radial_mlp.h", "tf32x3.cuh"))
    ptr, size, scale = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    lib.radial_trunk_tc_forward_f32.argtypes = [ptr, ptr, ptr, ctypes.c_int, size, scale, ptr]
    lib.radial_trunk_tc_backward_f32.argtypes = [ptr] * 5 + [size, scale, ptr]
    lib.radial_trunk_tc_forward_f32.restype = lib.radial_trunk_tc_backward_f32.restype = ctypes.c_int
    lib.radial_trunk_tc_dims.restype = _TrunkDims
    dims = lib.radial_trunk_tc_dims()
    if tuple(dims.width[: dims.layers + 1]) != widths:
        raise RuntimeError("tensor-core trunk library was built for other widths")
    return lib


def tensor_cores_available(device: torch.device) -> bool:
    """Whether ``device`` runs the tf32 tensor-core kernels (CUDA, compute capability 8.0+),
    and they are not switched off (``MACE_FAST_TENSOR_CORES=0``, for comparisons)."""
    if os.environ.get("MACE_FAST_TENSOR_CORES", "1") == "0":
        return False
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
