"""Find the CUDA sources and compile them on first use.

Two pieces: one torch binding (``kernels/binding.cpp``, built with torch cpp_extension
+ ninja once per torch version) and, per architecture, a shared library of generated
kernels (plain nvcc, a few seconds, several in parallel) that the binding opens.

Sources live in the top-level ``kernels/`` folder of a source checkout (editable
install) and are installed as ``mace_fast/_kernels`` in a wheel; :func:`kernels_dir`
finds either. Compiled modules are cached per source hash under
``$MACE_FAST_CACHE`` (default ``~/.cache/mace_fast``), so a second run loads in a second.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Sequence, Union

import torch

__all__ = [
    "KernelBuildError",
    "kernels_dir",
    "kernel_source",
    "compile_shared",
    "load_shared",
    "pointer",
    "launch",
    "binding",
    "cuda_arch_flags",
]

_LOCK = threading.Lock()
_LOADED: Dict[str, ModuleType] = {}


class KernelBuildError(RuntimeError):
    """The CUDA kernels could not be compiled or loaded."""


def kernels_dir() -> Path:
    """Folder with the ``.cu`` sources (checkout: ``kernels/``; wheel: ``mace_fast/_kernels``)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_kernels", here.parent / "kernels"):
        if (candidate / "channelwise_tp.cu").is_file():
            return candidate
    raise KernelBuildError(f"CUDA sources not found next to {here} (looked for _kernels/ and ../kernels/)")


def kernel_source(name: str) -> str:
    return (kernels_dir() / name).read_text()


def cache_dir() -> Path:
    root = Path(os.environ.get("MACE_FAST_CACHE", Path.home() / ".cache" / "mace_fast"))
    tag = f"torch{torch.__version__.split('+')[0]}_cuda{torch.version.cuda or 'none'}"
    path = root / tag
    path.mkdir(parents=True, exist_ok=True)
    return path


def cuda_arch_flags() -> List[str]:
    """``-gencode`` for the current device (or sm_90 when there is none, e.g. compile checks)."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
    else:
        major, minor = 9, 0
    return [f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}"]


def _nvcc() -> str:
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME
    candidates = [Path(home) / "bin" / "nvcc"] if home else []
    found = shutil.which("nvcc")
    candidates += [Path(found)] if found else []
    for c in candidates:
        if c.is_file():
            return str(c)
    raise KernelBuildError("nvcc (the CUDA compiler) was not found; set CUDA_HOME or put nvcc on PATH")


def compile_shared(prefix: str, source: str, header: Union[str, Sequence[str]]) -> Path:
    """Compile generated CUDA ``source`` (including ``header``, one name or several) into a
    cached shared library; the headers' text is part of the cache key."""
    headers = [header] if isinstance(header, str) else list(header)
    text = source + "".join(kernel_source(h) for h in headers) + " ".join(cuda_arch_flags())
    digest = hashlib.sha1(text.encode())
    lib = cache_dir() / f"{prefix}_{digest.hexdigest()[:16]}.so"
    if lib.is_file():
        return lib
    unique = f"{os.getpid()}_{threading.get_ident()}"
    src = lib.with_name(f"{lib.stem}.{unique}.cu")
    src.write_text(source)
    tmp = lib.with_name(f"{lib.stem}.{unique}.tmp")
    cmd = [_nvcc(), "-shared", "-Xcompiler", "-fPIC", "-std=c++17", "-O3", f"-I{kernels_dir()}",
           *cuda_arch_flags(), str(src), "-o", str(tmp)]
    print(f"mace_fast: compiling CUDA kernels {lib.name} (once) ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelBuildError(f"nvcc failed on {src}:\n{proc.stderr[-6000:]}")
    os.replace(tmp, lib)  # atomic: a half-written library is never loaded
    return lib


_SHARED: Dict[Path, ctypes.CDLL] = {}


def load_shared(prefix: str, source: str, header: Union[str, Sequence[str]]) -> ctypes.CDLL:
    """Compile (or find cached) ``source`` and open it for calls through ``ctypes``.

    For kernels with a small, fixed C interface (pointers, sizes, a stream): they need
    no torch build, so a new kernel family costs one nvcc run. Its functions take the
    stream last and return a ``cudaError_t``; call them with :func:`launch`.
    """
    path = compile_shared(prefix, source, header)
    with _LOCK:
        if path not in _SHARED:
            _SHARED[path] = ctypes.CDLL(str(path))
        return _SHARED[path]


def pointer(t: Optional[torch.Tensor]) -> ctypes.c_void_p:
    """A tensor's device address for a ``ctypes`` call (``None``: a null pointer)."""
    return ctypes.c_void_p(None if t is None else t.data_ptr())


def launch(lib: ctypes.CDLL, name: str, like: torch.Tensor, *args) -> None:
    """Call ``lib.<name>_f32`` or ``_f64`` (by ``like``'s dtype) with ``args`` and the current
    stream of ``like``'s device (so CUDA graphs capture it); raise on a CUDA error code."""
    fn = getattr(lib, f"{name}_{'f64' if like.dtype == torch.float64 else 'f32'}")
    with torch.cuda.device(like.device):
        code = fn(*args, ctypes.c_void_p(torch.cuda.current_stream(like.device).cuda_stream))
    if code != 0:
        raise RuntimeError(f"mace_fast kernel {name} failed: CUDA error {code}")


def binding() -> ModuleType:
    """The torch binding (compiled once per torch/CUDA version, then cached)."""
    with _LOCK:
        if "binding" in _LOADED:
            return _LOADED["binding"]
        if not torch.cuda.is_available():
            raise KernelBuildError("the CUDA kernels need a CUDA device")
        from torch.utils import cpp_extension

        text = "".join(kernel_source(f) for f in ("binding.cpp", "channelwise_tp.h", "symmetric_contraction.h"))
        name = f"mace_fast_binding_{hashlib.sha1(text.encode()).hexdigest()[:12]}"
        build = cache_dir() / name
        build.mkdir(parents=True, exist_ok=True)
        if not any(build.glob("*.so")):
            print("mace_fast: building the CUDA op binding (once, ~1 min) ...", file=sys.stderr, flush=True)
        try:
            module = cpp_extension.load(
                name=name,
                sources=[str(kernels_dir() / "binding.cpp")],
                build_directory=str(build),
                extra_include_paths=[str(kernels_dir())],
                extra_cflags=["-O3"],
                extra_ldflags=["-ldl"],
                with_cuda=True,
                verbose=False,
            )
        except Exception as err:  # the compiler's own message is the useful part
            raise KernelBuildError(f"building the CUDA op binding failed: {err}") from err
        _LOADED["binding"] = module
        return module
