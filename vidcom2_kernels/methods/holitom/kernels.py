"""HoliTom's Triton kernel: the scorer.

``token_runs_kernel``  grid (token blocks, V): one program per BLOCK_T tokens of one video walks
    its frames from the last to the first, in channel blocks: each row's score ``-||x||`` (NaN as
    +inf), its cosine with the same token in the next frame ``dot / (max(|a|, eps) * max(|b|,
    eps))``, and its static run (one more than the next frame's while the cosine is above tau, else
    0; 0 on the last frame), and its video's validation flag (NaN, Inf or a magnitude >= max_abs;
    an integer atomic max). The squared norms of the next frame stay in registers; the dot reads
    the next frame's rows again, so every row is read twice (once as itself, once as the next).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...backends.triton_backend import check_rows, per_video_out
from ...buffers import new_output
from ...constants import MAX_ABS, NORM_EPS
from ...layout import VideoLayout
from ...ops.common import cdiv, device_layout, launch_config, next_pow2


@triton.jit
def token_runs_kernel(
    x_ptr,
    score_ptr,
    run_ptr,
    flag_ptr,
    row_start_ptr,
    num_frames_ptr,
    tokens_ptr,
    C,
    stride_n,
    stride_c,
    tau,
    eps,
    max_abs,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_b, i_v = tl.program_id(0), tl.program_id(1)
    T = tl.load(tokens_ptr + i_v)
    t = tl.load(num_frames_ptr + i_v)
    row0 = tl.load(row_start_ptr + i_v)
    o_t = i_b * BLOCK_T + tl.arange(0, BLOCK_T)
    m_t = o_t < T
    run = tl.zeros([BLOCK_T], dtype=tl.float32)
    sq_next = tl.zeros([BLOCK_T], dtype=tl.float32)
    n_bad = tl.zeros([BLOCK_T], dtype=tl.int32)
    if i_b * BLOCK_T < T:
        for j in range(0, t):
            f = t - 1 - j
            rows = (row0 + f * T + o_t).to(tl.int64)
            sq = tl.zeros([BLOCK_T], dtype=tl.float32)
            dot = tl.zeros([BLOCK_T], dtype=tl.float32)
            for c0 in range(0, C, BLOCK_C):
                o_c = c0 + tl.arange(0, BLOCK_C)
                m = m_t[:, None] & (o_c < C)[None, :]
                offs = rows[:, None] * stride_n + o_c[None, :].to(tl.int64) * stride_c
                a = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
                sq += tl.sum(a * a, axis=1)
                n_bad += tl.sum((~(tl.abs(a) < max_abs)).to(tl.int32), axis=1)
                if j > 0:
                    b = tl.load(x_ptr + offs + T.to(tl.int64) * stride_n, mask=m, other=0.0).to(tl.float32)
                    dot += tl.sum(a * b, axis=1)
            norm = tl.sqrt_rn(sq)
            if j > 0:
                denominator = tl.maximum(norm, eps) * tl.maximum(tl.sqrt_rn(sq_next), eps)
                cosine = tl.fdiv(dot, denominator, ieee_rounding=True)
                run = tl.where(cosine > tau, run + 1.0, 0.0)
            score = -norm
            tl.store(score_ptr + rows, tl.where(score == score, score, float("inf")), mask=m_t)
            tl.store(run_ptr + rows, run, mask=m_t)
            sq_next = sq
        tl.atomic_max(flag_ptr + i_v, (tl.sum(n_bad, axis=0) > 0).to(tl.int64))


@launch_config
def runs_config(C: int, max_tokens: int) -> dict:
    """Token and channel block sizes: 32 tokens x up to 128 channels a load."""
    return {"BLOCK_T": min(32, next_pow2(max_tokens)), "BLOCK_C": min(128, next_pow2(C)), "num_warps": 4}


def token_runs(features: torch.Tensor, layout: VideoLayout, tau: float, validate: bool, out=None) -> tuple:
    """(N,) float32 ``-||x||`` (NaN as +inf); (N,) float32 each row's static run; (V,) non-finite
    videos (into ``out``); one launch."""
    check_rows(layout)
    device, (N, C) = features.device, features.shape
    meta = device_layout(layout, device)
    scores = new_output(N, torch.float32, device)
    runs = new_output(N, torch.float32, device)
    flags = per_video_out(out, layout, device).zero_()
    max_tokens = int(layout.tokens_per_frame.max(initial=0))
    config = runs_config(C, max(1, max_tokens))
    if N > 0:
        token_runs_kernel[(cdiv(max_tokens, config["BLOCK_T"]), layout.num_videos)](
            features,
            scores,
            runs,
            flags,
            meta.row_start,
            meta.num_frames,
            meta.tokens_per_frame,
            C,
            features.stride(0),
            features.stride(1),
            float(tau),
            NORM_EPS,
            MAX_ABS,
            **config,
        )
    return scores, runs, flags if validate else None
