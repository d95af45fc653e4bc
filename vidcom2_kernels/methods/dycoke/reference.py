"""DyCoke's scorer in eager PyTorch, the yardstick of its backends: per frame the cosine
similarity with the anchor frame's same-position tokens; and the released code's output order
(:func:`dycoke_order`, quirk 1 of :mod:`.plan`).
"""

from __future__ import annotations

import numpy as np
import torch

from ...backends.contract import nan_as_inf, write_out
from ...backends.reference import frame_rows, nonfinite_videos
from ...constants import COSINE_EPS
from ...layout import VideoLayout, parse_frames, parse_retention
from .plan import anchor_frames, dycoke_budgets, kept_whole


# ------------------------------------------------------------------------ DyCoke's token scores
def dycoke_similarity(
    features: torch.Tensor, layout: VideoLayout, anchors: np.ndarray, validate: bool, out=None
) -> tuple:
    """(N,) float32 cosine similarity of every token with the same-position token of its frame's
    anchor frame (``anchors[f]``, -1: none, similarity 0), ``x.y / (max(|x|, eps) max(|y|, eps))``,
    NaN as +inf; and (V,) bool non-finite videos."""
    scores = torch.zeros(layout.num_tokens, dtype=torch.float32, device=features.device)
    for f in range(layout.total_frames):
        a = int(anchors[f])
        if a < 0:
            continue
        x = features[frame_rows(layout, f)].float()
        y = features[frame_rows(layout, a)].float()
        norms = x.norm(dim=1).clamp_min(COSINE_EPS) * y.norm(dim=1).clamp_min(COSINE_EPS)
        scores[frame_rows(layout, f)] = (x * y).sum(dim=1) / norms
    return nan_as_inf(scores), write_out(out, nonfinite_videos(features, layout) if validate else None)


def dycoke_order(features, frames, retention=0.3, quirks=True) -> list:
    """Per frame, the kept row indices in the order the released DyCoke code emits them (by
    ascending similarity, anchors in position order): quirk 1 of :mod:`vidcom2_kernels.dycoke`."""
    layout = parse_frames(frames, features.shape[0])
    budgets = dycoke_budgets(layout, parse_retention(retention, layout), quirks)
    whole = kept_whole(layout, quirks)
    scores, _ = dycoke_similarity(features, layout, anchor_frames(layout), False)
    out = []
    for f in range(layout.total_frames):
        rows = frame_rows(layout, f)
        order = torch.sort(scores[rows], stable=True).indices[: int(budgets[f])]
        out.append((rows.start + (torch.sort(order).values if whole[f] else order)).tolist())
    return out
