"""FastVID's kernels on the ``torch`` backend: no loop over tokens; the products are batched over
groups of frames (the distances) or done once a segment (the merge), which on the CPU is the work.

``frame_scores``: per video, frame-aligned chunks (the norms and the frame sums of one read).
``context_scores``: the frames with context tokens, in groups whose (g, T, T) distance block stays
under :data:`BLOCK_ELEMENTS`: one batched product a group for the distances, a top-k for the
density, a masked minimum for the distance to the nearest denser token.
``merge_context``: per segment with context tokens, its rows against its context tokens (one
product), one masked argmax per context frame of the segment (``ceil(inner segments / dtm_p)`` of
them), the sums as one ``index_add_`` each.
"""

from __future__ import annotations

import numpy as np
import torch

from ...backends.contract import nan_as_inf, write_out
from ...backends.torch_backend import as_float32, indices_from_mask, lowest_per_frame, out_of_range, video_chunks
from ...buffers import to_device
from ...constants import NORM_EPS
from ...device_layout import DeviceLayout, device_layout
from ...layout import VideoLayout
from .plan import DPC_NEIGHBOURS, context_frames

#: elements of one temporary block (a group's g x T x T distances; a chunk's rows x context tokens)
BLOCK_ELEMENTS = 1 << 22


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` over ``max(||x||, 1e-12)`` (a non-finite row: NaN)."""
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(NORM_EPS)


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
    means = unit(means)
    similarity = torch.zeros(layout.total_frames, dtype=torch.float32, device=device)
    similarity[:-1] = (means[:-1] * means[1:]).sum(dim=1)
    similarity.index_fill_(0, to_device(layout.frame_start[1:] - 1, device), 0.0)  # a video's last frame
    nonfinite = torch.stack(bad).to(device) if validate else None
    return nan_as_inf(torch.cat(scores)), similarity, write_out(out, nonfinite)


def _dpc_group(x: torch.Tensor, sq: torch.Tensor, rest: torch.Tensor, n_rest: torch.Tensor) -> torch.Tensor:
    """(g, T) float32 DPC-kNN scores of a group of frames ``x`` (g, T, C) of squared norms ``sq``
    (g, T) among their ``rest`` (g, T) bool tokens (``n_rest`` (g,) of them): the reference's
    :func:`~vidcom2_kernels.backends.reference.dpc_scores` (4 neighbours), batched, the squared distances from one product
    (``|a|^2 + |b|^2 - 2 a.b``, 0 on the diagonal)."""
    g, T, C = x.shape
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
    is_salient = lowest_per_frame(scores, layout, to_device(salient, device))
    out = torch.where(is_salient, float("-inf"), float("inf"))
    for v in range(layout.num_videos):
        T, f0 = int(layout.tokens_per_frame[v]), int(layout.frame_start[v])
        frames = f0 + np.flatnonzero(context[f0 : f0 + int(layout.num_frames[v])] > 0)
        step = max(1, BLOCK_ELEMENTS // max(1, T * T))
        for g0 in range(0, len(frames), step):
            group = frames[g0 : g0 + step]
            rows = to_device(layout.frame_row_start[group][:, None] + np.arange(T), device).flatten()  # (g * T,)
            if group[-1] - group[0] == len(group) - 1:  # consecutive frames: a view, no gather
                r0 = int(layout.frame_row_start[group[0]])
                x = features[r0 : r0 + len(group) * T].float().view(len(group), T, -1)
            else:
                x = features.index_select(0, rows).float().view(len(group), T, -1)
            rest = ~is_salient.index_select(0, rows).view(len(group), T)
            n_rest = to_device(T - salient[group], device)
            sq = torch.linalg.vector_norm(x, dim=2).square()  # one fused pass, no (g, T, C) temporary
            dpc = _dpc_group(x, sq, rest, n_rest)
            # a frame whose rest tokens are not all finite (their float32 squared norms): +inf
            bad = (~torch.isfinite(sq) & rest).any(dim=1)
            keys = torch.where(rest, torch.where(bad[:, None], float("inf"), -dpc), float("-inf"))
            out.index_copy_(0, rows, keys.flatten())  # the group's salient rows stay -inf
    return nan_as_inf(out)


def context_per_frame(anchor: torch.Tensor, ids: DeviceLayout, per_frame) -> np.ndarray:
    """(F,) int64 context tokens of each frame: ``per_frame`` when the host knows it (the plan's,
    in budget mode), else counted from the ``anchor`` (N,) mask and read (exact mode's one more read)."""
    if per_frame is not None:
        return np.asarray(per_frame, dtype=np.int64)
    counts = torch.zeros(ids.layout.total_frames, dtype=torch.int64, device=anchor.device)
    return counts.index_add_(0, ids.row_frame, anchor.long()).cpu().numpy()


def merge_context(
    features, layout: VideoLayout, scores, mask, indices, rows, segment: np.ndarray, per_frame, beta: float
):
    """The reference's merge (:func:`.reference.merge_context`) per segment with context tokens:
    its rows against its context tokens in one product, the argmax restricted to one context
    frame of the segment at a time, the group sums by ``index_add_``."""
    device, K = features.device, indices.shape[0]
    slot = torch.full((layout.num_tokens,), -1, dtype=torch.int64, device=device)
    slot.index_copy_(0, indices, torch.arange(K, device=device))
    merged_rows, merged = rows[0].clone(), torch.zeros(K, dtype=torch.bool, device=device)
    salient = mask & (scores == float("-inf"))
    anchor = mask & ~salient
    ids = device_layout(layout, device)
    ctx = context_frames(segment, context_per_frame(anchor, ids, per_frame))
    anchors = indices_from_mask(anchor, int(ctx.count.sum()))  # every context token, ascending
    for s in np.flatnonzero(ctx.table[:, 0] >= 0):  # the segments with context tokens
        cs = ctx.table[s][ctx.table[s] >= 0]  # its context frames
        lo, hi = int(ctx.first[cs[0]]), int(ctx.first[cs[-1]] + ctx.count[cs[-1]])
        frames = np.flatnonzero(segment == s)
        r0, r1 = int(layout.frame_row_start[frames[0]]), int(layout.frame_row_start[frames[-1] + 1])
        A = anchors[lo:hi]
        x, xa = features[r0:r1].float(), features.index_select(0, A).float()
        sim = unit(x) @ unit(xa).T  # (rows, A) cosines (a non-finite row: NaN, which joins its first context token)
        col = torch.arange(lo, hi, device=device)[None, :]
        sums, n = torch.zeros_like(xa), torch.zeros(len(A), dtype=torch.int64, device=device)
        frame = ids.row_frame[r0:r1]
        free = ~salient[r0:r1]
        for c in cs:  # the segment's context frames (ceil(inner segments / dtm_p) of them)
            inside = (col >= int(ctx.first[c])) & (col < int(ctx.first[c] + ctx.count[c]))
            pick = torch.argmax(torch.where(inside, sim, float("-inf")), dim=1)
            join = free & ~(anchor[r0:r1] & (frame == int(ctx.frame[c])))  # not that frame's own
            sums.index_add_(0, pick, torch.where(join[:, None], x, 0.0))  # no boolean indexing: no sync
            n.index_add_(0, pick, join.long())
        w = (1.0 / (n + 1).float()).clamp(min=beta)[:, None]
        change = (n > 0) & (w[:, 0] < 1.0)
        blend = w * xa + (1 - w) * (sums / n.clamp(min=1)[:, None].float())
        k = slot.index_select(0, A)  # the context tokens' output rows
        own = merged_rows.index_select(0, k)
        merged_rows.index_copy_(0, k, torch.where(change[:, None], blend.to(merged_rows.dtype), own))
        merged.index_copy_(0, k, change)
    return [merged_rows, *rows[1:]], merged
