"""The ``torch`` backend: the shared stages (FCA budgets, selection, gather, attention row)
vectorised in PyTorch, segment reductions over videos and frames (no Python loop over frames), no
host read of its own (the pipeline's one read sizes the output). For the CPU and any device
without Triton. Implements :mod:`.contract`; each method's torch scorer lives in its folder
(``methods/<name>/torch_ops.py``) and uses the chunk and scratch helpers here.

On the CPU each stage is one call of the native kernels (:mod:`vidcom2_kernels.cpu`) for the
whole batch of videos where they apply (:func:`cpu.usable`); the eager torch code below is the
path everywhere else, and the one the native kernels are tested against.
"""

from __future__ import annotations

import threading
from typing import Optional, Sequence

import numpy as np
import torch

from .. import cpu
from ..buffers import new_output
from ..constants import MAX_ABS, TEMPERATURE
from ..device_layout import DeviceLayout, device_layout, request_arrays
from ..layout import VideoLayout
from ..records import Selection
from .contract import nan_as_inf, select_then_gather, write_out


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


def video_chunks(features: torch.Tensor, layout: VideoLayout, v: int):
    """(first frame, rows (f * T, C) of whole frames) of video v, at least one frame each."""
    F, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
    budget = CHUNK_ELEMENTS.get(features.device.type, DEFAULT_CHUNK_ELEMENTS)
    step = max(1, min(MAX_CHUNK_FRAMES, budget // max(1, T * features.shape[1])))
    row0 = int(layout.row_start[v])
    for f0 in range(0, F, step):
        yield f0, features[row0 + f0 * T : row0 + min(F, f0 + step) * T]


SCRATCH = threading.local()


def scratch(name: str, shape: tuple, device, dtype=torch.float32) -> torch.Tensor:
    """A ``dtype`` buffer of ``shape`` kept per thread and name on the CPU (torch's CPU allocator
    does not cache, and a fresh buffer costs page faults on every call), grown when too small,
    never larger than a chunk. Elsewhere a plain allocation (the device's allocator caches)."""
    numel = int(np.prod(shape))
    if torch.device(device).type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    buf = getattr(SCRATCH, name, None)
    if buf is None or buf.numel() < numel or buf.dtype != dtype:
        buf = torch.empty(numel, dtype=dtype)
        setattr(SCRATCH, name, buf)
    return buf[:numel].view(shape)


def as_float32(x: torch.Tensor, name: str, copy: bool = False) -> torch.Tensor:
    """``x`` as float32 in the scratch buffer ``name``; a contiguous float32 ``x`` itself unless
    ``copy``. (``copy_`` into float32 is torch's fast conversion; a mixed-dtype arithmetic op
    converts through a slow path, ~10x slower for bfloat16 on the CPU.)"""
    if x.dtype == torch.float32 and x.is_contiguous() and not copy:
        return x
    return scratch(name, tuple(x.shape), x.device).copy_(x)


def out_of_range(x: torch.Tensor) -> torch.Tensor:
    """0-d bool: ``x`` holds NaN, Inf or a value of magnitude >= MAX_ABS (one pass, no temporary)."""
    lo, hi = torch.aminmax(x)  # NaN propagates
    return ~((hi < MAX_ABS) & (lo > -MAX_ABS))


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


def frame_order(scores: torch.Tensor, layout: VideoLayout, ids: DeviceLayout) -> tuple:
    """Rows by ascending (score, index) (N,), the same grouped by frame (N,), and the rank (N,)
    inside its frame of each position of the grouped order (NaN scores as +inf)."""
    by_score = torch.sort(nan_as_inf(scores.float()), stable=True).indices  # lower index first on ties
    # rows are grouped by frame (and video), so a stable sort by segment keeps (score, index) order
    by_frame = by_score.index_select(0, torch.sort(ids.row_frame.index_select(0, by_score), stable=True).indices)
    # position i of by_frame lies in frame row_frame[i]: frames are contiguous row ranges
    position = torch.arange(layout.num_tokens, device=scores.device)
    return by_score, by_frame, position - ids.frame_row_start[:-1].index_select(0, ids.row_frame)


def lowest_per_frame(scores: torch.Tensor, layout: VideoLayout, budgets: torch.Tensor) -> torch.Tensor:
    """(N,) bool: each frame's ``budgets[f]`` lowest scores (lower index first on ties)."""
    ids = device_layout(layout, scores.device)
    _, by_frame, rank = frame_order(scores, layout, ids)
    k = budgets.clamp(min=0).index_select(0, ids.row_frame)
    return torch.zeros(layout.num_tokens, dtype=torch.bool, device=scores.device).scatter_(0, by_frame, rank < k)


def _select_mask(scores, layout: VideoLayout, budgets, targets, ids: DeviceLayout) -> torch.Tensor:
    """(N,) bool kept mask: per-frame lowest ``budgets`` scores, then the exact-mode reconcile."""
    scores = nan_as_inf(scores.float())
    by_score, by_frame, rank = frame_order(scores, layout, ids)
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


def indices_from_mask(mask: torch.Tensor, num_kept: int) -> torch.Tensor:
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
    return Selection(indices_from_mask(mask, num_kept), mask, final_budgets, counts)


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
