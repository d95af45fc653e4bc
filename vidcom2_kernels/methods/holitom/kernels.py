"""HoliTom's Triton kernels: the scorer, in two launches over the whole batch.

``token_cosines_kernel``  grid (U,), one program per row unit (<= UNIT_ROWS rows of one frame):
    in channel blocks, its rows and the same tokens' rows in the next frame of the video: each
    row's score ``-||x||`` (NaN as +inf), its cosine with the next frame ``dot / (max(|a|, eps) *
    max(|b|, eps))`` (-inf on a video's last frame), and its video's validation flag (NaN, Inf or
    a magnitude >= max_abs; an integer atomic max). Every row is read twice (as itself and as the
    previous frame's next), by programs that all run at once.
``static_runs_kernel``  grid (token blocks, V): one program per BLOCK_T tokens of one video walks
    its frames from the last to the first over the cosines: the run is one more than the next
    frame's while the cosine is above tau, else 0 (0 on the last frame). It reads N floats.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...backends.triton_backend import check_rows, per_video_out
from ...buffers import new_output
from ...constants import MAX_ABS, NORM_EPS
from ...layout import VideoLayout
from ...ops.common import UNIT_ROWS, cdiv, device_layout, launch_config, next_pow2, unit_rows


@triton.jit
def token_cosines_kernel(
    x_ptr,
    score_ptr,
    cosine_ptr,
    flag_ptr,
    unit_row_start_ptr,
    unit_rows_ptr,
    unit_frame_ptr,
    frame_video_ptr,
    frame_start_ptr,
    frame_tokens_ptr,
    C,
    stride_n,
    stride_c,
    eps,
    max_abs,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_u, row0, o_m, m_m = unit_rows(unit_row_start_ptr, unit_rows_ptr, BLOCK_M)
    frame = tl.load(unit_frame_ptr + i_u)
    video = tl.load(frame_video_ptr + frame)
    has_next = (frame + 1 + o_m * 0) < tl.load(frame_start_ptr + video + 1)  # (BLOCK_M,), all alike
    next_rows = tl.where(has_next, tl.load(frame_tokens_ptr + frame), 0)  # the same tokens, a frame later
    p_a = x_ptr + (row0 + o_m).to(tl.int64)[:, None] * stride_n
    sq_a = tl.zeros([BLOCK_M], dtype=tl.float32)
    sq_b = tl.zeros([BLOCK_M], dtype=tl.float32)
    dot = tl.zeros([BLOCK_M], dtype=tl.float32)
    n_bad = tl.zeros([BLOCK_M], dtype=tl.int32)
    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)
        m = m_m[:, None] & (o_c < C)[None, :]
        p = p_a + o_c[None, :].to(tl.int64) * stride_c
        a = tl.load(p, mask=m, other=0.0).to(tl.float32)
        b = tl.load(p + next_rows.to(tl.int64)[:, None] * stride_n, mask=m & has_next[:, None], other=0.0)
        b = b.to(tl.float32)
        sq_a += tl.sum(a * a, axis=1)
        sq_b += tl.sum(b * b, axis=1)
        dot += tl.sum(a * b, axis=1)
        n_bad += tl.sum((~(tl.abs(a) < max_abs)).to(tl.int32), axis=1)
    norm = tl.sqrt_rn(sq_a)
    denominator = tl.maximum(norm, eps) * tl.maximum(tl.sqrt_rn(sq_b), eps)
    cosine = tl.where(has_next, tl.fdiv(dot, denominator, ieee_rounding=True), float("-inf"))
    score = -norm
    tl.store(score_ptr + row0 + o_m, tl.where(score == score, score, float("inf")), mask=m_m)
    tl.store(cosine_ptr + row0 + o_m, cosine, mask=m_m)
    tl.atomic_max(flag_ptr + video, (tl.sum(n_bad, axis=0) > 0).to(tl.int64))


@triton.jit
def static_runs_kernel(cosine_ptr, run_ptr, row_start_ptr, num_frames_ptr, tokens_ptr, tau, BLOCK_T: tl.constexpr):
    i_b, i_v = tl.program_id(0), tl.program_id(1)
    T = tl.load(tokens_ptr + i_v)
    t = tl.load(num_frames_ptr + i_v)
    o_t = i_b * BLOCK_T + tl.arange(0, BLOCK_T)
    m_t = (o_t < T) & (o_t < t * T)  # nothing in a video of no frames
    rows = tl.load(row_start_ptr + i_v) + (t - 1) * T + o_t  # the last frame: run 0
    run = tl.zeros([BLOCK_T], dtype=tl.float32)
    tl.store(run_ptr + rows, run, mask=m_t)
    for _ in range(1, t):  # frames t - 2 .. 0
        rows -= T
        run = tl.where(tl.load(cosine_ptr + rows, mask=m_t, other=float("-inf")) > tau, run + 1.0, 0.0)
        tl.store(run_ptr + rows, run, mask=m_t)


@launch_config
def cosines_config(C: int) -> dict:
    """A unit's rows x 64 channels a load, twice (the rows and the next frame's)."""
    return {"BLOCK_M": UNIT_ROWS, "BLOCK_C": min(64, next_pow2(C)), "num_warps": 4}


@launch_config
def runs_config(max_tokens: int) -> dict:
    return {"BLOCK_T": min(256, next_pow2(max_tokens)), "num_warps": 4}


def token_runs(features: torch.Tensor, layout: VideoLayout, tau: float, validate: bool, out=None) -> tuple:
    """(N,) float32 ``-||x||`` (NaN as +inf); (N,) float32 each row's static run; (V,) non-finite
    videos (into ``out``); two launches."""
    check_rows(layout)
    device, (N, C) = features.device, features.shape
    meta = device_layout(layout, device)
    scores = new_output(N, torch.float32, device)
    cosines = new_output(N, torch.float32, device)
    runs = new_output(N, torch.float32, device)
    flags = per_video_out(out, layout, device).zero_()
    if N > 0:
        token_cosines_kernel[(meta.num_units,)](
            features,
            scores,
            cosines,
            flags,
            meta.unit_row_start,
            meta.unit_rows,
            meta.unit_frame,
            meta.frame_video,
            meta.frame_start,
            meta.frame_tokens,
            C,
            features.stride(0),
            features.stride(1),
            NORM_EPS,
            MAX_ABS,
            **cosines_config(C),
        )
        max_tokens = int(layout.tokens_per_frame.max(initial=1))
        config = runs_config(max_tokens)
        static_runs_kernel[(cdiv(max_tokens, config["BLOCK_T"]), layout.num_videos)](
            cosines, runs, meta.row_start, meta.num_frames, meta.tokens_per_frame, float(tau), **config
        )
    return scores, runs, flags if validate else None
