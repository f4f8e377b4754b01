"""Find the CUDA sources and compile them on first use (torch cpp_extension + ninja).

Sources live in the top-level ``kernels/`` folder of a source checkout (editable
install) and are installed as ``mace_fast/_kernels`` in a wheel; :func:`kernels_dir`
finds either. Compiled modules are cached per source hash under
``$MACE_FAST_CACHE`` (default ``~/.cache/mace_fast``), so a second run loads in a second.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional

import torch

__all__ = ["KernelBuildError", "kernels_dir", "kernel_source", "load_cuda_module", "cuda_arch_flags"]

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


def load_cuda_module(
    prefix: str, source: str, companions: List[str] = (), verbose: Optional[bool] = None
) -> ModuleType:
    """Compile (once) and import a CUDA extension from generated ``source`` text.

    ``companions`` are files of ``kernels/`` built or included with it (a binding
    ``.cpp``, headers); they are copied next to the generated source.
    """
    texts = {name: kernel_source(name) for name in companions}
    key = source + "".join(texts.values()) + " ".join(cuda_arch_flags())
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    name = f"{prefix}_{digest}"
    with _LOCK:
        if name in _LOADED:
            return _LOADED[name]
        if not torch.cuda.is_available():
            raise KernelBuildError("the CUDA kernels need a CUDA device")
        from torch.utils import cpp_extension

        build = cache_dir() / name
        build.mkdir(parents=True, exist_ok=True)
        src = build / f"{name}.cu"
        if not src.is_file() or src.read_text() != source:
            src.write_text(source)
        sources = [str(src)]
        for companion, text in texts.items():
            (build / companion).write_text(text)
            if companion.endswith(".cpp"):
                sources.append(str(build / companion))
        if not (build / f"{name}.so").exists():
            print(f"mace_fast: compiling CUDA kernels {name} (once, ~1 min) ...", file=sys.stderr, flush=True)
        try:
            module = cpp_extension.load(
                name=name,
                sources=sources,
                build_directory=str(build),
                extra_cuda_cflags=["-O3", "--expt-relaxed-constexpr", *cuda_arch_flags()],
                extra_cflags=["-O3"],
                extra_include_paths=[str(build)],
                verbose=bool(verbose),
            )
        except Exception as err:  # the compiler's own message is the useful part
            raise KernelBuildError(f"compiling {src} failed: {err}") from err
        _LOADED[name] = module
        return module
