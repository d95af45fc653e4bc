"""Step 5, Frame Compression Adjustment: softmax-scaled frame budgets.

``frame_budgets_kernel``  grid (1,): one program walks the videos in order (they are few and their frame
vectors short) so it can also write every frame's output offset, an exclusive prefix sum of the
budgets across the whole batch, and each video's kept count. Per video:
``p = softmax(u / 0.01)``, ``scale = min(1, r * (1 + (p - mean(p))))`` (``r`` where NaN),
``k = max(1, round_half_even(scale * T))``. ``mean(p)`` is summed in float64, like every backend.
``budget_offsets_kernel``  grid (1,): the same walk for budgets given from outside (the public
``select_tokens`` stage, and the triton backend's selection): clamped to ``[0, T]``, with their
output offsets and each video's kept count.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..buffers import new_output
from ..constants import TEMPERATURE
from .common import DeviceLayout


@triton.jit
def round_half_even(x):
    """Round non-negative float32 x (< 2**23) to the nearest integer, ties to even."""
    base = tl.floor(x)
    frac = x - base
    odd = (base - 2.0 * tl.floor(base * 0.5)) == 1.0
    return base + tl.where((frac > 0.5) | ((frac == 0.5) & odd), 1.0, 0.0)


@triton.jit
def write_budgets(k, o_f, m_f, running, budget_ptr, frame_offset_ptr):
    """Store a block of budgets and their output offsets (the exclusive prefix sum, continuing from
    ``running`` kept rows); returns the new running total."""
    k = tl.where(m_f, k, 0)
    tl.store(budget_ptr + o_f, k, mask=m_f)
    tl.store(frame_offset_ptr + o_f, running + tl.cumsum(k, axis=0) - k, mask=m_f)
    return running + tl.sum(k, axis=0)


@triton.jit
def budget_offsets_kernel(
    budget_ptr, final_ptr, frame_offset_ptr, count_ptr, frame_start_ptr, tokens_per_frame_ptr, V, BLOCK_F: tl.constexpr
):
    running = tl.sum(tl.zeros([BLOCK_F], dtype=tl.int64), axis=0)  # kept so far in the batch
    for i_v in range(0, V):
        f0 = tl.load(frame_start_ptr + i_v)
        f1 = tl.load(frame_start_ptr + i_v + 1)
        T = tl.load(tokens_per_frame_ptr + i_v)
        video_start = running
        for s in range(f0, f1, BLOCK_F):
            o_f = s + tl.arange(0, BLOCK_F)
            m_f = o_f < f1
            k = tl.minimum(tl.maximum(tl.load(budget_ptr + o_f, mask=m_f, other=0), 0), T)
            running = write_budgets(k, o_f, m_f, running, final_ptr, frame_offset_ptr)
        tl.store(count_ptr + i_v, running - video_start)


@triton.jit
def frame_budgets_kernel(
    uniqueness_ptr,
    budget_ptr,
    frame_offset_ptr,
    count_ptr,
    frame_start_ptr,
    tokens_per_frame_ptr,
    retention_ptr,
    V,
    temperature,
    BLOCK_F: tl.constexpr,
):
    running = tl.sum(tl.zeros([BLOCK_F], dtype=tl.int64), axis=0)  # kept so far in the batch
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
            z = tl.load(uniqueness_ptr + o_f, mask=m_f, other=float("-inf")) / temperature
            n_nan += (z != z).to(tl.int32)
            z_max = tl.maximum(z_max, tl.where(z != z, float("-inf"), z))
        top = tl.max(z_max, axis=0)
        any_nan = tl.sum(n_nan, axis=0) > 0
        # pass 2: softmax denominator
        den = tl.zeros([BLOCK_F], dtype=tl.float32)
        for s in range(f0, f1, BLOCK_F):
            o_f = s + tl.arange(0, BLOCK_F)
            m_f = o_f < f1
            z = tl.load(uniqueness_ptr + o_f, mask=m_f, other=float("-inf")) / temperature
            den += tl.where(m_f, tl.exp(z - top), 0.0)
        total = tl.sum(den, axis=0)
        # pass 3: mean(p), summed in float64
        p_sum = tl.zeros([BLOCK_F], dtype=tl.float64)
        for s in range(f0, f1, BLOCK_F):
            o_f = s + tl.arange(0, BLOCK_F)
            m_f = o_f < f1
            z = tl.load(uniqueness_ptr + o_f, mask=m_f, other=float("-inf")) / temperature
            p_sum += tl.where(m_f, tl.exp(z - top) / total, 0.0).to(tl.float64)
        p_mean = (tl.sum(p_sum, axis=0) / (f1 - f0).to(tl.float64)).to(tl.float32)
        # pass 4: budgets and their offsets
        video_start = running
        for s in range(f0, f1, BLOCK_F):
            o_f = s + tl.arange(0, BLOCK_F)
            m_f = o_f < f1
            z = tl.load(uniqueness_ptr + o_f, mask=m_f, other=float("-inf")) / temperature
            p = tl.exp(z - top) / total
            scale = r * (1.0 + (p - p_mean))  # NaN (an infinite uniqueness) -> r, checked before the clamp
            scale = tl.where((scale != scale) | any_nan, r, tl.minimum(scale, 1.0))
            k = tl.maximum(round_half_even(scale * T), 1.0).to(tl.int64)
            running = write_budgets(k, o_f, m_f, running, budget_ptr, frame_offset_ptr)
        tl.store(count_ptr + i_v, running - video_start)


def frame_budgets_config(layout) -> dict:
    block = min(1024, triton.next_power_of_2(int(layout.num_frames.max())))
    return {"BLOCK_F": max(16, block), "num_warps": 4}


def frame_budgets(uniqueness: torch.Tensor, meta: DeviceLayout, counts: torch.Tensor | None = None):
    """Budgets (F,) int64, output offsets (F,) int64 and kept counts (V,) int64 (written into
    ``counts`` when given, e.g. a slice of the buffer the host reads back)."""
    layout, dev = meta.layout, uniqueness.device
    F, V = layout.total_frames, layout.num_videos
    budgets = new_output(F, torch.int64, dev)
    offsets = new_output(F, torch.int64, dev)
    if counts is None:
        counts = new_output(V, torch.int64, dev)
    frame_budgets_kernel[(1,)](
        uniqueness,
        budgets,
        offsets,
        counts,
        meta.frame_start,
        meta.tokens_per_frame,
        meta.retention,
        V,
        TEMPERATURE,
        **frame_budgets_config(layout),
    )
    return budgets, offsets, counts


def budget_offsets(budgets: torch.Tensor, meta: DeviceLayout):
    """Budgets (F,) int64 clamped to ``[0, T]``, their output offsets (F,) and the kept count of
    every video (V,), in one launch."""
    layout, dev = meta.layout, budgets.device
    F, V = layout.total_frames, layout.num_videos
    final, offsets, counts = (
        new_output(F, torch.int64, dev),
        new_output(F, torch.int64, dev),
        new_output(V, torch.int64, dev),
    )
    budget_offsets_kernel[(1,)](
        budgets, final, offsets, counts, meta.frame_start, meta.tokens_per_frame, V, **frame_budgets_config(layout)
    )
    return final, offsets, counts
