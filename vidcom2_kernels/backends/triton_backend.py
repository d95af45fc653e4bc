"""The ``triton`` backend: each function is a few kernel launches over the whole batch of videos,
no Python loop over videos or frames, no host read (the pipeline's one read sizes the output).
The features are read with their strides; the small inputs the kernels index by position (keep,
scores, budgets, uniqueness, indices) are made contiguous here, at the boundary.
Implements :mod:`.contract`; the kernels live in :mod:`vidcom2_kernels.ops`, one file per stage.

Launches of a VidCom2 call (non-exact mode), through :func:`vidcom2_kernels.pipeline.run`:
select_channels (channel variance -> channel rank) -> token_scores (centre partials -> centre
finalize -> token scores -> frame uniqueness) -> frame_budgets -> [the host read] -> select_tokens
(frame select: threshold + compaction; exact mode: threshold -> reconcile -> compaction) -> gather_rows.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..layout import VideoLayout
from ..ops import attention_row as attention_row_op
from ..ops import centres as centres_op
from ..ops import dycoke_similarity as dycoke_similarity_op
from ..ops import frame_budgets as frame_budgets_op
from ..ops import gather_rows as gather_rows_op
from ..ops import select_channels as select_channels_op
from ..ops import select_tokens as select_tokens_op
from ..ops import token_scores as token_scores_op
from ..ops.common import device_layout, is_interpreter
from ..records import Selection

#: Element offsets are int64 everywhere; row numbers inside a video are divided in 32 bits (the
#: frame of a row in the reconcile), so a batch stays below 2**31 rows.
MAX_ROWS = 2**31 - 1


def supports(device: torch.device) -> bool:
    """CUDA tensors, or any tensors while ``TRITON_INTERPRET=1`` runs the kernels on the CPU."""
    return device.type == "cuda" or is_interpreter()


def _check_rows(layout: VideoLayout) -> None:
    if layout.num_tokens > MAX_ROWS:
        raise ValueError(f"features has {layout.num_tokens} rows; the triton backend takes at most {MAX_ROWS}")


def select_channels(features: torch.Tensor, layout: VideoLayout, validate: bool) -> tuple:
    _check_rows(layout)
    meta = device_layout(layout, features.device)
    nonfinite = torch.zeros(layout.num_videos, dtype=torch.int64, device=features.device)
    var = select_channels_op.channel_variance(features, meta, nonfinite)
    return select_channels_op.channel_rank(var), nonfinite if validate else None  # the flags cost nothing here


def token_scores(features: torch.Tensor, layout: VideoLayout, keep: torch.Tensor):
    _check_rows(layout)
    meta = device_layout(layout, features.device)
    keep = keep.contiguous()
    return token_scores_op.token_scores(features, keep, *centres_op.centres(features, keep, meta), meta)


def dycoke_similarity(features: torch.Tensor, layout: VideoLayout, anchors: np.ndarray, validate: bool):
    _check_rows(layout)
    meta = device_layout(layout, features.device, anchors=anchors)
    nonfinite = torch.zeros(layout.num_videos, dtype=torch.int64, device=features.device)
    scores = dycoke_similarity_op.dycoke_similarity(features, meta, meta.extra["anchors"], nonfinite)
    return scores, nonfinite if validate else None


def frame_budgets(uniqueness: torch.Tensor, layout: VideoLayout, retention: np.ndarray):
    meta = device_layout(layout, uniqueness.device, retention=retention)
    budgets, _, counts = frame_budgets_op.frame_budgets(uniqueness.float().contiguous(), meta)
    return budgets, counts


def select_tokens(
    scores: torch.Tensor, layout: VideoLayout, budgets: torch.Tensor, targets: Optional[np.ndarray], num_kept: int
) -> Selection:
    _check_rows(layout)
    meta = device_layout(layout, scores.device, targets=targets)
    scores = scores.float().contiguous()
    if targets is not None:
        indices, mask, final = select_tokens_op.frame_select_reconcile(
            scores, budgets.long().contiguous(), meta, num_kept
        )
        return Selection(indices, mask, final, meta.targets.clone())
    final, offsets, counts = frame_budgets_op.budget_offsets(budgets.long().contiguous(), meta)
    indices, mask = select_tokens_op.frame_select(scores, final, offsets, meta, num_kept)
    return Selection(indices, mask, final, counts)


def gather_rows(indices: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list:
    return gather_rows_op.gather_rows(indices.contiguous(), tensors)


def attention_row(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, scale: float) -> torch.Tensor:
    return attention_row_op.attention_row(q, k, valid, scale)
