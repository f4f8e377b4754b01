"""CUDA C++ sources of mace_fast (installed as mace_fast._kernels in a wheel)."""
