"""The row gather: copy rows ``indices`` of up to four row-aligned tensors in one launch
(the kept features plus, for Qwen3-VL, the deepstack features), any dtypes and widths.

``gather_rows_kernel``  grid (cdiv(K, BLOCK_K), cdiv(max C_i, BLOCK_C)): each program copies a
BLOCK_K x BLOCK_C tile of every tensor whose width reaches that column block. More than four
tensors take one launch per four.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import triton
import triton.language as tl

from ..buffers import new_output
from .common import cdiv, launch_config, next_pow2

MAX_TENSORS_PER_LAUNCH = 4


@triton.jit
def copy_tile(src_ptr, dst_ptr, rows, m_k, o_k, o_c, C, stride_n, stride_c):
    m = m_k[:, None] & (o_c < C)[None, :]
    b = tl.load(src_ptr + rows[:, None] * stride_n + o_c[None, :].to(tl.int64) * stride_c, mask=m)
    tl.store(dst_ptr + o_k[:, None].to(tl.int64) * C + o_c[None, :], b, mask=m)


@triton.jit(do_not_specialize=["K"])
def gather_rows_kernel(
    idx_ptr,
    K,
    src0,
    dst0,
    C0,
    sn0,
    sc0,
    src1,
    dst1,
    C1,
    sn1,
    sc1,
    src2,
    dst2,
    C2,
    sn2,
    sc2,
    src3,
    dst3,
    C3,
    sn3,
    sc3,
    NUM: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    o_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    m_k = o_k < K
    rows = tl.load(idx_ptr + o_k, mask=m_k, other=0).to(tl.int64)
    o_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    copy_tile(src0, dst0, rows, m_k, o_k, o_c, C0, sn0, sc0)
    if NUM > 1:
        copy_tile(src1, dst1, rows, m_k, o_k, o_c, C1, sn1, sc1)
    if NUM > 2:
        copy_tile(src2, dst2, rows, m_k, o_k, o_c, C2, sn2, sc2)
    if NUM > 3:
        copy_tile(src3, dst3, rows, m_k, o_k, o_c, C3, sn3, sc3)


@launch_config
def gather_config(max_width: int) -> dict:
    block_c = min(256, next_pow2(max(1, max_width)))
    return {"BLOCK_K": max(1, 2048 // block_c), "BLOCK_C": block_c, "num_warps": 4}


def flat_rows(tensors: Sequence[torch.Tensor]) -> list:
    """Each (N, ...) tensor as an (N, width) view (complex ones as pairs of reals)."""
    real = [torch.view_as_real(t) if t.is_complex() else t for t in tensors]
    return [t.reshape(t.shape[0], math.prod(t.shape[1:])) for t in real]  # not -1: zero-size tensors too


def unflat_rows(outs: Sequence[torch.Tensor], tensors: Sequence[torch.Tensor]) -> list:
    """(K, width) outputs back in the shapes (and complex dtypes) of ``tensors``."""
    real_shapes = [(t.shape[1:] + (2,)) if t.is_complex() else t.shape[1:] for t in tensors]
    kept = [o.reshape((o.shape[0], *shape)) for o, shape in zip(outs, real_shapes)]
    return [torch.view_as_complex(k) if t.is_complex() else k for k, t in zip(kept, tensors)]


def gather_rows(indices: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list:
    """Rows ``indices`` (K,) of each (N, ...) tensor, as new contiguous (K, ...) tensors, any dtype
    (complex ones as pairs of reals). ``indices`` must be in range (the callers guarantee it)."""
    K = indices.shape[0]
    flat = flat_rows(tensors)
    outs = [new_output((K, f.shape[1]), f.dtype, f.device) for f in flat]
    for g in range(0, len(flat), MAX_TENSORS_PER_LAUNCH):
        srcs, dsts = flat[g : g + MAX_TENSORS_PER_LAUNCH], outs[g : g + MAX_TENSORS_PER_LAUNCH]
        widths = [s.shape[1] for s in srcs]
        if K == 0 or max(widths) == 0:
            continue
        args = []
        for i in range(MAX_TENSORS_PER_LAUNCH):
            j = min(i, len(srcs) - 1)  # unused slots repeat the last tensor; NUM skips them
            args += [srcs[j], dsts[j], widths[j], srcs[j].stride(0), srcs[j].stride(1)]
        cfg = gather_config(max(widths))
        grid = (cdiv(K, cfg["BLOCK_K"]), cdiv(max(widths), cfg["BLOCK_C"]))
        gather_rows_kernel[grid](indices, K, *args, NUM=len(srcs), **cfg)
    return unflat_rows(outs, tensors)
