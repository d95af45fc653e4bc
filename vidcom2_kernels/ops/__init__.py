"""Triton kernels, one module per stage (each holds its kernels and their host wrapper)."""
