"""DyCoke's token scores: cosine similarity of every token with the same-position token of its
frame's anchor frame. One read of the features (plus the anchor rows, mostly from cache).

``dycoke_similarity_kernel``  grid (U,), one program per row unit (<= UNIT_ROWS rows of one frame):
    ``x.y / (max(|x|, 1e-8) max(|y|, 1e-8))`` against row ``anchor_start + (row - frame_start)``,
    0 where the frame has no anchor; NaN as +inf. Flags the video in ``nonfinite`` when a row of
    the unit holds NaN, Inf or a value of magnitude >= MAX_ABS (the validation read-back). The selection then reuses :mod:`.select_tokens`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..buffers import new_output
from ..constants import COSINE_EPS, MAX_ABS
from .common import UNIT_ROWS, DeviceLayout, clamp_min, launch_config, next_pow2, unit_rows


@triton.jit
def dycoke_similarity_kernel(
    x_ptr,
    score_ptr,
    nonfinite_ptr,
    anchor_ptr,
    frame_row_start_ptr,
    unit_row_start_ptr,
    unit_rows_ptr,
    unit_video_ptr,
    unit_frame_ptr,
    C,
    stride_n,
    stride_c,
    eps,
    max_abs,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_u, row0, o_n, m_n = unit_rows(unit_row_start_ptr, unit_rows_ptr, BLOCK_N)
    i_v = tl.load(unit_video_ptr + i_u)
    i_f = tl.load(unit_frame_ptr + i_u)
    anchor = tl.load(anchor_ptr + i_f)
    has_anchor = anchor >= 0
    # rows of the anchor frame at the same positions (the unit's own rows when there is none)
    shift = tl.where(
        has_anchor, tl.load(frame_row_start_ptr + tl.maximum(anchor, 0)) - tl.load(frame_row_start_ptr + i_f), 0
    )
    p_x = x_ptr + (row0 + o_n).to(tl.int64)[:, None] * stride_n
    p_y = x_ptr + (row0 + shift + o_n).to(tl.int64)[:, None] * stride_n
    dot = tl.zeros([BLOCK_N], dtype=tl.float32)
    xx = tl.zeros([BLOCK_N], dtype=tl.float32)
    yy = tl.zeros([BLOCK_N], dtype=tl.float32)
    bad = tl.zeros([BLOCK_N], dtype=tl.int32)
    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)
        m = m_n[:, None] & (o_c < C)[None, :]
        off_c = o_c[None, :].to(tl.int64) * stride_c
        b_x = tl.load(p_x + off_c, mask=m, other=0.0).to(tl.float32)
        b_y = tl.load(p_y + off_c, mask=m, other=0.0).to(tl.float32)
        dot += tl.sum(b_x * b_y, axis=1)
        xx += tl.sum(b_x * b_x, axis=1)
        yy += tl.sum(b_y * b_y, axis=1)
        bad += tl.sum((~(tl.abs(b_x) < max_abs)).to(tl.int32), axis=1)
    norms = clamp_min(tl.sqrt(xx), eps) * clamp_min(tl.sqrt(yy), eps)
    score = tl.where(has_anchor, dot / norms, 0.0)
    score = tl.where(score != score, float("inf"), score)
    tl.store(score_ptr + row0 + o_n, score, mask=m_n)
    tl.store(nonfinite_ptr + i_v, 1, mask=tl.sum(tl.where(m_n, bad, 0), axis=0) > 0)


@launch_config
def similarity_config(C: int) -> dict:
    # two tiles (the rows and their anchor rows) live at once: half the scores kernel's width
    return {"BLOCK_N": UNIT_ROWS, "BLOCK_C": min(32, next_pow2(C)), "num_warps": 4}


def dycoke_similarity(
    features: torch.Tensor, meta: DeviceLayout, anchors: torch.Tensor, nonfinite: torch.Tensor
) -> torch.Tensor:
    """(N,) float32 similarities; ``anchors`` (F,) int64 on the device; sets ``nonfinite[v]``."""
    N, C = features.shape
    scores = new_output(N, torch.float32, features.device)
    dycoke_similarity_kernel[(meta.num_units,)](
        features,
        scores,
        nonfinite,
        anchors,
        meta.frame_row_start,
        meta.unit_row_start,
        meta.unit_rows,
        meta.unit_video,
        meta.unit_frame,
        C,
        features.stride(0),
        features.stride(1),
        COSINE_EPS,
        MAX_ABS,
        **similarity_config(C),
    )
    return scores
