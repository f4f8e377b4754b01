"""Test configuration shared by the whole suite.

e3nn 0.4.4 (the version mace-torch pins) loads its own constants with ``torch.load`` and
fails under torch >= 2.6 unless weights-only loading is turned off; the oracles that need
it (e3nn, mace-torch) are imported only inside tests, after this is set.
"""

import os

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng():
    """A fresh, unseeded generator: every run draws new inputs."""
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
