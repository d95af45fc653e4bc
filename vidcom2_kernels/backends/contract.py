"""The backend contract: the functions every backend module provides, and the conventions they
share. :mod:`vidcom2_kernels.pipeline` runs them in order; the public stages call them one by one.

Shapes: N tokens, C channels, F frames, V videos (all videos of a call, concatenated), K kept.
Every function takes a parsed :class:`~vidcom2_kernels.layout.VideoLayout`, returns tensors on
the input's device, and reads nothing back to the host unless it says so (the reference may).

========================  =============================================================================
``supports(device)``      whether the backend runs on tensors of ``device``
``select_channels``       (features (N, C), layout, validate) -> keep (V, C) bool, the ``max(1, C // 2)``
                          channels of lowest variance per video; nonfinite (V,) flags, nonzero: the video
                          holds NaN, Inf or |x| >= MAX_ABS (None unless ``validate``)
``token_scores``          (features, layout, keep) -> scores (N,) float32 ``sv + sf``, uniqueness (F,)
                          float32 ``-mean(sv)`` per frame
``dycoke_similarity``     (features, layout, anchors (F,) int64 numpy, validate) -> scores (N,) float32,
                          cosine with the anchor frame's same-position token (0 without one); nonfinite
                          (V,) flags as above (None unless ``validate``)
``frame_budgets``         (uniqueness (F,), layout, retention (V,) numpy) -> budgets (F,) int64 (FCA),
                          counts (V,) int64 their per-video sums
``select_tokens``         (scores (N,), layout, budgets (F,) int64, targets (V,) numpy or None, num_kept)
                          -> :class:`~vidcom2_kernels.records.Selection`; budgets clamped to [0, T];
                          ``num_kept`` (host int) sizes the output
``gather_rows``           (indices (K,), tensors [(N, ...)]) -> [(K, ...)], rows in index order
``attention_row``         (q (B, H, D), k (B, Hkv, S, D), valid (B, S) bool, scale) -> (B, S) float32 softmax
                          attention of one query over the valid keys, averaged over heads (DyCoke's KV
                          pruning; grouped-query heads share a key head)
========================  =============================================================================

Conventions: flags are bool or int64 tensors (nonzero = set; the pipeline reads them as int64
with the kept counts, in one read). Scores are float32, lower means kept first, equal scores keep
the lower row, NaN ranks as +inf (:func:`nan_as_inf`). NaN/Inf in the features never crashes a
backend and never produces an index out of range; with validation the pipeline raises first.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch

from ..layout import VideoLayout
from ..records import Selection


class Backend(Protocol):
    """The functions of the table above (a backend is a module that defines them)."""

    def supports(self, device: torch.device) -> bool: ...

    def select_channels(self, features: torch.Tensor, layout: VideoLayout, validate: bool) -> tuple: ...

    def token_scores(self, features: torch.Tensor, layout: VideoLayout, keep: torch.Tensor) -> tuple: ...

    def dycoke_similarity(
        self, features: torch.Tensor, layout: VideoLayout, anchors: np.ndarray, validate: bool
    ) -> tuple: ...

    def frame_budgets(self, uniqueness: torch.Tensor, layout: VideoLayout, retention: np.ndarray) -> tuple: ...

    def select_tokens(
        self,
        scores: torch.Tensor,
        layout: VideoLayout,
        budgets: torch.Tensor,
        targets: np.ndarray | None,
        num_kept: int,
    ) -> Selection: ...

    def gather_rows(self, indices: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list: ...

    def attention_row(self, q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, scale: float) -> torch.Tensor: ...


#: The function names of the contract, in pipeline order.
FUNCTIONS = (
    "supports",
    "select_channels",
    "token_scores",
    "dycoke_similarity",
    "frame_budgets",
    "select_tokens",
    "gather_rows",
    "attention_row",
)


def nan_as_inf(x: torch.Tensor) -> torch.Tensor:
    """NaN -> +inf, everything else unchanged (``nan_to_num`` would also clip +inf to the largest
    float, and NaN must tie with +inf, as in the Triton kernels' integer keys)."""
    return torch.where(torch.isnan(x), torch.full_like(x, float("inf")), x)
