"""The ``triton`` backend: each function is a few kernel launches over the whole batch of videos,
no Python loop over videos or frames, no host read (the pipeline's one read sizes the output).
The features are read with their strides; the small inputs the kernels index by position (keep,
scores, budgets, uniqueness, indices) are made contiguous here, at the boundary.
Implements :mod:`.contract` (the shared stages); the kernels live in :mod:`vidcom2_kernels.ops`,
one file per stage, and each method's triton scorer in its folder (``methods/<name>/triton_ops.py``).

Launches of a VidCom2 call through :func:`vidcom2_kernels.pipeline.run` (7 in budget mode, 12
in exact mode, for any batch of videos; nothing else runs on the device but the one host read):
select_channels (channel variance -> channel keep) -> token_scores (centre partials -> centres ->
token scores with the frame uniqueness) -> frame_budgets -> [the host read] -> select_tokens
(budget mode: select rows; exact mode: frame thresholds -> 3 radix passes -> frame counts ->
select rows), the gather fused into the last launch. DyCoke: similarity (and a zeroing of its
flags) -> select rows. Per-layout and per-request device arrays come from two caches
(:func:`~vidcom2_kernels.ops.common.device_layout`, :func:`~vidcom2_kernels.ops.common.request_arrays`),
so a sized call (exact mode, DyCoke) copies nothing from the host and can be captured in a CUDA graph.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..buffers import new_output
from ..layout import VideoLayout
from ..ops import attention_row as attention_row_op
from ..ops import frame_budgets as frame_budgets_op
from ..ops import gather_rows as gather_rows_op
from ..ops import select_tokens as select_tokens_op
from ..ops.common import device_layout, is_interpreter, request_arrays
from ..records import Selection

#: Element offsets are int64 everywhere; row numbers inside a video are divided in 32 bits (the
#: frame of a row in the reconcile), so a batch stays below 2**31 rows.
MAX_ROWS = 2**31 - 1


def supports(device: torch.device) -> bool:
    """CUDA tensors, or any tensors while ``TRITON_INTERPRET=1`` runs the kernels on the CPU."""
    return device.type == "cuda" or is_interpreter()


def check_rows(layout: VideoLayout) -> None:
    if layout.num_tokens > MAX_ROWS:
        raise ValueError(f"features has {layout.num_tokens} rows; the triton backend takes at most {MAX_ROWS}")


def per_video_out(out: Optional[torch.Tensor], layout: VideoLayout, device) -> torch.Tensor:
    """The caller's (V,) int64 output, or a new one."""
    return out if out is not None else new_output(layout.num_videos, torch.int64, device)


def frame_budgets(uniqueness: torch.Tensor, layout: VideoLayout, retention: np.ndarray, out=None):
    meta = device_layout(layout, uniqueness.device)
    request = request_arrays(layout, uniqueness.device, retention=retention)
    counts = per_video_out(out, layout, uniqueness.device)
    budgets = frame_budgets_op.frame_budgets(uniqueness.float().contiguous(), meta, request.retention, counts)
    return budgets, counts


def select_tokens(
    scores: torch.Tensor, layout: VideoLayout, budgets: torch.Tensor, targets: Optional[np.ndarray], num_kept: int
) -> Selection:
    return select_and_gather(scores, layout, budgets, targets, num_kept, ())[0]


def select_and_gather(
    scores: torch.Tensor,
    layout: VideoLayout,
    budgets: torch.Tensor,
    targets: Optional[np.ndarray],
    num_kept: int,
    tensors: Sequence[torch.Tensor],
) -> tuple:
    check_rows(layout)
    meta = device_layout(layout, scores.device)
    request = request_arrays(layout, scores.device, targets=targets)
    scores, budgets = scores.float().contiguous(), budgets.long().contiguous()
    state = None if targets is None else select_tokens_op.reconcile(scores, budgets, meta, request)
    indices, mask, final, counts, rows = select_tokens_op.select_rows(
        scores, budgets, meta, request, num_kept, tensors, exact_state=state
    )
    rows += gather_rows(indices, tensors[select_tokens_op.MAX_TENSORS_PER_LAUNCH :])
    return Selection(indices, mask, final, counts), rows


def gather_rows(indices: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list:
    if not tensors:
        return []
    return gather_rows_op.gather_rows(indices.contiguous(), tensors)


def attention_row(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, scale: float) -> torch.Tensor:
    return attention_row_op.attention_row(q, k, valid, scale)
