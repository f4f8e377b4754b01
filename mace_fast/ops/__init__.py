"""Fast ops: CUDA kernels bound as torch.library custom ops (see docs/architecture.md).

Every op here has a pure-PyTorch reference in :mod:`mace_fast.nn` that defines it.
"""
