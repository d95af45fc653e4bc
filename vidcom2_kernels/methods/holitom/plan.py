"""HoliTom's host-side plan: its options, the static windows it finds by dynamic programming over
the tokens' runs of similarity, its counts, and the output rows' placeholder positions.

The released code (``token_compressor/holitom``) for one video of t frames of T tokens (N = t * T)
at retention r, with ``sim[f, i]`` the cosine of token i in frames f and f + 1 (each normalised):

1. A window of frames s..e (e > s) can fold its static tokens, those whose similarity stays
   above ``tau`` (strictly) from frame s to frame e: it saves ``static(s, e) * (e - s)`` rows. A
   dynamic programme over the frames picks the windows (a frame alone, or 2 to
   ``max_window_size`` frames) that save the most; on equal totals the single frame, then the
   shorter window. R = the total saved.
2. ``ratio = min(r / ((N - R) / N), 1)`` (``r`` when R = N).
3. A window of W >= 2 frames with n_s static tokens: their means over the window form
   ``round(n_s * ratio)`` DPC-kNN clusters (``k = min(k_neighbors, clusters)``); each of its
   n_d = T - n_s dynamic tokens a frame: ``ceil(n_d * ratio)`` kept a frame, of which
   ``round(. * (1 - d))`` dominant (largest L2 norms, rows unchanged) and the rest DPC-kNN clusters
   of the frame's other dynamic tokens. A window of one frame has only dynamic tokens.
4. Rows in order: per window the static block (by position), then each frame's dominant rows (by
   position) and its contextual rows (by position).
5. The positions of the K output rows are ``torch.linspace(0, N - 1, K)`` with an integer dtype,
   on the features' device (CUDA steps in float32, the CPU in float64: they differ at about a
   third of the sizes): placeholders, not the tokens' positions. The released
   Qwen adapters use them as the kept video tokens' positions; so do the adapters here.
6. A video that would keep nothing (every token static and too few clusters) keeps every token
   unmerged: the released adapter falls back to the whole video when the row count and the
   placeholders disagree.

With ``frame_budgets="vidcom2"`` each window's own ratio replaces step 2: the sum of its frames'
FCA budgets over the rows it has after folding (``n_s + W * n_d``), at most 1.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import torch

from ...layout import VideoLayout
from ..base import integer_option, number_option

#: the released defaults (its environment variables ``HOLITOM_T`` ... ``HOLITOM_MAX_WINDOW_SIZE``)
DEFAULTS = {"tau": 0.8, "beta": 0.6, "dominant_ratio": 0.0, "k_neighbors": 7, "max_window_size": 1024}
#: the released fork's environment variable of each option
ENV = {
    "tau": "HOLITOM_T",
    "beta": "HOLITOM_BETA",
    "dominant_ratio": "HOLITOM_D",
    "k_neighbors": "HOLITOM_K",
    "max_window_size": "HOLITOM_MAX_WINDOW_SIZE",
}


def check_options(options: dict) -> dict:
    """``tau`` a finite number; ``beta`` and ``dominant_ratio`` in [0, 1]; ``k_neighbors`` and
    ``max_window_size`` ints >= 1 (the released code raises what is below 1 to 1; here it is
    refused)."""
    return {
        "tau": number_option(options, "tau"),
        "beta": number_option(options, "beta", unit=True),
        "dominant_ratio": number_option(options, "dominant_ratio", unit=True),
        "k_neighbors": integer_option(options, "k_neighbors"),
        "max_window_size": integer_option(options, "max_window_size"),
    }


def holitom_budgets(layout: VideoLayout, retention: np.ndarray) -> np.ndarray:
    """(F,) int64 ``round(T * r)`` per frame: a frame's share of the budget. HoliTom's own plan
    spends the ratio per video (step 2); this exists so that ``frame_budgets="vidcom2"`` applies."""
    T = layout.frame_tokens
    return np.rint(T * retention[layout.frame_video]).astype(np.int64)


def static_windows(runs: np.ndarray, max_window_size: int) -> tuple:
    """The dynamic programme of one video: ``runs`` (t, T) int64, for each frame and token the
    number of following frames over which the token stays static. Returns (windows [(start, end)]
    inclusive, R the rows saved)."""
    t, T = runs.shape
    # static[s, L]: tokens static from frame s over L more frames (L = 0 .. t - 1)
    static = np.zeros((t, t + 1), dtype=np.int64)
    np.add.at(static, (np.repeat(np.arange(t), T), np.minimum(runs, t - 1).ravel()), 1)
    static = np.cumsum(static[:, ::-1], axis=1)[:, ::-1][:, :t]
    dp = np.zeros(t, dtype=np.int64)
    prev = np.zeros(t, dtype=np.int64)
    for i in range(t):
        best, start = (dp[i - 1] if i > 0 else 0), i
        sizes = np.arange(2, min(i + 1, max_window_size) + 1)
        if len(sizes):
            j = i - sizes  # the window j + 1 .. i
            before = np.where(j >= 0, dp[np.maximum(j, 0)], 0)
            saved = static[j + 1, sizes - 1] * (sizes - 1)
            value = before + saved
            first = int(np.argmax(value))  # the shortest window of the best total
            if value[first] > best:
                best, start = int(value[first]), int(j[first] + 1)
        dp[i], prev[i] = best, start
    windows, i = [], t - 1
    while i >= 0:
        windows.append((int(prev[i]), i))
        i = int(prev[i]) - 1
    return windows[::-1], int(dp[-1])


class Plan(NamedTuple):
    """Host arrays. Per window (Wn,): ``video``, ``start`` (its first global frame), ``size``
    (frames), ``static`` (its static tokens), ``clusters`` (their clusters). Per frame (F,):
    ``dominant`` and ``contextual`` counts, ``first`` (its first output row), ``window``. Per row
    (N,): ``is_static`` (static in its window). ``static_first`` (Wn,) the window's first output
    row; ``keep`` (K,) int64 the placeholders (global rows, ascending); ``budgets`` (F,) int64
    placeholders per frame; ``whole`` (V,) bool videos kept whole (step 6)."""

    video: np.ndarray
    start: np.ndarray
    size: np.ndarray
    static: np.ndarray
    clusters: np.ndarray
    static_first: np.ndarray
    dominant: np.ndarray
    contextual: np.ndarray
    first: np.ndarray
    window: np.ndarray
    is_static: np.ndarray
    keep: np.ndarray
    budgets: np.ndarray
    whole: np.ndarray


def placeholders(layout: VideoLayout, counts: np.ndarray, device) -> np.ndarray:
    """(K,) int64 global rows: per video with ``counts[v] > 0`` output rows, ``torch.linspace(0,
    N_v - 1, counts[v])`` with an integer dtype on ``device``, as the released code computes its
    keep indices on its features' device (torch's CUDA kernel steps in float32, its CPU kernel in
    float64, and they round differently); one read to the host for the whole batch."""
    parts = [
        torch.linspace(
            0, int(layout.row_start[v + 1] - layout.row_start[v]) - 1, int(k), dtype=torch.long, device=device
        )
        + int(layout.row_start[v])
        for v, k in enumerate(counts.tolist())
        if k > 0
    ]
    keep = torch.cat(parts).cpu().numpy() if parts else np.zeros(0, dtype=np.int64)
    if not (np.diff(keep) > 0).all():
        raise AssertionError("HoliTom placeholders are not distinct")
    return keep


def window_plan(
    layout: VideoLayout, retention: np.ndarray, runs: np.ndarray, base: np.ndarray, fca: bool, options, device
) -> Plan:
    """The :class:`Plan` of every video: ``runs`` (N,) float64 the scorer's static runs, ``base``
    (F,) int64 base budgets (FCA's when ``fca``: each window then spends its frames' sum); the
    placeholders are computed on ``device``, the features' device."""
    d = options["dominant_ratio"]
    cols = {k: [] for k in ("video", "start", "size", "static", "clusters", "static_first")}
    F, N = layout.total_frames, layout.num_tokens
    dominant, contextual = np.zeros(F, np.int64), np.zeros(F, np.int64)
    first, window = np.zeros(F, np.int64), np.zeros(F, np.int64)
    is_static = np.zeros(N, dtype=bool)
    counts, whole = np.zeros(layout.num_videos, dtype=np.int64), np.zeros(layout.num_videos, dtype=bool)
    row = 0  # output rows so far
    for v in range(layout.num_videos):
        t, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
        f0, r0 = int(layout.frame_start[v]), int(layout.row_start[v])
        if t * T == 0:
            continue
        video_runs = runs[r0 : r0 + t * T].astype(np.int64).reshape(t, T)
        windows, saved = static_windows(video_runs, options["max_window_size"])
        total = t * T
        r = float(min(max(float(retention[v]), 0.0), 1.0))
        ratio = min(r / ((total - saved) / total), 1.0) if total > saved else r
        video_first, video_windows = row, len(cols["video"])
        for s, e in windows:
            W = e - s + 1
            static = video_runs[s] >= W - 1 if W > 1 else np.zeros(T, dtype=bool)
            n_s = int(static.sum())
            n_d = T - n_s
            if fca:  # exact rationals: the window's budget over its rows after folding, at most 1
                wr = min(Fraction(int(base[f0 + s : f0 + e + 1].sum()), n_s + W * n_d), Fraction(1))
            else:
                wr = ratio
            clusters = round(n_s * wr) if n_s > 0 else 0
            per_frame = math.ceil(n_d * wr)
            dom = round(per_frame * (1 - d))
            cols["video"].append(v)
            cols["start"].append(f0 + s)
            cols["size"].append(W)
            cols["static"].append(n_s)
            cols["clusters"].append(clusters)
            cols["static_first"].append(row)
            a = r0 + s * T
            is_static[a : a + W * T] = np.tile(static, W)
            row += clusters
            for f in range(f0 + s, f0 + e + 1):
                dominant[f], contextual[f], first[f] = dom, per_frame - dom, row
                window[f] = len(cols["video"]) - 1
                row += per_frame
        if row == video_first:  # step 6: the whole video, unmerged
            whole[v] = True
            del_windows(cols, video_windows)
            is_static[r0 : r0 + t * T] = False
            frames = slice(f0, f0 + t)
            dominant[frames], contextual[frames] = T, 0
            first[frames] = video_first + np.arange(t) * T
            window[frames] = -1
            row = video_first + total
        counts[v] = row - video_first
    keep = placeholders(layout, np.where(whole, 0, counts), device)
    if whole.any():  # the whole videos' rows, in video order
        rows = [np.arange(layout.row_start[v], layout.row_start[v + 1]) for v in np.flatnonzero(whole)]
        keep = np.sort(np.concatenate([keep, *rows]))
    budgets = np.bincount(np.searchsorted(layout.frame_row_start, keep, side="right") - 1, minlength=F)
    arrays = {k: np.asarray(vals, dtype=np.int64) for k, vals in cols.items()}
    return Plan(
        **arrays,
        dominant=dominant,
        contextual=contextual,
        first=first,
        window=window,
        is_static=is_static,
        keep=keep,
        budgets=budgets[:F].astype(np.int64),
        whole=whole,
    )


def del_windows(cols: dict, start: int) -> None:
    """Drop the windows from index ``start`` on (a video kept whole has none)."""
    for values in cols.values():
        del values[start:]
