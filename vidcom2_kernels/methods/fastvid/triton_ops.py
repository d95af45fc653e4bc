"""FastVID's kernels on the ``triton`` backend (:mod:`.kernels`), each over the whole batch: the
norms, the validation flags and the frame similarities in two launches (one read of the
features); the DPC-kNN scores in two (the distances, written once and read back, and the
densities; then the distance to the nearest denser token); the merge in two (the assignments,
then one program per context token and channel block summing its group in row order). The salient
tokens come from the torch backend's per-frame sorts on the device. No host read in budget mode
beyond the pipeline's one (the plan gives every count).
"""

from __future__ import annotations

import numpy as np
import torch

from ...backends.contract import nan_as_inf
from ...backends.torch_backend import indices_from_mask, lowest_per_frame
from ...backends.triton_backend import check_rows, per_video_out
from ...buffers import new_output
from ...constants import MAX_ABS, NORM_EPS
from ...layout import VideoLayout
from ...ops.common import cdiv, device_layout
from .kernels import (
    as_tensor,
    assign_config,
    assign_kernel,
    distance_config,
    dpc_delta_kernel,
    dpc_distance_kernel,
    frame_similarity_kernel,
    frame_stats_kernel,
    merge_config,
    merge_kernel,
    similarity_config,
    stats_config,
)
from .plan import context_frames
from .torch_ops import context_per_frame


def frame_scores(features: torch.Tensor, layout: VideoLayout, validate: bool, out=None) -> tuple:
    """(N,) float32 ``-||x||`` (NaN as +inf); (F,) float32 similarity of each frame's normalised
    mean with the next one's (0 for a video's last frame); (V,) non-finite videos (into ``out``)."""
    check_rows(layout)
    device, (N, C) = features.device, features.shape
    meta = device_layout(layout, device)
    scores = new_output(N, torch.float32, device)
    partial = new_output((meta.num_units, C), torch.float32, device)
    similarity = new_output(layout.total_frames, torch.float32, device)
    flags = per_video_out(out, layout, device).zero_()
    frame_stats_kernel[(meta.num_units,)](
        features,
        scores,
        partial,
        flags,
        meta.unit_row_start,
        meta.unit_rows,
        meta.unit_video,
        C,
        features.stride(0),
        features.stride(1),
        MAX_ABS,
        **stats_config(C),
    )
    frame_similarity_kernel[(layout.total_frames,)](
        partial,
        similarity,
        meta.frame_unit_start,
        meta.frame_video,
        meta.frame_start,
        meta.frame_tokens,
        C,
        NORM_EPS,
        **similarity_config(C),
    )
    return scores, similarity, flags if validate else None


def context_scores(features, layout: VideoLayout, scores, salient: np.ndarray, context: np.ndarray):
    """(N,) float32: -inf for each frame's ``salient[f]`` largest norms, ``-dpc_score`` for the
    other tokens of a frame with ``context[f] > 0``, +inf elsewhere (the reference's definition,
    :func:`.reference.context_scores`)."""
    check_rows(layout)
    device, (N, C) = features.device, features.shape
    meta = device_layout(layout, device)
    is_salient = lowest_per_frame(scores, layout, as_tensor(salient, device))
    rest = (~is_salient).to(torch.int8)
    active = context > 0
    sizes = np.where(active, layout.frame_tokens**2, 0)
    d2_start = as_tensor(np.where(active, np.cumsum(sizes) - sizes, -1), device)
    d2 = torch.empty(int(sizes.sum()), dtype=torch.float32, device=device)
    density, delta = new_output(N, torch.float32, device), new_output(N, torch.float32, device)
    bad = torch.zeros(layout.total_frames, dtype=torch.int32, device=device)
    frame_max = torch.zeros(layout.total_frames, dtype=torch.float32, device=device)
    units = (meta.num_units,)
    cfg = distance_config(C)
    dpc_distance_kernel[units](
        features,
        rest,
        as_tensor(layout.frame_tokens - salient, device),
        d2_start,
        d2,
        density,
        bad,
        meta.frame_row_start,
        meta.unit_row_start,
        meta.unit_rows,
        meta.unit_frame,
        C,
        features.stride(0),
        features.stride(1),
        1.0 / C,
        **cfg,
    )
    dpc_delta_kernel[units](
        d2,
        rest,
        d2_start,
        density,
        delta,
        frame_max,
        meta.frame_row_start,
        meta.unit_row_start,
        meta.unit_rows,
        meta.unit_frame,
        BLOCK_M=cfg["BLOCK_M"],
        BLOCK_N=cfg["BLOCK_N"],
        num_warps=cfg["num_warps"],
    )
    frame = meta.row_frame
    scored = as_tensor(active, device).index_select(0, frame).bool() & ~is_salient
    furthest = frame_max.index_select(0, frame)
    delta = torch.where(delta == float("inf"), furthest, delta)  # the densest: the frame's largest distance
    keys = torch.where(scored & (bad.index_select(0, frame) == 0), -(delta * density), float("inf"))
    return nan_as_inf(torch.where(is_salient, float("-inf"), keys))


def merge_context(
    features, layout: VideoLayout, scores, mask, indices, rows, segment: np.ndarray, per_frame, beta: float
):
    """The reference's merge (:func:`.reference.merge_context`): the assignments of every row to
    a context token of each context frame of its segment, then each context token's blend."""
    check_rows(layout)
    device, (N, C), K = features.device, features.shape, indices.shape[0]
    meta = device_layout(layout, device)
    merged_rows = rows[0].clone(memory_format=torch.contiguous_format)
    merged = torch.zeros(K, dtype=torch.bool, device=device)
    salient = mask & (scores == float("-inf"))
    anchor = mask & ~salient
    ctx = context_frames(segment, context_per_frame(anchor, meta, per_frame))
    A = int(ctx.count.sum())
    if A == 0:
        return [merged_rows, *rows[1:]], merged
    anchors = indices_from_mask(anchor, A)  # every context token, ascending
    joins = torch.where(salient, 0, torch.where(anchor, 2, 1)).to(torch.int8)
    J = ctx.table.shape[1]
    assign = new_output(N * J, torch.int64, device)
    cfg = assign_config(C)
    assign_kernel[(meta.num_units, J)](
        features,
        joins,
        as_tensor(ctx.table[segment], device),
        anchors,
        as_tensor(ctx.first, device),
        as_tensor(ctx.count, device),
        as_tensor(ctx.frame, device),
        assign,
        meta.unit_row_start,
        meta.unit_rows,
        meta.unit_frame,
        meta.row_frame,
        C,
        J,
        features.stride(0),
        features.stride(1),
        NORM_EPS,
        **cfg,
    )
    # per context token: its segment's rows and its context frame's slot
    c = np.repeat(np.arange(len(ctx.frame)), ctx.count)
    seg = segment[ctx.frame[c]]
    first_frame = np.searchsorted(segment, seg, side="left")
    last_frame = np.searchsorted(segment, seg, side="right")
    span = np.stack([layout.frame_row_start[first_frame], layout.frame_row_start[last_frame]], axis=1)
    cfg = merge_config(C)
    merge_kernel[(A, cdiv(C, cfg["BLOCK_C"]))](
        features,
        merged_rows,
        merged,
        assign,
        anchors,
        torch.searchsorted(indices, anchors),
        as_tensor(span.reshape(-1), device),
        as_tensor(ctx.slot[c], device),
        C,
        J,
        features.stride(0),
        features.stride(1),
        merged_rows.stride(0),
        float(beta),
        **cfg,
    )
    return [merged_rows, *rows[1:]], merged


__all__ = ["context_scores", "frame_scores", "merge_context"]
