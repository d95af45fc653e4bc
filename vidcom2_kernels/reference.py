"""Eager PyTorch reference of VidCom2, written for clarity: loops over videos and frames.

This is the yardstick the ``torch`` and ``triton`` backends are tested against. It follows
ALGORITHM.md step by step in float32 (``float64=True`` in the stage helpers gives a higher-precision
twin for the tests' margin checks). It syncs with the device freely; do not use it for speed.

Layout-level functions (``keep_channels`` ... ``compress_request``) take a parsed
:class:`~vidcom2_kernels.layout.VideoLayout`; the public twins at the bottom take the same
arguments as the functions in :mod:`vidcom2_kernels` (without ``backend``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .constants import GAUSSIAN_BANDWIDTHS, NORM_EPS, TEMPERATURE, kept_channels
from .layout import VideoLayout


def nan_as_inf(x: torch.Tensor) -> torch.Tensor:
    """NaN -> +inf, everything else unchanged (``nan_to_num`` would also clip +inf to the largest
    float, and NaN must tie with +inf, as in the kernels' integer keys)."""
    return torch.where(torch.isnan(x), torch.full_like(x, float("inf")), x)


def channel_variance(features: torch.Tensor, layout: VideoLayout, dtype=torch.float32) -> torch.Tensor:
    """(V, C) biased variance of every channel over each video's tokens."""
    rows = layout.row_start
    return torch.stack(
        [
            features[rows[v] : rows[v + 1]].to(dtype).var(dim=0, unbiased=False)
            for v in range(layout.num_videos)
        ]
    )


def keep_channels(features: torch.Tensor, layout: VideoLayout) -> torch.Tensor:
    """(V, C) bool: the ``max(1, C // 2)`` lowest-variance channels of each video.

    Equal variances: the lower channel index is kept first. NaN variances rank last.
    """
    var = nan_as_inf(channel_variance(features, layout))
    keep = torch.zeros_like(var, dtype=torch.bool)
    n_keep = kept_channels(features.shape[1])
    for v in range(layout.num_videos):
        order = torch.sort(var[v], stable=True).indices  # ascending, lower index first on ties
        keep[v, order[:n_keep]] = True
    return keep


def gaussian_similarity(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(T,) multi-scale Gaussian similarity ``sum_a exp(-||x - c||^2 / (2a))`` of rows x to c."""
    dist2 = ((x - centre) ** 2).sum(dim=-1)
    return sum(torch.exp(-dist2 / (2 * a)) for a in GAUSSIAN_BANDWIDTHS)


def score_tokens(
    features: torch.Tensor, layout: VideoLayout, keep: torch.Tensor, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``sv + sf`` (N,) and frame uniqueness ``-mean(sv)`` (F_total,), both float32."""
    scores = torch.empty(layout.num_tokens, dtype=dtype, device=features.device)
    uniqueness = torch.empty(layout.total_frames, dtype=dtype, device=features.device)
    for v in range(layout.num_videos):
        rows = slice(int(layout.row_start[v]), int(layout.row_start[v + 1]))
        s = features[rows][:, keep[v]].to(dtype)
        s = s / s.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
        video_centre = s.mean(dim=0)
        T = int(layout.tokens_per_frame[v])
        for f in range(int(layout.num_frames[v])):
            frame = s[f * T : (f + 1) * T]
            sv = gaussian_similarity(frame, video_centre)
            sf = gaussian_similarity(frame, frame.mean(dim=0))
            scores[rows.start + f * T : rows.start + (f + 1) * T] = sv + sf
            uniqueness[int(layout.frame_start[v]) + f] = -sv.mean()
    return nan_as_inf(scores).float(), uniqueness.float()


def frame_scales(uniqueness: torch.Tensor, layout: VideoLayout, retention: np.ndarray) -> torch.Tensor:
    """(F_total,) float32 ``min(1, r * (1 + p_f - mean(p)))``, ``p = softmax(u / 0.01)`` per video.

    Where the scale is not a number (non-finite uniqueness, ``validate=False``) it is ``r``.
    """
    scales = torch.empty(layout.total_frames, dtype=torch.float32, device=uniqueness.device)
    for v in range(layout.num_videos):
        frames = slice(int(layout.frame_start[v]), int(layout.frame_start[v + 1]))
        p = torch.softmax(uniqueness[frames].float() / TEMPERATURE, dim=0)
        r = torch.tensor(retention[v], dtype=torch.float32)
        # mean(p) summed in float64: every backend then gets the same float32 value whatever its
        # summation order; and p - mean(p) is formed before adding 1, so equal frames get exactly
        # scale = r (in float32, (1 + p) - mean(p) can miss 1 by an ulp and flip a .5 rounding).
        p_mean = p.double().mean().float()
        scale = torch.clamp(r * (1 + (p - p_mean)), max=1.0)
        scales[frames] = torch.where(torch.isnan(scale), r, scale)
    return scales


def budget_frames(uniqueness: torch.Tensor, layout: VideoLayout, retention: np.ndarray) -> torch.Tensor:
    """(F_total,) int64 ``k_f = max(1, round_half_even(scale_f * T))``."""
    scales = frame_scales(uniqueness, layout, retention)
    tokens = torch.as_tensor(layout.frame_tokens, device=scales.device).float()
    return torch.round(scales * tokens).clamp_min(1).long()


def select_kept(
    scores: torch.Tensor,
    layout: VideoLayout,
    budgets: torch.Tensor,
    targets: Optional[np.ndarray] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per frame keep the ``budgets[f]`` lowest scores (lower index first on ties).

    With ``targets`` (exact mode), reconcile each video to ``targets[v]`` tokens: drop the kept
    tokens of largest score (higher index first), or add the not-kept ones of smallest score
    (lower index first). Returns ``indices`` (K,), ``mask`` (N,), final ``budgets`` (F,), ``counts`` (V,).
    """
    scores = nan_as_inf(scores.float())
    mask = torch.zeros(layout.num_tokens, dtype=torch.bool, device=scores.device)
    frame_rows = layout.frame_row_start
    for f in range(layout.total_frames):
        start, stop = int(frame_rows[f]), int(frame_rows[f + 1])
        order = torch.sort(scores[start:stop], stable=True).indices
        k = min(max(int(budgets[f]), 0), stop - start)  # budgets are clamped to [0, T]
        mask[start + order[:k]] = True
    if targets is not None:
        for v in range(layout.num_videos):
            start, stop = int(layout.row_start[v]), int(layout.row_start[v + 1])
            video_mask = mask[start:stop]
            order = torch.sort(scores[start:stop], stable=True).indices  # ascending (score, index)
            kept_in_order = order[video_mask[order]]
            dropped_in_order = order[~video_mask[order]]
            surplus = int(video_mask.sum()) - int(targets[v])
            if surplus > 0:  # drop the largest kept: the tail of the ascending order
                video_mask[kept_in_order[len(kept_in_order) - surplus :]] = False
            elif surplus < 0:
                video_mask[dropped_in_order[:-surplus]] = True
    final_budgets = torch.stack(
        [mask[int(frame_rows[f]) : int(frame_rows[f + 1])].sum() for f in range(layout.total_frames)]
    )
    counts = torch.stack(
        [mask[int(layout.row_start[v]) : int(layout.row_start[v + 1])].sum() for v in range(layout.num_videos)]
    )
    indices = torch.nonzero(mask).flatten()
    return indices, mask, final_budgets.long(), counts.long()


def gather_rows(indices: torch.Tensor, *tensors) -> list:
    """Rows ``indices`` of each tensor: ``gather_rows(idx, a, b)`` (the public stage's form) or
    ``gather_rows(idx, [a, b])``."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tensors[0]
    return [t.index_select(0, indices) for t in tensors]


COSINE_EPS = 1e-8


def dycoke_similarity(features: torch.Tensor, layout: VideoLayout, anchors: np.ndarray) -> torch.Tensor:
    """(N,) float32 cosine similarity of every token with the same-position token of its frame's
    anchor frame (``anchors[f]``, -1: none, similarity 0). ``x.y / (max(|x|, eps) max(|y|, eps))``."""
    out = torch.zeros(layout.num_tokens, dtype=torch.float32, device=features.device)
    fr = layout.frame_row_start
    for f in range(layout.total_frames):
        a = int(anchors[f])
        if a < 0:
            continue
        x = features[fr[f] : fr[f + 1]].float()
        y = features[fr[a] : fr[a + 1]].float()
        norms = x.norm(dim=1).clamp_min(COSINE_EPS) * y.norm(dim=1).clamp_min(COSINE_EPS)
        out[fr[f] : fr[f + 1]] = (x * y).sum(dim=1) / norms
    return nan_as_inf(out)


def dycoke_order(features, frames, retention=0.3, quirks=True) -> list:
    """Per frame, the kept row indices in the order the released DyCoke code emits them (by
    ascending similarity, anchors in position order): quirk 1 of :mod:`vidcom2_kernels.dycoke`."""
    from .dycoke import anchor_frames, dycoke_budgets
    from .layout import parse_frames, parse_retention

    layout = parse_frames(frames, features.shape[0])
    budgets = dycoke_budgets(layout, parse_retention(retention, layout), quirks)
    anchors = anchor_frames(layout)
    scores = dycoke_similarity(features, layout, anchors)
    out = []
    for f in range(layout.total_frames):
        start, stop = int(layout.frame_row_start[f]), int(layout.frame_row_start[f + 1])
        order = torch.sort(scores[start:stop], stable=True).indices[: int(budgets[f])]
        out.append((start + (order if anchors[f] >= 0 else torch.sort(order).values)).tolist())
    return out


def last_query_attention(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference twin of the attention-row kernel: q (B, H, D), k (B, Hkv, S, D), valid (B, S).
    (B, S) float32 softmax attention of the query over the valid keys, averaged over heads."""
    B, H, D = q.shape
    k = k.float().repeat_interleave(H // k.shape[1], dim=1)  # grouped-query: one key head per group
    scores = torch.einsum("bhd,bhsd->bhs", q.float(), k) * scale
    scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0).mean(dim=1)


def method_scores_and_budgets(req, x, layout):
    """Token scores, frame uniqueness and per-frame budgets of the request's method."""
    if req.method == "vidcom2" or req.dycoke_fca:
        scores, uniqueness = score_tokens(x, layout, keep_channels(x, layout))
        budgets = budget_frames(uniqueness, layout, req.retention)
    if req.method == "dycoke":
        from .dycoke import anchor_frames, dycoke_budgets

        scores = dycoke_similarity(x, layout, anchor_frames(layout, fca=req.dycoke_fca))
        if not req.dycoke_fca:
            uniqueness = torch.zeros(layout.total_frames, device=x.device)
            budgets = torch.as_tensor(dycoke_budgets(layout, req.retention, req.quirks), device=x.device)
    return scores, uniqueness, budgets


def compress_request(req) -> "Compression":  # noqa: F821
    """The whole pipeline for a checked request (:func:`vidcom2_kernels.api.prepare`)."""
    from .api import Compression, raise_nonfinite

    x, layout = req.features, req.layout
    if req.validate:
        rows = layout.row_start
        bad = [v for v in range(layout.num_videos) if not torch.isfinite(x[rows[v] : rows[v + 1]]).all()]
        raise_nonfinite(bad)
    scores, uniqueness, budgets = method_scores_and_budgets(req, x, layout)
    indices, mask, budgets, counts = select_kept(scores, layout, budgets, req.targets)
    kept = gather_rows(indices, (x, *req.extras))
    return Compression(
        indices=indices, features=kept[0], mask=mask, budgets=budgets, counts=counts,
        scores=scores, uniqueness=uniqueness, extras=tuple(kept[1:]), layout=layout,
        backend="reference",
    )


# ------------------------------------------------------------------- public twins of the stages
def compress(features, frames, retention=0.25, *, exact=False, target=None, validate=True, extras=(),
             method="vidcom2", frame_budgets=None, quirks=False):
    """Reference twin of :func:`vidcom2_kernels.compress` (same arguments but ``backend``)."""
    from .api import compress as _compress

    return _compress(
        features, frames, retention, exact=exact, target=target, backend="reference",
        validate=validate, extras=extras, method=method, frame_budgets=frame_budgets, quirks=quirks,
    )


def select_channels(features, frames):
    """Reference twin of :func:`vidcom2_kernels.select_channels`."""
    from .stages import select_channels as _stage

    return _stage(features, frames, backend="reference")


def token_scores(features, frames, keep=None):
    """Reference twin of :func:`vidcom2_kernels.token_scores`."""
    from .stages import token_scores as _stage

    return _stage(features, frames, keep, backend="reference")


def frame_budgets(uniqueness, frames, retention=0.25):
    """Reference twin of :func:`vidcom2_kernels.frame_budgets`."""
    from .stages import frame_budgets as _stage

    return _stage(uniqueness, frames, retention, backend="reference")


def select_tokens(scores, frames, budgets, *, target=None):
    """Reference twin of :func:`vidcom2_kernels.select_tokens`."""
    from .stages import select_tokens as _stage

    return _stage(scores, frames, budgets, target=target, backend="reference")
