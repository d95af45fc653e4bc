"""FastVID's host-side plan: its options, its base per-frame budgets, and the segment plan it
makes from the similarities of consecutive frames (read to the host in the call's one read).

The released code (``token_compressor/fastvid``) for one video of F frames of T tokens, at
retention r, with ``sim[f]`` the cosine of the normalised means of frames f and f + 1:

1. DySeg: cut after the ``min(c - 1, F - 1)`` lowest similarities and after every one below
   ``tau``; so a video of c frames or fewer gets one segment a frame.
2. A segment of L frames keeps ``L * frame_retain`` tokens, ``frame_retain = max(1, min(T,
   int(T * r)))`` (with ``frame_budgets="vidcom2"`` the sum of its frames' FCA budgets instead):
   ``max(1, int(. * d))`` of them context tokens (0 when it keeps one), the rest salient.
3. In a segment of more than one frame, inner segments split where the similarity is below
   ``ignore``; only the last frame of each inner segment keeps tokens: an equal share of the
   salient count (the first ones one more), and the context count in ``ceil(n / p)`` equal shares
   given to the inner segments at index % p == 0, then that list reversed, each capped at T // 2
   (the salient count of a frame with context capped at T minus it).
4. At retention >= 1 the released code keeps every token, unmerged.

The lowest similarities on ties: the lower frame first (``torch.topk``'s order is unspecified);
NaN (``validate=False``) ranks above every number.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...layout import VideoLayout
from ..base import integer_option, number_option

#: the released defaults (its environment variables ``fastvid_DySeg_c`` ... ``fastvid_DTM_beta``)
DEFAULTS = {"dyseg_c": 8, "dyseg_tau": 0.84, "dyseg_ignore": 0.99, "stprune_d": 0.5, "dtm_p": 4, "dtm_beta": 0.5}
#: the released fork's environment variable of each option
ENV = {
    "dyseg_c": "fastvid_DySeg_c",
    "dyseg_tau": "fastvid_DySeg_tau",
    "dyseg_ignore": "fastvid_DySeg_ignore",
    "stprune_d": "fastvid_STPrune_d",
    "dtm_p": "fastvid_DTM_p",
    "dtm_beta": "fastvid_DTM_beta",
}
#: the nearest neighbours (the token itself included) of the released DPC-kNN density
DPC_NEIGHBOURS = 4


def check_options(options: dict) -> dict:
    """``dyseg_c`` and ``dtm_p`` ints >= 1; ``stprune_d`` and ``dtm_beta`` in [0, 1]; the two
    thresholds finite numbers (the released code clamps what is out of range; here it is refused)."""
    return {
        "dyseg_c": integer_option(options, "dyseg_c"),
        "dyseg_tau": number_option(options, "dyseg_tau"),
        "dyseg_ignore": number_option(options, "dyseg_ignore"),
        "stprune_d": number_option(options, "stprune_d", unit=True),
        "dtm_p": integer_option(options, "dtm_p"),
        "dtm_beta": number_option(options, "dtm_beta", unit=True),
    }


def fastvid_budgets(layout: VideoLayout, retention: np.ndarray) -> np.ndarray:
    """(F,) int64 ``frame_retain = max(1, min(T, int(T * r)))`` per frame: the base budgets a
    segment sums."""
    T = layout.frame_tokens
    return np.maximum(1, np.minimum(T, np.floor(T * retention[layout.frame_video]))).astype(np.int64)


class Plan(NamedTuple):
    """Per frame (F,) int64: ``budgets`` (salient + context), ``salient`` and ``context`` counts,
    ``segment`` (a global segment id; frames of one segment are consecutive)."""

    budgets: np.ndarray
    salient: np.ndarray
    context: np.ndarray
    segment: np.ndarray


def _sizes(num_frames: int, cuts) -> list:
    """Segment sizes of ``num_frames`` frames cut after each frame in ``cuts``."""
    edges = sorted({int(c) for c in cuts if 0 <= c < num_frames - 1})
    bounds = [-1, *edges, num_frames - 1]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def _lowest(sim: np.ndarray, k: int) -> list:
    """Positions of the ``k`` lowest values (the lower position first on ties, NaN last)."""
    key = np.where(np.isnan(sim), np.inf, sim)
    return sorted(range(len(sim)), key=lambda i: (key[i], i))[:k]


def _shares(total: int, parts: int) -> list:
    """``total`` in ``parts`` equal shares, the first ``total % parts`` one larger."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _segment_frames(inner: list, T: int, salient: int, context: int, p: int) -> tuple:
    """(salient, context) per frame of a segment of inner segments of sizes ``inner``."""
    n = len(inner)
    salient_by_inner = _shares(salient, n)
    temp = _shares(context, max(1, (n + p - 1) // p))
    context_by_inner, used = [], 0
    for i in range(n):
        if i % p == 0 and used < len(temp):
            context_by_inner.append(min(temp[used], T // 2))
            used += 1
        else:
            context_by_inner.append(0)
    context_by_inner.reverse()
    sal, ctx = [], []
    for size, s, c in zip(inner, salient_by_inner, context_by_inner):
        sal += [0] * (size - 1)
        ctx += [0] * (size - 1)
        sal.append(min(s, T - c))  # a frame with context keeps room for it
        ctx.append(c)
    return sal, ctx


def video_plan(sim: np.ndarray, base: np.ndarray, T: int, r: float, options) -> tuple:
    """(salient, context, segment sizes) of one video: ``sim`` (F,) float64 (the last entry
    unused), ``base`` (F,) int64 base budgets."""
    F = len(base)
    if r >= 1.0:  # the released code keeps every token
        return [T] * F, [0] * F, [F]
    between = np.asarray(sim[: F - 1], dtype=np.float64)
    cuts = _lowest(between, min(options["dyseg_c"] - 1, F - 1))
    cuts += [i for i in range(F - 1) if between[i] < options["dyseg_tau"]]
    sizes = _sizes(F, cuts)
    salient, context, f0 = [], [], 0
    for L in sizes:
        retain = max(1, min(L * T, int(base[f0 : f0 + L].sum())))
        ctx = min(max(1, int(retain * options["stprune_d"])) if retain > 1 else 0, retain)
        if L == 1:
            sal_f, ctx_f = [retain - ctx], [ctx]
        else:
            inner = between[f0 : f0 + L - 1]
            sal_f, ctx_f = _segment_frames(
                _sizes(L, [i for i in range(L - 1) if inner[i] < options["dyseg_ignore"]]),
                T,
                retain - ctx,
                ctx,
                options["dtm_p"],
            )
        sal_f = [min(max(0, s), T) for s in sal_f]
        ctx_f = [min(max(0, c), T - s) for s, c in zip(sal_f, ctx_f)]
        if sum(sal_f) + sum(ctx_f) == 0:
            # the released fallback keeps the segment's `retain` largest norms; it is reached only
            # with stprune_d == 1 and one token a frame, where that is every token
            if retain != L * T:
                raise AssertionError("FastVID plan: a fallback segment that keeps part of its tokens")
            sal_f = [T] * L
        salient += sal_f
        context += ctx_f
        f0 += L
    return salient, context, sizes


def segment_plan(layout: VideoLayout, retention: np.ndarray, sim: np.ndarray, base: np.ndarray, options) -> Plan:
    """The :class:`Plan` of every video: ``sim`` (F,) float64 consecutive-frame similarities,
    ``base`` (F,) int64 base budgets (own or FCA)."""
    salient, context, segment, next_id = [], [], [], 0
    for v in range(layout.num_videos):
        frames = slice(int(layout.frame_start[v]), int(layout.frame_start[v + 1]))
        T = int(layout.tokens_per_frame[v])
        sal, ctx, sizes = video_plan(sim[frames], base[frames], T, float(retention[v]), options)
        salient += sal
        context += ctx
        for L in sizes:
            segment += [next_id] * L
            next_id += 1
    salient, context = np.asarray(salient, dtype=np.int64), np.asarray(context, dtype=np.int64)
    return Plan(salient + context, salient, context, np.asarray(segment, dtype=np.int64))


class ContextFrames(NamedTuple):
    """The frames with context tokens (the merge's targets), host arrays. Per context frame (Cn,):
    ``frame`` (its global frame), ``first`` (its first context token among all of them, ascending
    by row) and ``count``, ``slot`` (its place among its segment's context frames); ``table``
    (S, J): each segment's context frames by slot (-1 padding), J >= 1."""

    frame: np.ndarray
    first: np.ndarray
    count: np.ndarray
    slot: np.ndarray
    table: np.ndarray


def context_frames(segment: np.ndarray, per_frame: np.ndarray) -> ContextFrames:
    """:class:`ContextFrames` from each frame's segment (F,) and its count of context tokens (F,)."""
    frame = np.flatnonzero(per_frame > 0)
    first = (np.cumsum(per_frame) - per_frame)[frame]
    seg = segment[frame]  # ascending: segments are runs of frames
    slot = np.arange(len(frame)) - np.searchsorted(seg, seg, side="left")
    num_segments = int(segment.max(initial=-1)) + 1
    table = np.full((num_segments, int(slot.max(initial=0)) + 1), -1, dtype=np.int64)
    table[seg, slot] = np.arange(len(frame))
    return ContextFrames(frame, first.astype(np.int64), per_frame[frame].astype(np.int64), slot, table)
