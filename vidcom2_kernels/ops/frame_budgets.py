"""Step 5, Frame Compression Adjustment: softmax-scaled frame budgets.

``frame_budgets_kernel``  grid (1,): one program walks the videos in order (they are few and their frame
vectors short) and writes every frame's budget and each video's kept count (the host reads the
counts to size the output). Per video: ``p = softmax(u / 0.01)``,
``scale = min(1, r * (1 + (p - mean(p))))`` (``r`` where NaN), ``k = max(1, round_half_even(scale * T))``.
``mean(p)`` is summed in float64, like every backend.

Arithmetic: the divisions are correctly rounded (``tl.div_rn``; ``/`` is an approximate division
on NVIDIA) and ``exp`` is the vendor library's (:func:`.common.precise_exp`), compiled without
FMA contraction, so a budget differs from the torch backend's only where ``exp`` itself differs
by an ulp or two and ``scale * T`` lies that close to a half-integer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..buffers import new_output
from ..constants import TEMPERATURE
from .common import DeviceLayout, next_pow2, precise_exp


@triton.jit
def round_half_even(x):
    """Round non-negative float32 x (< 2**23) to the nearest integer, ties to even."""
    base = tl.floor(x)
    frac = x - base
    odd = (base - 2.0 * tl.floor(base * 0.5)) == 1.0
    return base + tl.where((frac > 0.5) | ((frac == 0.5) & odd), 1.0, 0.0)


@triton.jit(do_not_specialize=["V"])
def frame_budgets_kernel(
    uniqueness_ptr,
    budget_ptr,
    count_ptr,
    frame_start_ptr,
    tokens_per_frame_ptr,
    retention_ptr,
    V,
    temperature,
    BLOCK_F: tl.constexpr,
):
    for i_v in range(0, V):
        f0 = tl.load(frame_start_ptr + i_v)
        f1 = tl.load(frame_start_ptr + i_v + 1)
        T = tl.load(tokens_per_frame_ptr + i_v).to(tl.float32)
        r = tl.load(retention_ptr + i_v).to(tl.float32)
        # pass 1: max of u / t, and whether any is NaN (then the whole video falls back to r)
        z_max = tl.full([BLOCK_F], float("-inf"), dtype=tl.float32)
        n_nan = tl.zeros([BLOCK_F], dtype=tl.int32)
        for s in range(f0, f1, BLOCK_F):
            o_f = s + tl.arange(0, BLOCK_F)
            m_f = o_f < f1
            z = tl.div_rn(tl.load(uniqueness_ptr + o_f, mask=m_f, other=float("-inf")), temperature)
            n_nan += (z != z).to(tl.int32)
            z_max = tl.maximum(z_max, tl.where(z != z, float("-inf"), z))
        top = tl.max(z_max, axis=0)
        any_nan = tl.sum(n_nan, axis=0) > 0
        # pass 2: softmax denominator
        den = tl.zeros([BLOCK_F], dtype=tl.float32)
        for s in range(f0, f1, BLOCK_F):
            o_f = s + tl.arange(0, BLOCK_F)
            m_f = o_f < f1
            z = tl.div_rn(tl.load(uniqueness_ptr + o_f, mask=m_f, other=float("-inf")), temperature)
            den += tl.where(m_f, precise_exp(z - top), 0.0)
        total = tl.sum(den, axis=0)
        # pass 3: mean(p), summed in float64
        p_sum = tl.zeros([BLOCK_F], dtype=tl.float64)
        for s in range(f0, f1, BLOCK_F):
            o_f = s + tl.arange(0, BLOCK_F)
            m_f = o_f < f1
            z = tl.div_rn(tl.load(uniqueness_ptr + o_f, mask=m_f, other=float("-inf")), temperature)
            p_sum += tl.where(m_f, tl.div_rn(precise_exp(z - top), total), 0.0).to(tl.float64)
        p_mean = (tl.sum(p_sum, axis=0) / (f1 - f0).to(tl.float64)).to(tl.float32)
        # pass 4: budgets and the video's kept count
        kept = tl.zeros([BLOCK_F], dtype=tl.int64)
        for s in range(f0, f1, BLOCK_F):
            o_f = s + tl.arange(0, BLOCK_F)
            m_f = o_f < f1
            z = tl.div_rn(tl.load(uniqueness_ptr + o_f, mask=m_f, other=float("-inf")), temperature)
            p = tl.div_rn(precise_exp(z - top), total)
            scale = r * (1.0 + (p - p_mean))  # NaN (an infinite uniqueness) -> r, checked before the clamp
            scale = tl.where((scale != scale) | any_nan, r, tl.minimum(scale, 1.0))
            k = tl.maximum(round_half_even(scale * T), 1.0).to(tl.int64)
            tl.store(budget_ptr + o_f, k, mask=m_f)
            kept += tl.where(m_f, k, 0)
        tl.store(count_ptr + i_v, tl.sum(kept, axis=0))


def frame_budgets_config(layout) -> dict:
    block = min(1024, next_pow2(layout.max_frames))
    return {"BLOCK_F": max(16, block), "num_warps": 4}


def frame_budgets(uniqueness: torch.Tensor, meta: DeviceLayout, retention: torch.Tensor, counts: torch.Tensor):
    """Budgets (F,) int64; the kept count of every video (V,) int64 written into ``counts`` (the
    pipeline passes a slice of the buffer the host reads back). ``retention`` (V,) float64."""
    layout, dev = meta.layout, uniqueness.device
    budgets = new_output(layout.total_frames, torch.int64, dev)
    frame_budgets_kernel[(1,)](
        uniqueness,
        budgets,
        counts,
        meta.frame_start,
        meta.tokens_per_frame,
        retention,
        layout.num_videos,
        TEMPERATURE,
        enable_fp_fusion=False,
        **frame_budgets_config(layout),
    )
    return budgets
