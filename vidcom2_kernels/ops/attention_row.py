"""One attention row: the softmax attention of the last query over the cached keys, averaged over
heads (what DyCoke's KV pruning reads). Computed from q and K directly, so it works whatever
attention implementation the model runs (sdpa, flash-attn), unlike reading eager weights.

``attention_row_kernel``  grid (B, H): scores ``q . k * scale`` over the S keys in blocks, an
online max/sum, then the probabilities (masked keys get 0) divided by H and written to
``out[b, h, :]``; the host sums over heads. Grouped-query attention: head h reads key head
``h // (H / Hkv)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..buffers import new_output
from .common import launch_config, next_pow2


@triton.jit
def attention_row_kernel(
    q_ptr,
    k_ptr,
    valid_ptr,
    out_ptr,
    S,
    D,
    group,
    scale,
    inv_heads,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_vb,
    stride_ob,
    stride_oh,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i_b = tl.program_id(0)
    i_h = tl.program_id(1)
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D
    b_q = tl.load(q_ptr + i_b * stride_qb + i_h * stride_qh + o_d, mask=m_d, other=0.0).to(tl.float32)
    p_k = k_ptr + i_b.to(tl.int64) * stride_kb + (i_h // group) * stride_kh
    run_max = tl.full([BLOCK_S], float("-inf"), dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        o_s = s0 + tl.arange(0, BLOCK_S)
        ok = (o_s < S) & (tl.load(valid_ptr + i_b * stride_vb + o_s, mask=o_s < S, other=0) != 0)
        b_k = tl.load(
            p_k + o_s[:, None].to(tl.int64) * stride_ks + o_d[None, :], mask=ok[:, None] & m_d[None, :], other=0.0
        )
        score = tl.sum(b_k.to(tl.float32) * b_q[None, :], axis=1) * scale
        run_max = tl.maximum(run_max, tl.where(ok, score, float("-inf")))
    top = tl.max(run_max, axis=0)
    den = tl.zeros([BLOCK_S], dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        o_s = s0 + tl.arange(0, BLOCK_S)
        ok = (o_s < S) & (tl.load(valid_ptr + i_b * stride_vb + o_s, mask=o_s < S, other=0) != 0)
        b_k = tl.load(
            p_k + o_s[:, None].to(tl.int64) * stride_ks + o_d[None, :], mask=ok[:, None] & m_d[None, :], other=0.0
        )
        score = tl.sum(b_k.to(tl.float32) * b_q[None, :], axis=1) * scale
        den += tl.where(ok, tl.exp(score - top), 0.0)
    total = tl.sum(den, axis=0)
    p_out = out_ptr + i_b * stride_ob + i_h * stride_oh
    for s0 in range(0, S, BLOCK_S):
        o_s = s0 + tl.arange(0, BLOCK_S)
        ok = (o_s < S) & (tl.load(valid_ptr + i_b * stride_vb + o_s, mask=o_s < S, other=0) != 0)
        b_k = tl.load(
            p_k + o_s[:, None].to(tl.int64) * stride_ks + o_d[None, :], mask=ok[:, None] & m_d[None, :], other=0.0
        )
        score = tl.sum(b_k.to(tl.float32) * b_q[None, :], axis=1) * scale
        tl.store(p_out + o_s, tl.where(ok, tl.exp(score - top) / total, 0.0) * inv_heads, mask=o_s < S)


@launch_config
def row_config(D: int) -> dict:
    return {"BLOCK_S": 64, "BLOCK_D": next_pow2(D), "num_warps": 4}


def attention_row(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, scale: float) -> torch.Tensor:
    """q (B, H, D) of the last query, k (B, Hkv, S, D), valid (B, S) bool. Returns (B, S) float32,
    the head-averaged attention probabilities (0 on invalid keys)."""
    B, H, D = q.shape
    S = k.shape[2]
    q, k = q.contiguous(), k if k.stride(-1) == 1 else k.contiguous()
    valid = valid.to(torch.int8).contiguous()
    out = new_output((B, H, S), torch.float32, q.device)
    attention_row_kernel[(B, H)](
        q,
        k,
        valid,
        out,
        S,
        D,
        H // k.shape[1],
        scale,
        1.0 / H,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        valid.stride(0),
        out.stride(0),
        out.stride(1),
        **row_config(D),
    )
    return out.sum(dim=1)
