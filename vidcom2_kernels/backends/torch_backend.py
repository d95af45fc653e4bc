"""The ``torch`` backend: VidCom2 vectorised in PyTorch, segment reductions over videos and
frames (no Python loop over frames), no host read of its own (the pipeline's one read sizes the
output). For the CPU and any device without Triton. Implements :mod:`.contract`.

On the CPU each VidCom2 stage is one call of the native kernels (:mod:`vidcom2_kernels.cpu`) for
the whole batch of videos where they apply (:func:`cpu.usable`); the eager torch code below is
the path everywhere else, and the one the native kernels are tested against.
"""

from __future__ import annotations

import threading
from typing import Optional, Sequence

import numpy as np
import torch

from .. import cpu
from ..buffers import new_output
from ..constants import COSINE_EPS, GAUSSIAN_BANDWIDTHS, MAX_ABS, NORM_EPS, TEMPERATURE, kept_channels
from ..device_layout import DeviceLayout, device_layout, request_arrays
from ..layout import VideoLayout
from ..records import INT_VIEW, Selection
from .contract import nan_as_inf, select_then_gather, write_out

#: the Gaussian bandwidths as the native kernels read them
BANDWIDTHS = torch.tensor(GAUSSIAN_BANDWIDTHS, dtype=torch.float32)


def supports(device: torch.device) -> bool:
    return True


def _segment_sum(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    out = torch.zeros((num_segments, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, segment, values)


# ---------------------------------------------------------------------------------- chunks
#: Elements per temporary: each pass reads a video in frame-aligned chunks of about this many
#: elements, converted to float32 in a reused buffer that stays in the CPU's cache (and below
#: glibc's mmap threshold: a fresh large buffer page-faults on every call). Temporaries are
#: O(chunk + frames x channels) whatever the video's length.
CHUNK_ELEMENTS = {"cpu": 1 << 21}
DEFAULT_CHUNK_ELEMENTS = 1 << 26
#: at most this many frames a chunk (a product of a chunk with its frame centres has one column per frame)
MAX_CHUNK_FRAMES = 8


def _video_chunks(features: torch.Tensor, layout: VideoLayout, v: int):
    """(first frame, rows (f * T, C) of whole frames) of video v, at least one frame each."""
    F, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
    budget = CHUNK_ELEMENTS.get(features.device.type, DEFAULT_CHUNK_ELEMENTS)
    step = max(1, min(MAX_CHUNK_FRAMES, budget // max(1, T * features.shape[1])))
    row0 = int(layout.row_start[v])
    for f0 in range(0, F, step):
        yield f0, features[row0 + f0 * T : row0 + min(F, f0 + step) * T]


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple, device, dtype=torch.float32) -> torch.Tensor:
    """A ``dtype`` buffer of ``shape`` kept per thread and name on the CPU (torch's CPU allocator
    does not cache, and a fresh buffer costs page faults on every call), grown when too small,
    never larger than a chunk. Elsewhere a plain allocation (the device's allocator caches)."""
    numel = int(np.prod(shape))
    if torch.device(device).type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    buf = getattr(_SCRATCH, name, None)
    if buf is None or buf.numel() < numel or buf.dtype != dtype:
        buf = torch.empty(numel, dtype=dtype)
        setattr(_SCRATCH, name, buf)
    return buf[:numel].view(shape)


def masked_float32(x: torch.Tensor, bits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``x`` (n, C) as float32 in ``out`` with the channels whose ``bits`` are 0 set to +0.0 and
    the others unchanged (a bitwise AND: exact, NaN and Inf in a dropped channel cannot leak into
    a product). ``bits`` (C,) is -1/0 of ``INT_VIEW[x.dtype]``."""
    if x.dtype == torch.float32:  # the conversion is the masking
        return torch.bitwise_and(x.view(torch.int32), bits, out=out.view(torch.int32)).view(torch.float32)
    half = _scratch("half", tuple(x.shape), x.device, INT_VIEW[x.dtype])  # mask the 16-bit patterns, then convert
    return out.copy_(torch.bitwise_and(x.view(INT_VIEW[x.dtype]), bits, out=half).view(x.dtype))


def keep_bits(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(C,) -1 where ``keep`` else 0, in ``INT_VIEW[dtype]`` (for :func:`masked_float32`)."""
    return torch.where(keep, -1, 0).to(INT_VIEW[dtype])


def as_float32(x: torch.Tensor, name: str, copy: bool = False) -> torch.Tensor:
    """``x`` as float32 in the scratch buffer ``name``; a contiguous float32 ``x`` itself unless
    ``copy``. (``copy_`` into float32 is torch's fast conversion; a mixed-dtype arithmetic op
    converts through a slow path, ~10x slower for bfloat16 on the CPU.)"""
    if x.dtype == torch.float32 and x.is_contiguous() and not copy:
        return x
    return _scratch(name, tuple(x.shape), x.device).copy_(x)


# ---------------------------------------------------------------------------------- step 1
def out_of_range(x: torch.Tensor) -> torch.Tensor:
    """0-d bool: ``x`` holds NaN, Inf or a value of magnitude >= MAX_ABS (one pass, no temporary)."""
    lo, hi = torch.aminmax(x)  # NaN propagates
    return ~((hi < MAX_ABS) & (lo > -MAX_ABS))


def video_m2(features: torch.Tensor, layout: VideoLayout, v: int, validate: bool) -> tuple:
    """(C,) float64 sum of squared deviations from the mean of every channel over video v, and a
    0-d bool (the video holds a value out of range; None unless ``validate``).

    The rows are shifted by the video's first-frame mean (so a large common offset cannot cancel
    digits). One read in chunks, each through torch's fused per-channel mean/variance
    (``batch_norm_update_stats``, float32), the chunks merged exactly in float64 (Chan et al.),
    :func:`out_of_range` on each chunk."""
    T, row0 = int(layout.tokens_per_frame[v]), int(layout.row_start[v])
    shift = features[row0 : row0 + T].float().mean(dim=0)
    count = mean = m2 = 0
    flags = []
    for _, x in _video_chunks(features, layout, v):
        if x.dtype == torch.float32:  # the shift is the copy
            d = torch.sub(x, shift, out=_scratch("shifted", tuple(x.shape), x.device))
        else:
            d = as_float32(x, "shifted", copy=True).sub_(shift)
        c_mean, c_var = torch.batch_norm_update_stats(d, None, None, 1.0)
        c_n, c_mean, c_m2 = x.shape[0], c_mean.double(), c_var.double() * x.shape[0]
        delta = c_mean - mean
        m2 = m2 + c_m2 + delta.square() * (count * c_n / (count + c_n))
        mean = mean + delta * (c_n / (count + c_n))
        count += c_n
        if validate:
            flags.append(out_of_range(x))
    return m2, torch.stack(flags).any() if validate else None


def channel_variance(features: torch.Tensor, layout: VideoLayout, validate: bool = False) -> tuple:
    """(V, C) float32 biased variance of every channel over each video (:func:`video_m2`),
    and with ``validate`` (V,) bool, the video holds a value out of range, else None. Native
    CPU kernels: one fused read a video, float64 sums (:func:`cpu.channel_keep`)."""
    if cpu.usable(features):
        var, _, bad = _native_channels(features, layout)
        return var, bad if validate else None
    out, bad = [], []
    for v in range(layout.num_videos):
        n = int(layout.tokens_per_video[v])
        if n == 0:
            out.append(torch.zeros(features.shape[1], device=features.device))
            bad.append(torch.zeros((), dtype=torch.bool, device=features.device))
            continue
        m2, flag = video_m2(features, layout, v, validate)
        out.append((m2 / n).float())
        bad.append(flag)
    return torch.stack(out), torch.stack(bad) if validate else None


def kept_channel_order(var: torch.Tensor) -> torch.Tensor:
    """(V, C') int64 ascending indices of the ``max(1, C // 2)`` lowest variances per video
    (lower index first on ties, NaN last)."""
    order = torch.sort(nan_as_inf(var), dim=1, stable=True).indices
    return torch.sort(order[:, : kept_channels(var.shape[1])], dim=1).values


def keep_from_order(order: torch.Tensor, num_channels: int) -> torch.Tensor:
    keep = torch.zeros((order.shape[0], num_channels), dtype=torch.bool, device=order.device)
    return keep.scatter_(1, order, True)


def _native_channels(features: torch.Tensor, layout: VideoLayout) -> tuple:
    ids = device_layout(layout, features.device)
    return cpu.channel_keep(features, ids, kept_channels(features.shape[1]), float(MAX_ABS))


def select_channels(features: torch.Tensor, layout: VideoLayout, validate: bool, out=None) -> tuple:
    """(V, C) bool kept channels and (V,) bool videos with values out of range (None unless ``validate``)."""
    if cpu.usable(features):
        _, keep, nonfinite = _native_channels(features, layout)
        return keep, write_out(out, nonfinite if validate else None)
    var, nonfinite = channel_variance(features, layout, validate)
    return keep_from_order(kept_channel_order(var), features.shape[1]), write_out(out, nonfinite)


# ---------------------------------------------------------------------------------- steps 2-4
def gaussian_similarity(dist2: torch.Tensor) -> torch.Tensor:
    """``sum_a exp(-d^2 / (2a))``, summed in the reference's order."""
    total = torch.zeros_like(dist2)
    for a in GAUSSIAN_BANDWIDTHS:
        total = total + torch.exp(-dist2 / (2 * a))
    return total


def norms_and_frame_sums(features: torch.Tensor, layout: VideoLayout, v: int, keep: torch.Tensor):
    """Video v's row norms over the ``keep`` (C,) channels (F * T,) float32 and the frame sums of
    its normalised rows (F, C) float32 (zero on the dropped channels): one read. Eager path: per
    chunk the masked float32 rows (:func:`masked_float32`), their norms, and a batched product of
    the weights ``1 / norm`` with the rows."""
    F, T, C = int(layout.num_frames[v]), int(layout.tokens_per_frame[v]), features.shape[1]
    bits = keep_bits(keep, features.dtype)
    frame_sums = torch.empty((F, C), dtype=torch.float32, device=features.device)
    norms = torch.empty(F * T, dtype=torch.float32, device=features.device)
    for f0, x in _video_chunks(features, layout, v):
        f = x.shape[0] // T
        xw = masked_float32(x, bits, _scratch("masked", tuple(x.shape), x.device))
        norm = torch.linalg.vector_norm(xw, dim=1, out=norms[f0 * T : (f0 + f) * T])
        inv = 1.0 / norm.clamp_min(NORM_EPS)
        torch.bmm(inv.view(f, 1, T), xw.view(f, T, C), out=frame_sums[f0 : f0 + f].view(f, 1, C))
    return norms, frame_sums


def centre_dots(features: torch.Tensor, layout: VideoLayout, v: int, keep, frame_centres, video_centre):
    """(2, F, T) float32: dot products of video v's rows over the kept channels with their frame
    centre and with the video centre (rows not normalised): one read. Eager path: per chunk one
    product with the chunk's f frame centres and the video centre side by side (f + 1 columns:
    faster than a batched product of width 1 on the CPU); each row keeps its own frame's column."""
    F, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
    bits = keep_bits(keep, features.dtype)
    dots = torch.empty((2, F, T), dtype=torch.float32, device=features.device)
    for f0, x in _video_chunks(features, layout, v):
        f = x.shape[0] // T
        xw = masked_float32(x, bits, _scratch("masked", tuple(x.shape), x.device))
        both = torch.cat([frame_centres[f0 : f0 + f], video_centre[None]]).T
        prod = torch.mm(xw, both).view(f, T, f + 1)
        dots[0, f0 : f0 + f] = torch.diagonal(prod[:, :, :f], dim1=0, dim2=2).T
        dots[1, f0 : f0 + f] = prod[:, :, f]
    return dots


def token_scores(features: torch.Tensor, layout: VideoLayout, keep: torch.Tensor):
    """Scores (N,) and uniqueness (F,). Per video two reads of the rows: the norms and the frame
    sums of the normalised rows (:func:`norms_and_frame_sums`), then the dot products with the
    centres (:func:`centre_dots`), scaled by ``1 / norm`` afterwards. Temporaries: the (F, C)
    centres, a few (N,) vectors, and on the eager path one chunk. Native CPU kernels: the same
    two reads and the rest for every video in one call (:func:`cpu.token_scores`)."""
    if cpu.usable(features):
        return cpu.token_scores(features, device_layout(layout, features.device), keep, NORM_EPS, BANDWIDTHS)
    scores, uniqueness = [], []
    for v in range(layout.num_videos):
        F, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
        norms, frame_sums = norms_and_frame_sums(features, layout, v, keep[v])
        frame_centres = frame_sums / float(T)
        video_centre = frame_sums.sum(dim=0) / float(max(1, F * T))
        dots = centre_dots(features, layout, v, keep[v], frame_centres, video_centre)
        inv = 1.0 / norms.view(F, T).clamp_min(NORM_EPS)
        self_dot = (norms.view(F, T) * inv).square()
        frame_sq = frame_centres.square().sum(dim=1, keepdim=True)  # ||c_f||^2 (F, 1)
        sv = gaussian_similarity((self_dot - 2 * dots[1] * inv + video_centre.dot(video_centre)).clamp_min(0))
        sf = gaussian_similarity((self_dot - 2 * dots[0] * inv + frame_sq).clamp_min(0))
        scores.append((sv + sf).flatten())
        uniqueness.append(-sv.mean(dim=1))
    return nan_as_inf(torch.cat(scores)), torch.cat(uniqueness)


def dycoke_similarity(features: torch.Tensor, layout: VideoLayout, anchors: np.ndarray, validate: bool, out=None):
    """DyCoke's scores (N,): cosine similarity with the same-position token of the frame's anchor
    (0 without one); and (V,) bool, the video holds a value out of range (:func:`out_of_range`;
    None unless ``validate``). Native CPU kernels: one pass over the rows (each anchor row read
    again beside its row). Otherwise per chunk: the anchor frames gathered, both sides in float32
    scratch buffers."""
    scores, nonfinite = [], []
    device_anchors = request_arrays(layout, features.device, anchors=anchors).anchors
    for v in range(layout.num_videos):
        F, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
        f_start = int(layout.frame_start[v])
        local = device_anchors[f_start : f_start + F]
        local = torch.where(local >= 0, local - f_start, local)  # frame numbers inside the video
        video = features[int(layout.row_start[v]) : int(layout.row_start[v + 1])]
        if cpu.usable(features):
            sim, bad = cpu.dycoke_similarity(video, F, T, local, COSINE_EPS, float(MAX_ABS))
            scores.append(sim)
            nonfinite.append(bad if validate else None)
            continue
        video = video.view(F, T, -1)
        bad = []
        for f0, x in _video_chunks(features, layout, v):
            f = x.shape[0] // T
            a = local[f0 : f0 + f]
            x = as_float32(x.view(f, T, -1), "dycoke_x")
            y = as_float32(video.index_select(0, a.clamp(min=0)), "dycoke_y")
            if validate:
                bad.append(out_of_range(x))
            norms = torch.linalg.vector_norm(x, dim=2).clamp_min(COSINE_EPS)
            norms *= torch.linalg.vector_norm(y, dim=2).clamp_min(COSINE_EPS)
            sim = torch.linalg.vecdot(x, y, dim=2) / norms
            scores.append(torch.where((a >= 0)[:, None], sim, torch.zeros_like(sim)).flatten())
        nonfinite.append(torch.stack(bad).any() if validate else None)
    return nan_as_inf(torch.cat(scores)), write_out(out, torch.stack(nonfinite) if validate else None)


# ---------------------------------------------------------------------------------- step 5
def frame_budgets(uniqueness: torch.Tensor, layout: VideoLayout, retention: np.ndarray, out=None) -> tuple:
    """(F,) int64 FCA budgets and (V,) int64 their per-video sums (segment softmax per video;
    native CPU kernels: one call, :func:`cpu.frame_budgets`)."""
    ids = device_layout(layout, uniqueness.device)
    retention32 = request_arrays(layout, uniqueness.device, retention=retention).retention32
    if cpu.usable(uniqueness):
        budgets, counts = cpu.frame_budgets(uniqueness, ids, retention32, TEMPERATURE)
        return budgets, write_out(out, counts)
    fv = ids.frame_video
    z = uniqueness.float() / TEMPERATURE
    zmax = torch.full((layout.num_videos,), float("-inf"), device=z.device)
    zmax = zmax.scatter_reduce(0, fv, z, reduce="amax", include_self=True)
    has_nan = _segment_sum(torch.isnan(z).long(), fv, layout.num_videos) > 0
    e = torch.exp(z - zmax.index_select(0, fv))
    p = e / _segment_sum(e, fv, layout.num_videos).index_select(0, fv)
    # mean(p) with a float64 sum: the same value whatever the summation order (see ALGORITHM notes)
    p_mean = (_segment_sum(p.double(), fv, layout.num_videos) / ids.num_frames).float()
    r = retention32.index_select(0, fv)
    scale = torch.clamp(r * (1 + (p - p_mean.index_select(0, fv))), max=1.0)
    scale = torch.where(torch.isnan(scale) | has_nan.index_select(0, fv), r, scale)
    budgets = torch.round(scale * ids.frame_tokens.float()).clamp_min(1).long()
    return budgets, write_out(out, _segment_sum(budgets, fv, layout.num_videos))


# ---------------------------------------------------------------------------------- step 6
def _exclusive_rank(flags: torch.Tensor, segment_start: torch.Tensor, segment: torch.Tensor):
    """Rank of every position among the set ``flags`` inside its segment (positions in order)."""
    f = flags.long()
    before = torch.cumsum(f, 0) - f
    return before - before.index_select(0, segment_start).index_select(0, segment)


def _select_mask(scores, layout: VideoLayout, budgets, targets, ids: DeviceLayout) -> torch.Tensor:
    """(N,) bool kept mask: per-frame lowest ``budgets`` scores, then the exact-mode reconcile."""
    scores = nan_as_inf(scores.float())
    by_score = torch.sort(scores, stable=True).indices  # ascending score, lower index first
    # rows are grouped by frame (and video), so a stable sort by segment keeps (score, index) order
    by_frame = by_score.index_select(0, torch.sort(ids.row_frame.index_select(0, by_score), stable=True).indices)
    # position i of by_frame lies in frame row_frame[i]: frames are contiguous row ranges
    position = torch.arange(layout.num_tokens, device=scores.device)
    rank = position - ids.frame_row_start[:-1].index_select(0, ids.row_frame)
    k = budgets.clamp(min=0).index_select(0, ids.row_frame)
    mask = torch.zeros(layout.num_tokens, dtype=torch.bool, device=scores.device)
    mask.scatter_(0, by_frame, rank < k)
    if targets is None:
        return mask
    by_video = by_score.index_select(0, torch.sort(ids.row_video.index_select(0, by_score), stable=True).indices)
    kept = mask.index_select(0, by_video)
    target = request_arrays(layout, scores.device, targets=targets).targets.index_select(0, ids.row_video)
    total = _segment_sum(mask.long(), ids.row_video, layout.num_videos).index_select(0, ids.row_video)
    kept_rank = _exclusive_rank(kept, ids.row_start[:-1], ids.row_video)
    dropped_rank = _exclusive_rank(~kept, ids.row_start[:-1], ids.row_video)
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
    """The kept mask by sorts and segment ranks, then its indices, per-frame and per-video counts
    (native CPU kernels: one call, :func:`cpu.select`)."""
    ids = device_layout(layout, scores.device)
    if cpu.usable(scores) and layout.max_video_tokens < cpu.MAX_SORT_ROWS:
        device_targets = None if targets is None else request_arrays(layout, scores.device, targets=targets).targets
        return Selection(*cpu.select(scores, ids, budgets, device_targets, num_kept))
    mask = _select_mask(scores, layout, budgets, targets, ids)
    final_budgets = _segment_sum(mask.long(), ids.row_frame, layout.total_frames)
    counts = _segment_sum(mask.long(), ids.row_video, layout.num_videos)
    return Selection(_indices_from_mask(mask, num_kept), mask, final_budgets, counts)


def gather_rows(indices: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list:
    return [t.index_select(0, indices) for t in tensors]


def select_and_gather(scores, layout: VideoLayout, budgets, targets, num_kept: int, tensors) -> tuple:
    """The selection, then the gather (:func:`select_tokens`, :func:`gather_rows`)."""
    return select_then_gather(select_tokens, gather_rows, scores, layout, budgets, targets, num_kept, tensors)


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
