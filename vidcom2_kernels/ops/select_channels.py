"""Step 1, channel choice: per-video channel variance (one read of the features) and the rank of
every channel among its video's variances.

Kernels
-------
``channel_variance_kernel``  grid (S, cdiv(C, BLOCK_C)), S row splits of at most SPLIT_ROWS rows
    of one video (so one short video fills the GPU too): a program streams its split in tiles of
    BLOCK_N, merging tile means and squared deviations (Chan et al.), so the variance is as
    accurate as a two-pass one, and stores the split's (mean, m2). Flags the video in
    ``nonfinite`` when a value it reads is NaN, Inf or of magnitude >= MAX_ABS.
``variance_merge_kernel``  grid (V, cdiv(C, BLOCK_C)): merges a video's splits in split order
    (deterministic, no atomics) into the variance.
``channel_rank_kernel``  grid (V, cdiv(C, BLOCK_I)): a channel is kept when fewer than
    ``max(1, C // 2)`` channels come before it in (variance, index) order. The result is a (V, C)
    mask: later stages multiply by it instead of copying the chosen channels out.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..buffers import new_output
from ..constants import MAX_ABS, kept_channels
from .common import DeviceLayout, num_warps_for


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


@triton.jit
def channel_variance_kernel(
    x_ptr,
    mean_ptr,
    m2_ptr,
    nonfinite_ptr,
    split_row_start_ptr,
    split_video_ptr,
    C,
    stride_n,
    stride_c,
    max_abs,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_s = tl.program_id(0)
    i_c = tl.program_id(1)
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
    tl.store(nonfinite_ptr + tl.load(split_video_ptr + i_s), 1, mask=tl.sum(n_bad, axis=0) > 0)
    tl.store(mean_ptr + i_s.to(tl.int64) * C + o_c, mean, mask=m_c)
    tl.store(m2_ptr + i_s.to(tl.int64) * C + o_c, m2, mask=m_c)


@triton.jit
def variance_merge_kernel(
    mean_ptr, m2_ptr, var_ptr, split_row_start_ptr, video_split_start_ptr, C, BLOCK_C: tl.constexpr
):
    i_v = tl.program_id(0)
    i_c = tl.program_id(1)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    s0 = tl.load(video_split_start_ptr + i_v)
    s1 = tl.load(video_split_start_ptr + i_v + 1)
    row0 = tl.load(split_row_start_ptr + s0)
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
    var = m2 / (tl.load(split_row_start_ptr + s1) - row0).to(tl.float32)
    var = tl.where(var != var, float("inf"), var)  # NaN ranks last, like the reference
    tl.store(var_ptr + i_v.to(tl.int64) * C + o_c, var, mask=m_c)


@triton.jit
def channel_rank_kernel(var_ptr, keep_ptr, C, n_keep, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    i_v = tl.program_id(0)
    i_c = tl.program_id(1)
    p_var = var_ptr + i_v.to(tl.int64) * C
    o_i = i_c * BLOCK_I + tl.arange(0, BLOCK_I)
    m_i = o_i < C
    b_vi = tl.load(p_var + o_i, mask=m_i, other=float("inf"))
    rank = tl.zeros([BLOCK_I], dtype=tl.int32)
    for j0 in range(0, C, BLOCK_J):
        o_j = j0 + tl.arange(0, BLOCK_J)
        m_j = o_j < C
        b_vj = tl.load(p_var + o_j, mask=m_j, other=float("inf"))
        before = (b_vj[None, :] < b_vi[:, None]) | ((b_vj[None, :] == b_vi[:, None]) & (o_j[None, :] < o_i[:, None]))
        rank += tl.sum((before & m_j[None, :]).to(tl.int32), axis=1)
    tl.store(keep_ptr + i_v.to(tl.int64) * C + o_i, rank < n_keep, mask=m_i)


def variance_config(C: int) -> dict:
    return {"BLOCK_N": 64, "BLOCK_C": 32 if C >= 32 else triton.next_power_of_2(C), "num_warps": 4}


def merge_config(C: int) -> dict:
    return {"BLOCK_C": 32 if C >= 32 else triton.next_power_of_2(C), "num_warps": 1}


def rank_config(C: int) -> dict:
    block = 64 if C >= 64 else triton.next_power_of_2(C)
    return {"BLOCK_I": block, "BLOCK_J": block, "num_warps": num_warps_for(block * block)}


def channel_variance(features: torch.Tensor, meta: DeviceLayout, nonfinite: torch.Tensor) -> torch.Tensor:
    """(V, C) float32 biased variance (NaN as +inf); sets ``nonfinite[v] = 1`` for bad videos.
    Two launches: the moments of every row split, then their merge per video in split order."""
    V, C = meta.layout.num_videos, features.shape[1]
    S = meta.num_splits
    mean = new_output((S, C), torch.float32, features.device)
    m2 = new_output((S, C), torch.float32, features.device)
    cfg = variance_config(C)
    channel_variance_kernel[(S, triton.cdiv(C, cfg["BLOCK_C"]))](
        features,
        mean,
        m2,
        nonfinite,
        meta.split_row_start,
        meta.split_video,
        C,
        features.stride(0),
        features.stride(1),
        MAX_ABS,
        **cfg,
    )
    var = new_output((V, C), torch.float32, features.device)
    cfg = merge_config(C)
    variance_merge_kernel[(V, triton.cdiv(C, cfg["BLOCK_C"]))](
        mean, m2, var, meta.split_row_start, meta.video_split_start, C, **cfg
    )
    return var


def channel_rank(var: torch.Tensor) -> torch.Tensor:
    """(V, C) bool: ``max(1, C // 2)`` lowest variances per row, lower index first on ties."""
    V, C = var.shape
    keep = new_output((V, C), torch.bool, var.device)
    cfg = rank_config(C)
    channel_rank_kernel[(V, triton.cdiv(C, cfg["BLOCK_I"]))](var, keep, C, kept_channels(C), **cfg)
    return keep
