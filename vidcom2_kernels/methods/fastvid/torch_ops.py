"""FastVID's kernels on the ``torch`` backend: no loop over frames, tokens or context tokens.

``frame_scores``: per video, frame-aligned chunks (the norms and the frame sums of one read).
``context_scores``: the frames with context tokens, in groups whose (g, T, T) distance block stays
under :data:`BLOCK_ELEMENTS`: one batched product a group for the distances, a top-k for the
density, a masked minimum for the distance to the nearest denser token.
``merge_context``: per video, rows in chunks against all the video's context tokens (one product),
one masked argmax per context frame of a segment (at most ``ceil(L / dtm_p)`` a segment), the sums
as one ``index_add_`` each.
"""

from __future__ import annotations

import numpy as np
import torch

from ...backends.contract import nan_as_inf, write_out
from ...backends.torch_backend import as_float32, lowest_per_frame, out_of_range, video_chunks
from ...device_layout import device_layout
from ...layout import VideoLayout
from .plan import DPC_NEIGHBOURS, NORMALIZE_EPS, context_frames

#: elements of one temporary block (a group's g x T x T distances; a chunk's rows x context tokens)
BLOCK_ELEMENTS = 1 << 22


def frame_scores(features: torch.Tensor, layout: VideoLayout, validate: bool, out=None) -> tuple:
    """(N,) float32 ``-||x||``, NaN as +inf; (F,) float32 similarity of each frame's normalised
    mean with the next one's (0 for a video's last frame); (V,) non-finite videos."""
    scores, means, bad = [], [], []
    for v in range(layout.num_videos):
        T, flags = int(layout.tokens_per_frame[v]), []
        for _, x in video_chunks(features, layout, v):
            x = as_float32(x, "fastvid_x")
            scores.append(-torch.linalg.vector_norm(x, dim=1))
            means.append(x.view(-1, T, x.shape[1]).mean(dim=1))
            if validate:
                flags.append(out_of_range(x))
        if validate:
            bad.append(torch.stack(flags).any() if flags else torch.zeros((), dtype=torch.bool))
    device = features.device
    if not scores:
        empty = torch.empty(0, dtype=torch.float32, device=device)
        return empty, empty, write_out(out, torch.zeros(layout.num_videos, dtype=torch.bool, device=device))
    means = torch.cat(means)
    means = means / torch.linalg.vector_norm(means, dim=1, keepdim=True).clamp_min(NORMALIZE_EPS)
    similarity = torch.zeros(layout.total_frames, dtype=torch.float32, device=device)
    similarity[:-1] = (means[:-1] * means[1:]).sum(dim=1)
    similarity[torch.as_tensor(layout.frame_start[1:] - 1, device=device)] = 0.0  # a video's last frame
    nonfinite = torch.stack(bad).to(device) if validate else None
    return nan_as_inf(torch.cat(scores)), similarity, write_out(out, nonfinite)


def _dpc_group(x: torch.Tensor, rest: torch.Tensor, n_rest: torch.Tensor) -> torch.Tensor:
    """(g, T) float32 DPC-kNN scores of a group of frames ``x`` (g, T, C) among their ``rest``
    (g, T) bool tokens (``n_rest`` (g,) of them): the reference's :func:`.reference.dpc_scores`,
    batched, the squared distances from one product (``|a|^2 + |b|^2 - 2 a.b``, 0 on the diagonal)."""
    g, T, C = x.shape
    sq = (x * x).sum(dim=2)
    d2 = torch.baddbmm(sq[:, :, None] + sq[:, None, :], x, x.transpose(1, 2), alpha=-2.0).clamp_min_(0.0).div_(C)
    d2.diagonal(dim1=1, dim2=2).zero_()
    pair = rest[:, :, None] & rest[:, None, :]
    K = min(DPC_NEIGHBOURS, T)
    nearest = torch.topk(torch.where(pair, d2, float("inf")), K, dim=2, largest=False).values  # ascending
    k = n_rest.clamp(max=DPC_NEIGHBOURS, min=1)
    used = torch.arange(K, device=x.device)[None, None, :] < k[:, None, None]
    density = torch.exp(-(torch.where(used, nearest, 0.0).sum(dim=2) / k[:, None]))
    dist = d2.sqrt_()
    dist_max = torch.where(pair, dist, float("-inf")).flatten(1).amax(dim=1)  # (g,)
    i = torch.arange(T, device=x.device)
    di, dj = density[:, :, None], density[:, None, :]
    denser = rest[:, None, :] & ((dj > di) | ((dj == di) & (i[None, None, :] < i[None, :, None])))
    delta = torch.where(denser, dist, dist_max[:, None, None]).amin(dim=2)
    return delta * density


def context_scores(features, layout: VideoLayout, scores, salient: np.ndarray, context: np.ndarray):
    """(N,) float32: -inf for each frame's ``salient[f]`` largest norms, ``-dpc_score`` for the
    other tokens of a frame with ``context[f] > 0``, +inf elsewhere (the reference's definition,
    :func:`.reference.context_scores`), NaN as +inf."""
    device = features.device
    is_salient = lowest_per_frame(scores, layout, torch.as_tensor(salient, device=device))
    out = torch.where(is_salient, float("-inf"), float("inf"))
    for v in range(layout.num_videos):
        T, f0 = int(layout.tokens_per_frame[v]), int(layout.frame_start[v])
        frames = f0 + np.flatnonzero(context[f0 : f0 + int(layout.num_frames[v])] > 0)
        step = max(1, BLOCK_ELEMENTS // max(1, T * T))
        for g0 in range(0, len(frames), step):
            group = frames[g0 : g0 + step]
            rows = torch.as_tensor(layout.frame_row_start[group][:, None] + np.arange(T), device=device)  # (g, T)
            x = features[rows].float()
            rest = ~is_salient[rows]
            n_rest = torch.as_tensor(T - salient[group], device=device)
            dpc = _dpc_group(x, rest, n_rest)
            # a frame whose rest tokens are not all finite (their float32 squared norms): +inf
            bad = (~torch.isfinite((x * x).sum(dim=2)) & rest).any(dim=1)
            out[rows[rest]] = torch.where(bad[:, None], float("inf"), -dpc)[rest]
    return nan_as_inf(out)


def merge_context(features, layout: VideoLayout, scores, mask, indices, rows, segment: np.ndarray, beta: float):
    """The reference's merge (:func:`.reference.merge_context`) per video: each chunk of rows
    against all the video's context tokens in one product, the argmax restricted to one context
    frame of the row's segment at a time, the group sums by ``index_add_``. Reads the context
    tokens' count per frame (F,) once."""
    device, K = features.device, indices.shape[0]
    slot = torch.full((layout.num_tokens,), -1, dtype=torch.int64, device=device)
    slot[indices] = torch.arange(K, device=device)
    merged_rows, merged = rows[0].clone(), torch.zeros(K, dtype=torch.bool, device=device)
    salient = mask & (scores == float("-inf"))
    anchor = mask & ~salient
    ids = device_layout(layout, device)
    per_frame = torch.zeros(layout.total_frames, dtype=torch.int64, device=device)
    ctx = context_frames(segment, per_frame.index_add_(0, ids.row_frame, anchor.long()).cpu().numpy())
    anchors = torch.nonzero(anchor).flatten()  # every context token, ascending
    table, frame_of, first, count = (
        torch.as_tensor(t, device=device) for t in (ctx.table, ctx.frame, ctx.first, ctx.count)
    )
    for v in range(layout.num_videos):
        a, b = int(layout.row_start[v]), int(layout.row_start[v + 1])
        mine = (ctx.frame >= layout.frame_start[v]) & (ctx.frame < layout.frame_start[v + 1])
        if not mine.any():
            continue
        lo, hi = int(ctx.first[mine][0]), int(ctx.first[mine][-1] + ctx.count[mine][-1])  # the video's context tokens
        A = anchors[lo:hi]
        xa = features[A].float()
        an = xa / torch.linalg.vector_norm(xa, dim=1, keepdim=True).clamp_min(NORMALIZE_EPS)
        sums, n = torch.zeros_like(xa), torch.zeros(len(A), dtype=torch.int64, device=device)
        col = torch.arange(lo, hi, device=device)
        step = max(1, BLOCK_ELEMENTS // len(A))
        for r0 in range(a, b, step):
            r1 = min(b, r0 + step)
            x = features[r0:r1].float()
            xn = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(NORMALIZE_EPS)
            sim = xn @ an.T  # (n, A) cosines (a non-finite row: NaN, which joins its first context token)
            frame = ids.row_frame[r0:r1]
            row_table = table[torch.as_tensor(segment, device=device)[frame]]  # (n, J)
            for j in range(ctx.table.shape[1]):
                c = row_table[:, j]  # the row's j-th context frame, -1: none
                has, c = c >= 0, c.clamp(min=0)
                inside = (col[None, :] >= first[c][:, None]) & (col[None, :] < (first[c] + count[c])[:, None])
                pick = torch.argmax(torch.where(inside, sim, float("-inf")), dim=1)
                own = anchor[r0:r1] & (frame == frame_of[c])  # that frame's own context tokens
                join = has & ~salient[r0:r1] & ~own
                sums.index_add_(0, pick[join], x[join])
                n.index_add_(0, pick[join], torch.ones_like(pick[join]))
        w = (1.0 / (n + 1).float()).clamp(min=beta)[:, None]
        change = (n > 0) & (w[:, 0] < 1.0)
        blend = w * xa + (1 - w) * (sums / n.clamp(min=1)[:, None].float())
        merged_rows[slot[A[change]]] = blend[change].to(merged_rows.dtype)
        merged[slot[A[change]]] = True
    return [merged_rows, *rows[1:]], merged
