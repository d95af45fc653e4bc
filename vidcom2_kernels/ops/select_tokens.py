"""Step 6 and the exact-count reconcile: per-frame top-k written straight to its final offsets,
with the kept rows of up to four tensors copied in the same launch.

A token's key is ``(order_key(score), row)``; keys are unique, and "the k smallest keys" is the
lowest-score-first, lower-index-on-ties rule. Instead of sorting, a program finds the k-th smallest
key of its frame by bisection (first over the 32-bit score keys, then over rows, each step a
count) and keeps every row whose key is at most that threshold: the kept rows of a frame are
written in row order with a prefix sum, so indices come out ascending with no sort.

Kernels
-------
``select_rows_kernel``  grid (F, P): program (f, p) keeps frame f's rows and copies columns
    [p * cols, (p + 1) * cols) of each kept row of every tensor to the output (the gather, fused:
    no launch of its own). Its output offset is the prefix sum of the earlier frames' budgets
    (O(F) integers a program, small beside the frame's rows); program (f, 0) writes the indices,
    the mask, the frame's final budget and, for a video's last frame, the video's count. Budget
    mode finds the threshold itself (every p the same); exact mode applies the reconcile below.
Exact mode: the ``target``-th smallest kept key of a video (drop case, more kept than the target)
or the ``target - total``-th smallest not-kept key (add case), by a radix select over the score
keys (as unsigned 32-bit ``u``) spread over the row splits, then per-frame counts:
``frame_threshold_kernel``  grid (F,): each frame's own threshold theta_f (F,); zeroes the
    histograms.
``reconcile_count_kernel``  grid (S,) row splits, one launch per radix pass (3: 11 + 11 + 10 bits):
    each split's histogram of the digit of its candidates that match the digits chosen so far,
    added into the video's histogram (integer atomics: the same sum in any order). The digits
    chosen so far are replayed from the earlier passes' histograms (no narrowing launch).
``reconcile_frames_kernel``  grid (F,): the video's k-th score bits ``b`` (all digits), and per
    frame the candidates below ``b`` and equal to it. ``select_rows_kernel`` then keeps, per
    frame, the candidates below ``b`` and the first ``j_f`` equal ones in row order, where ``j_f``
    is what remains of the rank after the equal candidates of the video's earlier frames (the
    lower index wins ties: the rows of earlier frames are lower).
Whatever the scores (NaN included), a frame never writes more rows than its slot holds, and a
video never writes past its own part of the output.
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from ..buffers import new_output
from .common import DeviceLayout, cdiv, key_at_most, next_pow2, order_key
from .frame_budgets import frame_budgets_config
from .gather_rows import MAX_TENSORS_PER_LAUNCH, flat_rows, unflat_rows

INT32_MAX = tl.constexpr(2147483647)
INT32_MIN = tl.constexpr(-2147483648)
NO_BITS = tl.constexpr(-2147483649)  # below every key: "keep nothing"
PIVOTS = tl.constexpr(8)  # pivots a pass of the k-th key search counts at once
SEARCH_BLOCK = tl.constexpr(256)  # rows a step of that search reads: a (256, 8) count tile
# the exact-mode radix select: 3 passes over the unsigned score key u = order_key + 2**31
NUM_BINS = tl.constexpr(2048)
RADIX_PASSES = 3
NUM_PASSES = tl.constexpr(RADIX_PASSES)
# rows of the (5, F) int64 per-frame reconcile state
LT, EQ, BITS, NEED, STATE = (tl.constexpr(i) for i in range(5))
INACTIVE, DROP, ADD = (tl.constexpr(i) for i in range(3))


@triton.jit
def count_at_most_pivots(score_ptr, row0, row1, bits_max, row_max, BLOCK: tl.constexpr, P: tl.constexpr):
    """For each of P pivots: how many keys of rows [row0, row1) are at most
    (bits_max[i], row_max[i]). One pass over the rows answers all P."""
    counts = tl.zeros([P], dtype=tl.int32)
    for start in range(row0, row1, BLOCK):
        o = start + tl.arange(0, BLOCK)
        m = o < row1
        bits = order_key(tl.load(score_ptr + o, mask=m, other=0.0))
        le = key_at_most(bits[:, None], o[:, None], bits_max[None, :], row_max[None, :])
        counts += tl.sum((le & m[:, None]).to(tl.int32), axis=0)
    return counts


@triton.jit
def part_step(lo, hi, P):
    """Width of the P + 1 near-equal parts of [lo, hi] that P pivots cut: ceil(size / (P + 1))."""
    return (hi - lo + 1 + P) // (P + 1)


@triton.jit
def pivots_between(lo, hi, P: tl.constexpr):
    """P int64 pivots ``min(lo + step * (i + 1) - 1, hi)`` cutting [lo, hi] into P + 1 parts."""
    return tl.minimum(lo + part_step(lo, hi, P) * (tl.arange(0, P) + 1).to(tl.int64) - 1, hi)


@triton.jit
def narrowed(lo, hi, first, P):
    """The part of [lo, hi] between pivot ``first - 1`` (exclusive) and pivot ``first``
    (:func:`pivots_between`'s; ``first = P``: past the last pivot)."""
    step = part_step(lo, hi, P)
    new_lo = tl.where(first == 0, lo, tl.minimum(lo + step * first - 1, hi) + 1)
    new_hi = tl.where(first == P, hi, tl.minimum(lo + step * (first + 1) - 1, hi))
    return tl.minimum(new_lo, hi), new_hi


@triton.jit
def narrow(lo, hi, counts, k, P: tl.constexpr):
    """The part of [lo, hi] holding the k-th key, given count(key <= pivot_i) (non-decreasing)."""
    first = P - tl.sum((counts >= k).to(tl.int32), axis=0)  # first pivot reaching k; P: none does
    return narrowed(lo, hi, first, P)


@triton.jit
def kth_smallest_key(score_ptr, row0, row1, k, BLOCK: tl.constexpr):
    """(bits, row) of the k-th smallest key (1-based) of rows [row0, row1) (values at
    ``score_ptr + row``); the largest when k exceeds their number. Search with PIVOTS pivots a pass (each pass narrows the
    range PIVOTS + 1 times): over bits in [min, max], then over rows."""
    lo_v = tl.full([BLOCK], INT32_MAX, dtype=tl.int64)
    hi_v = tl.full([BLOCK], INT32_MIN, dtype=tl.int64)
    for start in range(row0, row1, BLOCK):
        o = start + tl.arange(0, BLOCK)
        m = o < row1
        bits = order_key(tl.load(score_ptr + o, mask=m, other=0.0))
        lo_v = tl.minimum(lo_v, tl.where(m, bits.to(tl.int64), INT32_MAX))
        hi_v = tl.maximum(hi_v, tl.where(m, bits.to(tl.int64), INT32_MIN))
    bits_k = pivot_search(score_ptr, row0, row1, k, tl.min(lo_v, axis=0), tl.max(hi_v, axis=0), row1, False, BLOCK)
    row_k = pivot_search(score_ptr, row0, row1, k, row0, row1 - 1, bits_k, True, BLOCK)
    return bits_k, row_k


@triton.jit
def pivot_search(score_ptr, row0, row1, k, lo, hi, fixed, ON_ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Smallest v in [lo, hi] with at least k keys <= (v, fixed) (score bits), or
    <= (fixed, v) with ``ON_ROWS``. PIVOTS values of v are counted per pass over the rows."""
    fixed_v = tl.zeros([PIVOTS], dtype=tl.int64) + fixed
    while lo < hi:
        pivots = pivots_between(lo, hi, PIVOTS)
        if ON_ROWS:
            bits_max, row_max = fixed_v, pivots
        else:
            bits_max, row_max = pivots, fixed_v
        counts = count_at_most_pivots(score_ptr, row0, row1, bits_max, row_max, BLOCK, PIVOTS)
        lo, hi = narrow(lo, hi, counts, k, PIVOTS)
    return lo


@triton.jit
def kth_smallest_in_block(bits, rows, valid, k):
    """As :func:`kth_smallest_key` for keys already in registers (one block): no memory traffic
    per bisection step. ``bits`` int32, ``rows`` int64, ``valid`` the block's mask."""
    lo = tl.min(tl.where(valid, bits, INT32_MAX), axis=0).to(tl.int64)
    hi = tl.max(tl.where(valid, bits, INT32_MIN), axis=0).to(tl.int64)
    while lo < hi:
        mid = lo + (hi - lo) // 2
        c = tl.sum((valid & (bits <= mid)).to(tl.int32), axis=0)
        lo = tl.where(c >= k, lo, mid + 1)
        hi = tl.where(c >= k, mid, hi)
    bits_k = lo
    lo = tl.min(tl.where(valid, rows, INT32_MAX), axis=0)
    hi = tl.max(tl.where(valid, rows, -1), axis=0)
    while lo < hi:
        mid = lo + (hi - lo) // 2
        c = tl.sum((valid & key_at_most(bits, rows, bits_k, mid)).to(tl.int32), axis=0)
        lo = tl.where(c >= k, lo, mid + 1)
        hi = tl.where(c >= k, mid, hi)
    return bits_k, lo


@triton.jit
def pass_digit(u, PASS: tl.constexpr):
    """(digit of radix pass PASS, the higher digits it must match) of unsigned keys ``u`` (int64)."""
    if PASS == 0:
        return u >> 21, u >> 32
    elif PASS == 1:
        return (u >> 10) & 2047, u >> 21
    else:
        return u & 1023, u >> 10


@triton.jit
def radix_replay(hist_ptr, i_v, V, rank, PASSES: tl.constexpr):
    """The digits the first PASSES radix passes chose for the rank-th smallest candidate (1-based):
    (prefix, the chosen digits high to low; rank left among the candidates matching it)."""
    prefix = rank * 0
    j = tl.arange(0, NUM_BINS)
    for p in tl.static_range(PASSES):
        h = tl.load(hist_ptr + (p * V + i_v).to(tl.int64) * NUM_BINS + j).to(tl.int64)
        d = tl.minimum(tl.sum((tl.cumsum(h, axis=0) < rank).to(tl.int64), axis=0), NUM_BINS - 1)
        rank -= tl.sum(tl.where(j < d, h, 0), axis=0)
        if p == 2:
            prefix = prefix * 1024 + d
        else:
            prefix = prefix * 2048 + d
    return prefix, rank


@triton.jit
def video_side(budget_ptr, frame_row_start_ptr, f0, f1, target, BLOCK_F: tl.constexpr):
    """(state, rank) of a video's reconcile: INACTIVE when its budgets (clamped to [0, T]) already
    sum to ``target``; DROP: keep the ``target`` smallest kept keys; ADD: the ``target - total``
    smallest of the others join."""
    kept = tl.zeros([BLOCK_F], dtype=tl.int64)
    for s in range(f0, f1, BLOCK_F):
        o_f = s + tl.arange(0, BLOCK_F)
        m_f = o_f < f1
        T = tl.load(frame_row_start_ptr + o_f + 1, mask=m_f, other=0) - tl.load(
            frame_row_start_ptr + o_f, mask=m_f, other=0
        )
        kept += tl.minimum(tl.maximum(tl.load(budget_ptr + o_f, mask=m_f, other=0), 0), T)
    total = tl.sum(kept, axis=0)
    state = tl.where((total == target) | (f1 == f0), INACTIVE, tl.where(total > target, DROP, ADD))
    return state, tl.where(total > target, target, target - total)


@triton.jit
def frame_threshold(score_ptr, row0, row1, k, BLOCK: tl.constexpr):
    """(bits, row) threshold of the k smallest keys of rows [row0, row1) (NO_BITS when k is 0)."""
    t_bits, t_row = kth_smallest_key(score_ptr, row0, row1, k, BLOCK)
    return tl.where(k > 0, t_bits, NO_BITS), tl.where(k > 0, t_row, -1)


@triton.jit(do_not_specialize=["V", "F"])
def frame_threshold_kernel(
    score_ptr,
    budget_ptr,
    theta_ptr,
    hist_ptr,
    frame_row_start_ptr,
    V,
    F,
    BLOCK: tl.constexpr,
    IN_REGISTERS: tl.constexpr,
):
    i_f = tl.program_id(0)
    row0 = tl.load(frame_row_start_ptr + i_f)
    row1 = tl.load(frame_row_start_ptr + i_f + 1)
    k = tl.minimum(tl.maximum(tl.load(budget_ptr + i_f), 0), row1 - row0)
    if IN_REGISTERS:  # the whole frame fits one block (the host checked): its keys in registers
        o_r = row0 + tl.arange(0, BLOCK)
        m_r = o_r < row1
        t_bits, t_row = kth_smallest_in_block(order_key(tl.load(score_ptr + o_r, mask=m_r, other=0.0)), o_r, m_r, k)
        t_bits = tl.where(k > 0, t_bits, NO_BITS)
        t_row = tl.where(k > 0, t_row, -1)
    else:
        t_bits, t_row = frame_threshold(score_ptr, row0, row1, k, SEARCH_BLOCK)
    tl.store(theta_ptr + i_f, t_bits)
    tl.store(theta_ptr + F + i_f, t_row)
    zeros = tl.zeros([NUM_BINS], dtype=tl.int32)
    for i_v in range(i_f, V, F):
        for p in tl.static_range(NUM_PASSES):
            tl.store(hist_ptr + (p * V + i_v).to(tl.int64) * NUM_BINS + tl.arange(0, NUM_BINS), zeros)


@triton.jit(do_not_specialize=["V", "F"])
def reconcile_count_kernel(
    score_ptr,
    budget_ptr,
    theta_ptr,
    hist_ptr,
    target_ptr,
    split_row_start_ptr,
    split_video_ptr,
    row_start_ptr,
    frame_start_ptr,
    frame_row_start_ptr,
    tokens_per_frame_ptr,
    V,
    F,
    PASS: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    i_s = tl.program_id(0)
    i_v = tl.load(split_video_ptr + i_s)
    r0 = tl.load(split_row_start_ptr + i_s)
    r1 = tl.load(split_row_start_ptr + i_s + 1)
    f0 = tl.load(frame_start_ptr + i_v)
    f1 = tl.load(frame_start_ptr + i_v + 1)
    state, rank = video_side(budget_ptr, frame_row_start_ptr, f0, f1, tl.load(target_ptr + i_v), BLOCK_F)
    prefix, rank = radix_replay(hist_ptr, i_v, V, rank, PASS)
    row0 = tl.load(row_start_ptr + i_v)
    T = tl.load(tokens_per_frame_ptr + i_v)
    hist = tl.zeros([NUM_BINS], dtype=tl.int32)
    end = tl.where(state == INACTIVE, r0, r1)  # nothing to count: no row is read
    for start in range(r0, end, BLOCK):
        o = start + tl.arange(0, BLOCK)
        m = o < end
        bits = order_key(tl.load(score_ptr + o, mask=m, other=0.0))
        frame = f0 + ((o - row0).to(tl.int32) // T.to(tl.int32))  # 32-bit: no division call
        kept = key_at_most(
            bits, o, tl.load(theta_ptr + frame, mask=m, other=0), tl.load(theta_ptr + F + frame, mask=m, other=0)
        )
        digit, higher = pass_digit(bits.to(tl.int64) + 2147483648, PASS)
        cand = m & (kept == (state == DROP)) & (higher == prefix)
        hist += tl.histogram(digit.to(tl.int32), NUM_BINS, mask=cand)
    bins = tl.arange(0, NUM_BINS)
    p_hist = hist_ptr + (PASS * V + i_v).to(tl.int64) * NUM_BINS + bins
    tl.atomic_add(p_hist, hist, mask=bins < tl.where(state == INACTIVE, 0, NUM_BINS), sem="relaxed")


@triton.jit(do_not_specialize=["V", "F"])
def reconcile_frames_kernel(
    score_ptr,
    budget_ptr,
    theta_ptr,
    hist_ptr,
    frame_state_ptr,
    target_ptr,
    frame_video_ptr,
    frame_start_ptr,
    frame_row_start_ptr,
    V,
    F,
    BLOCK: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    i_f = tl.program_id(0)
    i_v = tl.load(frame_video_ptr + i_f)
    f0 = tl.load(frame_start_ptr + i_v)
    f1 = tl.load(frame_start_ptr + i_v + 1)
    state, rank = video_side(budget_ptr, frame_row_start_ptr, f0, f1, tl.load(target_ptr + i_v), BLOCK_F)
    bits_u, need = radix_replay(hist_ptr, i_v, V, rank, NUM_PASSES)
    t_bits = tl.load(theta_ptr + i_f)
    t_row = tl.load(theta_ptr + F + i_f)
    row0 = tl.load(frame_row_start_ptr + i_f)
    row1 = tl.where(state == INACTIVE, row0, tl.load(frame_row_start_ptr + i_f + 1))
    lt = tl.zeros([BLOCK], dtype=tl.int64)
    eq = tl.zeros([BLOCK], dtype=tl.int64)
    for start in range(row0, row1, BLOCK):
        o = start + tl.arange(0, BLOCK)
        m = o < row1
        bits = order_key(tl.load(score_ptr + o, mask=m, other=0.0))
        u = bits.to(tl.int64) + 2147483648
        cand = m & (key_at_most(bits, o, t_bits, t_row) == (state == DROP))
        lt += (cand & (u < bits_u)).to(tl.int64)
        eq += (cand & (u == bits_u)).to(tl.int64)
    tl.store(frame_state_ptr + LT * F + i_f, tl.sum(lt, axis=0))
    tl.store(frame_state_ptr + EQ * F + i_f, tl.sum(eq, axis=0))
    tl.store(frame_state_ptr + BITS * F + i_f, bits_u)
    tl.store(frame_state_ptr + NEED * F + i_f, need)
    tl.store(frame_state_ptr + STATE * F + i_f, state)


@triton.jit
def copy_kept(src, dst, C, stride_n, stride_c, rows, dest, keep, c_lo, c_hi, BLOCK_C: tl.constexpr):
    """Columns [c_lo, min(c_hi, C)) of rows ``rows`` (where ``keep``) to output rows ``dest``."""
    for c0 in range(c_lo, tl.minimum(c_hi, C), BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)
        m = keep[:, None] & (o_c < C)[None, :]
        b = tl.load(src + rows.to(tl.int64)[:, None] * stride_n + o_c[None, :].to(tl.int64) * stride_c, mask=m)
        tl.store(dst + dest.to(tl.int64)[:, None] * C + o_c[None, :], b, mask=m)


@triton.jit
def copy_all(
    rows,
    dest,
    keep,
    c_lo,
    c_hi,
    s0,
    d0,
    C0,
    sn0,
    sc0,
    s1,
    d1,
    C1,
    sn1,
    sc1,
    s2,
    d2,
    C2,
    sn2,
    sc2,
    s3,
    d3,
    C3,
    sn3,
    sc3,
    NUM: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    if NUM > 0:
        copy_kept(s0, d0, C0, sn0, sc0, rows, dest, keep, c_lo, c_hi, BLOCK_C)
    if NUM > 1:
        copy_kept(s1, d1, C1, sn1, sc1, rows, dest, keep, c_lo, c_hi, BLOCK_C)
    if NUM > 2:
        copy_kept(s2, d2, C2, sn2, sc2, rows, dest, keep, c_lo, c_hi, BLOCK_C)
    if NUM > 3:
        copy_kept(s3, d3, C3, sn3, sc3, rows, dest, keep, c_lo, c_hi, BLOCK_C)


@triton.jit
def kept_rows(bits, o, m, t_bits, t_row, e_seen, state, bits_u, j_f):
    """Which rows ``o`` (mask ``m``) a frame keeps, and how many equal candidates they hold
    (exact mode's per-frame rule; ``state`` INACTIVE: the rows under the frame threshold)."""
    in_k = m & key_at_most(bits, o, t_bits, t_row)
    u = bits.to(tl.int64) + 2147483648
    cand = tl.where(state == DROP, in_k, m & ~in_k)
    eq = cand & (u == bits_u)
    eq_rank = e_seen + tl.cumsum(eq.to(tl.int64), axis=0) - eq.to(tl.int64)
    chosen = (cand & (u < bits_u)) | (eq & (eq_rank < j_f))
    keep = tl.where(state == INACTIVE, in_k, tl.where(state == DROP, chosen, in_k | chosen))
    return keep, tl.sum(eq.to(tl.int64), axis=0)


@triton.jit(do_not_specialize=["V", "F", "cols"])
def select_rows_kernel(
    score_ptr,
    budget_ptr,
    theta_ptr,
    frame_state_ptr,
    index_ptr,
    mask_ptr,
    final_ptr,
    count_ptr,
    target_start_ptr,
    frame_row_start_ptr,
    frame_video_ptr,
    frame_start_ptr,
    V,
    F,
    cols,
    s0,
    d0,
    C0,
    sn0,
    sc0,
    s1,
    d1,
    C1,
    sn1,
    sc1,
    s2,
    d2,
    C2,
    sn2,
    sc2,
    s3,
    d3,
    C3,
    sn3,
    sc3,
    NUM: tl.constexpr,
    EXACT: tl.constexpr,
    BLOCK: tl.constexpr,
    IN_REGISTERS: tl.constexpr,
    BLOCK_F: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_f = tl.program_id(0)
    i_p = tl.program_id(1)
    c_lo = i_p * cols
    row0 = tl.load(frame_row_start_ptr + i_f)
    row1 = tl.load(frame_row_start_ptr + i_f + 1)
    i_v = tl.load(frame_video_ptr + i_f)
    f0 = tl.load(frame_start_ptr + i_v)
    f1 = tl.load(frame_start_ptr + i_v + 1)
    k = tl.minimum(tl.maximum(tl.load(budget_ptr + i_f), 0), row1 - row0)
    # this frame's output offset and kept count: a prefix over the earlier frames
    if EXACT:  # per frame: keep = (kept | added) below the video's threshold
        video_out = tl.load(target_start_ptr + i_v)
        video_end = tl.load(target_start_ptr + i_v + 1)
        state = tl.load(frame_state_ptr + STATE * F + i_f)
        need = tl.load(frame_state_ptr + NEED * F + i_f)
        off = tl.sum(tl.zeros([BLOCK_F], dtype=tl.int64), axis=0)
        e_before = off
        n_f = off
        j_f = off
        for s in range(f0, i_f + 1, BLOCK_F):
            o_g = s + tl.arange(0, BLOCK_F)
            m_g = o_g <= i_f
            T_g = tl.load(frame_row_start_ptr + o_g + 1, mask=m_g, other=0) - tl.load(
                frame_row_start_ptr + o_g, mask=m_g, other=0
            )
            k_g = tl.minimum(tl.maximum(tl.load(budget_ptr + o_g, mask=m_g, other=0), 0), T_g)
            lt_g = tl.load(frame_state_ptr + LT * F + o_g, mask=m_g, other=0)
            e_g = tl.load(frame_state_ptr + EQ * F + o_g, mask=m_g, other=0)
            j_g = tl.minimum(tl.maximum(need - (e_before + tl.cumsum(e_g, axis=0) - e_g), 0), e_g)
            n_g = tl.where(state == INACTIVE, k_g, tl.where(state == DROP, lt_g + j_g, k_g + lt_g + j_g))
            off += tl.sum(tl.where(o_g < i_f, n_g, 0), axis=0)
            n_f += tl.sum(tl.where(o_g == i_f, n_g, 0), axis=0)
            j_f += tl.sum(tl.where(o_g == i_f, j_g, 0), axis=0)
            e_before += tl.sum(e_g, axis=0)
        out0 = video_out + off
        bits_u = tl.load(frame_state_ptr + BITS * F + i_f)
        t_bits = tl.load(theta_ptr + i_f)
        t_row = tl.load(theta_ptr + F + i_f)
    else:  # budget mode: the k smallest keys of the frame
        off = tl.sum(tl.zeros([BLOCK_F], dtype=tl.int64), axis=0)
        video_out = off
        for s in range(0, i_f, BLOCK_F):
            o_g = s + tl.arange(0, BLOCK_F)
            m_g = o_g < i_f
            T_g = tl.load(frame_row_start_ptr + o_g + 1, mask=m_g, other=0) - tl.load(
                frame_row_start_ptr + o_g, mask=m_g, other=0
            )
            k_g = tl.minimum(tl.maximum(tl.load(budget_ptr + o_g, mask=m_g, other=0), 0), T_g)
            off += tl.sum(k_g, axis=0)
            video_out += tl.sum(tl.where(o_g < f0, k_g, 0), axis=0)
        out0 = off
        video_end = out0 + k
        n_f = k
        state = off * 0 + INACTIVE
        bits_u = off * 0
        j_f = off * 0
    if not EXACT:  # budget mode: the threshold of the frame's k smallest keys
        if IN_REGISTERS:  # the whole frame in one block (the host checked)
            o_r = row0 + tl.arange(0, BLOCK)
            m_r = o_r < row1
            bits_r = order_key(tl.load(score_ptr + o_r, mask=m_r, other=0.0))
            t_bits, t_row = kth_smallest_in_block(bits_r, o_r, m_r, k)
            t_bits = tl.where(k > 0, t_bits, NO_BITS)
            t_row = tl.where(k > 0, t_row, -1)
        else:
            t_bits, t_row = frame_threshold(score_ptr, row0, row1, k, SEARCH_BLOCK)
    # the kept rows in row order, CHUNK at a time (a (CHUNK, BLOCK_C) tile a tensor: few registers)
    written = k * 0
    e_seen = k * 0
    for start in range(row0, row1, CHUNK):
        o = start + tl.arange(0, CHUNK)
        m = o < row1
        bits = order_key(tl.load(score_ptr + o, mask=m, other=0.0))
        keep, n_eq = kept_rows(bits, o, m, t_bits, t_row, e_seen, state, bits_u, j_f)
        pos = written + tl.cumsum(keep.to(tl.int64), axis=0) - 1
        keep = keep & (pos < n_f) & (out0 + pos < video_end)  # never past the frame's or the video's slot
        copy_all(
            o, out0 + pos, keep, c_lo, c_lo + cols,
            s0, d0, C0, sn0, sc0, s1, d1, C1, sn1, sc1, s2, d2, C2, sn2, sc2, s3, d3, C3, sn3, sc3,
            NUM, BLOCK_C,
        )  # fmt: skip
        if i_p == 0:
            tl.store(index_ptr + out0 + pos, o, mask=keep)
            tl.store(mask_ptr + o, keep, mask=m)
        written += tl.sum(keep.to(tl.int64), axis=0)
        e_seen += n_eq
    if i_p == 0:
        tl.store(final_ptr + i_f, written)
        if i_f == f1 - 1:
            tl.store(count_ptr + i_v, out0 + written - video_out)
        if i_f == 0:  # videos without frames have no program of their own
            for v in range(0, V):
                empty = tl.load(frame_start_ptr + v) == tl.load(frame_start_ptr + v + 1)
                tl.store(count_ptr + v, 0, mask=empty)


def frame_block(layout) -> int:
    return max(16, min(1024, next_pow2(layout.max_frame_tokens)))


def select_config(layout) -> dict:
    block = frame_block(layout)
    in_registers = layout.max_frame_tokens <= block
    return {"BLOCK": block, "IN_REGISTERS": in_registers, "num_warps": 4}


def reconcile_config(layout) -> dict:
    return {"BLOCK": 256, "num_warps": 4, **{"BLOCK_F": frame_budgets_config(layout)["BLOCK_F"]}}


#: programs the fused gather aims for across the columns (frames x column ranges), enough to fill
#: a large GPU twice over; each recomputes its frame's threshold (a few dozen in-register steps)
TARGET_PROGRAMS = 1024


def copy_plan(layout, tensors: Sequence[torch.Tensor]) -> tuple:
    """(flat sources, CHUNK rows x BLOCK_C columns a copy tile, columns a program, column
    programs) of the fused gather: tiles of 2048 elements, as the gather kernel's."""
    flat = flat_rows(tensors)
    width = max((f.shape[1] for f in flat), default=0)
    block_c = min(128, next_pow2(max(1, width)))
    tiles = cdiv(width, block_c)
    programs = max(1, min(tiles, cdiv(TARGET_PROGRAMS, max(1, layout.total_frames))))
    cols = block_c * cdiv(tiles, programs)
    return flat, max(1, 2048 // block_c), block_c, cols, (cdiv(width, cols) if cols else 1)


def select_rows(scores, budgets, meta: DeviceLayout, request, num_kept: int, tensors=(), exact_state=None):
    """One launch: per-frame selection (budget mode, or exact mode's final step given
    ``exact_state`` = (theta, frame_state)), indices (K,), mask (N,), final budgets (F,), counts (V,)
    and the kept rows of the first four ``tensors`` (the rest: one gather launch per four)."""
    layout, dev = meta.layout, scores.device
    F, V = layout.total_frames, layout.num_videos
    indices = new_output(num_kept, torch.int64, dev)
    mask = new_output(layout.num_tokens, torch.bool, dev)
    final = new_output(F, torch.int64, dev)  # both returned: separate tensors (a returned view of
    counts = new_output(V, torch.int64, dev)  # another's storage breaks torch.compile's custom op)
    cfg = select_config(layout)
    flat, chunk, block_c, cols, col_programs = copy_plan(layout, tensors[:MAX_TENSORS_PER_LAUNCH])
    outs = [new_output((num_kept, f.shape[1]), f.dtype, dev) for f in flat]
    args = []
    for i in range(MAX_TENSORS_PER_LAUNCH):
        if i < len(flat):
            args += [flat[i], outs[i], flat[i].shape[1], flat[i].stride(0), flat[i].stride(1)]
        else:
            args += [scores, scores, 0, 0, 0]  # unused slot: NUM skips it
    theta, frame_state = exact_state if exact_state is not None else (budgets, budgets)
    select_rows_kernel[(F, col_programs)](
        scores,
        budgets,
        theta,
        frame_state,
        indices,
        mask,
        final,
        counts,
        request.target_start,
        meta.frame_row_start,
        meta.frame_video,
        meta.frame_start,
        V,
        F,
        cols,
        *args,
        NUM=len(flat),
        EXACT=exact_state is not None,
        BLOCK_F=frame_budgets_config(layout)["BLOCK_F"],
        CHUNK=chunk,
        BLOCK_C=block_c,
        **cfg,
    )
    rows = unflat_rows(outs, tensors[:MAX_TENSORS_PER_LAUNCH])
    return indices, mask, final, counts, rows


def reconcile(scores, budgets, meta: DeviceLayout, request) -> tuple:
    """Exact mode's reconcile before the final selection: (theta (2, F), frame_state (5, F)).
    Five launches: the frame thresholds, three radix passes, the per-frame counts."""
    layout, dev = meta.layout, scores.device
    F, V = layout.total_frames, layout.num_videos
    state = new_output((7, F), torch.int64, dev)
    theta, frame_state = state[:2], state[2:]  # thresholds (2, F), the per-frame reconcile state (5, F)
    hist = new_output((RADIX_PASSES, V, int(NUM_BINS)), torch.int32, dev)  # zeroed by the first launch
    cfg = select_config(layout)
    frame_threshold_kernel[(F,)](scores, budgets, theta, hist, meta.frame_row_start, V, F, **cfg)
    cfg_r = reconcile_config(layout)
    for p in range(RADIX_PASSES):
        reconcile_count_kernel[(meta.num_splits,)](
            scores,
            budgets,
            theta,
            hist,
            request.targets,
            meta.split_row_start,
            meta.split_video,
            meta.row_start,
            meta.frame_start,
            meta.frame_row_start,
            meta.tokens_per_frame,
            V,
            F,
            PASS=p,
            **cfg_r,
        )
    reconcile_frames_kernel[(F,)](
        scores,
        budgets,
        theta,
        hist,
        frame_state,
        request.targets,
        meta.frame_video,
        meta.frame_start,
        meta.frame_row_start,
        V,
        F,
        **cfg_r,
    )
    return theta, frame_state
