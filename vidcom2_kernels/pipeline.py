"""The one pipeline every backend runs: scores -> budgets -> the host read -> select -> gather.

Two named axes (:class:`~vidcom2_kernels.records.Request`): the scorer (``method``: VidCom2's
Gaussian uniqueness or DyCoke's temporal similarity) and who plans the frame budgets (``fca``:
VidCom2's Frame Compression Adjustment over VidCom2's frame uniqueness, or DyCoke's fixed counts).
The backend (a module of :mod:`vidcom2_kernels.backends`) does the tensor work, by the names of
its contract; this module decides what runs and does the call's single host read, of one (2, V)
int64 buffer the backends write the kept counts and the non-finite flags into (``out=``).
"""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple, Optional

import numpy as np
import torch

from .backends import name_of
from .buffers import new_output
from .device_layout import request_arrays
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


def score(req: Request, backend: ModuleType, flags: torch.Tensor) -> Scored:
    """The scorer axis. VidCom2: channel choice, then scores and uniqueness. DyCoke: similarity
    with the anchor frames; with FCA budgets VidCom2's uniqueness is computed too (its token
    scores are not used). The non-finite flags go into ``flags`` (V,) int64."""
    x, layout = req.features, req.layout
    uniqueness = nonfinite = None
    if req.method == "vidcom2" or req.fca:
        keep, nonfinite = backend.select_channels(x, layout, req.validate, out=flags)
        scores, uniqueness = backend.token_scores(x, layout, keep)
    if req.method == "dycoke":
        scores, dycoke_nonfinite = backend.dycoke_similarity(
            x, layout, anchor_frames(layout, fca=req.fca), req.validate, out=flags
        )
        nonfinite = dycoke_nonfinite if nonfinite is None else nonfinite
        if uniqueness is None:
            uniqueness = torch.zeros(layout.total_frames, dtype=torch.float32, device=x.device)
    return Scored(scores, uniqueness, nonfinite)


def plan_budgets(req: Request, backend: ModuleType, uniqueness: torch.Tensor, counts: torch.Tensor) -> Budgets:
    """The budget axis: FCA from the frame uniqueness (kept counts into ``counts`` (V,) int64), or
    DyCoke's counts (known on the host; on the device from the request cache, read only)."""
    if req.fca:
        budgets, counts = backend.frame_budgets(uniqueness, req.layout, req.retention, out=counts)
        return Budgets(budgets, counts, None)
    host = dycoke_budgets(req.layout, req.retention, req.quirks)
    budgets = request_arrays(req.layout, req.features.device, budgets=host).budgets
    return Budgets(budgets, None, req.layout.per_video_sum(host))


def known_kept(req: Request) -> Optional[int]:
    """The number of kept tokens when the host knows it before any tensor work (exact mode, or
    DyCoke's own counts); None when it depends on the scores (VidCom2's budgets, not exact)."""
    if req.targets is not None:
        return int(req.targets.sum())
    if not req.fca:
        return int(dycoke_budgets(req.layout, req.retention, req.quirks).sum())
    return None


def read_back(req: Request, plan: Budgets, readback: torch.Tensor) -> int:
    """The call's one host read, of the rows of ``readback`` (2, V) that are needed: the kept
    counts (row 0) that size the output (not needed in exact mode or with DyCoke's counts), the
    validation flags (row 1; not with ``validate=False``). Nothing is read when neither is.
    Raises the validation error; returns the number of kept tokens."""
    known = req.targets if req.targets is not None else plan.host_counts
    rows = slice(0 if known is None else 1, 2 if req.validate else 1)
    values = readback[rows].tolist() if rows.start < rows.stop else []
    num_kept = int(known.sum()) if known is not None else sum(values[0])
    flags = values[-1] if req.validate else []
    raise_nonfinite([v for v, bad in enumerate(flags) if bad])
    return num_kept


def prepare(req: Request, backend: ModuleType) -> tuple[Scored, Budgets, int]:
    """Scores, budgets and the host read of a checked request with at least one token."""
    readback = new_output((2, req.layout.num_videos), torch.int64, req.features.device)
    scored = score(req, backend, readback[1])
    plan = plan_budgets(req, backend, scored.uniqueness, readback[0])
    return scored, plan, read_back(req, plan, readback)


def select(req: Request, backend: ModuleType) -> tuple[Scored, Selection]:
    """Everything but the gather: :func:`prepare` and the kept tokens (callers that apply the
    mask themselves stop here)."""
    scored, plan, num_kept = prepare(req, backend)
    return scored, backend.select_tokens(scored.scores, req.layout, plan.budgets, req.targets, num_kept)


def run(req: Request, backend: ModuleType) -> Compression:
    """The whole compression of a checked request on ``backend``: :func:`prepare`, then the
    selection and the gather (one launch on triton)."""
    x, layout = req.features, req.layout
    if layout.num_tokens == 0:
        return empty(req, backend)
    scored, plan, num_kept = prepare(req, backend)
    selection, kept = backend.select_and_gather(
        scored.scores, layout, plan.budgets, req.targets, num_kept, (x, *req.extras)
    )
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
