"""The yardstick: the shared stages (VidCom2's Frame Compression Adjustment, the selection with
its exact counts, the gather, DyCoke's attention row) in eager PyTorch, written for clarity, one
loop over videos and frames, step by step as in ALGORITHM.md, in float32. Each method's
reference scorer lives in its folder (``methods/<name>/reference.py``).

The ``torch`` and ``triton`` backends are tested against this file; it imports nothing from them,
and they import nothing from it. It reads tensors back to the host freely: never use it for speed.
The public twins (``vidcom2_kernels.reference.compress`` ...) run the pipeline over it.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..constants import MAX_ABS, NORM_EPS, TEMPERATURE
from ..layout import VideoLayout
from ..records import Selection
from .contract import nan_as_inf, select_then_gather, write_out


def supports(device: torch.device) -> bool:
    return True


def video_rows(layout: VideoLayout, v: int) -> slice:
    return slice(int(layout.row_start[v]), int(layout.row_start[v + 1]))


def frame_rows(layout: VideoLayout, f: int) -> slice:
    return slice(int(layout.frame_row_start[f]), int(layout.frame_row_start[f + 1]))


def normalized(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` over ``max(||x||, 1e-12)`` (``F.normalize``)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(NORM_EPS)


def dpc_scores(x: torch.Tensor, k: int) -> tuple:
    """DPC-kNN centre scores (n,) float32 of the rows of ``x`` (n, C) and their distances (n, n):
    distance ``||xi - xj|| / sqrt(C)``; density ``exp(-mean of the squared distances to the k
    nearest, the row itself included)`` (k clipped to [1, n]); score = density x the distance to
    the nearest denser row (equal densities: the lower row is the denser; the largest distance
    for the densest). The released helpers break equal densities with random noise of 1e-6."""
    n, C = x.shape
    dist = torch.cdist(x[None], x[None], compute_mode="donot_use_mm_for_euclid_dist")[0] / math.sqrt(C)
    nearest = torch.topk(dist, max(1, min(k, n)), dim=1, largest=False).values
    density = torch.exp(-(nearest**2).mean(dim=1))
    i = torch.arange(n, device=x.device)
    denser = (density[None, :] > density[:, None]) | (
        (density[None, :] == density[:, None]) & (i[None, :] < i[:, None])
    )
    delta = torch.where(denser, dist, dist.max()).min(dim=1).values
    return delta * density, dist


def nonfinite_videos(features: torch.Tensor, layout: VideoLayout) -> torch.Tensor:
    """(V,) bool: the video's features hold NaN, Inf or a value of magnitude >= MAX_ABS."""
    rows = [features[video_rows(layout, v)].float() for v in range(layout.num_videos)]
    return torch.stack([~(x.abs() < MAX_ABS).all() for x in rows])


# ------------------------------------------------------- step 5: frame compression adjustment
def frame_scales(uniqueness: torch.Tensor, layout: VideoLayout, retention: np.ndarray) -> torch.Tensor:
    """(F,) float32 ``min(1, r * (1 + p_f - mean(p)))``, ``p = softmax(u / 0.01)`` per video.

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


def frame_budgets(uniqueness: torch.Tensor, layout: VideoLayout, retention: np.ndarray, out=None) -> tuple:
    """(F,) int64 ``k_f = max(1, round_half_even(scale_f * T))`` and (V,) int64 their sums."""
    scales = frame_scales(uniqueness, layout, retention)
    tokens = torch.tensor(layout.frame_tokens, device=scales.device).float()
    budgets = torch.round(scales * tokens).clamp_min(1).long()
    counts = torch.stack(
        [budgets[int(layout.frame_start[v]) : int(layout.frame_start[v + 1])].sum() for v in range(layout.num_videos)]
    )
    return budgets, write_out(out, counts)


# ------------------------------------------------------------- step 6: selection, exact counts
def select_tokens(
    scores: torch.Tensor,
    layout: VideoLayout,
    budgets: torch.Tensor,
    targets: Optional[np.ndarray] = None,
    num_kept: Optional[int] = None,
) -> Selection:
    """Per frame keep the ``budgets[f]`` lowest scores (lower index first on ties).

    With ``targets`` (exact mode), reconcile each video to ``targets[v]`` tokens: drop the kept
    tokens of largest score (higher index first), or add the not-kept ones of smallest score
    (lower index first). ``num_kept`` is not needed here (the mask is read back to index it).
    """
    scores = nan_as_inf(scores.float())
    mask = torch.zeros(layout.num_tokens, dtype=torch.bool, device=scores.device)
    for f in range(layout.total_frames):
        rows = frame_rows(layout, f)
        order = torch.sort(scores[rows], stable=True).indices
        k = min(max(int(budgets[f]), 0), rows.stop - rows.start)  # budgets are clamped to [0, T]
        mask[rows.start + order[:k]] = True
    if targets is not None:
        for v in range(layout.num_videos):
            rows = video_rows(layout, v)
            video_mask = mask[rows]
            order = torch.sort(scores[rows], stable=True).indices  # ascending (score, index)
            kept_in_order = order[video_mask[order]]
            dropped_in_order = order[~video_mask[order]]
            surplus = int(video_mask.sum()) - int(targets[v])
            if surplus > 0:  # drop the largest kept: the tail of the ascending order
                video_mask[kept_in_order[len(kept_in_order) - surplus :]] = False
            elif surplus < 0:
                video_mask[dropped_in_order[:-surplus]] = True
    final_budgets = torch.stack([mask[frame_rows(layout, f)].sum() for f in range(layout.total_frames)])
    counts = torch.stack([mask[video_rows(layout, v)].sum() for v in range(layout.num_videos)])
    return Selection(torch.nonzero(mask).flatten(), mask, final_budgets.long(), counts.long())


def gather_rows(indices: torch.Tensor, tensors) -> list:
    """Rows ``indices`` of each tensor."""
    return [t.index_select(0, indices) for t in tensors]


def select_and_gather(scores, layout: VideoLayout, budgets, targets, num_kept: int, tensors) -> tuple:
    """The selection, then the gather (:func:`select_tokens`, :func:`gather_rows`)."""
    return select_then_gather(select_tokens, gather_rows, scores, layout, budgets, targets, num_kept, tensors)


# --------------------------------------------------------------- DyCoke's KV pruning, attention
def attention_row(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, scale: float) -> torch.Tensor:
    """q (B, H, D), k (B, Hkv, S, D), valid (B, S) -> (B, S) float32 softmax attention of the
    query over the valid keys, averaged over heads (a key head serves H / Hkv query heads)."""
    B, H, D = q.shape
    k = k.float().repeat_interleave(H // k.shape[1], dim=1)  # grouped-query: one key head per group
    scores = torch.einsum("bhd,bhsd->bhs", q.float(), k) * scale
    scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0).mean(dim=1)
