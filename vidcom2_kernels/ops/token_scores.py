"""Step 4 and the uniqueness of step 5: dot products with the centres, multi-scale Gaussian
scores, per-frame sums. One read of the features.

With unit-norm rows, ``||x - c||^2 = x.x - 2 x.c + c.c``: a program needs only the dot products of
its rows with their frame centre and video centre (never a centred copy of the features).

Kernels
-------
``token_scores_kernel``  grid (U,): for each row of the unit, ``sv = S(x, g)``, ``sf = S(x, c_f)``;
    stores ``sv + sf`` (NaN as +inf) and the unit's sum of ``sv`` (U,). The last unit of a frame
    to finish (:func:`.common.last_to_arrive` on a per-frame counter zeroed by the centres launch)
    adds the frame's unit sums in a fixed order (the same sum whichever unit is last:
    deterministic) into ``u_f = -sum / T``, reading them through L2 (``.cg``). No launch of its own.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..buffers import new_output
from ..constants import GAUSSIAN_BANDWIDTHS
from .centres import max_units_per_frame
from .common import UNIT_ROWS, DeviceLayout, clamp_min, last_to_arrive, launch_config, next_pow2, precise_exp, unit_rows

# The kernel spells the five terms out; keep it in step with the constant.
assert GAUSSIAN_BANDWIDTHS == (0.125, 0.25, 0.5, 1.0, 2.0)


@triton.jit
def gaussian_similarity(dist2):
    """``sum_a exp(-d^2 / (2a))`` for a in (1/8, 1/4, 1/2, 1, 2), in the reference's order."""
    dist2 = clamp_min(dist2, 0.0)
    total = precise_exp(-dist2 * 4.0) + precise_exp(-dist2 * 2.0)
    total = total + precise_exp(-dist2)
    total = total + precise_exp(-dist2 * 0.5)
    return total + precise_exp(-dist2 * 0.25)


@triton.jit
def token_scores_kernel(
    x_ptr,
    keep_ptr,
    inv_norm_ptr,
    self_dot_ptr,
    frame_centre_ptr,
    video_centre_ptr,
    score_ptr,
    unit_sv_ptr,
    uniqueness_ptr,
    arrivals_ptr,
    frame_unit_start_ptr,
    unit_row_start_ptr,
    unit_rows_ptr,
    unit_video_ptr,
    unit_frame_ptr,
    C,
    stride_n,
    stride_c,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_U: tl.constexpr,
):
    i_u, row0, o_n, m_n = unit_rows(unit_row_start_ptr, unit_rows_ptr, BLOCK_N)
    i_v = tl.load(unit_video_ptr + i_u)
    i_f = tl.load(unit_frame_ptr + i_u)
    p_rows = x_ptr + (row0 + o_n).to(tl.int64)[:, None] * stride_n
    p_cf = frame_centre_ptr + i_f * C
    p_cg = video_centre_ptr + i_v * C
    # the centres are zero on the channels not kept; the mask only keeps NaN/Inf there out
    dot_f = tl.zeros([BLOCK_N], dtype=tl.float32)
    dot_g = tl.zeros([BLOCK_N], dtype=tl.float32)
    cc_f = tl.zeros([BLOCK_C], dtype=tl.float32)
    cc_g = tl.zeros([BLOCK_C], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)
        m_c = o_c < C
        b_x = tl.load(p_rows + o_c[None, :].to(tl.int64) * stride_c, mask=m_n[:, None] & m_c[None, :], other=0.0)
        w = tl.load(keep_ptr + i_v * C + o_c, mask=m_c, other=0) != 0
        b_x = tl.where(w[None, :], b_x.to(tl.float32), 0.0)
        c_f = tl.load(p_cf + o_c, mask=m_c, other=0.0)
        c_g = tl.load(p_cg + o_c, mask=m_c, other=0.0)
        dot_f += tl.sum(b_x * c_f[None, :], axis=1)
        dot_g += tl.sum(b_x * c_g[None, :], axis=1)
        cc_f += c_f * c_f
        cc_g += c_g * c_g
    inv_norm = tl.load(inv_norm_ptr + row0 + o_n, mask=m_n, other=0.0)
    self_dot = tl.load(self_dot_ptr + row0 + o_n, mask=m_n, other=0.0)
    sv = gaussian_similarity(self_dot - 2.0 * (dot_g * inv_norm) + tl.sum(cc_g, axis=0))
    sf = gaussian_similarity(self_dot - 2.0 * (dot_f * inv_norm) + tl.sum(cc_f, axis=0))
    score = sv + sf
    score = tl.where(score != score, float("inf"), score)
    tl.store(score_ptr + row0 + o_n, score, mask=m_n)
    tl.store(unit_sv_ptr + i_u, tl.sum(tl.where(m_n, sv, 0.0), axis=0))
    u0 = tl.load(frame_unit_start_ptr + i_f)
    u1 = tl.load(frame_unit_start_ptr + i_f + 1)
    if last_to_arrive(arrivals_ptr + i_f, u1 - u0):  # the frame's last unit: every unit sum is stored
        total = tl.zeros([BLOCK_U], dtype=tl.float32)
        for s in range(u0, u1, BLOCK_U):
            o_u = s + tl.arange(0, BLOCK_U)
            total += tl.load(unit_sv_ptr + o_u, mask=o_u < u1, other=0.0, cache_modifier=".cg")
        T = (
            tl.load(unit_row_start_ptr + u1 - 1) + tl.load(unit_rows_ptr + u1 - 1) - tl.load(unit_row_start_ptr + u0)
        ).to(tl.float32)
        tl.store(uniqueness_ptr + i_f, -tl.div_rn(tl.sum(total, axis=0), T))


@launch_config
def scores_config(C: int, max_units: int) -> dict:
    return {
        "BLOCK_N": UNIT_ROWS,
        "BLOCK_C": min(64, next_pow2(C)),
        "BLOCK_U": min(256, next_pow2(max(1, max_units))),
        "num_warps": 4,
    }


def token_scores(features, keep, inv_norm, self_dot, frame_centre, video_centre, arrivals, meta: DeviceLayout):
    """Returns ``scores`` (N,) float32 and ``uniqueness`` (F,) float32, in one launch;
    ``arrivals`` (F,) int32 zeroed (by :func:`.centres.centres`)."""
    N, C = features.shape
    layout, dev = meta.layout, features.device
    scores = new_output(N, torch.float32, dev)
    sums = new_output(meta.num_units + layout.total_frames, torch.float32, dev)
    unit_sv, uniqueness = sums[: meta.num_units], sums[meta.num_units :]
    token_scores_kernel[(meta.num_units,)](
        features,
        keep,
        inv_norm,
        self_dot,
        frame_centre,
        video_centre,
        scores,
        unit_sv,
        uniqueness,
        arrivals,
        meta.frame_unit_start,
        meta.unit_row_start,
        meta.unit_rows,
        meta.unit_video,
        meta.unit_frame,
        C,
        features.stride(0),
        features.stride(1),
        **scores_config(C, max_units_per_frame(layout)),
    )
    return scores, uniqueness
