"""Helpers shared by the Triton stages: interpreter detection, launch configurations, and the
packed per-layout metadata the kernels read (one host-to-device copy, cached per layout)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from ..buffers import DeviceCache
from ..layout import VideoLayout

#: Rows a program of the row-unit kernels (centres, scores) handles: one unit never spans frames.
UNIT_ROWS = 16
#: Rows of one video a program of the channel-variance and reconcile-count kernels reads (a row
#: split): LLaVA-OV's 6272 rows x 3584 channels make 13 x 112 variance programs, enough for one
#: video to fill an H100.
SPLIT_ROWS = 512


def num_warps_for(block_elements: int) -> int:
    """Host heuristic: 4 warps up to 4K elements per loaded tile, 8 beyond."""
    return 4 if block_elements <= 4096 else 8


@triton.jit
def order_key(x):
    """Float32 scores -> int32 whose order is the float order. NaN becomes +inf, -0.0 becomes
    +0.0 (so it ties with +0.0 and the lower index wins, as in a stable sort)."""
    x = tl.where(x != x, float("inf"), x) + 0.0
    bits = x.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def is_interpreter() -> bool:
    """True when the kernels were built for Triton's CPU interpreter: ``TRITON_INTERPRET=1`` was
    set when this package was imported (Triton decides per kernel, at definition)."""
    return isinstance(order_key, InterpretedFunction)


@triton.jit
def clamp_min(x, lo):
    """``max(x, lo)`` that keeps NaN, like ``torch.clamp_min`` (``tl.maximum`` returns ``lo`` for a
    NaN ``x`` on the GPU): a NaN feature must stay NaN through every norm and distance."""
    return tl.where(x < lo, lo, x)


@triton.jit
def key_at_most(bits, rows, bits_max, row_max):
    """(bits, row) <= (bits_max, row_max) in lexicographic order, elementwise."""
    return (bits < bits_max) | ((bits == bits_max) & (rows <= row_max))


@triton.jit
def unit_rows(unit_row_start_ptr, unit_rows_ptr, BLOCK_N: tl.constexpr):
    """This program's row unit (<= BLOCK_N rows of one frame): its index, first row, the
    (BLOCK_N,) row offsets inside the unit and their mask."""
    i_u = tl.program_id(0)
    o_n = tl.arange(0, BLOCK_N)
    return i_u, tl.load(unit_row_start_ptr + i_u), o_n, o_n < tl.load(unit_rows_ptr + i_u)


@dataclass
class DeviceLayout:
    """A :class:`VideoLayout` on the device: int64 views into one packed tensor.

    Per video (V): ``num_frames``, ``tokens_per_frame``, ``row_start`` (V+1), ``frame_start``
    (V+1), ``targets`` (exact mode), ``retention`` (float64).
    Per frame (F): ``frame_row_start`` (F+1), ``frame_unit_start`` (F+1), ``frame_video``.
    Per row unit (U): ``unit_row_start``, ``unit_rows``, ``unit_video``, ``unit_frame``.
    Per row split (S; the channel variance's programs, and the exact reconcile's):
    ``split_row_start`` (S+1), ``split_video``; per video ``video_split_start`` (V+1).
    """

    layout: VideoLayout
    num_units: int
    num_splits: int
    num_frames: torch.Tensor
    tokens_per_frame: torch.Tensor
    row_start: torch.Tensor
    frame_start: torch.Tensor
    targets: torch.Tensor
    retention: torch.Tensor
    frame_row_start: torch.Tensor
    frame_unit_start: torch.Tensor
    frame_video: torch.Tensor
    unit_row_start: torch.Tensor
    unit_rows: torch.Tensor
    unit_video: torch.Tensor
    unit_frame: torch.Tensor
    split_row_start: torch.Tensor
    split_video: torch.Tensor
    video_split_start: torch.Tensor
    extra: dict = None  # further per-layout int64 arrays by name (e.g. DyCoke's anchors and budgets)


_CACHE = DeviceCache(64)


def device_layout(layout: VideoLayout, device: torch.device, retention=None, targets=None, **extra) -> DeviceLayout:
    """Build (or fetch from a small LRU cache) the packed metadata of ``layout`` on ``device``.

    ``retention`` (V,) float64 and ``targets`` (V,) int64 are numpy arrays or None; ``extra``
    names further int64 arrays to carry in the same copy (``meta.extra[name]``).
    """
    V = layout.num_videos
    retention = np.zeros(V) if retention is None else np.asarray(retention, dtype=np.float64)
    targets = np.zeros(V, dtype=np.int64) if targets is None else np.asarray(targets, dtype=np.int64)
    extra = {k: np.asarray(v, dtype=np.int64) for k, v in extra.items()}
    key = (
        layout.key(),
        str(device),
        retention.tobytes(),
        targets.tobytes(),
        tuple((k, v.tobytes()) for k, v in sorted(extra.items())),
    )
    return _CACHE.get(key, lambda: _pack(layout, device, retention, targets, extra))


def _pack(layout: VideoLayout, device: torch.device, retention, targets, extra: dict) -> DeviceLayout:
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

    parts = {
        "num_frames": layout.num_frames,
        "tokens_per_frame": layout.tokens_per_frame,
        "row_start": layout.row_start,
        "frame_start": layout.frame_start,
        "targets": targets,
        "retention": retention.view(np.int64),
        "frame_row_start": layout.frame_row_start,
        "frame_unit_start": frame_unit_start,
        "frame_video": layout.frame_video,
        "unit_row_start": unit_row_start,
        "unit_rows": unit_rows,
        "unit_video": layout.frame_video[unit_frame],
        "unit_frame": unit_frame,
        "split_row_start": split_row_start,
        "split_video": split_video,
        "video_split_start": video_split_start,
        **{f"extra_{k}": v for k, v in extra.items()},
    }
    packed = np.concatenate([np.asarray(a, dtype=np.int64).ravel() for a in parts.values()])
    host = torch.from_numpy(packed)
    if device.type == "cuda":  # pinned + non_blocking: the copy never waits for the GPU
        packed_dev = host.pin_memory().to(device, non_blocking=True)
    else:
        packed_dev = host.to(device)
    views, offset = {}, 0
    for name, a in parts.items():
        n = int(np.asarray(a).size)
        views[name] = packed_dev[offset : offset + n]
        offset += n
    views["retention"] = views["retention"].view(torch.float64)
    extra_views = {k[len("extra_") :]: views.pop(k) for k in list(views) if k.startswith("extra_")}
    return DeviceLayout(layout=layout, num_units=U, num_splits=int(split_video.size), **views, extra=extra_views)
