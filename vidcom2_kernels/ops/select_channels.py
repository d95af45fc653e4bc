"""Step 1, channel choice: per-video channel variance (one read of the features) and the rank of
every channel among its video's variances.

Kernels
-------
``channel_variance_kernel``  grid (S, cdiv(C, BLOCK_C)), S row splits of at most SPLIT_ROWS rows
    of one video (so one short video fills the GPU too): a program streams its split in tiles of
    BLOCK_N, merging tile means and squared deviations (Chan et al.), so the variance is as
    accurate as a two-pass one, and stores the split's (mean, m2). Flags the video in
    its own slot of ``flags`` (S, cdiv(C, BLOCK_C)) when a value it reads is NaN, Inf or of
    magnitude >= MAX_ABS (every slot written: no zeroing launch).
    Program (0, 0) also zeroes the per-video arrival counters of the next launch.
``channel_keep_kernel``  grid (V, cdiv(C, BLOCK_C)): merges the video's splits in split order
    (deterministic) into the variance of its channel block; the last block of the video to finish
    (:func:`.common.last_to_arrive`) keeps the ``max(1, C // 2)`` smallest (variance, index)
    keys: the k-th smallest key by the pivot search of :mod:`.select_tokens` over the stored
    variances (C floats), a channel kept when its key is at most that one. The result is a (V, C)
    mask (later stages multiply by it instead of copying the chosen channels out), and the
    video's non-finite flag (the OR of its splits' slots).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..buffers import new_output
from ..constants import MAX_ABS, kept_channels
from .common import DeviceLayout, cdiv, key_at_most, last_to_arrive, launch_config, next_pow2, order_key
from .select_tokens import SEARCH_BLOCK, kth_smallest_key


@triton.jit
def merge_tile(b_x, m_n, n_seen, n_tile, mean, m2):
    """Chan et al.'s merge of a (BLOCK_N, BLOCK_C) tile (rows ``m_n`` valid, ``n_tile`` of them)
    into the running (mean, m2) of ``n_seen`` rows."""
    n_seen = n_seen.to(tl.float32)
    n_tile = n_tile.to(tl.float32)
    tile_mean = tl.sum(b_x, axis=0) / n_tile
    b_dev = tl.where(m_n[:, None], b_x - tile_mean[None, :], 0.0)
    return merge_moments(mean, m2, n_seen, tile_mean, tl.sum(b_dev * b_dev, axis=0), n_tile)


@triton.jit
def merge_moments(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    """(mean, m2) of the union of two row sets from theirs (float32 counts, ``n_b`` > 0)."""
    n = n_a + n_b
    delta = mean_b - mean_a
    return mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * n_b / n)


@triton.jit(do_not_specialize=["num_col_blocks", "V"])
def channel_variance_kernel(
    x_ptr,
    mean_ptr,
    m2_ptr,
    flag_ptr,
    arrivals_ptr,
    split_row_start_ptr,
    C,
    stride_n,
    stride_c,
    max_abs,
    num_col_blocks,
    V,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_s = tl.program_id(0)
    i_c = tl.program_id(1)
    if (i_s == 0) & (i_c == 0):  # for the next launch (a video without rows has no split here)
        for v in range(0, V):
            tl.store(arrivals_ptr + v, 0)
    row0 = tl.load(split_row_start_ptr + i_s)
    row1 = tl.load(split_row_start_ptr + i_s + 1)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    n_bad = tl.zeros([BLOCK_C], dtype=tl.int32)  # values that are NaN, Inf or >= max_abs in magnitude
    for start in range(row0, row1, BLOCK_N):
        o_n = start + tl.arange(0, BLOCK_N)
        m_n = o_n < row1
        p_x = x_ptr + o_n[:, None].to(tl.int64) * stride_n + o_c[None, :].to(tl.int64) * stride_c
        b_x = tl.load(p_x, mask=m_n[:, None] & m_c[None, :], other=0.0).to(tl.float32)
        n_bad += tl.sum((~(tl.abs(b_x) < max_abs)).to(tl.int32), axis=0)
        mean, m2 = merge_tile(b_x, m_n, start - row0, tl.minimum(row1 - start, BLOCK_N), mean, m2)
    tl.store(flag_ptr + i_s.to(tl.int64) * num_col_blocks + i_c, (tl.sum(n_bad, axis=0) > 0).to(tl.int32))
    tl.store(mean_ptr + i_s.to(tl.int64) * C + o_c, mean, mask=m_c)
    tl.store(m2_ptr + i_s.to(tl.int64) * C + o_c, m2, mask=m_c)


@triton.jit(do_not_specialize=["num_col_blocks", "n_keep"])
def channel_keep_kernel(
    mean_ptr,
    m2_ptr,
    flag_ptr,
    var_ptr,
    keep_ptr,
    nonfinite_ptr,
    arrivals_ptr,
    split_row_start_ptr,
    video_split_start_ptr,
    C,
    num_col_blocks,
    n_keep,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    i_v = tl.program_id(0)
    i_c = tl.program_id(1)
    s0 = tl.load(video_split_start_ptr + i_v)
    s1 = tl.load(video_split_start_ptr + i_v + 1)
    row0 = tl.load(split_row_start_ptr + s0)
    n_rows = (tl.load(split_row_start_ptr + s1) - row0).to(tl.float32)
    p_var = var_ptr + i_v.to(tl.int64) * C
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for s in range(s0, s1):  # in split order: the same variance whatever the schedule
        n_seen = tl.load(split_row_start_ptr + s) - row0
        n_split = tl.load(split_row_start_ptr + s + 1) - tl.load(split_row_start_ptr + s)
        mean, m2 = merge_moments(
            mean,
            m2,
            n_seen.to(tl.float32),
            tl.load(mean_ptr + s * C + o_c, mask=m_c, other=0.0),
            tl.load(m2_ptr + s * C + o_c, mask=m_c, other=0.0),
            n_split.to(tl.float32),
        )
    var = m2 / n_rows
    tl.store(p_var + o_c, tl.where(var != var, float("inf"), var), mask=m_c)  # NaN ranks last
    if last_to_arrive(arrivals_ptr + i_v, tl.num_programs(1)):  # every block's variances are stored
        bad = tl.zeros([BLOCK_B], dtype=tl.int32)
        for s in range(s0, s1):
            for b0 in range(0, num_col_blocks, BLOCK_B):
                o_b = b0 + tl.arange(0, BLOCK_B)
                bad += tl.load(flag_ptr + s * num_col_blocks + o_b, mask=o_b < num_col_blocks, other=0)
        tl.store(nonfinite_ptr + i_v, (tl.sum(bad, axis=0) > 0).to(tl.int64))
        first = s0 * 0  # channel 0 as an int64, like a row number
        bits_k, index_k = kth_smallest_key(p_var, first, first + C, n_keep, SEARCH_BLOCK)
        for c0 in range(0, C, BLOCK_K):
            o_k = c0 + tl.arange(0, BLOCK_K)
            m_k = o_k < C
            bits = order_key(tl.load(p_var + o_k, mask=m_k, other=0.0, cache_modifier=".cg"))
            tl.store(keep_ptr + i_v.to(tl.int64) * C + o_k, key_at_most(bits, o_k, bits_k, index_k), mask=m_k)


@launch_config
def variance_config(C: int) -> dict:
    return {"BLOCK_N": 64, "BLOCK_C": 32 if C >= 32 else next_pow2(C), "num_warps": 4}


@launch_config
def keep_config(C: int) -> dict:
    return {"BLOCK_C": min(32, next_pow2(C)), "BLOCK_K": 512, "BLOCK_B": 128, "num_warps": 4}


def select_channels(features: torch.Tensor, meta: DeviceLayout, nonfinite: torch.Tensor) -> torch.Tensor:
    """(V, C) bool keep mask: per video the ``max(1, C // 2)`` channels of lowest biased variance
    (NaN as +inf), lower index first on ties; writes every ``nonfinite[v]`` (int64 0/1). Two
    launches: the moments of every row split, then their merge and the channel choice per video."""
    V, C = meta.layout.num_videos, features.shape[1]
    S, dev = meta.num_splits, features.device
    cfg = variance_config(C)
    num_col_blocks = cdiv(C, cfg["BLOCK_C"])
    mean, m2 = new_output((2, S, C), torch.float32, dev)  # one allocation each for the floats and the ints
    counters = new_output(S * num_col_blocks + V, torch.int32, dev)
    flags = counters[: S * num_col_blocks].view(S, num_col_blocks)
    arrivals = counters[S * num_col_blocks :]  # zeroed by the first launch
    channel_variance_kernel[(S, num_col_blocks)](
        features,
        mean,
        m2,
        flags,
        arrivals,
        meta.split_row_start,
        C,
        features.stride(0),
        features.stride(1),
        MAX_ABS,
        num_col_blocks,
        V,
        **cfg,
    )
    var = new_output((V, C), torch.float32, dev)
    keep = new_output((V, C), torch.bool, dev)
    cfg = keep_config(C)
    channel_keep_kernel[(V, cdiv(C, cfg["BLOCK_C"]))](
        mean,
        m2,
        flags,
        var,
        keep,
        nonfinite,
        arrivals,
        meta.split_row_start,
        meta.video_split_start,
        C,
        num_col_blocks,
        kept_channels(C),
        **cfg,
    )
    return keep
