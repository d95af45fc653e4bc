"""VisionZip's kernels on the ``triton`` backend: the density (the T x T x C part) is one fused
launch over the whole batch (:mod:`.kernels`); the dominant tokens come from the torch backend's
per-frame sorts on the device, and the merge is the torch backend's batched one (one product a
group of frames, :mod:`.torch_ops`), on the device. The norms are the torch backend's too.
"""

from __future__ import annotations

import torch

from ...backends.torch_backend import lowest_per_frame
from ...backends.triton_backend import check_rows
from ...layout import VideoLayout
from ...ops.common import device_layout
from .kernels import density_scores
from .plan import dominant_counts
from .torch_ops import merge_contextual, row_norm_scores


def contextual_scores(features, layout: VideoLayout, scores, budgets, dominant_ratio: float, k_neighbors: int):
    """(N,) float32: -inf for each frame's dominant tokens, ``-density`` for the others."""
    check_rows(layout)
    dominant_count = dominant_counts(budgets, dominant_ratio)
    dominant = lowest_per_frame(scores, layout, dominant_count).to(torch.int8)
    return density_scores(features, device_layout(layout, features.device), dominant, dominant_count, k_neighbors)


__all__ = ["contextual_scores", "merge_contextual", "row_norm_scores"]
