"""``mace_fast::radial_trunk``: the hidden layers of the radial MLP in one CUDA kernel.

Layer 3 of the op over ``kernels/radial_mlp.cu``. :class:`~mace_fast.nn.radial.RadialMLP`
is, per edge, a chain of small GEMMs and scaled-silu activations ending in one large
linear layer. The kernel computes the chain up to the last activation, the "trunk"
``[E, n0] -> [E, hL]``, in one pass with the activations in shared memory; the last layer
stays a cuBLAS GEMM (:func:`radial_mlp` does both).

In float32 the last layer runs on bfloat16 tensor cores at float32 precision ("bf16x6"):
the trunk kernel writes its output as three bfloat16 terms ``t = hi + mid + lo`` (exact to
~2^-24), the weight is split the same way, and one bfloat16 GEMM with float32 accumulation
sums the six products that matter (``hi W_hi, hi W_mid, mid W_hi, hi W_lo, lo W_hi,
mid W_mid``). On an H100 ([1.46M, 64] x [64, 768]) that is 2.0 ms instead of 4.8 ms, with a
relative error of 7e-7 against float64 (1.4e-7 for the float32 GEMM). Its backward (the
gradient of ``t``) stays a float32 GEMM: reading the split gradient would cost as much.

In float32 the trunk itself runs on the tensor cores at float32 accuracy (3xTF32,
``kernels/radial_trunk_tc.cu``, :mod:`.tensor_cores`), with its weights prepared once per
MLP; float64 (and float32 with ``MACE_FAST_TENSOR_CORES=0``) uses ``kernels/radial_mlp.cu``.

The backward kernel gives the gradient with respect to the input (what forces and stress
need), recomputing the forward instead of storing it. The kernels give no weight
gradients: when autograd wants them (training through this op), or wants a
differentiable backward (``create_graph``), the backward differentiates the torch trunk
instead: correct, slow.
"""

from __future__ import annotations

import ctypes
import functools
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..nn.activations import ScaledActivation
from ..nn.derived import derived
from ..nn.radial import RadialMLP
from .build import compile_shared, launch, load_shared
from .build import pointer as _ptr
from .tensor_cores import compile_trunk_tc, fill, tensor_cores_available, trunk_operands, width_markers

__all__ = ["radial_mlp_supported", "compile_trunk", "trunk_source", "radial_trunk", "radial_mlp"]

MAX_HIDDEN_LAYERS = 4
MAX_WIDTH = 128  # hidden widths: multiples of 8 up to this
MAX_INPUT = 32  # radial features n0
_TILES = (64, 32, 16, 8)  # edges per tile the kernels are compiled for, largest first
# Shared memory of an H100, used where no device is present (compile checks).
_DEFAULT_SMEM = (232448, 233472)  # per block (opt-in), per multiprocessor


def _widths_supported(widths: Sequence[int]) -> bool:
    n0, hidden = widths[0], widths[1:]
    return (
        1 <= len(hidden) <= MAX_HIDDEN_LAYERS
        and 1 <= n0 <= MAX_INPUT
        and all(8 <= h <= MAX_WIDTH and h % 8 == 0 for h in hidden)
    )


def radial_mlp_supported(mlp: RadialMLP) -> bool:
    """Whether :func:`radial_mlp` can run ``mlp``: silu, 1 to 4 hidden layers, widths as above."""
    act = mlp.act
    if not (isinstance(act, ScaledActivation) and act.name == "silu"):
        return False
    return len(mlp.sizes) >= 3 and _widths_supported(mlp.sizes[:-1])


def _round_up(a: int, b: int) -> int:
    return (a + b - 1) // b * b


def _plan(widths: Sequence[int], itemsize: int, buffers: int, smem: Tuple[int, int]) -> str:
    """``"tile, resident"`` for one kernel; mirrors ``smem_bytes`` in the .cu file.

    The tile has ``buffers`` activation arrays ``[tile, ld]``; the weights join them in shared
    memory only where that still leaves room for as many blocks per multiprocessor. Occupancy
    comes first: on an H100 ([10, 64, 64, 64], 1.5M edges) 4 blocks per multiprocessor with
    the weights read through L1 beat 2 blocks with them in shared memory by 10% (float32
    forward + backward) to 25% (float64).
    """
    per_block, per_sm = smem
    ld = _round_up(max(widths), 8) + 16 // itemsize
    weights = itemsize * sum(a * b for a, b in zip(widths, widths[1:]))
    size = {tile: itemsize * buffers * tile * ld for tile in _TILES}
    # (blocks per multiprocessor, tiles to try): small tiles only where nothing else fits.
    for blocks, tiles in ((4, _TILES[:2]), (2, _TILES), (1, _TILES)):
        limit = min(per_block, per_sm // blocks - 1024)  # 1 KiB per block is reserved by the driver
        for tile in tiles:
            if size[tile] + weights <= limit:
                return f"{tile}, true"
            if size[tile] <= limit:
                return f"{tile}, false"
    raise ValueError(f"radial trunk {list(widths)} does not fit in {per_block} bytes of shared memory")


def trunk_source(widths: Sequence[int], smem: Tuple[int, int] = _DEFAULT_SMEM, plan: Optional[str] = None) -> str:
    """CUDA source of the trunk kernels for ``widths = [n0, h1, ..., hL]``.

    ``smem``: the device's shared memory per block (opt-in) and per multiprocessor in bytes.
    ``plan``: ``"tile, resident"`` for all four kernels instead of the planned ones (tests).
    """
    widths = [int(w) for w in widths]
    if not _widths_supported(widths):
        raise ValueError(f"radial trunk widths {widths} not supported (see radial_mlp_supported)")
    layers = len(widths) - 1
    values = {
        **width_markers(widths),
        "PLAN_FORWARD_F32": plan or _plan(widths, 4, 1, smem),
        "PLAN_BACKWARD_F32": plan or _plan(widths, 4, layers, smem),
        "PLAN_FORWARD_F64": plan or _plan(widths, 8, 1, smem),
        "PLAN_BACKWARD_F64": plan or _plan(widths, 8, layers, smem),
    }
    return fill("radial_mlp.cu", values)


class _TrunkDims(ctypes.Structure):
    _fields_ = [("layers", ctypes.c_int), ("width", ctypes.c_int * 5)]


_LIBRARY: Dict[str, ctypes.CDLL] = {}
_WIDTHS: Dict[str, Tuple[int, ...]] = {}


def _device_smem(device: torch.device) -> Tuple[int, int]:
    if device.type != "cuda" or not torch.cuda.is_available():
        return _DEFAULT_SMEM
    props = torch.cuda.get_device_properties(device)
    return (
        int(getattr(props, "shared_memory_per_block_optin", _DEFAULT_SMEM[0])),
        int(getattr(props, "shared_memory_per_multiprocessor", _DEFAULT_SMEM[1])),
    )


@functools.lru_cache(maxsize=None)
def _compile(widths: Tuple[int, ...], smem: Tuple[int, int], plan: Optional[str] = None) -> str:
    source = trunk_source(widths, smem, plan)
    key = compile_shared("mace_fast_radial", source, "radial_mlp.h").stem
    lib = load_shared("mace_fast_radial", source, "radial_mlp.h")
    ptr, size, scale = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    for dtype in ("f32", "f64"):
        forward = getattr(lib, f"radial_trunk_forward_{dtype}")
        forward.argtypes = [ptr] * 6 + [size, scale, ptr]
        forward.restype = ctypes.c_int
        if dtype == "f32":
            split = lib.radial_trunk_forward_split_f32
            split.argtypes, split.restype = forward.argtypes, ctypes.c_int
        backward = getattr(lib, f"radial_trunk_backward_{dtype}")
        backward.argtypes = [ptr] * 7 + [size, scale, ptr]
        backward.restype = ctypes.c_int
    lib.radial_trunk_dims.restype = _TrunkDims
    dims = lib.radial_trunk_dims()
    if tuple(dims.width[: dims.layers + 1]) != widths:
        raise RuntimeError(f"radial trunk library {key} was built for other widths")
    _LIBRARY[key], _WIDTHS[key] = lib, widths
    return key


def compile_trunk(widths: Sequence[int], device: torch.device) -> str:
    """Compile (or find cached) the trunk kernels for ``widths`` on ``device``; returns the op's key."""
    return _compile(tuple(int(w) for w in widths), _device_smem(torch.device(device)))


def _check(name: str, tensor: torch.Tensor, x: torch.Tensor, shape: Tuple[int, ...]) -> None:
    if tensor.device != x.device or tensor.dtype != x.dtype:
        raise ValueError(f"radial_trunk: {name} is {tensor.dtype} on {tensor.device}, x is {x.dtype} on {x.device}")
    if tuple(tensor.shape) != shape:
        raise ValueError(f"radial_trunk: {name} has shape {tuple(tensor.shape)}, expected {shape}")
    if not tensor.is_contiguous():
        raise ValueError(f"radial_trunk: {name} must be contiguous")


def _check_x(x: torch.Tensor) -> None:
    if not x.is_cuda:
        raise ValueError(f"radial_trunk: x must be a CUDA tensor, got {x.device}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"radial_trunk: x must be float32 or float64, got {x.dtype}")


def _validate(x: torch.Tensor, weights: Sequence[torch.Tensor], key: str) -> None:
    _check_x(x)
    widths = _WIDTHS[key]
    if len(weights) != len(widths) - 1:
        raise ValueError(f"radial_trunk: {len(weights)} weights for a trunk of {len(widths) - 1} layers")
    _check("x", x, x, (x.shape[0], widths[0]))
    for i, w in enumerate(weights):
        _check(f"weights[{i}]", w, x, (widths[i], widths[i + 1]))


def _aligned(weights: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    # The kernels read weights as 16-byte vectors: a view at an odd offset is copied (the
    # caller keeps the copies alive over the launch).
    return [w if w.data_ptr() % 16 == 0 else w.clone() for w in weights]


def _weight_ptrs(weights: Sequence[torch.Tensor]) -> List[ctypes.c_void_p]:
    return [_ptr(w) for w in weights] + [ctypes.c_void_p(None)] * (MAX_HIDDEN_LAYERS - len(weights))


def _check_operands(x: torch.Tensor, operands: Sequence[torch.Tensor], count: int) -> None:
    if len(operands) not in (0, count):
        raise ValueError(f"radial_trunk: {len(operands)} tensor-core operands, expected 0 or {count}")
    for t in operands:
        if t.dtype != torch.float32 or x.dtype != torch.float32 or t.device != x.device or not t.is_contiguous():
            raise ValueError("radial_trunk: tensor-core operands are contiguous float32 on x's device, for float32 x")


def _launch_forward(x: torch.Tensor, weights: Sequence[torch.Tensor], operands: Sequence[torch.Tensor], out,
                    act_scale: float, key: str, split: bool) -> None:
    """The trunk forward into ``out`` (float32/float64, or the split bfloat16 layout)."""
    if x.shape[0] == 0:
        return
    if operands:  # float32 on the tensor cores
        launch(compile_trunk_tc(_WIDTHS[key]), "radial_trunk_tc_forward", x, _ptr(x), _ptr(operands[0]), _ptr(out),
               int(split), x.shape[0], float(act_scale))
        return
    aligned = _aligned(weights)  # alive over the launch
    name = "radial_trunk_forward_split" if split else "radial_trunk_forward"
    launch(_LIBRARY[key], name, x, _ptr(x), *_weight_ptrs(aligned), _ptr(out), x.shape[0], float(act_scale))


@torch.library.custom_op("mace_fast::radial_trunk", mutates_args=())
def _radial_trunk(
    x: torch.Tensor, weights: List[torch.Tensor], act_scale: float, key: str, operands: List[torch.Tensor]
) -> torch.Tensor:
    _validate(x, weights, key)
    _check_operands(x, operands, 2)
    out = x.new_empty(x.shape[0], weights[-1].shape[1])
    _launch_forward(x, weights, operands, out, act_scale, key, split=False)
    return out


@_radial_trunk.register_fake
def _(x, weights, act_scale, key, operands):
    return x.new_empty(x.shape[0], weights[-1].shape[1])


@torch.library.custom_op("mace_fast::radial_trunk_backward", mutates_args=())
def _radial_trunk_backward(
    grad_out: torch.Tensor, x: torch.Tensor, weights: List[torch.Tensor], act_scale: float, key: str,
    operands: List[torch.Tensor],
) -> torch.Tensor:
    _validate(x, weights, key)
    _check("grad_out", grad_out, x, (x.shape[0], weights[-1].shape[1]))
    _check_operands(x, operands, 2)
    grad_x = torch.empty_like(x)
    if x.shape[0] == 0:
        return grad_x
    if operands:  # float32 on the tensor cores
        launch(compile_trunk_tc(_WIDTHS[key]), "radial_trunk_tc_backward", x, _ptr(grad_out), _ptr(x),
               _ptr(operands[0]), _ptr(operands[1]), _ptr(grad_x), x.shape[0], float(act_scale))
        return grad_x
    aligned = _aligned(weights)  # alive over the launch
    launch(_LIBRARY[key], "radial_trunk_backward", x, _ptr(grad_out), _ptr(x), *_weight_ptrs(aligned),
           _ptr(grad_x), x.shape[0], float(act_scale))
    return grad_x


@_radial_trunk_backward.register_fake
def _(grad_out, x, weights, act_scale, key, operands):
    return torch.empty_like(x)


def _torch_trunk(x: torch.Tensor, weights: Sequence[torch.Tensor], act_scale: float) -> torch.Tensor:
    """The trunk as :class:`RadialMLP` computes it (the reference; used for weight gradients)."""
    for w in weights:
        x = torch.nn.functional.silu(x @ (w / math.sqrt(w.shape[0]))) * act_scale
    return x


def _wanted(needs: bool, t: torch.Tensor) -> bool:
    """Whether this backward pass will use the gradient of ``t``.

    ``needs_input_grad`` only says that ``t`` requires grad: model parameters do, also when
    autograd differentiates with respect to positions alone, and computing their gradients
    in torch then would cost more than the kernel saves. So ask the engine whether the node
    that takes ``t``'s gradient runs in this pass (a private API: if it fails, assume yes).
    """
    if not needs:
        return False
    try:
        from torch.autograd.graph import _get_grad_fn_or_grad_acc

        return bool(torch._C._will_engine_execute_node(_get_grad_fn_or_grad_acc(t)))
    except Exception:
        return True


def _setup(ctx, inputs, output):
    x, weights, act_scale, key, operands = inputs
    ctx.save_for_backward(x, *operands, *weights)
    ctx.act_scale, ctx.key, ctx.num_operands = act_scale, key, len(operands)


def _backward(ctx, grad_out):
    x, *rest = ctx.saved_tensors
    operands, weights = rest[: ctx.num_operands], rest[ctx.num_operands:]
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if isinstance(need_w, bool):
        need_w = [need_w] * len(weights)
    if torch.is_grad_enabled():
        # create_graph (e.g. training on forces): the kernel backward is not differentiable,
        # so differentiate the torch trunk, keeping the graph. Correct, slow.
        inputs = [t for t, n in zip([x, *weights], [need_x, *need_w]) if n]
        with torch.enable_grad():
            trunk = _torch_trunk(x, weights, ctx.act_scale)
        grads = iter(torch.autograd.grad(trunk, inputs, grad_out, create_graph=True, allow_unused=True))
        grad_x = next(grads) if need_x else None
        return grad_x, [next(grads) if n else None for n in need_w], None, None, [None] * ctx.num_operands
    grad_x = None
    if need_x:
        grad_x = _radial_trunk_backward(grad_out.contiguous(), x, weights, ctx.act_scale, ctx.key, operands)
    wanted = [_wanted(n, w) for n, w in zip(need_w, weights)]
    grad_w: List = [None] * len(weights)
    if any(wanted):
        # The kernels give no weight gradients (inference needs none): recompute the trunk in
        # torch and differentiate it. Correct but slow; only training through this op gets here.
        leaves = [w.detach().requires_grad_(True) for w in weights]
        with torch.enable_grad():
            trunk = _torch_trunk(x.detach(), leaves, ctx.act_scale)
        asked = [w for w, n in zip(leaves, wanted) if n]
        grads = iter(torch.autograd.grad(trunk, asked, grad_out))
        grad_w = [next(grads) if n else None for n in wanted]
    return grad_x, grad_w, None, None, [None] * ctx.num_operands


_radial_trunk.register_autograd(_backward, setup_context=_setup)


def split_bf16(w: torch.Tensor) -> torch.Tensor:
    """``[K, N]`` float32 -> ``[6K, N]`` bfloat16 ``[W_hi; W_mid; W_hi; W_lo; W_hi; W_mid]``,
    the weight side of the split last layer (``kernels/radial_mlp.cu``, store_split_tile)."""
    hi = w.bfloat16()
    rest = w - hi.float()
    mid = rest.bfloat16()
    lo = (rest - mid.float()).bfloat16()
    return torch.cat([hi, mid, hi, lo, hi, mid], dim=0)


@torch.library.custom_op("mace_fast::radial_mlp_split", mutates_args=())
def _radial_mlp_split(
    x: torch.Tensor, weights: List[torch.Tensor], last: torch.Tensor, last_split: torch.Tensor, act_scale: float,
    key: str, operands: List[torch.Tensor],
) -> torch.Tensor:
    _validate(x, weights, key)
    _check_operands(x, operands, 2)
    hidden = weights[-1].shape[1]
    split = x.new_empty(x.shape[0], 6 * hidden, dtype=torch.bfloat16)
    _launch_forward(x, weights, operands, split, act_scale, key, split=True)
    return torch.mm(split, last_split, out_dtype=torch.float32)


@_radial_mlp_split.register_fake
def _(x, weights, last, last_split, act_scale, key, operands):
    return x.new_empty(x.shape[0], last.shape[1])


def _setup_split(ctx, inputs, output):
    x, weights, last, last_split, act_scale, key, operands = inputs
    ctx.save_for_backward(x, last, *operands, *weights)
    ctx.act_scale, ctx.key, ctx.num_operands = act_scale, key, len(operands)


def _backward_split(ctx, grad_out):
    x, last, *rest = ctx.saved_tensors
    operands, weights = rest[: ctx.num_operands], rest[ctx.num_operands:]
    need_x, need_w, need_last = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    if isinstance(need_w, bool):
        need_w = [need_w] * len(weights)
    if torch.is_grad_enabled():
        # create_graph (training on forces): differentiate the float32 torch MLP on the saved
        # tensors themselves, so that the gradients stay differentiable. Correct, slow.
        wanted = [need_x, need_last, *need_w]
        asked = [t for t, n in zip([x, last, *weights], wanted) if n]
        with torch.enable_grad():
            out = _torch_trunk(x, weights, ctx.act_scale) @ last
        grads = iter(torch.autograd.grad(out, asked, grad_out, create_graph=True, allow_unused=True))
        gx, glast, *gw = [next(grads) if n else None for n in wanted]
        return gx, gw, glast, None, None, None, [None] * ctx.num_operands
    wanted_w = [_wanted(n, w) for n, w in zip(need_w, weights)]
    wanted_last = _wanted(need_last, last)
    if any(wanted_w) or wanted_last:
        # Parameter gradients: the kernels give none, so differentiate the torch MLP.
        leaves = [t.detach().requires_grad_(True) for t in (x, last, *weights)]
        with torch.enable_grad():
            out = _torch_trunk(leaves[0], leaves[2:], ctx.act_scale) @ leaves[1]
        wanted = [need_x, wanted_last, *wanted_w]
        asked = [t for t, n in zip(leaves, wanted) if n]
        grads = iter(torch.autograd.grad(out, asked, grad_out))
        gx, glast, *gw = [next(grads) if n else None for n in wanted]
        return gx, gw, glast, None, None, None, [None] * ctx.num_operands
    grad_x = None
    if need_x:
        # float32: the gradient of the split trunk output. With last^T contiguous cuBLAS
        # takes a faster kernel (H100, [1.46M, 1280] @ [1280, 64]: 5.1 ms, 5.5 for the view).
        grad_hidden = grad_out @ last.t().contiguous()
        grad_x = _radial_trunk_backward(grad_hidden, x, weights, ctx.act_scale, ctx.key, list(operands))
    return grad_x, [None] * len(weights), None, None, None, None, [None] * ctx.num_operands


_radial_mlp_split.register_autograd(_backward_split, setup_context=_setup_split)


def split_last_layer_available() -> bool:
    """Whether this torch has the bfloat16 -> float32 matrix product the split layer needs."""
    return "dtype" in torch.ops.aten.mm.overloads()


def _use_tensor_cores(x: torch.Tensor, tensor_cores: Optional[bool]) -> bool:
    if tensor_cores is None:
        return x.dtype == torch.float32 and tensor_cores_available(x.device)
    if tensor_cores and x.dtype != torch.float32:
        raise ValueError(f"radial_mlp: the tensor-core kernels are for float32, got {x.dtype}")
    return tensor_cores


def _trunk_operands(weights: Sequence[torch.Tensor], owner: Optional[torch.nn.Module]) -> List[torch.Tensor]:
    """``[W_l operands, W_l^T operands]`` (tensor_cores.trunk_operands), cached on ``owner``."""
    make = lambda: torch.stack(trunk_operands(weights))  # noqa: E731  (two halves of one size)
    if owner is None:
        with torch.no_grad():
            both = make()
    else:
        both = derived(owner, "trunk_tc", list(weights), make, differentiable=False)
    return [both[0], both[1]]


def radial_trunk(
    x: torch.Tensor, weights: Sequence[torch.Tensor], act_scale: float, tensor_cores: Optional[bool] = None,
    owner: Optional[torch.nn.Module] = None,
) -> torch.Tensor:
    """``x [E, n0] -> [E, hL]``: ``x = act_scale * silu(x @ (w / sqrt(fan_in)))`` for each ``w``.

    ``weights``: the hidden layers' ``[fan_in, fan_out]`` matrices (cast to ``x``'s dtype).
    ``tensor_cores``: float32 on the tensor cores at float32 accuracy (3xTF32,
    ``kernels/tf32x3.cuh``); default: for float32 on devices that have them. ``owner``: a
    module to cache the prepared weight operands on (else they are prepared per call).
    """
    widths = [x.shape[-1]] + [w.shape[-1] for w in weights]
    if x.dim() != 2 or any(w.dim() != 2 or w.shape[0] != k for w, k in zip(weights, widths)):
        raise ValueError(
            f"radial_trunk: shapes do not chain: x {tuple(x.shape)}, weights {[tuple(w.shape) for w in weights]}"
        )
    if not _widths_supported(widths):
        raise ValueError(f"radial_trunk: widths {widths} not supported (see radial_mlp_supported)")
    _check_x(x)
    key = compile_trunk(widths, x.device)
    weights = [w.to(x.dtype).contiguous() for w in weights]
    operands = _trunk_operands(weights, owner) if _use_tensor_cores(x, tensor_cores) else []
    return _radial_trunk(x.contiguous(), weights, float(act_scale), key, operands)


def radial_mlp(
    mlp: RadialMLP, x: torch.Tensor, split: Optional[bool] = None, tensor_cores: Optional[bool] = None
) -> torch.Tensor:
    """``mlp(x)`` with the trunk on the kernel and the last layer on cuBLAS: ``[E, n0] -> [E, out]``.

    ``split``: the float32 last layer as bf16x6 on tensor cores (module docstring); default:
    for float32 inputs where torch has the product it needs. ``tensor_cores``: the float32
    trunk as 3xTF32 (see :func:`radial_trunk`).
    """
    if not radial_mlp_supported(mlp):
        raise ValueError(f"radial_mlp: {mlp.sizes} with {mlp.act} is not supported by the kernel")
    layers = list(mlp.layers)
    if split is None:
        split = x.dtype == torch.float32 and split_last_layer_available()
    if split:
        if x.dtype != torch.float32:
            raise ValueError(f"radial_mlp: the split last layer is for float32, got {x.dtype}")
        _check_x(x)
        widths = [x.shape[-1]] + [w.shape[-1] for w in layers[:-1]]
        key = compile_trunk(widths, x.device)
        last = mlp.scaled_weight(len(layers) - 1).float()
        raw = layers[-1]
        # Not differentiable: the op's backward takes the gradient through ``last``.
        last_split = derived(mlp, "last_split", [raw], lambda: split_bf16(last), differentiable=False)
        hidden_weights = [w.float().contiguous() for w in layers[:-1]]
        operands = _trunk_operands(hidden_weights, mlp) if _use_tensor_cores(x, tensor_cores) else []
        return _radial_mlp_split(x.contiguous(), hidden_weights, last, last_split, float(mlp.act.scale), key, operands)
    hidden = radial_trunk(x, layers[:-1], mlp.act.scale, tensor_cores, owner=mlp)
    # The same cached scaled weight as RadialMLP.forward uses (one kernel less per call).
    return hidden @ mlp.scaled_weight(len(layers) - 1).to(hidden.dtype)
