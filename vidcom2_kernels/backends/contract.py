"""The backend contract: the shared stages every backend module provides, and the conventions
they share with the methods' kernels. :mod:`vidcom2_kernels.pipeline` runs them in order; the
public stages call them one by one. Each method's scorer functions (VidCom2's ``select_channels``
and ``token_scores``, DyCoke's ``dycoke_similarity``, ...) live in its folder under
:mod:`vidcom2_kernels.methods`, one module per backend, documented there; they follow the same
conventions.

Shapes: N tokens, C channels, F frames, V videos (all videos of a call, concatenated), K kept.
Every function takes a parsed :class:`~vidcom2_kernels.layout.VideoLayout`, returns tensors on
the input's device, and reads nothing back to the host unless it says so (the reference may).

========================  =============================================================================
``supports(device)``      whether the backend runs on tensors of ``device``
``frame_budgets``         (uniqueness (F,), layout, retention (V,) numpy, out=None) -> budgets (F,) int64
                          (FCA), counts (V,) int64 their per-video sums (written into ``out`` when given)
``select_tokens``         (scores (N,), layout, budgets (F,) int64, targets (V,) numpy or None, num_kept)
                          -> :class:`~vidcom2_kernels.records.Selection`; budgets clamped to [0, T];
                          ``num_kept`` (host int) sizes the output
``select_and_gather``     (the same, tensors [(N, ...)]) -> (Selection, [(K, ...)] the kept rows of each
                          tensor): ``select_tokens`` then ``gather_rows``, one launch on triton
``gather_rows``           (indices (K,), tensors [(N, ...)]) -> [(K, ...)], rows in index order
``attention_row``         (q (B, H, D), k (B, Hkv, S, D), valid (B, S) bool, scale) -> (B, S) float32 softmax
                          attention of one query over the valid keys, averaged over heads (DyCoke's KV
                          pruning; grouped-query heads share a key head)
========================  =============================================================================

Conventions: flags are bool or int64 tensors (nonzero = set). The pipeline passes ``out`` slices
of one (2, V) int64 buffer, so the kept counts and the flags come back in one read of it. Scores are float32, lower means kept first, equal scores keep
the lower row, NaN ranks as +inf (:func:`nan_as_inf`). NaN/Inf in the features never crashes a
backend and never produces an index out of range; with validation the pipeline raises first.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np
import torch

from ..layout import VideoLayout
from ..records import Selection


class Backend(Protocol):
    """The functions of the table above (a backend is a module that defines them)."""

    def supports(self, device: torch.device) -> bool: ...

    def frame_budgets(
        self, uniqueness: torch.Tensor, layout: VideoLayout, retention: np.ndarray, out=None
    ) -> tuple: ...

    def select_tokens(
        self,
        scores: torch.Tensor,
        layout: VideoLayout,
        budgets: torch.Tensor,
        targets: np.ndarray | None,
        num_kept: int,
    ) -> Selection: ...

    def select_and_gather(
        self,
        scores: torch.Tensor,
        layout: VideoLayout,
        budgets: torch.Tensor,
        targets: np.ndarray | None,
        num_kept: int,
        tensors: Sequence[torch.Tensor],
    ) -> tuple: ...

    def gather_rows(self, indices: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list: ...

    def attention_row(self, q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, scale: float) -> torch.Tensor: ...


#: The function names of the contract, in pipeline order.
FUNCTIONS = ("supports", "frame_budgets", "select_tokens", "select_and_gather", "gather_rows", "attention_row")


def nan_as_inf(x: torch.Tensor) -> torch.Tensor:
    """NaN -> +inf, everything else unchanged (``nan_to_num`` would also clip +inf to the largest
    float, and NaN must tie with +inf, as in the Triton kernels' integer keys)."""
    return torch.where(torch.isnan(x), torch.full_like(x, float("inf")), x)


def select_then_gather(select_tokens, gather_rows, scores, layout, budgets, targets, num_kept: int, tensors) -> tuple:
    """``select_and_gather`` for a backend without a fused one: its selection, then its gather."""
    selection = select_tokens(scores, layout, budgets, targets, num_kept)
    return selection, gather_rows(selection.indices, tensors)


def write_out(out, value: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``value`` copied into the caller's ``out`` (as int64) when both are given, else ``value``
    (the eager backends' side of the ``out=`` convention)."""
    if out is None or value is None:
        return value
    return out.copy_(value)
