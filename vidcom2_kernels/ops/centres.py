"""Steps 2-3, norms and centres: one read of the features.

Kernels
-------
``centre_partials_kernel``  grid (U,), one program per row unit (<= UNIT_ROWS rows of one frame):
    the L2 norm of every row over the kept channels, stored as ``inv_norm = 1 / max(norm, 1e-12)``
    with ``self_dot = ||x||^2 * inv_norm^2`` (1, or 0 for an all-zero row), then the sum of the
    unit's normalised rows into ``partials`` (U, C) float32 (zero on the channels not kept). The second sweep over the unit's
    channels re-reads a tile the first one just brought into cache.
``centres_kernel``  grid (V, cdiv(C, BLOCK_C)), narrow blocks so one video still makes C / 32
    programs: per frame of the video, the sum of its unit partials (one (BLOCK_U, BLOCK_C) tile,
    summed as a tree) into its centre (F, C); the frame sums added in frame order into the video
    centre (V, C). Deterministic: fixed orders, no atomics. It also zeroes the per-frame arrival
    counters of :mod:`.token_scores` (the next launch), so no separate zeroing launch runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..buffers import new_output
from ..constants import NORM_EPS
from .common import UNIT_ROWS, DeviceLayout, cdiv, clamp_min, launch_config, next_pow2, unit_rows


@triton.jit
def centre_partials_kernel(
    x_ptr,
    keep_ptr,
    inv_norm_ptr,
    self_dot_ptr,
    partial_ptr,
    unit_row_start_ptr,
    unit_rows_ptr,
    unit_video_ptr,
    C,
    stride_n,
    stride_c,
    eps,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_u, row0, o_n, m_n = unit_rows(unit_row_start_ptr, unit_rows_ptr, BLOCK_N)
    i_v = tl.load(unit_video_ptr + i_u)
    p_rows = x_ptr + (row0 + o_n).to(tl.int64)[:, None] * stride_n
    p_keep = keep_ptr + i_v * C
    sumsq = tl.zeros([BLOCK_N], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)
        m_c = o_c < C
        w = tl.load(p_keep + o_c, mask=m_c, other=0) != 0
        b_x = tl.load(p_rows + o_c[None, :].to(tl.int64) * stride_c, mask=m_n[:, None] & m_c[None, :], other=0.0)
        b_x = tl.where(w[None, :], b_x.to(tl.float32), 0.0)  # where, not *: NaN in a dropped channel stays out
        sumsq += tl.sum(b_x * b_x, axis=1)
    inv_norm = tl.div_rn(tl.full([BLOCK_N], 1.0, tl.float32), clamp_min(tl.sqrt_rn(sumsq), eps))
    tl.store(inv_norm_ptr + row0 + o_n, inv_norm, mask=m_n)
    tl.store(self_dot_ptr + row0 + o_n, sumsq * inv_norm * inv_norm, mask=m_n)
    p_out = partial_ptr + i_u.to(tl.int64) * C
    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)
        m_c = o_c < C
        w = tl.load(p_keep + o_c, mask=m_c, other=0) != 0
        b_x = tl.load(p_rows + o_c[None, :].to(tl.int64) * stride_c, mask=m_n[:, None] & m_c[None, :], other=0.0)
        b_s = tl.where(w[None, :], b_x.to(tl.float32) * inv_norm[:, None], 0.0)
        tl.store(p_out + o_c, tl.sum(b_s, axis=0), mask=m_c)


@triton.jit
def centres_kernel(
    partial_ptr,
    frame_centre_ptr,
    video_centre_ptr,
    arrivals_ptr,
    frame_start_ptr,
    frame_unit_start_ptr,
    frame_row_start_ptr,
    C,
    BLOCK_C: tl.constexpr,
    BLOCK_U: tl.constexpr,
):
    i_v = tl.program_id(0)
    i_c = tl.program_id(1)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    f0 = tl.load(frame_start_ptr + i_v)
    f1 = tl.load(frame_start_ptr + i_v + 1)
    video_sum = tl.zeros([BLOCK_C], dtype=tl.float32)
    for f in range(f0, f1):  # in frame order
        u0 = tl.load(frame_unit_start_ptr + f)
        u1 = tl.load(frame_unit_start_ptr + f + 1)
        frame_sum = tl.zeros([BLOCK_C], dtype=tl.float32)
        for s in range(u0, u1, BLOCK_U):
            o_u = s + tl.arange(0, BLOCK_U)
            m = (o_u < u1)[:, None] & m_c[None, :]
            tile = tl.load(partial_ptr + o_u.to(tl.int64)[:, None] * C + o_c[None, :], mask=m, other=0.0)
            frame_sum += tl.sum(tile, axis=0)
        T = (tl.load(frame_row_start_ptr + f + 1) - tl.load(frame_row_start_ptr + f)).to(tl.float32)
        tl.store(frame_centre_ptr + f * C + o_c, tl.div_rn(frame_sum, T), mask=m_c)  # f: int64 (from f0)
        video_sum += frame_sum
    n_rows = (tl.load(frame_row_start_ptr + f1) - tl.load(frame_row_start_ptr + f0)).to(tl.float32)
    tl.store(video_centre_ptr + i_v.to(tl.int64) * C + o_c, tl.div_rn(video_sum, n_rows), mask=m_c)
    if i_c == 0:
        for f in range(f0, f1):
            tl.store(arrivals_ptr + f, 0)


@launch_config
def partials_config(C: int) -> dict:
    block_c = min(64, next_pow2(C))
    return {"BLOCK_N": UNIT_ROWS, "BLOCK_C": block_c, "num_warps": 4}


@launch_config
def centres_config(C: int, max_units: int) -> dict:
    return {"BLOCK_C": min(32, next_pow2(C)), "BLOCK_U": min(64, next_pow2(max(1, max_units))), "num_warps": 1}


def centres(features: torch.Tensor, keep: torch.Tensor, meta: DeviceLayout, arrivals: torch.Tensor):
    """Returns ``inv_norm`` (N,), ``self_dot`` (N,), ``frame_centre`` (F, C) and ``video_centre``
    (V, C), all float32; zeroes ``arrivals`` (F,) int32 for :func:`.token_scores.token_scores`."""
    N, C = features.shape
    layout, dev = meta.layout, features.device
    inv_norm, self_dot = new_output((2, N), torch.float32, dev)
    partials = new_output((meta.num_units, C), torch.float32, dev)
    centre_partials_kernel[(meta.num_units,)](
        features,
        keep,
        inv_norm,
        self_dot,
        partials,
        meta.unit_row_start,
        meta.unit_rows,
        meta.unit_video,
        C,
        features.stride(0),
        features.stride(1),
        NORM_EPS,
        **partials_config(C),
    )
    centre_rows = new_output((layout.total_frames + layout.num_videos, C), torch.float32, dev)
    frame_centre, video_centre = centre_rows[: layout.total_frames], centre_rows[layout.total_frames :]
    cfg = centres_config(C, max_units_per_frame(layout))
    centres_kernel[(layout.num_videos, cdiv(C, cfg["BLOCK_C"]))](
        partials,
        frame_centre,
        video_centre,
        arrivals,
        meta.frame_start,
        meta.frame_unit_start,
        meta.frame_row_start,
        C,
        **cfg,
    )
    return inv_norm, self_dot, frame_centre, video_centre


def max_units_per_frame(layout) -> int:
    """Row units of the largest frame."""
    return -(-layout.max_frame_tokens // UNIT_ROWS)
