"""Packaging: every subpackage ships, and a non-editable wheel finds the CUDA sources."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "mace_fast").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found | {"mace_fast._kernels"} == listed


def test_editable_checkout_finds_kernels():
    from mace_fast.ops.build import kernels_dir

    assert (kernels_dir() / "channelwise_tp.cu").is_file()


@pytest.mark.slow
def test_wheel_install_finds_kernels(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels)], check=True)
    (wheel,) = wheels.glob("mace_fast-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True)
    code = (
        "import mace_fast, mace_fast.ops.build as b\n"
        "from mace_fast import MACE, ModelConfig\n"
        "from mace_fast.ops.codegen import channelwise_tp_source, symmetric_contraction_source\n"
        f"assert mace_fast.__file__.startswith({str(target)!r}), mace_fast.__file__\n"
        f"assert str(b.kernels_dir()).startswith({str(target)!r}), b.kernels_dir()\n"
        "m = MACE(ModelConfig(atomic_numbers=[1], atomic_energies=[0.0], hidden_irreps='8x0e+8x1o'))\n"
        "assert 'tp_forward_kernel' in channelwise_tp_source(m.interactions[1].conv_tp)\n"
        "assert 'sc_forward_kernel' in symmetric_contraction_source(m.products[1].symmetric_contraction)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""})
