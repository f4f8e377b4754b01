#!/usr/bin/env python
"""Generate the CUDA sources for a few architectures and compile them with nvcc (no GPU needed).

Used by CI on machines with nvcc but without a GPU, to catch kernels that no longer
compile. Exits 0 with a message when nvcc is absent.

    python scripts/compile_kernels.py [--out build/kernels]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mace_fast.config import ModelConfig  # noqa: E402
from mace_fast.model import MACE  # noqa: E402
from mace_fast.ops.atomic_base import atomic_base_source  # noqa: E402
from mace_fast.ops.build import cuda_arch_flags, kernels_dir  # noqa: E402
from mace_fast.ops.codegen import channelwise_tp_source, symmetric_contraction_source  # noqa: E402
from mace_fast.ops.edge_embedding import edge_embedding_source  # noqa: E402
from mace_fast.ops.radial_mlp import trunk_source  # noqa: E402
from mace_fast.ops.tensor_cores import trunk_tc_source  # noqa: E402

ARCHS = {
    "mp_medium": dict(hidden_irreps="128x0e+128x1o", max_ell=3),
    "l2_hidden": dict(hidden_irreps="32x0e+32x1o+32x2e", max_ell=3),
    "ell2": dict(hidden_irreps="24x0e+24x1o", max_ell=2),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None, help="keep the objects here")
    args = parser.parse_args()
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("compile_kernels: nvcc not found; skipping the CUDA compile check")
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="mace_fast_kernels_"))
    out.mkdir(parents=True, exist_ok=True)
    # The device code is plain CUDA (the torch binding is a separate .cpp), so nvcc alone
    # compiles it, also where torch has no CUDA support.
    flags = ["-std=c++17", "-O3", f"-I{kernels_dir()}", *cuda_arch_flags()]
    failed = 0
    # The edge embedding depends only on lmax: the smallest and the usual largest.
    jobs = [{f"edge_embedding_l{lmax}.cu": edge_embedding_source(lmax) for lmax in (0, 3)}]
    for name, kw in ARCHS.items():
        model = MACE(ModelConfig(atomic_numbers=[1, 8], atomic_energies=[0.0, 0.0], **kw))
        sources = {}
        for i, (inter, prod) in enumerate(zip(model.interactions, model.products)):
            sources[f"tp_{name}_{i}.cu"] = channelwise_tp_source(inter.conv_tp, inter.grouped_message)
            sources[f"sc_{name}_{i}.cu"] = symmetric_contraction_source(prod.symmetric_contraction)
        jobs.append(sources)
    # The radial-MLP trunk: the usual widths and the largest supported.
    trunks = [(8, 64, 64, 64), (32, 128, 128, 128, 128)]
    jobs.append({f"radial_trunk_{i}.cu": trunk_source(w) for i, w in enumerate(trunks)})
    # ... and on the tensor cores (float32), also with ragged widths.
    ragged = (7, 24, 8, 40, 16)
    jobs.append({f"radial_trunk_tc_{i}.cu": trunk_tc_source(w) for i, w in enumerate([*trunks, ragged])})
    # The atomic base: MP-medium's (K, S) and an odd width with few harmonics.
    jobs.append({f"atomic_base_{k}_{s}.cu": atomic_base_source(k, s) for k, s in ((64, 16), (40, 4))})
    # The radial spline: one source for every table.
    jobs.append({"radial_spline.cu": (kernels_dir() / "radial_spline.cu").read_text()})
    for sources in jobs:
        for file, text in sources.items():
            src = out / file
            src.write_text(text)
            cmd = [nvcc, "-c", str(src), "-o", str(src.with_suffix(".o")), *flags]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            status = "ok" if proc.returncode == 0 else "FAILED"
            print(f"compile_kernels: {src.name}: {status}")
            if proc.returncode:
                failed += 1
                print(proc.stderr[-4000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
