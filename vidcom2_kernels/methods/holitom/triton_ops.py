"""HoliTom's kernels on the ``triton`` backend: the scorer is two launches over the whole batch
(:mod:`.kernels`: the norms and the cosines with the next frame, every row unit at once, then a
scan over the frames for the static runs); the dominant tokens and the clusters are the torch
backend's batched ones, on the device.
"""

from __future__ import annotations

from .kernels import token_runs
from .torch_ops import merge_windows

__all__ = ["merge_windows", "token_runs"]
