"""HoliTom's kernels in eager PyTorch, the yardstick of its backends: loops over videos, windows
and frames, in float32, step by step as the released code computes them
(``token_compressor/holitom``), with a deterministic rule where it draws random numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as tf

from ...backends.contract import nan_as_inf, write_out
from ...backends.reference import dpc_scores, frame_rows, nonfinite_videos, normalized, video_rows
from ...layout import VideoLayout
from .plan import Plan


def consecutive_cosines(x: torch.Tensor) -> torch.Tensor:
    """(t - 1, T) float32 cosine of each token with itself in the next frame, ``x`` (t, T, C)
    float32 (each row normalised first, as the released code does)."""
    unit = normalized(x)
    return tf.cosine_similarity(unit[:-1], unit[1:], dim=-1)


def static_runs(similarity: torch.Tensor, tau: float) -> torch.Tensor:
    """(t, T) float32: from each frame on, the number of following frames over which the token's
    similarity with the next frame stays above ``tau`` (0 on the last frame); ``similarity``
    (t - 1, T)."""
    t = similarity.shape[0] + 1
    runs = torch.zeros(t, similarity.shape[1], dtype=torch.float32, device=similarity.device)
    for f in range(t - 2, -1, -1):
        runs[f] = torch.where(similarity[f] > tau, runs[f + 1] + 1, 0.0)
    return runs


def token_runs(features: torch.Tensor, layout: VideoLayout, tau: float, validate: bool, out=None) -> tuple:
    """(N,) float32 ``-||x||`` (the dominant tokens' key), NaN as +inf; (N,) float32 each row's
    static run (:func:`static_runs`); (V,) non-finite videos."""
    scores = nan_as_inf(-torch.linalg.vector_norm(features.float(), dim=1))
    runs = torch.zeros(layout.num_tokens, dtype=torch.float32, device=features.device)
    for v in range(layout.num_videos):
        t, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
        if t * T == 0:
            continue
        x = features[video_rows(layout, v)].float().view(t, T, -1)
        runs[video_rows(layout, v)] = static_runs(consecutive_cosines(x), tau).flatten()
    return scores, runs, write_out(out, nonfinite_videos(features, layout) if validate else None)


def dpc_centres(x: torch.Tensor, count: int, k_neighbors: int) -> tuple:
    """The ``count`` highest DPC-kNN scores' rows of ``x`` (n, C) float32, ascending (the lower
    row first on equal scores), with ``k = min(k_neighbors, count)`` nearest
    (:func:`~vidcom2_kernels.backends.reference.dpc_scores`), and the distances (n, n)."""
    scores, dist = dpc_scores(x, min(k_neighbors, count))
    order = torch.sort(nan_as_inf(-scores), stable=True).indices
    return torch.sort(order[:count]).values, dist


def cluster_rows(x: torch.Tensor, count: int, k_neighbors: int, beta: float) -> tuple:
    """``count`` DPC-kNN centres of the rows of ``x`` (n, C) float32, each the blend ``beta *
    centre + (1 - beta) * mean`` of the other rows nearest to it (the first centre on equal
    distances), or itself when none is. Returns (rows (count, C) float32, merged (count,) bool)."""
    centres, dist = dpc_centres(x, count, k_neighbors)
    others = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    others[centres] = False
    others = torch.nonzero(others).flatten()
    assign = torch.argmin(dist[others][:, centres], dim=1)
    rows, merged = x[centres].clone(), torch.zeros(count, dtype=torch.bool, device=x.device)
    for c in range(count):
        group = others[assign == c]
        if len(group):
            rows[c] = beta * x[centres[c]] + (1 - beta) * x[group].mean(dim=0)
            merged[c] = True
    return rows, merged


def merge_windows(features: torch.Tensor, layout: VideoLayout, rows: list, plan: Plan, beta: float, k_neighbors: int):
    """HoliTom's output rows, window by window (:mod:`.plan` has the order): the static tokens'
    means over the window, clustered; each frame's dominant tokens (largest norms among its
    dynamic tokens, the lower row first on ties; NaN norms last), unchanged; its other dynamic
    tokens clustered. Only the features (``rows[0]``) change: the extras stay the rows at the
    placeholder positions, as the released Qwen3-VL code gathers its deepstack features.
    Returns (rows, merged (K,) bool)."""
    K = len(plan.keep)
    out = torch.zeros(K, features.shape[1], dtype=torch.float32, device=features.device)
    merged = torch.zeros(K, dtype=torch.bool, device=features.device)
    is_static = torch.from_numpy(plan.is_static).to(features.device)
    for w in range(len(plan.video)):
        T = int(layout.tokens_per_frame[plan.video[w]])
        f0, W, c = int(plan.start[w]), int(plan.size[w]), int(plan.clusters[w])
        if c > 0:
            a = int(layout.frame_row_start[f0])
            block = features[a : a + W * T].float().view(W, T, -1)
            means = block[:, is_static[a : a + T]].mean(dim=0)
            o = int(plan.static_first[w])
            out[o : o + c], _ = cluster_rows(means, c, k_neighbors, beta)
            merged[o : o + c] = True  # a mean over W >= 2 frames
    for f in range(layout.total_frames):
        rows_f = frame_rows(layout, f)
        dynamic = torch.nonzero(~is_static[rows_f]).flatten()
        x = features[rows_f].float()[dynamic]
        dom, ctx, o = int(plan.dominant[f]), int(plan.contextual[f]), int(plan.first[f])
        key = nan_as_inf(-torch.linalg.vector_norm(x, dim=1))
        order = torch.sort(key, stable=True).indices
        chosen = torch.sort(order[:dom]).values
        out[o : o + dom] = x[chosen]
        if ctx > 0:
            rest = torch.sort(order[dom:]).values
            o += dom
            out[o : o + ctx], merged[o : o + ctx] = cluster_rows(x[rest], ctx, k_neighbors, beta)
    return [out.to(features.dtype), *rows[1:]], merged
