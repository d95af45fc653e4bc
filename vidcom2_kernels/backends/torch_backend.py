"""The ``torch`` backend: VidCom2 vectorised in PyTorch, segment reductions over videos and
frames (no Python loop over frames), no host read of its own (the pipeline's one read sizes the
output). For the CPU and any device without Triton. Implements :mod:`.contract`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from ..buffers import new_output, to_device
from ..constants import COSINE_EPS, GAUSSIAN_BANDWIDTHS, MAX_ABS, NORM_EPS, TEMPERATURE, kept_channels
from ..layout import VideoLayout
from ..records import Selection
from .contract import nan_as_inf


def supports(device: torch.device) -> bool:
    return True


@dataclass
class SegmentIds:
    """Device index tensors describing a layout (all int64)."""

    row_video: torch.Tensor  # (N,)
    row_frame: torch.Tensor  # (N,)
    frame_video: torch.Tensor  # (F,)
    frame_tokens: torch.Tensor  # (F,)
    frame_row_start: torch.Tensor  # (F,)
    video_row_start: torch.Tensor  # (V,)
    video_frames: torch.Tensor  # (V,)

    @staticmethod
    def build(layout: VideoLayout, device) -> "SegmentIds":
        def dev(a: np.ndarray) -> torch.Tensor:
            return to_device(np.asarray(a, dtype=np.int64), device)

        return SegmentIds(
            row_video=dev(layout.row_video()),
            row_frame=dev(layout.row_frame()),
            frame_video=dev(layout.frame_video),
            frame_tokens=dev(layout.frame_tokens),
            frame_row_start=dev(layout.frame_row_start[:-1]),
            video_row_start=dev(layout.row_start[:-1]),
            video_frames=dev(layout.num_frames),
        )


_SEGMENT_IDS: "OrderedDict[tuple, SegmentIds]" = OrderedDict()


def segment_ids(layout: VideoLayout, device) -> SegmentIds:
    """:class:`SegmentIds` of ``layout`` on ``device``, from a small LRU cache (one build per layout)."""
    key = (layout.key(), str(device))
    if key not in _SEGMENT_IDS:
        _SEGMENT_IDS[key] = SegmentIds.build(layout, device)
        if len(_SEGMENT_IDS) > 16:
            _SEGMENT_IDS.popitem(last=False)
    _SEGMENT_IDS.move_to_end(key)
    return _SEGMENT_IDS[key]


def _segment_sum(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    out = torch.zeros((num_segments, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, segment, values)


# ---------------------------------------------------------------------------------- step 1
#: Elements per temporary: frame-aligned chunks of this size stay below glibc's mmap threshold on
#: the CPU (large fresh allocations page-fault and cost more than the arithmetic on them).
CHUNK_ELEMENTS = {"cpu": 1 << 22}
DEFAULT_CHUNK_ELEMENTS = 1 << 28


def _video_chunks(features: torch.Tensor, layout: VideoLayout, v: int):
    """Rows of video v as float32 (f, T, C) blocks of whole frames, at least one frame each."""
    F, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
    budget = CHUNK_ELEMENTS.get(features.device.type, DEFAULT_CHUNK_ELEMENTS)
    step = max(1, budget // max(1, T * features.shape[1]))
    row0 = int(layout.row_start[v])
    for f0 in range(0, F, step):
        f1 = min(F, f0 + step)
        yield features[row0 + f0 * T : row0 + f1 * T].float().view(f1 - f0, T, -1)


def out_of_range(x: torch.Tensor) -> torch.Tensor:
    """0-d bool: ``x`` holds NaN, Inf or a value of magnitude >= MAX_ABS (one pass, no temporary)."""
    lo, hi = torch.aminmax(x)  # NaN propagates
    return ~((hi < MAX_ABS) & (lo > -MAX_ABS))


def channel_variance(features: torch.Tensor, layout: VideoLayout, validate: bool = False) -> tuple:
    """(V, C) float32 biased variance of every channel over each video: the mean, then the sum of
    squared deviations (two chunked passes, squares taken in place); with ``validate`` also (V,)
    bool, the video holds a value out of range (:func:`out_of_range`, during the first pass: one
    more read of each chunk, so only when asked), else None."""
    out, bad = [], []
    for v in range(layout.num_videos):
        n = float(layout.tokens_per_video[v])
        total, flags = 0.0, []
        for x in _video_chunks(features, layout, v):
            total = total + x.sum(dim=(0, 1))
            if validate:
                flags.append(out_of_range(x))
        mean = total / n
        m2 = sum((x - mean).square_().sum(dim=(0, 1)) for x in _video_chunks(features, layout, v))
        out.append(m2 / n)
        bad.append(torch.stack(flags).any() if validate else None)
    return torch.stack(out), torch.stack(bad) if validate else None


def kept_channel_order(var: torch.Tensor) -> torch.Tensor:
    """(V, C') int64 ascending indices of the ``max(1, C // 2)`` lowest variances per video
    (lower index first on ties, NaN last)."""
    order = torch.sort(nan_as_inf(var), dim=1, stable=True).indices
    return torch.sort(order[:, : kept_channels(var.shape[1])], dim=1).values


def keep_from_order(order: torch.Tensor, num_channels: int) -> torch.Tensor:
    keep = torch.zeros((order.shape[0], num_channels), dtype=torch.bool, device=order.device)
    return keep.scatter_(1, order, True)


def select_channels(features: torch.Tensor, layout: VideoLayout, validate: bool) -> tuple:
    """(V, C) bool kept channels and (V,) bool videos with values out of range (None unless ``validate``)."""
    var, nonfinite = channel_variance(features, layout, validate)
    return keep_from_order(kept_channel_order(var), features.shape[1]), nonfinite


# ---------------------------------------------------------------------------------- steps 2-4
def gaussian_similarity(dist2: torch.Tensor) -> torch.Tensor:
    """``sum_a exp(-d^2 / (2a))``, summed in the reference's order."""
    total = torch.zeros_like(dist2)
    for a in GAUSSIAN_BANDWIDTHS:
        total = total + torch.exp(-dist2 / (2 * a))
    return total


#: Keep the first pass's masked chunks for the second when a video's masked copy is at most this
#: many bytes, else recompute them (measured on the CPU: keeping 90 MB is ~20% faster than masking
#: again; a 1.4 GB copy for a 512-frame video is not worth holding).
REUSE_BYTES = 256 << 20


_SCRATCH = threading.local()


def _scratch(numel: int, device) -> torch.Tensor:
    """A float32 buffer of ``numel`` elements reused across calls on the CPU, where torch has no
    caching allocator and a fresh large buffer page-faults on every call (at most REUSE_BYTES kept
    per thread). Elsewhere a plain allocation (the device's allocator caches)."""
    if torch.device(device).type != "cpu":
        return torch.empty(numel, dtype=torch.float32, device=device)
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.numel() < numel:
        buf = _SCRATCH.buf = torch.empty(numel, dtype=torch.float32, device=device)
    return buf[:numel]


def token_scores(features: torch.Tensor, layout: VideoLayout, keep: torch.Tensor):
    """Scores (N,) and uniqueness (F,). Per video two chunked passes, all products through BLAS:

    1. rows masked to the kept channels, their norms, and the frame sums of the normalised rows
       (a batched product of the per-row weights ``1 / norm`` with the rows);
    2. dot products of the masked rows with their frame centre and the video centre (both zero on
       the dropped channels), scaled by ``1 / norm`` afterwards.
    """
    scores, uniqueness = [], []
    zero = torch.zeros((), device=features.device)  # a 0-d tensor: where() is 2x faster than with 0.0
    for v in range(layout.num_videos):
        w = keep[v]
        numel = int(layout.tokens_per_video[v]) * features.shape[1]
        reuse = numel * 4 <= REUSE_BYTES
        scratch, at = (_scratch(numel, features.device), 0) if reuse else (None, 0)
        masked, inv_norms, self_dots, frame_sums = [], [], [], []
        for x in _video_chunks(features, layout, v):
            if reuse:  # where, not *: NaN in a dropped channel stays out
                xw = torch.where(w, x, zero, out=scratch[at : at + x.numel()].view(x.shape))
                at += x.numel()
            else:
                xw = torch.where(w, x, zero)
            norm = torch.linalg.vector_norm(xw, dim=2)  # (f, T)
            inv = 1.0 / norm.clamp_min(NORM_EPS)
            inv_norms.append(inv)
            self_dots.append((norm * inv).square())
            frame_sums.append(torch.bmm(inv[:, None, :], xw)[:, 0])  # (f, C)
            masked.append(xw if reuse else None)
        frame_sums = torch.cat(frame_sums)
        frame_centre = frame_sums / float(layout.tokens_per_frame[v])  # (F, C)
        video_centre = frame_sums.sum(dim=0) / float(layout.tokens_per_video[v])  # (C,)
        gg = video_centre.dot(video_centre)
        f0 = 0
        for x, xw, inv, self_dot in zip(_video_chunks(features, layout, v), masked, inv_norms, self_dots):
            xw = xw if xw is not None else torch.where(w, x, zero)
            fc = frame_centre[f0 : f0 + x.shape[0]]
            f0 += x.shape[0]
            dot_f = torch.bmm(xw, fc[:, :, None])[..., 0] * inv
            dot_g = (xw @ video_centre) * inv
            sv = gaussian_similarity((self_dot - 2 * dot_g + gg).clamp_min(0))
            sf = gaussian_similarity((self_dot - 2 * dot_f + (fc * fc).sum(1)[:, None]).clamp_min(0))
            scores.append((sv + sf).flatten())
            uniqueness.append(-sv.mean(dim=1))
    return nan_as_inf(torch.cat(scores)), torch.cat(uniqueness)


def dycoke_similarity(features: torch.Tensor, layout: VideoLayout, anchors: np.ndarray, validate: bool):
    """DyCoke's scores (N,): cosine similarity with the same-position token of the frame's anchor
    (0 without one); and (V,) bool, the video holds a value out of range (:func:`out_of_range`;
    None unless ``validate``). Per video: one batched gather of the anchor frames, chunked."""
    scores, nonfinite = [], []
    for v in range(layout.num_videos):
        f_start = int(layout.frame_start[v])
        local = to_device(anchors[f_start : int(layout.frame_start[v + 1])] - f_start, features.device)
        video = features[int(layout.row_start[v]) : int(layout.row_start[v + 1])]
        video = video.view(int(layout.num_frames[v]), int(layout.tokens_per_frame[v]), -1)
        f0, bad = 0, []
        for x in _video_chunks(features, layout, v):
            a = local[f0 : f0 + x.shape[0]]
            f0 += x.shape[0]
            y = video.index_select(0, a.clamp(min=0)).float()
            x_norm = torch.linalg.vector_norm(x, dim=2)
            if validate:
                bad.append(out_of_range(x))
            norms = x_norm.clamp_min(COSINE_EPS) * torch.linalg.vector_norm(y, dim=2).clamp_min(COSINE_EPS)
            sim = torch.einsum("ftc,ftc->ft", x, y) / norms
            scores.append(torch.where((a >= 0)[:, None], sim, torch.zeros_like(sim)).flatten())
        nonfinite.append(torch.stack(bad).any() if validate else None)
    return nan_as_inf(torch.cat(scores)), torch.stack(nonfinite) if validate else None


# ---------------------------------------------------------------------------------- step 5
def frame_budgets(uniqueness: torch.Tensor, layout: VideoLayout, retention: np.ndarray) -> tuple:
    """(F,) int64 FCA budgets and (V,) int64 their per-video sums (segment softmax per video)."""
    ids = segment_ids(layout, uniqueness.device)
    fv = ids.frame_video
    z = uniqueness.float() / TEMPERATURE
    zmax = torch.full((layout.num_videos,), float("-inf"), device=z.device)
    zmax = zmax.scatter_reduce(0, fv, z, reduce="amax", include_self=True)
    has_nan = _segment_sum(torch.isnan(z).long(), fv, layout.num_videos) > 0
    e = torch.exp(z - zmax.index_select(0, fv))
    p = e / _segment_sum(e, fv, layout.num_videos).index_select(0, fv)
    # mean(p) with a float64 sum: the same value whatever the summation order (see ALGORITHM notes)
    p_mean = (_segment_sum(p.double(), fv, layout.num_videos) / ids.video_frames).float()
    r = to_device(retention.astype(np.float32), z.device).index_select(0, fv)
    scale = torch.clamp(r * (1 + (p - p_mean.index_select(0, fv))), max=1.0)
    scale = torch.where(torch.isnan(scale) | has_nan.index_select(0, fv), r, scale)
    budgets = torch.round(scale * ids.frame_tokens.float()).clamp_min(1).long()
    return budgets, _segment_sum(budgets, fv, layout.num_videos)


# ---------------------------------------------------------------------------------- step 6
def _exclusive_rank(flags: torch.Tensor, segment_start: torch.Tensor, segment: torch.Tensor):
    """Rank of every position among the set ``flags`` inside its segment (positions in order)."""
    f = flags.long()
    before = torch.cumsum(f, 0) - f
    return before - before.index_select(0, segment_start).index_select(0, segment)


def _select_mask(scores, layout: VideoLayout, budgets, targets, ids: SegmentIds) -> torch.Tensor:
    """(N,) bool kept mask: per-frame lowest ``budgets`` scores, then the exact-mode reconcile."""
    scores = nan_as_inf(scores.float())
    by_score = torch.sort(scores, stable=True).indices  # ascending score, lower index first
    # rows are grouped by frame (and video), so a stable sort by segment keeps (score, index) order
    by_frame = by_score.index_select(0, torch.sort(ids.row_frame.index_select(0, by_score), stable=True).indices)
    # position i of by_frame lies in frame row_frame[i]: frames are contiguous row ranges
    position = torch.arange(layout.num_tokens, device=scores.device)
    rank = position - ids.frame_row_start.index_select(0, ids.row_frame)
    k = budgets.clamp(min=0).index_select(0, ids.row_frame)
    mask = torch.zeros(layout.num_tokens, dtype=torch.bool, device=scores.device)
    mask.scatter_(0, by_frame, rank < k)
    if targets is None:
        return mask
    by_video = by_score.index_select(0, torch.sort(ids.row_video.index_select(0, by_score), stable=True).indices)
    kept = mask.index_select(0, by_video)
    target = to_device(targets, scores.device).index_select(0, ids.row_video)
    total = _segment_sum(mask.long(), ids.row_video, layout.num_videos).index_select(0, ids.row_video)
    kept_rank = _exclusive_rank(kept, ids.video_row_start, ids.row_video)
    dropped_rank = _exclusive_rank(~kept, ids.video_row_start, ids.row_video)
    final = torch.where(
        total > target,
        kept & (kept_rank < target),  # keep the `target` smallest of the kept
        kept | (~kept & (dropped_rank < target - total)),  # add the smallest not kept
    )
    return torch.zeros_like(mask).scatter_(0, by_video, final)


def _indices_from_mask(mask: torch.Tensor, num_kept: int) -> torch.Tensor:
    """Ascending positions of True in ``mask`` into a (num_kept,) tensor, without a host sync."""
    m = mask.long()
    slot = torch.where(mask, torch.cumsum(m, 0) - 1, num_kept)  # not-kept rows land in a spare slot
    out = new_output(num_kept + 1, torch.int64, mask.device)
    out.scatter_(0, slot, torch.arange(mask.shape[0], device=mask.device))
    return out[:num_kept]


def select_tokens(scores, layout: VideoLayout, budgets, targets: Optional[np.ndarray], num_kept: int) -> Selection:
    """The kept mask by sorts and segment ranks, then its indices, per-frame and per-video counts."""
    ids = segment_ids(layout, scores.device)
    mask = _select_mask(scores, layout, budgets, targets, ids)
    final_budgets = _segment_sum(mask.long(), ids.row_frame, layout.total_frames)
    counts = _segment_sum(mask.long(), ids.row_video, layout.num_videos)
    return Selection(_indices_from_mask(mask, num_kept), mask, final_budgets, counts)


def gather_rows(indices: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list:
    return [t.index_select(0, indices) for t in tensors]


# ---------------------------------------------------------------------- DyCoke's KV pruning
def attention_row(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, S) float32 head-averaged attention of one query: the query heads of a group are
    multiplied with their shared key head in one batched product (K is never repeated)."""
    B, H, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    q = q.float().reshape(B, Hkv, H // Hkv, D)
    logits = torch.matmul(q, k.float().transpose(-1, -2)) * scale  # (B, Hkv, G, S)
    logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1).nan_to_num(0.0).reshape(B, H, S).mean(dim=1)
