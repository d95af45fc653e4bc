"""FastVID's kernels in eager PyTorch, the yardstick of its backends: loops over videos, frames
and segments, in float32, step by step as the released code computes them
(``token_compressor/fastvid``), with a deterministic rule where it draws random numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from ...backends.contract import nan_as_inf, write_out
from ...backends.reference import dpc_scores, frame_rows, nonfinite_videos, normalized, video_rows
from ...layout import VideoLayout
from .plan import DPC_NEIGHBOURS


def frame_scores(features: torch.Tensor, layout: VideoLayout, validate: bool, out=None) -> tuple:
    """(N,) float32 ``-||x||`` (a frame's salient tokens are its largest norms), NaN as +inf;
    (F,) float32 the cosine of the normalised means of each frame and the next in its video (0
    for a video's last frame); (V,) non-finite videos."""
    scores = nan_as_inf(-torch.linalg.vector_norm(features.float(), dim=1))
    similarity = torch.zeros(layout.total_frames, dtype=torch.float32, device=features.device)
    for v in range(layout.num_videos):
        F, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
        means = normalized(features[video_rows(layout, v)].float().view(F, T, -1).mean(dim=1))
        f0 = int(layout.frame_start[v])
        similarity[f0 : f0 + F - 1] = (means[:-1] * means[1:]).sum(dim=1)
    return scores, similarity, write_out(out, nonfinite_videos(features, layout) if validate else None)


def context_scores(
    features: torch.Tensor, layout: VideoLayout, scores: torch.Tensor, salient: np.ndarray, context: np.ndarray
) -> torch.Tensor:
    """(N,) float32 order keys once the plan is known: -inf for each frame's ``salient[f]``
    lowest ``scores`` (its largest norms, the lower row first on ties); in a frame with
    ``context[f] > 0`` tokens to choose, ``-dpc_score`` of its other tokens among themselves
    (+inf for all of them when one's float32 squared norm is not finite: NaN, Inf or overflow);
    +inf elsewhere."""
    out = torch.full((layout.num_tokens,), float("inf"), dtype=torch.float32, device=features.device)
    for f in range(layout.total_frames):
        rows = frame_rows(layout, f)
        order = torch.sort(nan_as_inf(scores[rows].float()), stable=True).indices
        frame = out[rows]  # a view: writes go to out
        frame[order[: int(salient[f])]] = float("-inf")
        rest = torch.sort(order[int(salient[f]) :]).values
        if int(context[f]) > 0 and len(rest):
            x = features[rows][rest].float()
            finite = bool(torch.isfinite((x * x).sum(dim=1)).all())
            frame[rest] = -dpc_scores(x, DPC_NEIGHBOURS)[0] if finite else float("inf")
    return nan_as_inf(out)


def merge_context(
    features: torch.Tensor,
    layout: VideoLayout,
    scores: torch.Tensor,
    mask: torch.Tensor,
    indices: torch.Tensor,
    rows: list,
    segment: np.ndarray,
    per_frame,
    beta: float,
) -> tuple:
    """FastVID's token merge. In each segment (``segment`` (F,) the segment of every frame), for
    every frame with context tokens (kept, score above -inf): every token of the segment that is
    neither salient (score -inf, kept) nor one of that frame's context tokens joins the context
    token it is most cosine-similar to (the first by position on ties); a context token joined by
    n tokens becomes ``w * itself + (1 - w) * their mean``, ``w = max(1 / (n + 1), beta)``. A
    token joins once per context frame of its segment. Only the features (``rows[0]``) change:
    the extras stay the context tokens' own rows. ``per_frame`` (F,) the context tokens of each
    frame when the caller knows them (checked here against the mask), or None. Returns (rows,
    merged (K,) bool)."""
    slot = {int(r): k for k, r in enumerate(indices.tolist())}
    merged_rows = rows[0].clone()
    merged = torch.zeros(len(slot), dtype=torch.bool, device=features.device)
    frames = segment.tolist()
    if per_frame is not None:
        anchors = mask & (scores != float("-inf"))
        counted = [int(anchors[frame_rows(layout, f)].sum()) for f in range(layout.total_frames)]
        assert counted == list(per_frame), "merge_context: per_frame disagrees with the mask"
    for s in sorted(set(frames)):
        f0, f1 = frames.index(s), len(frames) - frames[::-1].index(s)
        a, b = int(layout.frame_row_start[f0]), int(layout.frame_row_start[f1])
        x = features[a:b].float()
        xn = normalized(x)
        salient = mask[a:b] & (scores[a:b] == float("-inf"))
        for f in range(f0, f1):
            lo, hi = int(layout.frame_row_start[f]) - a, int(layout.frame_row_start[f + 1]) - a
            anchor = torch.zeros(b - a, dtype=torch.bool, device=features.device)
            anchor[lo:hi] = mask[a + lo : a + hi] & ~salient[lo:hi]
            anchors, pool = torch.nonzero(anchor).flatten(), torch.nonzero(~anchor & ~salient).flatten()
            if len(anchors) == 0 or len(pool) == 0:
                continue
            assign = torch.argmax(xn[pool] @ xn[anchors].T, dim=1)
            for i, row in enumerate(anchors.tolist()):
                group = pool[assign == i]
                n = len(group)
                w = max(1.0 / (n + 1), beta)
                if n == 0 or w >= 1.0:
                    continue
                k = slot[a + row]
                blend = w * x[row] + (1 - w) * (x[group].sum(dim=0) / n)
                merged_rows[k] = blend.to(merged_rows.dtype)
                merged[k] = True
    return [merged_rows, *rows[1:]], merged
