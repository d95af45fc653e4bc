"""The one pipeline every backend runs: scores -> budgets -> the host read -> select -> gather.

Two named axes (:class:`~vidcom2_kernels.records.Request`): the scorer (``method``: VidCom2's
Gaussian uniqueness or DyCoke's temporal similarity) and who plans the frame budgets (``fca``:
VidCom2's Frame Compression Adjustment over VidCom2's frame uniqueness, or DyCoke's fixed counts).
The backend (a module of :mod:`vidcom2_kernels.backends`) does the tensor work, by the names of
its contract; this module decides what runs and does the call's single host read.
"""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple, Optional

import numpy as np
import torch

from .backends import name_of
from .buffers import to_device
from .dycoke import anchor_frames, dycoke_budgets
from .records import Compression, Request, Selection, raise_nonfinite


class Scored(NamedTuple):
    """Scores (N,) float32 (low = kept first), frame uniqueness (F,) float32, non-finite videos (V,) flags."""

    scores: torch.Tensor
    uniqueness: torch.Tensor
    nonfinite: torch.Tensor


class Budgets(NamedTuple):
    """Kept count per frame (F,) int64 on the device, and per video: on the device (``counts``,
    FCA) or already on the host (``host_counts``, DyCoke's fixed counts)."""

    budgets: torch.Tensor
    counts: Optional[torch.Tensor]
    host_counts: Optional[np.ndarray]


def score(req: Request, backend: ModuleType) -> Scored:
    """The scorer axis. VidCom2: channel choice, then scores and uniqueness. DyCoke: similarity
    with the anchor frames; with FCA budgets VidCom2's uniqueness is computed too (its token
    scores are not used)."""
    x, layout = req.features, req.layout
    uniqueness = nonfinite = None
    if req.method == "vidcom2" or req.fca:
        keep, nonfinite = backend.select_channels(x, layout, req.validate)
        scores, uniqueness = backend.token_scores(x, layout, keep)
    if req.method == "dycoke":
        scores, dycoke_nonfinite = backend.dycoke_similarity(
            x, layout, anchor_frames(layout, fca=req.fca), req.validate
        )
        nonfinite = dycoke_nonfinite if nonfinite is None else nonfinite
        if uniqueness is None:
            uniqueness = torch.zeros(layout.total_frames, dtype=torch.float32, device=x.device)
    return Scored(scores, uniqueness, nonfinite)


def plan_budgets(req: Request, backend: ModuleType, uniqueness: torch.Tensor) -> Budgets:
    """The budget axis: FCA from the frame uniqueness, or DyCoke's counts (known on the host)."""
    if req.fca:
        budgets, counts = backend.frame_budgets(uniqueness, req.layout, req.retention)
        return Budgets(budgets, counts, None)
    host = dycoke_budgets(req.layout, req.retention, req.quirks)
    return Budgets(to_device(host, req.features.device), None, req.layout.per_video_sum(host))


def known_kept(req: Request) -> Optional[int]:
    """The number of kept tokens when the host knows it before any tensor work (exact mode, or
    DyCoke's own counts); None when it depends on the scores (VidCom2's budgets, not exact)."""
    if req.targets is not None:
        return int(req.targets.sum())
    if not req.fca:
        return int(dycoke_budgets(req.layout, req.retention, req.quirks).sum())
    return None


def read_back(req: Request, plan: Budgets, nonfinite: torch.Tensor) -> int:
    """The call's one host read: the kept counts that size the output (not needed in exact mode
    or with DyCoke's counts) together with the validation flags (none with ``validate=False``).
    Raises the validation error; returns the number of kept tokens."""
    known = req.targets if req.targets is not None else plan.host_counts
    on_device = ([] if known is not None else [plan.counts]) + ([nonfinite.long()] if req.validate else [])
    values = torch.cat(on_device).tolist() if on_device else []
    if known is None:
        V = req.layout.num_videos
        num_kept, flags = sum(values[:V]), values[V:]
    else:
        num_kept, flags = int(known.sum()), values
    raise_nonfinite([v for v, bad in enumerate(flags) if bad])
    return num_kept


def select(req: Request, backend: ModuleType) -> tuple[Scored, Selection]:
    """Everything but the gather: scores, budgets, the host read and the kept tokens of a checked
    request with at least one token (callers that apply the mask themselves stop here)."""
    scored = score(req, backend)
    plan = plan_budgets(req, backend, scored.uniqueness)
    num_kept = read_back(req, plan, scored.nonfinite)
    return scored, backend.select_tokens(scored.scores, req.layout, plan.budgets, req.targets, num_kept)


def run(req: Request, backend: ModuleType) -> Compression:
    """The whole compression of a checked request on ``backend``: :func:`select`, then the gather."""
    x, layout = req.features, req.layout
    if layout.num_tokens == 0:
        return empty(req, backend)
    scored, selection = select(req, backend)
    kept = backend.gather_rows(selection.indices, (x, *req.extras))
    return Compression(
        indices=selection.indices,
        features=kept[0],
        mask=selection.mask,
        budgets=selection.budgets,
        counts=selection.counts,
        scores=scored.scores,
        uniqueness=scored.uniqueness,
        extras=tuple(kept[1:]),
        layout=layout,
        backend=name_of(backend),
        engine=backend,
    )


def empty(req: Request, backend: ModuleType) -> Compression:
    """The result for zero tokens (no videos, or videos of no frames)."""
    x, dev = req.features, req.features.device
    none = torch.empty(0, dtype=torch.int64, device=dev)
    return Compression(
        indices=none,
        features=x[:0],
        mask=torch.zeros(x.shape[0], dtype=torch.bool, device=dev),
        budgets=none,
        counts=torch.zeros(req.layout.num_videos, dtype=torch.int64, device=dev),
        scores=torch.empty(0, dtype=torch.float32, device=dev),
        uniqueness=torch.empty(0, dtype=torch.float32, device=dev),
        extras=tuple(t[:0] for t in req.extras),
        layout=req.layout,
        backend=name_of(backend),
        engine=backend,
    )
