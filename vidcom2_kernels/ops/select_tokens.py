"""Step 6 and the exact-count reconcile: per-frame top-k written straight to its final offsets.

A token's key is ``(order_key(score), row)``; keys are unique, and "the k smallest keys" is the
lowest-score-first, lower-index-on-ties rule. Instead of sorting, a program finds the k-th smallest
key of its segment by bisection (first over the 32-bit score keys, then over rows, each step a
count), and keeps every row whose key is at most that threshold. Keeping a threshold rather than a
sorted list makes the rest cheap:

- the kept rows of a frame are written in row order with a prefix sum, so indices come out
  ascending with no sort, at ``offset[f]`` (exclusive prefix sum of the budgets);
- the exact-mode reconcile is one more threshold per video: drop case, the ``target``-th smallest
  kept key (new frame threshold ``min(theta_f, tau)``); add case, the ``target - total``-th smallest
  not-kept key (``max(theta_f, tau)``).

Kernels
-------
``frame_select_kernel``  grid (F,): threshold of the frame's ``budget`` smallest keys
    (FIND_THRESHOLD) and/or the ordered compaction of the rows under it (COMPACT).
Exact mode, the k-th smallest key of each video found by all the row splits together:
``reconcile_init_kernel``  grid (V,): the side (drop or add) and rank k of each video's search.
``reconcile_count_kernel``  grid (S,) row splits, one launch per search pass: each split's
    histogram of candidate keys over the pivots of its video's current range, added into the
    video's histogram (integer atomics: deterministic).
``reconcile_narrow_kernel``  grid (V,): narrows the range to the part holding the k-th key
    (4 passes over score bits, then 1-2 over rows: a count the host knows, so no host read).
``reconcile_frames_kernel``  grid (F,): each frame's final threshold and budget; the output offsets
    follow from the budgets (``budget_offsets``).
Whatever the scores (NaN included), a frame never writes more rows than its slot holds.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..buffers import new_output
from .common import DeviceLayout, key_at_most, order_key
from .frame_budgets import budget_offsets, frame_budgets_config

INT32_MAX = tl.constexpr(2147483647)
INT32_MIN = tl.constexpr(-2147483648)
NO_BITS = tl.constexpr(-2147483649)  # below every key: "keep nothing"
PIVOTS = tl.constexpr(8)  # pivots a pass of the k-th key search counts at once
# the exact-mode reconcile's search, spread over the row splits: a pass histograms every candidate
# key over SEARCH_PIVOTS pivots (bins: below all, one per pivot, ABOVE), so it narrows the range
# SEARCH_PIVOTS + 1 times: 4 passes find the score bits, 1-2 more the row
NUM_BINS = tl.constexpr(512)
SEARCH_PIVOTS = tl.constexpr(510)
ABOVE = tl.constexpr(511)
# rows of the (6, V) int64 search state
ACTIVE, SIDE, RANK, LO, HI, BITS_K = (tl.constexpr(i) for i in range(6))


@triton.jit
def is_candidate(bits, rows, theta_bits_ptr, theta_row_ptr, row0, frame0, T, m, kept_side, CAND: tl.constexpr):
    """CAND 0: every row; CAND 1: rows under their frame's threshold (the kept ones) when
    ``kept_side`` is true, rows above it (the dropped ones) when false."""
    if CAND == 0:
        return m
    else:
        frame = frame0 + ((rows - row0).to(tl.int32) // T.to(tl.int32))  # 32-bit: no division call
        under = key_at_most(
            bits,
            rows,
            tl.load(theta_bits_ptr + frame, mask=m, other=0),
            tl.load(theta_row_ptr + frame, mask=m, other=0),
        )
        return m & (under == kept_side)


@triton.jit
def count_at_most_pivots(
    score_ptr,
    theta_bits_ptr,
    theta_row_ptr,
    row0,
    row1,
    frame0,
    T,
    bits_max,
    row_max,
    kept_side,
    CAND: tl.constexpr,
    BLOCK: tl.constexpr,
    P: tl.constexpr,
):
    """For each of P pivots: how many candidates of rows [row0, row1) have a key at most
    (bits_max[i], row_max[i]). One pass over the rows answers all P."""
    counts = tl.zeros([P], dtype=tl.int32)
    for start in range(row0, row1, BLOCK):
        o = start + tl.arange(0, BLOCK)
        m = o < row1
        bits = order_key(tl.load(score_ptr + o, mask=m, other=0.0))
        hit = is_candidate(bits, o, theta_bits_ptr, theta_row_ptr, row0, frame0, T, m, kept_side, CAND)
        le = key_at_most(bits[:, None], o[:, None], bits_max[None, :], row_max[None, :])
        counts += tl.sum((le & hit[:, None]).to(tl.int32), axis=0)
    return counts


@triton.jit
def count_at_most(
    score_ptr,
    theta_bits_ptr,
    theta_row_ptr,
    row0,
    row1,
    frame0,
    T,
    bits_max,
    row_max,
    kept_side,
    CAND: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Candidates of rows [row0, row1) whose key is at most (bits_max, row_max)."""
    one = tl.zeros([1], dtype=tl.int64)
    counts = count_at_most_pivots(
        score_ptr,
        theta_bits_ptr,
        theta_row_ptr,
        row0,
        row1,
        frame0,
        T,
        one + bits_max,
        one + row_max,
        kept_side,
        CAND,
        BLOCK,
        1,
    )
    return tl.sum(counts, axis=0)


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
def kth_smallest_key(
    score_ptr,
    theta_bits_ptr,
    theta_row_ptr,
    row0,
    row1,
    frame0,
    T,
    k,
    kept_side,
    CAND: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """(bits, row) of the k-th smallest candidate key (1-based) of rows [row0, row1); the largest
    candidate when k exceeds their number. Search with PIVOTS pivots a pass (each pass narrows the
    range PIVOTS + 1 times): over bits in [min, max], then over rows."""
    lo_v = tl.full([BLOCK], INT32_MAX, dtype=tl.int64)
    hi_v = tl.full([BLOCK], INT32_MIN, dtype=tl.int64)
    for start in range(row0, row1, BLOCK):
        o = start + tl.arange(0, BLOCK)
        m = o < row1
        bits = order_key(tl.load(score_ptr + o, mask=m, other=0.0))
        cand = is_candidate(bits, o, theta_bits_ptr, theta_row_ptr, row0, frame0, T, m, kept_side, CAND)
        lo_v = tl.minimum(lo_v, tl.where(cand, bits.to(tl.int64), INT32_MAX))
        hi_v = tl.maximum(hi_v, tl.where(cand, bits.to(tl.int64), INT32_MIN))
    bits_k = pivot_search(
        score_ptr,
        theta_bits_ptr,
        theta_row_ptr,
        row0,
        row1,
        frame0,
        T,
        k,
        kept_side,
        tl.min(lo_v, axis=0),
        tl.max(hi_v, axis=0),
        row1,
        False,
        CAND,
        BLOCK,
    )
    row_k = pivot_search(
        score_ptr,
        theta_bits_ptr,
        theta_row_ptr,
        row0,
        row1,
        frame0,
        T,
        k,
        kept_side,
        row0,
        row1 - 1,
        bits_k,
        True,
        CAND,
        BLOCK,
    )
    return bits_k, row_k


@triton.jit
def pivot_search(
    score_ptr,
    theta_bits_ptr,
    theta_row_ptr,
    row0,
    row1,
    frame0,
    T,
    k,
    kept_side,
    lo,
    hi,
    fixed,
    ON_ROWS: tl.constexpr,
    CAND: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Smallest v in [lo, hi] with at least k candidate keys <= (v, fixed) (score bits), or
    <= (fixed, v) with ``ON_ROWS``. PIVOTS values of v are counted per pass over the rows."""
    fixed_v = tl.zeros([PIVOTS], dtype=tl.int64) + fixed
    while lo < hi:
        pivots = pivots_between(lo, hi, PIVOTS)
        if ON_ROWS:
            bits_max, row_max = fixed_v, pivots
        else:
            bits_max, row_max = pivots, fixed_v
        counts = count_at_most_pivots(
            score_ptr,
            theta_bits_ptr,
            theta_row_ptr,
            row0,
            row1,
            frame0,
            T,
            bits_max,
            row_max,
            kept_side,
            CAND,
            BLOCK,
            PIVOTS,
        )
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
def frame_select_kernel(
    score_ptr,
    budget_ptr,
    offset_ptr,
    theta_bits_ptr,
    theta_row_ptr,
    index_ptr,
    mask_ptr,
    frame_row_start_ptr,
    FIND_THRESHOLD: tl.constexpr,
    COMPACT: tl.constexpr,
    BLOCK: tl.constexpr,
    IN_REGISTERS: tl.constexpr,
):
    i_f = tl.program_id(0)
    row0 = tl.load(frame_row_start_ptr + i_f)
    row1 = tl.load(frame_row_start_ptr + i_f + 1)
    k = tl.minimum(tl.maximum(tl.load(budget_ptr + i_f), 0), row1 - row0)
    if IN_REGISTERS:  # the whole frame fits one block (the host checked): load its keys once
        o_r = row0 + tl.arange(0, BLOCK)
        m_r = o_r < row1
        bits_r = order_key(tl.load(score_ptr + o_r, mask=m_r, other=0.0))
    if FIND_THRESHOLD:
        if IN_REGISTERS:
            t_bits, t_row = kth_smallest_in_block(bits_r, o_r, m_r, k)
        else:
            t_bits, t_row = kth_smallest_key(
                score_ptr, theta_bits_ptr, theta_row_ptr, row0, row1, i_f, row1 - row0, k, True, 0, BLOCK
            )
        t_bits = tl.where(k > 0, t_bits, NO_BITS)
        t_row = tl.where(k > 0, t_row, -1)
        tl.store(theta_bits_ptr + i_f, t_bits)
        tl.store(theta_row_ptr + i_f, t_row)
    else:
        t_bits = tl.load(theta_bits_ptr + i_f)
        t_row = tl.load(theta_row_ptr + i_f)
    if COMPACT and IN_REGISTERS:
        out0 = tl.load(offset_ptr + i_f)
        keep = m_r & key_at_most(bits_r, o_r, t_bits, t_row)
        pos = tl.cumsum(keep.to(tl.int64), axis=0) - 1
        keep = keep & (pos < k)  # never past the frame's slot
        tl.store(index_ptr + out0 + pos, o_r, mask=keep)
        tl.store(mask_ptr + o_r, keep, mask=m_r)
    if COMPACT and not IN_REGISTERS:
        out0 = tl.load(offset_ptr + i_f)
        written = k * 0
        for start in range(row0, row1, BLOCK):
            o = start + tl.arange(0, BLOCK)
            m = o < row1
            bits = order_key(tl.load(score_ptr + o, mask=m, other=0.0))
            keep = m & key_at_most(bits, o, t_bits, t_row)
            pos = written + tl.cumsum(keep.to(tl.int64), axis=0) - 1
            keep = keep & (pos < k)  # never past the frame's slot
            tl.store(index_ptr + out0 + pos, o, mask=keep)
            tl.store(mask_ptr + o, keep, mask=m)
            written += tl.sum(keep.to(tl.int64), axis=0)


@triton.jit
def reconcile_init_kernel(
    budget_ptr, state_ptr, hist_ptr, frame_start_ptr, tokens_per_frame_ptr, target_ptr, V, BLOCK_F: tl.constexpr
):
    """Per video: the kept total of the frame budgets against the target decides the side (drop:
    keep the ``target`` smallest kept keys; add: the ``target - total`` smallest others join), and
    the search starts over every score key."""
    i_v = tl.program_id(0)
    f0 = tl.load(frame_start_ptr + i_v)
    f1 = tl.load(frame_start_ptr + i_v + 1)
    T = tl.load(tokens_per_frame_ptr + i_v)
    target = tl.load(target_ptr + i_v)
    kept = tl.zeros([BLOCK_F], dtype=tl.int64)
    for s in range(f0, f1, BLOCK_F):
        o_f = s + tl.arange(0, BLOCK_F)
        kept += tl.minimum(tl.maximum(tl.load(budget_ptr + o_f, mask=o_f < f1, other=0), 0), T)
    total = tl.sum(kept, axis=0)
    drop = total > target
    tl.store(state_ptr + ACTIVE * V + i_v, ((total != target) & (f1 > f0)).to(tl.int64))
    tl.store(state_ptr + SIDE * V + i_v, drop.to(tl.int64))
    tl.store(state_ptr + RANK * V + i_v, tl.where(drop, target, target - total))
    tl.store(state_ptr + LO * V + i_v, total * 0 + INT32_MIN)
    tl.store(state_ptr + HI * V + i_v, total * 0 + INT32_MAX)
    tl.store(state_ptr + BITS_K * V + i_v, total * 0 + INT32_MAX)
    tl.store(hist_ptr + i_v.to(tl.int64) * NUM_BINS + tl.arange(0, NUM_BINS), tl.zeros([NUM_BINS], dtype=tl.int32))


@triton.jit
def search_bin(x, lo, hi):
    """Histogram bin of key values ``x`` for :func:`pivots_between`'s SEARCH_PIVOTS pivots of
    [lo, hi]: 0 below ``lo`` (under every pivot), i + 1 when the first pivot at or above x is the
    i-th, ABOVE when none is."""
    j = (x - lo) // part_step(lo, hi, SEARCH_PIVOTS)
    return tl.where(x < lo, 0, tl.where(x > hi, ABOVE, tl.minimum(j + 1, ABOVE))).to(tl.int32)


@triton.jit
def reconcile_count_kernel(
    score_ptr,
    theta_bits_ptr,
    theta_row_ptr,
    state_ptr,
    hist_ptr,
    split_row_start_ptr,
    split_video_ptr,
    row_start_ptr,
    frame_start_ptr,
    tokens_per_frame_ptr,
    V,
    ON_ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One search pass over a row split: the histogram of its candidates' keys over the pivots of
    its video's current range (score bits; with ``ON_ROWS``, rows among the keys of the found bits),
    added into the video's histogram (integer atomics: the sum is the same in any order)."""
    i_s = tl.program_id(0)
    i_v = tl.load(split_video_ptr + i_s)
    r0 = tl.load(split_row_start_ptr + i_s)
    r1 = tl.load(split_row_start_ptr + i_s + 1)
    lo = tl.load(state_ptr + LO * V + i_v)
    hi = tl.load(state_ptr + HI * V + i_v)
    bits_k = tl.load(state_ptr + BITS_K * V + i_v)
    searching = (tl.load(state_ptr + ACTIVE * V + i_v) != 0) & (lo < hi)
    kept_side = tl.load(state_ptr + SIDE * V + i_v) != 0
    row0 = tl.load(row_start_ptr + i_v)
    frame0 = tl.load(frame_start_ptr + i_v)
    T = tl.load(tokens_per_frame_ptr + i_v)
    hist = tl.zeros([NUM_BINS], dtype=tl.int32)
    end = tl.where(searching, r1, r0)  # nothing to count: no row is read
    for start in range(r0, end, BLOCK):
        o = start + tl.arange(0, BLOCK)
        m = o < end
        bits = order_key(tl.load(score_ptr + o, mask=m, other=0.0)).to(tl.int64)
        cand = is_candidate(bits, o, theta_bits_ptr, theta_row_ptr, row0, frame0, T, m, kept_side, 1)
        if ON_ROWS:  # keys (bits_k, row) against row pivots; other bits are below or above all
            b = tl.where(bits < bits_k, 0, tl.where(bits > bits_k, ABOVE, search_bin(o, lo, hi)))
        else:
            b = search_bin(bits, lo, hi)
        hist += tl.histogram(tl.where(cand, b, ABOVE), NUM_BINS)  # ABOVE: counted by no pivot
    bins = tl.arange(0, NUM_BINS)
    tl.atomic_add(hist_ptr + i_v * NUM_BINS + bins, hist, mask=bins < tl.where(searching, NUM_BINS, 0), sem="relaxed")


@triton.jit
def reconcile_narrow_kernel(state_ptr, hist_ptr, row_start_ptr, V, ON_ROWS: tl.constexpr, LAST: tl.constexpr):
    """Narrows a video's range to the part holding the k-th key, from its histogram (then zeroed
    for the next pass). After the last pass over score bits (``LAST``), the bits are found and
    the search moves on to the rows carrying them."""
    i_v = tl.program_id(0)
    lo = tl.load(state_ptr + LO * V + i_v)
    hi = tl.load(state_ptr + HI * V + i_v)
    k = tl.load(state_ptr + RANK * V + i_v)
    p_hist = hist_ptr + i_v.to(tl.int64) * NUM_BINS + tl.arange(0, NUM_BINS)
    hist = tl.load(p_hist).to(tl.int64)
    tl.store(p_hist, tl.zeros([NUM_BINS], dtype=tl.int32))
    counts = tl.cumsum(hist, axis=0)  # counts[i + 1]: keys at most pivot i
    j = tl.arange(0, NUM_BINS)
    first = tl.sum(((j >= 1) & (j <= SEARCH_PIVOTS) & (counts < k)).to(tl.int64), axis=0)
    new_lo, new_hi = narrowed(lo, hi, first, SEARCH_PIVOTS)
    searching = (tl.load(state_ptr + ACTIVE * V + i_v) != 0) & (lo < hi)
    lo = tl.where(searching, new_lo, lo)
    hi = tl.where(searching, new_hi, hi)
    if LAST and not ON_ROWS:  # the score bits are found: search the rows with those bits
        tl.store(state_ptr + BITS_K * V + i_v, lo)
        lo = tl.load(row_start_ptr + i_v)
        hi = tl.load(row_start_ptr + i_v + 1) - 1
    tl.store(state_ptr + LO * V + i_v, lo)
    tl.store(state_ptr + HI * V + i_v, hi)


@triton.jit
def reconcile_frames_kernel(
    score_ptr,
    theta_bits_ptr,
    theta_row_ptr,
    state_ptr,
    final_budget_ptr,
    frame_row_start_ptr,
    frame_video_ptr,
    V,
    BLOCK: tl.constexpr,
):
    """Per frame: the video threshold tau = (bits_k, row_k) replaces the frame's own when it is
    lower (drop) or higher (add); the frame's final budget is the count of its keys under it."""
    f = tl.program_id(0)
    i_v = tl.load(frame_video_ptr + f)
    active = tl.load(state_ptr + ACTIVE * V + i_v) != 0
    drop = active & (tl.load(state_ptr + SIDE * V + i_v) != 0)
    add = active & ~drop
    tau_bits = tl.load(state_ptr + BITS_K * V + i_v)
    tau_row = tl.load(state_ptr + LO * V + i_v)
    t_bits = tl.load(theta_bits_ptr + f)
    t_row = tl.load(theta_row_ptr + f)
    tau_first = key_at_most(tau_bits, tau_row, t_bits, t_row)
    use_tau = (drop & tau_first) | (add & ~tau_first)
    t_bits = tl.where(use_tau, tau_bits, t_bits)
    t_row = tl.where(use_tau, tau_row, t_row)
    tl.store(theta_bits_ptr + f, t_bits)
    tl.store(theta_row_ptr + f, t_row)
    fr0 = tl.load(frame_row_start_ptr + f)
    fr1 = tl.load(frame_row_start_ptr + f + 1)
    n = count_at_most(score_ptr, theta_bits_ptr, theta_row_ptr, fr0, fr1, f, fr1 - fr0, t_bits, t_row, True, 0, BLOCK)
    tl.store(final_budget_ptr + f, n.to(tl.int64))


def search_passes(size: int) -> int:
    """Passes that narrow a range of ``size`` values to one (each keeps 1 / (SEARCH_PIVOTS + 1))."""
    passes = 0
    while size > 1:
        size = -(-size // (SEARCH_PIVOTS + 1))
        passes += 1
    return passes


def frame_block(layout) -> int:
    return max(16, min(1024, triton.next_power_of_2(int(layout.tokens_per_frame.max()))))


def select_config(layout) -> dict:
    block = frame_block(layout)
    in_registers = int(layout.tokens_per_frame.max()) <= block
    return {"BLOCK": block, "IN_REGISTERS": in_registers, "num_warps": 4 if block <= 512 else 8}


def reconcile_config(layout) -> dict:
    return {"BLOCK": 256, "num_warps": 4}


def frame_select(scores, budgets, offsets, meta: DeviceLayout, num_kept: int):
    """Non-exact mode: ``budgets`` (F,) with output ``offsets`` (F,). Returns indices (K,), mask (N,)."""
    layout, dev = meta.layout, scores.device
    F = layout.total_frames
    indices = new_output(num_kept, torch.int64, dev)
    mask = new_output(layout.num_tokens, torch.bool, dev)
    theta = new_output((2, F), torch.int64, dev)
    frame_select_kernel[(F,)](
        scores,
        budgets,
        offsets,
        theta[0],
        theta[1],
        indices,
        mask,
        meta.frame_row_start,
        FIND_THRESHOLD=True,
        COMPACT=True,
        **select_config(layout),
    )
    return indices, mask


def frame_select_reconcile(scores, budgets, meta: DeviceLayout, num_kept: int):
    """Exact mode: per-frame thresholds, the per-video reconcile to ``meta.targets``, then the
    compaction. Returns indices (K,), mask (N,), final budgets (F,)."""
    layout, dev = meta.layout, scores.device
    F = layout.total_frames
    indices = new_output(num_kept, torch.int64, dev)
    mask = new_output(layout.num_tokens, torch.bool, dev)
    final_budgets = new_output(F, torch.int64, dev)
    theta = new_output((2, F), torch.int64, dev)
    cfg = select_config(layout)
    frame_select_kernel[(F,)](
        scores,
        budgets,
        final_budgets,  # offsets: not read without COMPACT
        theta[0],
        theta[1],
        indices,
        mask,
        meta.frame_row_start,
        FIND_THRESHOLD=True,
        COMPACT=False,
        **cfg,
    )
    V, cfg_r = layout.num_videos, reconcile_config(layout)
    state = new_output((6, V), torch.int64, dev)
    hist = new_output((V, int(NUM_BINS)), torch.int32, dev)  # zeroed by the init kernel
    reconcile_init_kernel[(V,)](
        budgets,
        state,
        hist,
        meta.frame_start,
        meta.tokens_per_frame,
        meta.targets,
        V,
        **frame_budgets_config(layout),  # a loop over each video's frames, as there
    )
    bits_passes = search_passes(2**32)
    row_passes = search_passes(int(layout.tokens_per_video.max()))
    for on_rows, passes in ((False, bits_passes), (True, row_passes)):
        for p in range(passes):
            reconcile_count_kernel[(meta.num_splits,)](
                scores,
                theta[0],
                theta[1],
                state,
                hist,
                meta.split_row_start,
                meta.split_video,
                meta.row_start,
                meta.frame_start,
                meta.tokens_per_frame,
                V,
                ON_ROWS=on_rows,
                **cfg_r,
            )
            reconcile_narrow_kernel[(V,)](state, hist, meta.row_start, V, ON_ROWS=on_rows, LAST=p == passes - 1)
    reconcile_frames_kernel[(F,)](
        scores, theta[0], theta[1], state, final_budgets, meta.frame_row_start, meta.frame_video, V, **cfg_r
    )
    final_budgets, offsets, _ = budget_offsets(final_budgets, meta)
    frame_select_kernel[(F,)](
        scores,
        final_budgets,
        offsets,
        theta[0],
        theta[1],
        indices,
        mask,
        meta.frame_row_start,
        FIND_THRESHOLD=False,
        COMPACT=True,
        **cfg,
    )
    return indices, mask, final_budgets
