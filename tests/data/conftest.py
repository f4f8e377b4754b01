"""Fixtures for the data tests."""

import numpy as np
import pytest
import torch


@pytest.fixture
def np_rng(rng):
    """numpy Generator seeded from the suite's fresh torch generator (seed in the repr)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=rng))
    print(f"numpy seed: {seed}")  # shown by pytest on failure, to reproduce
    return np.random.default_rng(seed)
