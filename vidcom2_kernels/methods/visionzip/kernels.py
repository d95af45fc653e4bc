"""VisionZip's Triton kernel: the density of every non-dominant token, fused.

``density_kernel``  grid (U,), one program per row unit (<= UNIT_ROWS rows of one frame): streams
    the frame's rows in tiles of BLOCK_N, the cosine similarities of the unit's rows with the tile
    (one ``tl.dot`` per channel block, IEEE float32, scaled by both rows' ``1 / max(|x|, 1e-12)``),
    the dominant columns masked out, and keeps each row's KP largest similarities in registers
    (KP rounds of max-extraction over the running list and the tile). The density is the mean of
    ranks 1 .. k-1 of that list (rank 0, normally the row itself, dropped), k = min(k_neighbors + 1,
    the frame's non-dominant tokens). A NaN similarity ranks above every number (as in
    ``torch.topk``), so one NaN takes rank 0 and a second makes the density NaN. Writes
    the order keys: -inf for a dominant row, ``-density`` otherwise, NaN as +inf. Reads each
    frame's rows ceil(T / UNIT_ROWS) times (from L2 for the frames of these models).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...buffers import new_output
from ...ops.common import (
    UNIT_ROWS,
    DeviceLayout,
    clamp_min,
    launch_config,
    next_pow2,
    row_squares,
    tile_products,
    unit_rows,
)
from .plan import NORMALIZE_EPS


@triton.jit
def density_kernel(
    x_ptr,
    dominant_ptr,
    dominant_count_ptr,
    score_ptr,
    frame_row_start_ptr,
    unit_row_start_ptr,
    unit_rows_ptr,
    unit_frame_ptr,
    C,
    stride_n,
    stride_c,
    eps,
    k_plus_one,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    KP: tl.constexpr,
):
    i_u, row0, o_m, m_m = unit_rows(unit_row_start_ptr, unit_rows_ptr, BLOCK_M)
    i_f = tl.load(unit_frame_ptr + i_u)
    f0 = tl.load(frame_row_start_ptr + i_f)
    f1 = tl.load(frame_row_start_ptr + i_f + 1)
    p_i = x_ptr + (row0 + o_m).to(tl.int64)[:, None] * stride_n
    ii = row_squares(p_i, m_m, C, stride_c, BLOCK_M, BLOCK_C)
    inv_i = 1.0 / clamp_min(tl.sqrt(ii), eps)
    o_k = tl.arange(0, KP)
    o_t = tl.arange(0, BLOCK_N)
    best = tl.full([BLOCK_M, KP], float("-inf"), dtype=tl.float32)
    for j0 in range(f0, f1, BLOCK_N):
        o_j = j0 + o_t
        m_j = o_j < f1
        p_j = x_ptr + o_j.to(tl.int64)[:, None] * stride_n
        acc, jj = tile_products(p_i, m_m, p_j, m_j, C, stride_c, BLOCK_M, BLOCK_N, BLOCK_C)
        sim = acc * inv_i[:, None] * (1.0 / clamp_min(tl.sqrt(jj), eps))[None, :]
        dominant_j = tl.load(dominant_ptr + o_j, mask=m_j, other=1)
        valid = m_j[None, :] & (dominant_j == 0)[None, :]
        # NaN ranks above every number, as in torch.topk: held as +inf in the list
        sim = tl.where(valid, tl.where(sim == sim, sim, float("inf")), float("-inf"))
        merged = tl.full([BLOCK_M, KP], float("-inf"), dtype=tl.float32)
        for r in range(KP):  # the KP largest of the running list and the tile, descending
            top_best = tl.max(best, axis=1)
            top_sim = tl.max(sim, axis=1)
            from_best = top_best >= top_sim
            merged = tl.where(o_k[None, :] == r, tl.where(from_best, top_best, top_sim)[:, None], merged)
            first_best = tl.argmax(best, axis=1, tie_break_left=True)
            first_sim = tl.argmax(sim, axis=1, tie_break_left=True)
            best = tl.where(from_best[:, None] & (o_k[None, :] == first_best[:, None]), float("-inf"), best)
            sim = tl.where(~from_best[:, None] & (o_t[None, :] == first_sim[:, None]), float("-inf"), sim)
        best = merged
    k = tl.minimum(k_plus_one, (f1 - f0) - tl.load(dominant_count_ptr + i_f))
    used = (o_k >= 1) & (o_k < k)
    density = tl.sum(tl.where(used[None, :], best, 0.0), axis=1) / (k - 1).to(tl.float32)  # 0 / 0: NaN
    density = tl.where(density == float("inf"), float("nan"), density)  # a NaN among ranks 1 .. k-1
    dominant_i = tl.load(dominant_ptr + row0 + o_m, mask=m_m, other=1)
    score = tl.where(dominant_i != 0, float("-inf"), -density)
    score = tl.where(score != score, float("inf"), score)
    tl.store(score_ptr + row0 + o_m, score, mask=m_m)


@launch_config
def density_config(C: int, k_plus_one: int) -> dict:
    # channel blocks of 16: with 32 the float32 tiles spill at sm_80 (triton 3.6 and 3.9)
    return {
        "BLOCK_M": UNIT_ROWS,
        "BLOCK_N": 32,
        "BLOCK_C": min(16, next_pow2(C)),
        "KP": next_pow2(k_plus_one),
        "num_warps": 4,
    }


def density_scores(
    features: torch.Tensor, meta: DeviceLayout, dominant: torch.Tensor, dominant_count: torch.Tensor, k_neighbors: int
) -> torch.Tensor:
    """(N,) float32 order keys: -inf for ``dominant`` (N,) rows, ``-density`` for the others;
    ``dominant_count`` (F,) int64 the dominant tokens of each frame."""
    N, C = features.shape
    scores = new_output(N, torch.float32, features.device)
    density_kernel[(meta.num_units,)](
        features,
        dominant,
        dominant_count,
        scores,
        meta.frame_row_start,
        meta.unit_row_start,
        meta.unit_rows,
        meta.unit_frame,
        C,
        features.stride(0),
        features.stride(1),
        NORMALIZE_EPS,
        k_neighbors + 1,
        **density_config(C, k_neighbors + 1),
    )
    return scores
