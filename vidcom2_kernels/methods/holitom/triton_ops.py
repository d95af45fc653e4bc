"""HoliTom's kernels on the ``triton`` backend: the static runs are one fused launch over the
whole batch (:mod:`.kernels`: each program walks its tokens' frames backwards, one read of every
row); the dominant tokens and the clusters are the torch backend's batched ones, on the device.
"""

from __future__ import annotations

from .kernels import token_runs
from .torch_ops import merge_windows

__all__ = ["merge_windows", "token_runs"]
