"""FastVID's Triton kernels: the frame statistics, the DPC-kNN scores of the context frames and
the segment merge.

``frame_stats_kernel``  grid (U,), one program per row unit: one read of its rows, in channel
    blocks: each row's score ``-||x||`` (NaN as +inf), the unit's column sums (U, C) float32, and
    its video's validation flag (NaN, Inf or a magnitude >= max_abs; an integer atomic max).
``frame_similarity_kernel``  grid (F,): a frame's mean (its units' column sums in unit order, over
    T), and its next frame's, in channel blocks: their cosine ``dot / (max(|a|, eps) * max(|b|,
    eps))`` (0 for a video's last frame).

``dpc_distance_kernel``  grid (U,), one program per row unit (<= UNIT_ROWS rows of one frame) of a
    frame with context tokens (others return at once): streams the frame's rows in tiles of BLOCK_N,
    the squared distances ``(|a|^2 + |b|^2 - 2 a.b) / C`` of the unit's rows with the tile (one
    ``tl.dot`` per channel block, IEEE float32; 0 on the diagonal; salient columns masked out),
    written to the frame's (T, T) block of ``d2`` (read back by the next kernel instead of a second
    product), and keeps each row's KP smallest in registers (KP rounds of min-extraction). Writes
    the density ``exp(-mean of the k smallest)``, k = min(4, the frame's rest tokens), and flags a
    frame whose rest tokens are not all finite.
``dpc_delta_kernel``  grid (U,): per row of a context frame, from ``d2`` and the densities: the
    distance to the nearest denser rest token (+inf when none; equal densities: the lower row is
    the denser) and the largest distance to a rest token (the frame's largest, for the densest
    token, is their maximum: one atomic max a program).
``assign_kernel``  grid (U, J): the rows of a unit against the context tokens of the j-th context
    frame of their segment (gathered by index, in tiles of BLOCK_A): cosine similarities by one
    ``tl.dot`` per channel block, the first largest (NaN ranks above every number, as in
    ``torch.argmax``); rows that do not join (salient, or that frame's own context tokens) get -1.
``merge_kernel``  grid (A, channel blocks): one program per context token and channel block sums,
    in row order, the rows of its segment assigned to it, and writes the blend
    ``w * itself + (1 - w) * mean``, ``w = max(1 / (n + 1), beta)``, into its output row.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from ...buffers import to_device
from ...ops.common import (
    UNIT_ROWS,
    clamp_min,
    launch_config,
    next_pow2,
    precise_exp,
    row_squares,
    tile_products,
    unit_rows,
)
from .plan import DPC_NEIGHBOURS


@triton.jit
def frame_stats_kernel(
    x_ptr,
    score_ptr,
    partial_ptr,
    flag_ptr,
    unit_row_start_ptr,
    unit_rows_ptr,
    unit_video_ptr,
    C,
    stride_n,
    stride_c,
    max_abs,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_u, row0, o_m, m_m = unit_rows(unit_row_start_ptr, unit_rows_ptr, BLOCK_M)
    p_x = x_ptr + (row0 + o_m).to(tl.int64)[:, None] * stride_n
    sq = tl.zeros([BLOCK_M], dtype=tl.float32)
    n_bad = tl.zeros([BLOCK_M], dtype=tl.int32)
    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)
        m_c = o_c < C
        b = tl.load(p_x + o_c[None, :].to(tl.int64) * stride_c, mask=m_m[:, None] & m_c[None, :], other=0.0)
        b = b.to(tl.float32)
        sq += tl.sum(b * b, axis=1)
        n_bad += tl.sum((~(tl.abs(b) < max_abs)).to(tl.int32), axis=1)
        tl.store(partial_ptr + i_u.to(tl.int64) * C + o_c, tl.sum(b, axis=0), mask=m_c)
    score = -tl.sqrt_rn(sq)
    tl.store(score_ptr + row0 + o_m, tl.where(score == score, score, float("inf")), mask=m_m)
    tl.atomic_max(flag_ptr + tl.load(unit_video_ptr + i_u), (tl.sum(n_bad, axis=0) > 0).to(tl.int64))


@triton.jit
def frame_similarity_kernel(
    partial_ptr,
    similarity_ptr,
    frame_unit_start_ptr,
    frame_video_ptr,
    frame_start_ptr,
    frame_tokens_ptr,
    C,
    eps,
    BLOCK_U: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_f = tl.program_id(0)
    last = tl.load(frame_start_ptr + tl.load(frame_video_ptr + i_f) + 1) == i_f + 1  # a video's last frame
    if last:
        tl.store(similarity_ptr + i_f, 0.0)
    else:
        u0 = tl.load(frame_unit_start_ptr + i_f)
        u1 = tl.load(frame_unit_start_ptr + i_f + 1)
        u2 = tl.load(frame_unit_start_ptr + i_f + 2)
        dot = tl.zeros([BLOCK_C], dtype=tl.float32)
        aa = tl.zeros([BLOCK_C], dtype=tl.float32)
        bb = tl.zeros([BLOCK_C], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            o_c = c0 + tl.arange(0, BLOCK_C)
            m_c = o_c < C
            a = tl.zeros([BLOCK_C], dtype=tl.float32)
            b = tl.zeros([BLOCK_C], dtype=tl.float32)
            for v0 in range(u0, u1, BLOCK_U):
                o_u = v0 + tl.arange(0, BLOCK_U)
                m = (o_u < u1)[:, None] & m_c[None, :]
                a += tl.sum(tl.load(partial_ptr + o_u.to(tl.int64)[:, None] * C + o_c[None, :], mask=m, other=0.0), 0)
            for v0 in range(u1, u2, BLOCK_U):
                o_u = v0 + tl.arange(0, BLOCK_U)
                m = (o_u < u2)[:, None] & m_c[None, :]
                b += tl.sum(tl.load(partial_ptr + o_u.to(tl.int64)[:, None] * C + o_c[None, :], mask=m, other=0.0), 0)
            T = tl.load(frame_tokens_ptr + i_f).to(tl.float32)  # frames of a video have equal T
            a = tl.div_rn(a, T)
            b = tl.div_rn(b, T)
            dot += a * b
            aa += a * a
            bb += b * b
        norms = clamp_min(tl.sqrt_rn(tl.sum(aa, axis=0)), eps) * clamp_min(tl.sqrt_rn(tl.sum(bb, axis=0)), eps)
        tl.store(similarity_ptr + i_f, tl.div_rn(tl.sum(dot, axis=0), norms))


@triton.jit
def dpc_distance_kernel(
    x_ptr,
    rest_ptr,
    rest_count_ptr,
    d2_start_ptr,
    d2_ptr,
    density_ptr,
    bad_ptr,
    frame_row_start_ptr,
    unit_row_start_ptr,
    unit_rows_ptr,
    unit_frame_ptr,
    C,
    stride_n,
    stride_c,
    inv_c,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    KP: tl.constexpr,
):
    i_u, row0, o_m, m_m = unit_rows(unit_row_start_ptr, unit_rows_ptr, BLOCK_M)
    i_f = tl.load(unit_frame_ptr + i_u)
    d2_start = tl.load(d2_start_ptr + i_f)
    if d2_start >= 0:  # a frame with context tokens
        f0 = tl.load(frame_row_start_ptr + i_f)
        f1 = tl.load(frame_row_start_ptr + i_f + 1)
        T = f1 - f0
        o_i = row0 + o_m
        p_i = x_ptr + o_i.to(tl.int64)[:, None] * stride_n
        ii = row_squares(p_i, m_m, C, stride_c, BLOCK_M, BLOCK_C)
        rest_i = tl.load(rest_ptr + o_i, mask=m_m, other=0) != 0
        bad = rest_i & m_m & ~(tl.abs(ii) < float("inf"))  # NaN or Inf in a rest row
        tl.atomic_max(bad_ptr + i_f, tl.max(bad.to(tl.int32), axis=0))
        o_k = tl.arange(0, KP)
        o_t = tl.arange(0, BLOCK_N)
        best = tl.full([BLOCK_M, KP], float("inf"), dtype=tl.float32)
        p_d2 = d2_ptr + d2_start + (o_i - f0).to(tl.int64)[:, None] * T
        for j0 in range(f0, f1, BLOCK_N):
            o_j = j0 + o_t
            m_j = o_j < f1
            p_j = x_ptr + o_j.to(tl.int64)[:, None] * stride_n
            acc, jj = tile_products(p_i, m_m, p_j, m_j, C, stride_c, BLOCK_M, BLOCK_N, BLOCK_C)
            d2 = clamp_min((ii[:, None] + jj[None, :] - 2.0 * acc) * inv_c, 0.0)
            d2 = tl.where(o_i[:, None] == o_j[None, :], 0.0, d2)
            tl.store(p_d2 + (o_j - f0).to(tl.int64)[None, :], d2, mask=m_m[:, None] & m_j[None, :])
            rest_j = tl.load(rest_ptr + o_j, mask=m_j, other=0) != 0
            d2 = tl.where(m_j[None, :] & rest_j[None, :] & (d2 == d2), d2, float("inf"))
            merged = tl.full([BLOCK_M, KP], float("inf"), dtype=tl.float32)
            for r in range(KP):  # the KP smallest of the running list and the tile, ascending
                low_best = tl.min(best, axis=1)
                low_d2 = tl.min(d2, axis=1)
                from_best = low_best <= low_d2
                merged = tl.where(o_k[None, :] == r, tl.where(from_best, low_best, low_d2)[:, None], merged)
                first_best = tl.argmin(best, axis=1, tie_break_left=True)
                first_d2 = tl.argmin(d2, axis=1, tie_break_left=True)
                best = tl.where(from_best[:, None] & (o_k[None, :] == first_best[:, None]), float("inf"), best)
                d2 = tl.where(~from_best[:, None] & (o_t[None, :] == first_d2[:, None]), float("inf"), d2)
            best = merged
        k = tl.maximum(1, tl.minimum(KP, tl.load(rest_count_ptr + i_f)))
        mean = tl.sum(tl.where(o_k[None, :] < k, best, 0.0), axis=1) / k.to(tl.float32)
        tl.store(density_ptr + o_i, precise_exp(-mean), mask=m_m)


@triton.jit
def dpc_delta_kernel(
    d2_ptr,
    rest_ptr,
    d2_start_ptr,
    density_ptr,
    delta_ptr,
    frame_max_ptr,
    frame_row_start_ptr,
    unit_row_start_ptr,
    unit_rows_ptr,
    unit_frame_ptr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    i_u, row0, o_m, m_m = unit_rows(unit_row_start_ptr, unit_rows_ptr, BLOCK_M)
    i_f = tl.load(unit_frame_ptr + i_u)
    d2_start = tl.load(d2_start_ptr + i_f)
    if d2_start >= 0:
        f0 = tl.load(frame_row_start_ptr + i_f)
        f1 = tl.load(frame_row_start_ptr + i_f + 1)
        T = f1 - f0
        o_i = row0 + o_m
        rest_i = m_m & (tl.load(rest_ptr + o_i, mask=m_m, other=0) != 0)
        di = tl.load(density_ptr + o_i, mask=m_m, other=0.0)
        nearest = tl.full([BLOCK_M], float("inf"), dtype=tl.float32)
        farthest = tl.zeros([BLOCK_M], dtype=tl.float32)
        p_d2 = d2_ptr + d2_start + (o_i - f0).to(tl.int64)[:, None] * T
        for j0 in range(f0, f1, BLOCK_N):
            o_j = j0 + tl.arange(0, BLOCK_N)
            m_j = o_j < f1
            rest_j = m_j & (tl.load(rest_ptr + o_j, mask=m_j, other=0) != 0)
            pair = rest_i[:, None] & rest_j[None, :]
            dist = tl.sqrt_rn(tl.load(p_d2 + (o_j - f0).to(tl.int64)[None, :], mask=pair, other=0.0))
            dj = tl.load(density_ptr + o_j, mask=m_j, other=0.0)
            denser = pair & (
                (dj[None, :] > di[:, None]) | ((dj[None, :] == di[:, None]) & (o_j[None, :] < o_i[:, None]))
            )
            nearest = tl.minimum(nearest, tl.min(tl.where(denser, dist, float("inf")), axis=1))
            farthest = tl.maximum(farthest, tl.max(tl.where(pair, dist, 0.0), axis=1))
        tl.store(delta_ptr + o_i, nearest, mask=m_m)
        tl.atomic_max(frame_max_ptr + i_f, tl.max(farthest, axis=0))


@triton.jit
def assign_kernel(
    x_ptr,
    joins_ptr,
    row_table_ptr,
    anchor_rows_ptr,
    context_first_ptr,
    context_count_ptr,
    context_frame_ptr,
    assign_ptr,
    unit_row_start_ptr,
    unit_rows_ptr,
    unit_frame_ptr,
    row_frame_ptr,
    C,
    J,
    stride_n,
    stride_c,
    eps,
    BLOCK_M: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_u, row0, o_m, m_m = unit_rows(unit_row_start_ptr, unit_rows_ptr, BLOCK_M)
    i_j = tl.program_id(1)
    i_f = tl.load(unit_frame_ptr + i_u)
    c = tl.load(row_table_ptr + i_f * J + i_j)  # the j-th context frame of this frame's segment
    o_i = row0 + o_m
    if c >= 0:
        first = tl.load(context_first_ptr + c)
        count = tl.load(context_count_ptr + c)
        p_i = x_ptr + o_i.to(tl.int64)[:, None] * stride_n
        ii = row_squares(p_i, m_m, C, stride_c, BLOCK_M, BLOCK_C)
        inv_i = 1.0 / clamp_min(tl.sqrt_rn(ii), eps)
        best = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        pick = tl.zeros([BLOCK_M], dtype=tl.int32)  # the anchor's place among all (int32: A < 2**31)
        for a0 in range(0, count, BLOCK_A):
            o_a = a0 + tl.arange(0, BLOCK_A)
            m_a = o_a < count
            rows_a = tl.load(anchor_rows_ptr + first + o_a, mask=m_a, other=0)
            p_a = x_ptr + rows_a[:, None] * stride_n
            acc, aa = tile_products(p_i, m_m, p_a, m_a, C, stride_c, BLOCK_M, BLOCK_A, BLOCK_C)
            cos = acc * inv_i[:, None] * (1.0 / clamp_min(tl.sqrt_rn(aa), eps))[None, :]
            cos = tl.where(cos == cos, cos, float("inf"))  # NaN ranks first, as in torch.argmax
            cos = tl.where(m_a[None, :], cos, float("-inf"))
            top = tl.max(cos, axis=1)
            where = tl.argmax(cos, axis=1, tie_break_left=True)
            better = top > best  # strictly: the first tile keeps a tie
            pick = tl.where(better, (first + a0).to(tl.int32) + where.to(tl.int32), pick)
            best = tl.where(better, top, best)
        own = tl.load(row_frame_ptr + o_i, mask=m_m, other=-1) == tl.load(context_frame_ptr + c)
        joins = tl.load(joins_ptr + o_i, mask=m_m, other=0)  # 1: free, 2: a context token, 0: salient
        join = (joins == 1) | ((joins == 2) & ~own)
        tl.store(assign_ptr + o_i.to(tl.int64) * J + i_j, tl.where(join, pick, -1).to(tl.int64), mask=m_m)
    else:
        tl.store(assign_ptr + o_i.to(tl.int64) * J + i_j, tl.full([BLOCK_M], -1, dtype=tl.int64), mask=m_m)


@triton.jit
def merge_kernel(
    x_ptr,
    out_ptr,
    merged_ptr,
    assign_ptr,
    anchor_rows_ptr,
    anchor_slot_ptr,
    anchor_span_ptr,
    anchor_j_ptr,
    C,
    J,
    stride_n,
    stride_c,
    stride_on,
    beta,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_a = tl.program_id(0)
    i_c = tl.program_id(1)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    s0 = tl.load(anchor_span_ptr + 2 * i_a)
    s1 = tl.load(anchor_span_ptr + 2 * i_a + 1)
    j = tl.load(anchor_j_ptr + i_a)
    total = tl.zeros([BLOCK_C], dtype=tl.float32)
    n = tl.zeros([BLOCK_R], dtype=tl.int32)
    for r0 in range(s0, s1, BLOCK_R):
        o_r = r0 + tl.arange(0, BLOCK_R)
        m_r = o_r < s1
        mine = m_r & (tl.load(assign_ptr + o_r.to(tl.int64) * J + j, mask=m_r, other=-1) == i_a)
        x = tl.load(
            x_ptr + o_r.to(tl.int64)[:, None] * stride_n + o_c[None, :].to(tl.int64) * stride_c,
            mask=mine[:, None] & m_c[None, :],
            other=0.0,
        ).to(tl.float32)
        total += tl.sum(tl.where(mine[:, None], x, 0.0), axis=0)
        n += mine.to(tl.int32)
    count = tl.sum(n, axis=0)
    w = tl.maximum(1.0 / (count + 1).to(tl.float32), beta)
    row = tl.load(anchor_rows_ptr + i_a)
    own = tl.load(x_ptr + row * stride_n + o_c.to(tl.int64) * stride_c, mask=m_c, other=0.0).to(tl.float32)
    change = (count > 0) & (w < 1.0)
    blend = w * own + (1.0 - w) * (total / tl.maximum(count, 1).to(tl.float32))
    slot = tl.load(anchor_slot_ptr + i_a)
    if change:  # otherwise the output row stays the context token's own
        tl.store(out_ptr + slot * stride_on + o_c, blend.to(out_ptr.dtype.element_ty), mask=m_c)
    if i_c == 0:
        tl.store(merged_ptr + slot, change)


@launch_config
def stats_config(C: int) -> dict:
    return {"BLOCK_M": UNIT_ROWS, "BLOCK_C": min(128, next_pow2(C)), "num_warps": 4}


@launch_config
def similarity_config(C: int) -> dict:
    return {"BLOCK_U": 8, "BLOCK_C": min(256, next_pow2(C)), "num_warps": 4}


@launch_config
def distance_config(C: int) -> dict:
    return {"BLOCK_M": UNIT_ROWS, "BLOCK_N": 16, "BLOCK_C": min(16, next_pow2(C)), "KP": DPC_NEIGHBOURS, "num_warps": 4}


@launch_config
def assign_config(C: int) -> dict:
    return {"BLOCK_M": UNIT_ROWS, "BLOCK_A": 16, "BLOCK_C": min(16, next_pow2(C)), "num_warps": 4}


@launch_config
def merge_config(C: int) -> dict:
    return {"BLOCK_R": 32, "BLOCK_C": min(128, next_pow2(C)), "num_warps": 4}


def as_tensor(values, device) -> torch.Tensor:
    """Host values as int64 on ``device``, without waiting for the GPU (:func:`to_device`)."""
    return to_device(np.asarray(values, dtype=np.int64), device)
