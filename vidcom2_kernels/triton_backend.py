"""The Triton pipeline: each stage is a few launches over the whole batch of videos, no Python
loop over videos or frames, and at most one host read (the kept counts that size the output,
shared with the validation flags; none in exact mode with ``validate=False``).

Launch sequence of :func:`compress_request` (non-exact mode):
channel variance -> channel rank -> centre partials -> centre finalize -> token scores ->
frame uniqueness -> budgets -> [read counts] -> frame select (threshold + compaction) -> gather.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .layout import VideoLayout
from .ops import budgets as budgets_op
from .ops import centres as centres_op
from .ops import channel_stats, topk
from .ops import dycoke as dycoke_op
from .ops import gather as gather_op
from .ops import scores as scores_op
from .ops.common import device_layout

#: Element offsets are int64 everywhere; row numbers inside a video are divided in 32 bits (the
#: frame of a row in the reconcile), so a batch stays below 2**31 rows.
MAX_ROWS = 2**31 - 1


def _check_rows(layout: VideoLayout) -> None:
    if layout.num_tokens > MAX_ROWS:
        raise ValueError(f"features has {layout.num_tokens} rows; the triton backend takes at most {MAX_ROWS}")


def keep_channels(features: torch.Tensor, layout: VideoLayout) -> torch.Tensor:
    meta = device_layout(layout, features.device)
    nonfinite = torch.zeros(layout.num_videos, dtype=torch.int64, device=features.device)
    return channel_stats.keep_from_variance(channel_stats.channel_variance(features, meta, nonfinite))


def _scores_from_keep(x, keep, meta):
    """VidCom2 steps 2-4 for a channel choice: token scores (N,) and frame uniqueness (F,)."""
    return scores_op.token_scores(x, keep, *centres_op.centres(x, keep, meta), meta)


def score_tokens(features: torch.Tensor, layout: VideoLayout, keep: torch.Tensor):
    _check_rows(layout)
    return _scores_from_keep(features, keep, device_layout(layout, features.device))


def budget_frames(uniqueness: torch.Tensor, layout: VideoLayout, retention) -> torch.Tensor:
    meta = device_layout(layout, uniqueness.device, retention=retention)
    return budgets_op.frame_budgets(uniqueness.float().contiguous(), meta)[0]


def select_kept(scores: torch.Tensor, layout: VideoLayout, budgets: torch.Tensor, targets=None):
    _check_rows(layout)
    meta = device_layout(layout, scores.device, targets=targets)
    scores = scores.float().contiguous()
    if targets is not None:
        indices, mask, final = topk.select_frames_exact(scores, budgets.long().contiguous(), meta, int(targets.sum()))
        return indices, mask, final, meta.targets.clone()
    frame_video = torch.as_tensor(layout.frame_video, device=scores.device)
    final = torch.minimum(budgets.long().clamp(min=0), meta.tokens_per_frame.index_select(0, frame_video))
    offsets = torch.cumsum(final, 0) - final
    counts = torch.zeros(layout.num_videos, dtype=torch.int64, device=scores.device).index_add_(0, frame_video, final)
    num_kept = sum(counts.tolist())  # the one host read: sizes the output
    indices, mask = topk.select_frames(scores, final, offsets, meta, num_kept)
    return indices, mask, final, counts


def gather_rows(indices: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list:
    return gather_op.gather_rows(indices, tensors)


def _vidcom2_scores(x, meta, nonfinite):
    """VidCom2 steps 1-4: token scores (N,) and frame uniqueness (F,)."""
    return _scores_from_keep(x, channel_stats.keep_from_variance(channel_stats.channel_variance(x, meta, nonfinite)), meta)


def compress_request(req):
    from .api import Compression, raise_nonfinite
    from .dycoke import anchor_frames, dycoke_budgets

    x, layout = req.features, req.layout
    _check_rows(layout)
    V, dev = layout.num_videos, x.device
    extra = {}
    if req.method == "dycoke":
        extra["anchors"] = anchor_frames(layout, fca=req.dycoke_fca)
        if not req.dycoke_fca:  # DyCoke's own counts are known on the host: no read sizes the output
            host_budgets = dycoke_budgets(layout, req.retention, req.quirks)
            extra["budgets"], extra["offsets"] = host_budgets, np.cumsum(host_budgets) - host_budgets
    meta = device_layout(layout, dev, retention=req.retention, targets=req.targets, **extra)
    # [0:V] kept counts, [V:2V] non-finite flags: read back together, once
    readback = torch.zeros(2 * V, dtype=torch.int64, device=dev)
    counts_on_host = None
    if req.method == "vidcom2" or req.dycoke_fca:
        scores, uniqueness = _vidcom2_scores(x, meta, readback[V:])
        budgets, offsets, counts = budgets_op.frame_budgets(uniqueness, meta, counts=readback[:V])
    if req.method == "dycoke":
        scores = dycoke_op.dycoke_similarity(x, meta, meta.extra["anchors"], readback[V:])
        if not req.dycoke_fca:
            uniqueness = torch.zeros(layout.total_frames, dtype=torch.float32, device=dev)
            budgets, offsets = meta.extra["budgets"], meta.extra["offsets"]
            counts_on_host = layout.per_video_sum(host_budgets).tolist()

    if req.targets is not None or counts_on_host is not None:
        bad = readback[V:].tolist() if req.validate else []
        num_kept = int(req.targets.sum()) if req.targets is not None else sum(counts_on_host)
    else:
        host = (readback if req.validate else readback[:V]).tolist()
        num_kept, bad = sum(host[:V]), host[V:]
    raise_nonfinite([v for v, flag in enumerate(bad) if flag])

    if req.targets is not None:
        indices, mask, budgets = topk.select_frames_exact(scores, budgets, meta, num_kept)
        counts = meta.targets
    else:
        indices, mask = topk.select_frames(scores, budgets, offsets, meta, num_kept)
        if counts_on_host is not None:
            counts = torch.tensor(counts_on_host, dtype=torch.int64).to(dev, non_blocking=True)
    kept = gather_op.gather_rows(indices, (x, *req.extras))
    return Compression(
        indices=indices, features=kept[0], mask=mask, budgets=budgets.clone(), counts=counts.clone(),
        scores=scores, uniqueness=uniqueness, extras=tuple(kept[1:]), layout=layout, backend="triton",
    )
