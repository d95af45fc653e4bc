"""The device arrays every backend reads, copied once: :class:`DeviceLayout` per frame layout and
:class:`RequestArrays` per request's parameters, each one packed host-to-device copy kept in a
small thread-safe LRU (:class:`~vidcom2_kernels.buffers.DeviceCache`). No triton import: the torch
backend uses them too. Nothing here is written by a kernel, so a call that finds them cached
copies nothing from the host (what a CUDA graph needs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .buffers import DeviceCache
from .layout import VideoLayout

#: Rows a program of the row-unit kernels (centres, scores) handles: one unit never spans frames.
UNIT_ROWS = 16
#: Rows of one video a program of the channel-variance and reconcile-count kernels reads (a row
#: split): LLaVA-OV's 6272 rows x 3584 channels make 13 x 112 variance programs, enough for one
#: video to fill an H100.
SPLIT_ROWS = 512


@dataclass
class DeviceLayout:
    """A :class:`VideoLayout` on the device, shared by the torch and triton backends: int64 views
    into one packed tensor, copied once per frame layout.

    Per video (V): ``num_frames``, ``tokens_per_frame``, ``row_start`` (V+1), ``frame_start`` (V+1).
    Per frame (F): ``frame_row_start`` (F+1), ``frame_unit_start`` (F+1), ``frame_video``, ``frame_tokens``.
    Per row (N; the torch backend's segment ids): ``row_video``, ``row_frame``.
    Per row unit (U): ``unit_row_start``, ``unit_rows``, ``unit_video``, ``unit_frame``.
    Per row split (S; the channel variance's programs, and the exact reconcile's):
    ``split_row_start`` (S+1), ``split_video``; per video ``video_split_start`` (V+1).
    ``host`` keeps the (pinned) source of the copy alive: a CUDA graph that captured the copy
    replays it from there.
    """

    layout: VideoLayout
    num_units: int
    num_splits: int
    host: torch.Tensor
    num_frames: torch.Tensor
    tokens_per_frame: torch.Tensor
    row_start: torch.Tensor
    frame_start: torch.Tensor
    frame_row_start: torch.Tensor
    frame_unit_start: torch.Tensor
    frame_video: torch.Tensor
    frame_tokens: torch.Tensor
    row_video: torch.Tensor
    row_frame: torch.Tensor
    unit_row_start: torch.Tensor
    unit_rows: torch.Tensor
    unit_video: torch.Tensor
    unit_frame: torch.Tensor
    split_row_start: torch.Tensor
    split_video: torch.Tensor
    video_split_start: torch.Tensor


@dataclass
class RequestArrays:
    """A request's per-video and per-frame parameters on the device (one packed copy, cached per
    layout and values): ``retention`` (V,) float64 and ``retention32`` (V,) float32; ``targets``
    (V,) int64 and ``target_start`` (V+1,) their exclusive prefix sum (exact mode; zeros
    otherwise); ``anchors`` (F,) (DyCoke's anchor frames, -1: none) and ``budgets`` (F,)
    (DyCoke's fixed counts), zeros when not given. Read only: kernels never write them."""

    host: torch.Tensor
    retention: torch.Tensor
    retention32: torch.Tensor
    targets: torch.Tensor
    target_start: torch.Tensor
    anchors: torch.Tensor
    budgets: torch.Tensor


_LAYOUTS = DeviceCache(64)
_REQUESTS = DeviceCache(64)


def device_layout(layout: VideoLayout, device: torch.device) -> DeviceLayout:
    """The packed metadata of ``layout`` on ``device``, built once and kept in a small LRU cache."""
    return _LAYOUTS.get((layout.key(), str(device)), lambda: _pack_layout(layout, device), device)


def request_arrays(layout: VideoLayout, device: torch.device, retention=None, targets=None, anchors=None, budgets=None):
    """:class:`RequestArrays` of one request (numpy arrays or None), from a small LRU cache."""
    V, F = layout.num_videos, layout.total_frames
    retention = np.zeros(V) if retention is None else np.asarray(retention, dtype=np.float64)
    targets = np.zeros(V, dtype=np.int64) if targets is None else np.asarray(targets, dtype=np.int64)
    anchors = np.full(F, -1, dtype=np.int64) if anchors is None else np.asarray(anchors, dtype=np.int64)
    budgets = np.zeros(F, dtype=np.int64) if budgets is None else np.asarray(budgets, dtype=np.int64)
    key = (layout.key(), str(device), *(a.tobytes() for a in (retention, targets, anchors, budgets)))
    return _REQUESTS.get(key, lambda: _pack_request(device, retention, targets, anchors, budgets), device)


def _to_device_packed(parts: dict, device: torch.device) -> tuple:
    """(host tensor, {name: int64 view on ``device``}) of int64 arrays packed into one copy."""
    packed = np.concatenate([np.asarray(a, dtype=np.int64).ravel() for a in parts.values()])
    host = torch.from_numpy(packed)
    if device.type == "cuda":  # pinned + non_blocking: the copy never waits for the GPU
        host = host.pin_memory()
        packed_dev = host.to(device, non_blocking=True)
    else:
        packed_dev = host.to(device)
    views, offset = {}, 0
    for name, a in parts.items():
        n = int(np.asarray(a).size)
        views[name] = packed_dev[offset : offset + n]
        offset += n
    return host, views


def _pack_request(device, retention, targets, anchors, budgets) -> RequestArrays:
    r32 = np.zeros(2 * ((retention.size + 1) // 2), dtype=np.float32)
    r32[: retention.size] = retention
    host, views = _to_device_packed(
        {
            "retention": retention.view(np.int64),
            "retention32": r32.view(np.int64),
            "targets": targets,
            "target_start": np.concatenate([[0], np.cumsum(targets)]),
            "anchors": anchors,
            "budgets": budgets,
        },
        device,
    )
    views["retention"] = views["retention"].view(torch.float64)
    views["retention32"] = views["retention32"].view(torch.float32)[: retention.size]
    return RequestArrays(host=host, **views)


def _pack_layout(layout: VideoLayout, device: torch.device) -> DeviceLayout:
    """The :class:`DeviceLayout` of ``layout``, built and copied to ``device`` in one transfer."""
    V = layout.num_videos
    frame_tokens = layout.frame_tokens
    units_per_frame = -(-frame_tokens // UNIT_ROWS)
    frame_unit_start = np.concatenate([[0], np.cumsum(units_per_frame)]).astype(np.int64)
    U = int(frame_unit_start[-1])
    unit_frame = np.repeat(np.arange(layout.total_frames, dtype=np.int64), units_per_frame)
    unit_local = np.arange(U, dtype=np.int64) - frame_unit_start[:-1][unit_frame]
    unit_row_start = layout.frame_row_start[:-1][unit_frame] + unit_local * UNIT_ROWS
    unit_rows = np.minimum(UNIT_ROWS, frame_tokens[unit_frame] - unit_local * UNIT_ROWS)
    splits_per_video = -(-layout.tokens_per_video // SPLIT_ROWS)
    video_split_start = np.concatenate([[0], np.cumsum(splits_per_video)]).astype(np.int64)
    split_video = np.repeat(np.arange(V, dtype=np.int64), splits_per_video)
    split_local = np.arange(int(video_split_start[-1]), dtype=np.int64) - video_split_start[:-1][split_video]
    split_row_start = np.append(layout.row_start[:-1][split_video] + split_local * SPLIT_ROWS, layout.num_tokens)
    host, views = _to_device_packed(
        {
            "num_frames": layout.num_frames,
            "tokens_per_frame": layout.tokens_per_frame,
            "row_start": layout.row_start,
            "frame_start": layout.frame_start,
            "frame_row_start": layout.frame_row_start,
            "frame_unit_start": frame_unit_start,
            "frame_video": layout.frame_video,
            "frame_tokens": frame_tokens,
            "row_video": layout.row_video(),
            "row_frame": layout.row_frame(),
            "unit_row_start": unit_row_start,
            "unit_rows": unit_rows,
            "unit_video": layout.frame_video[unit_frame],
            "unit_frame": unit_frame,
            "split_row_start": split_row_start,
            "split_video": split_video,
            "video_split_start": video_split_start,
        },
        device,
    )
    return DeviceLayout(layout=layout, num_units=U, num_splits=int(split_video.size), host=host, **views)
