"""HoliTom's kernels on the ``torch`` backend: no loop over frames or tokens. The static runs come
from batched dots of consecutive frames and a reverse running minimum per video; the dominant
tokens of every frame from one per-frame ranking of the whole batch; the DPC-kNN clusters from
one batched product per shape: the static blocks of all windows with the same (static tokens,
clusters), the contextual tokens of all frames with the same (tokens, rest, clusters), the latter
only when ``dominant_ratio > 0``.
"""

from __future__ import annotations

import numpy as np
import torch

from ...backends.contract import write_out
from ...backends.torch_backend import as_float32, indices_from_mask, lowest_per_frame, out_of_range
from ...buffers import to_device
from ...constants import NORM_EPS
from ...device_layout import device_layout
from ...layout import VideoLayout
from .plan import Plan

#: the key of a dynamic token whose norm is NaN: after every finite norm, before the static tokens
NAN_NORM_KEY = torch.finfo(torch.float32).max


def token_runs(features: torch.Tensor, layout: VideoLayout, tau: float, validate: bool, out=None) -> tuple:
    """(N,) float32 ``-||x||``, NaN as +inf; (N,) float32 each row's static run: the following
    frames over which its token's cosine with the next frame stays above ``tau``; (V,) non-finite
    videos."""
    device = features.device
    scores = torch.empty(layout.num_tokens, dtype=torch.float32, device=device)
    runs = torch.zeros(layout.num_tokens, dtype=torch.float32, device=device)
    bad = []
    for v in range(layout.num_videos):
        t, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
        a = int(layout.row_start[v])
        if t * T == 0:
            bad.append(torch.zeros((), dtype=torch.bool, device=device))
            continue
        x = as_float32(features[a : a + t * T], "holitom_x").view(t, T, -1)
        norm = torch.linalg.vector_norm(x, dim=2)
        scores[a : a + t * T] = torch.nan_to_num(-norm.flatten(), nan=float("inf"))
        if validate:
            bad.append(out_of_range(x))
        if t > 1:
            dots = torch.einsum("ftc,ftc->ft", x[:-1], x[1:])  # batched dots: no (t - 1, T, C) temporary
            static = dots / (norm[:-1].clamp_min(NORM_EPS) * norm[1:].clamp_min(NORM_EPS)) > tau  # (t - 1, T)
            f = torch.arange(t - 1, device=device)[:, None]
            breaks = torch.where(static, t - 1, f)  # the first frame at or after f that breaks
            first_break = torch.flip(torch.cummin(torch.flip(breaks, [0]), dim=0).values, [0])
            runs[a : a + (t - 1) * T] = (first_break - f).flatten().float()
    nonfinite = torch.stack(bad) if validate and bad else None
    if validate and nonfinite is None:
        nonfinite = torch.zeros(layout.num_videos, dtype=torch.bool, device=device)
    return scores, runs, write_out(out, nonfinite)


def cluster_rows(x: torch.Tensor, count: int, k_neighbors: int, beta: float) -> tuple:
    """The reference's :func:`.reference.cluster_rows` for a batch of groups ``x`` (g, n, C)
    float32, each clustered alone: distances from one product (``|a|^2 + |b|^2 - 2 a.b``, made
    exactly symmetric, 0 on the diagonal: two mutually nearest rows get equal densities, a tie the
    lower row wins, as in the reference). Returns (rows (g, count, C) float32, merged (g, count) bool)."""
    g, n, C = x.shape
    sq = torch.linalg.vector_norm(x, dim=2).square()
    d2 = torch.baddbmm(sq[:, :, None] + sq[:, None, :], x, x.transpose(1, 2), alpha=-2.0).clamp_min_(0.0).div_(C)
    d2 = torch.minimum(d2, d2.transpose(1, 2))  # exactly symmetric: mutual nearest rows tie as they should
    d2.diagonal(dim1=1, dim2=2).zero_()
    k = max(1, min(k_neighbors, count, n))
    density = torch.exp(-torch.topk(d2, k, dim=2, largest=False).values.mean(dim=2))
    dist = d2.sqrt_()
    i = torch.arange(n, device=x.device)
    di, dj = density[:, :, None], density[:, None, :]
    denser = (dj > di) | ((dj == di) & (i[None, None, :] < i[None, :, None]))
    dist_max = dist.flatten(1).amax(dim=1)[:, None, None]
    delta = torch.where(denser, dist, dist_max).amin(dim=2)
    key = torch.nan_to_num(-(delta * density), nan=float("inf"))
    centres = torch.sort(torch.sort(key, dim=1, stable=True).indices[:, :count], dim=1).values  # (g, count)
    to_centre = dist.gather(2, centres[:, None, :].expand(g, n, count))
    assign = torch.argmin(to_centre, dim=2)  # (g, n): the first centre on equal distances
    other = torch.ones(g, n, dtype=torch.bool, device=x.device).scatter_(1, centres, False)
    sums = torch.zeros(g, count, C, dtype=torch.float32, device=x.device)
    sums.scatter_add_(1, assign[:, :, None].expand(g, n, C), torch.where(other[:, :, None], x, 0.0))
    members = torch.zeros(g, count, dtype=torch.float32, device=x.device).scatter_add_(1, assign, other.float())
    own = x.gather(1, centres[:, :, None].expand(g, count, C))
    blend = beta * own + (1 - beta) * (sums / members.clamp_min(1.0)[:, :, None])
    merged = members > 0
    return torch.where(merged[:, :, None], blend, own), merged


def merge_windows(features: torch.Tensor, layout: VideoLayout, rows: list, plan: Plan, beta: float, k_neighbors: int):
    """HoliTom's output rows (the reference's :func:`.reference.merge_windows`): the static
    clusters of all windows of one shape at once, every frame's dominant tokens at once, the
    contextual clusters of all frames of one shape at once. Returns (rows, merged (K,) bool)."""
    device, K, C = features.device, len(plan.keep), features.shape[1]
    out = torch.empty(K, C, dtype=torch.float32, device=device)  # every row is written below
    merged = torch.zeros(K, dtype=torch.bool, device=device)
    is_static = to_device(plan.is_static, device)
    out, merged = _static(features, layout, plan, out, merged, k_neighbors, beta)
    # every frame's dominant tokens: the lowest keys among its dynamic rows, in row order
    ids = device_layout(layout, device)
    norm = torch.linalg.vector_norm(features, dim=1, dtype=torch.float32)
    key = torch.where(is_static, float("inf"), torch.nan_to_num(-norm, nan=NAN_NORM_KEY))
    dominant = to_device(plan.dominant, device)
    chosen = lowest_per_frame(key, layout, dominant)
    rows_in = indices_from_mask(chosen, int(plan.dominant.sum()))  # ascending: frame by frame
    # the i-th dominant row overall is its frame's (i - dominant rows before the frame)-th
    frame = ids.row_frame.index_select(0, rows_in)
    before = torch.cumsum(dominant, 0) - dominant
    slot = to_device(plan.first, device).index_select(0, frame) + torch.arange(len(rows_in), device=device)
    out.index_copy_(0, slot - before.index_select(0, frame), features.index_select(0, rows_in).float())
    out, merged = _contextual(features, layout, plan, is_static | chosen, out, merged, k_neighbors, beta)
    return [out.to(features.dtype), *rows[1:]], merged


def _static(features, layout: VideoLayout, plan: Plan, out, merged, k_neighbors: int, beta: float):
    """The static clusters of every window that has them, batched over the windows of one shape
    (static tokens, clusters): each window's static rows summed over its frames by one
    ``index_add_`` (in frame order), over its frame count."""
    device, C = features.device, features.shape[1]
    windows = np.flatnonzero(plan.clusters > 0)
    shapes = np.stack([plan.static[windows], plan.clusters[windows]], axis=1)
    for shape in np.unique(shapes, axis=0):
        group = windows[(shapes == shape).all(axis=1)]
        n, c = (int(v) for v in shape)
        sources, targets = [], []
        for g, w in enumerate(group.tolist()):  # host index arithmetic only: no tensor work a window
            a, T, W = (
                int(layout.frame_row_start[plan.start[w]]),
                int(layout.tokens_per_frame[plan.video[w]]),
                int(plan.size[w]),
            )
            static = np.flatnonzero(plan.is_static[a : a + T])
            sources.append((a + np.arange(W)[:, None] * T + static[None, :]).ravel())
            targets.append(np.tile(g * n + np.arange(n), W))
        sums = torch.zeros(len(group) * n, C, dtype=torch.float32, device=device)
        sums.index_add_(
            0,
            to_device(np.concatenate(targets), device),
            features.index_select(0, to_device(np.concatenate(sources), device)).float(),
        )
        means = sums.view(len(group), n, C) / to_device(plan.size[group].astype(np.float32), device)[:, None, None]
        blends, _ = cluster_rows(means, c, k_neighbors, beta)
        slots = to_device(plan.static_first[group][:, None] + np.arange(c), device).flatten()
        out = out.index_copy(0, slots, blends.reshape(-1, C))
        merged = merged.index_fill(0, slots, True)  # a mean over W >= 2 frames
    return out, merged


def _contextual(features, layout: VideoLayout, plan: Plan, taken, out, merged, k_neighbors: int, beta: float):
    """The contextual clusters of every frame that has them, batched over the frames of one shape
    (tokens, other dynamic tokens, clusters): each frame's other dynamic tokens are its rows not
    ``taken`` (N,) bool (static or dominant), ascending."""
    device, C = features.device, features.shape[1]
    frames = np.flatnonzero(plan.contextual > 0)
    T = layout.frame_tokens[frames]
    rest = T - plan.static[plan.window[frames]] - plan.dominant[frames]
    shapes = np.stack([T, rest, plan.contextual[frames]], axis=1)
    for shape in np.unique(shapes, axis=0):
        group = frames[(shapes == shape).all(axis=1)]
        T_g, n, ctx = (int(v) for v in shape)
        rows = to_device(layout.frame_row_start[group][:, None] + np.arange(T_g), device)  # (g, T)
        # each frame's rest rows, ascending: a stable sort puts them (0) before the others (1), no sync
        busy = taken.index_select(0, rows.flatten()).view(len(group), T_g).to(torch.int8)
        order = torch.sort(busy, dim=1, stable=True).indices[:, :n]
        x = features.index_select(0, rows.gather(1, order).flatten()).float().view(len(group), n, C)
        blends, flags = cluster_rows(x, ctx, k_neighbors, beta)
        slots = to_device(plan.first[group] + plan.dominant[group], device)
        slots = (slots[:, None] + torch.arange(ctx, device=device)[None, :]).flatten()
        out = out.index_copy(0, slots, blends.reshape(-1, C))
        merged = merged.index_copy(0, slots, flags.flatten())
    return out, merged


__all__ = ["cluster_rows", "merge_windows", "token_runs"]
