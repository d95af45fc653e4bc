"""The one pipeline every method runs on every backend: score -> budgets -> the host read ->
select -> gather -> merge.

Two named axes (:class:`~vidcom2_kernels.records.Request`): the method (``method``, a
:class:`~vidcom2_kernels.methods.Method` of :mod:`vidcom2_kernels.methods`: its scorer, its own
budgets, its merge) and who plans the frame budgets (``fca``: VidCom2's Frame Compression
Adjustment over VidCom2's frame uniqueness, or the method's own counts). The backend (a module of
:mod:`vidcom2_kernels.backends`) runs the shared stages, and picks the method's kernels; this
module decides what runs and does the call's single host read, of one (2, V) int64 buffer the
backends write the kept counts and the non-finite flags into (``out=``).
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType
from typing import NamedTuple, Optional

import numpy as np
import torch

from . import methods
from .backends import name_of
from .buffers import new_output
from .device_layout import request_arrays
from .methods import Scored
from .records import Compression, Request, Selection, raise_nonfinite


class Budgets(NamedTuple):
    """Kept count per frame (F,) int64 on the device, and per video: on the device (``counts``,
    FCA) or already on the host (``host_counts``, a method's own counts such as DyCoke's)."""

    budgets: torch.Tensor
    counts: Optional[torch.Tensor]
    host_counts: Optional[np.ndarray]


def score(req: Request, backend: ModuleType, flags: torch.Tensor) -> Scored:
    """The method's scorer on ``backend``. With FCA budgets over a method whose scorer has no
    frame uniqueness, VidCom2's scorer runs first for it (its token scores are not used). The
    non-finite flags go into ``flags`` (V,) int64."""
    method, name = methods.get(req.method), name_of(backend)
    fca = None
    if req.fca and not method.gives_uniqueness:
        fca = methods.vidcom2.METHOD.score(req, methods.vidcom2.METHOD.kernels_on(name), flags)
    scored = method.score(req, method.kernels_on(name), flags)
    if fca is not None:
        return Scored(scored.scores, fca.uniqueness, fca.nonfinite, scored.stats)
    if scored.uniqueness is None:
        zeros = torch.zeros(req.layout.total_frames, dtype=torch.float32, device=req.features.device)
        return scored._replace(uniqueness=zeros)
    return scored


def own_budgets(req: Request):
    """The method's own per-frame counts (F,) int64, on the host (None with FCA budgets)."""
    return None if req.fca else methods.get(req.method).budgets(req)


def plan_budgets(req: Request, backend: ModuleType, uniqueness: torch.Tensor, counts: torch.Tensor) -> Budgets:
    """The budget axis: FCA from the frame uniqueness (kept counts into ``counts`` (V,) int64), or
    the method's own counts (known on the host; on the device from the request cache, read only)."""
    if req.fca:
        budgets, counts = backend.frame_budgets(uniqueness, req.layout, req.retention, out=counts)
        return Budgets(budgets, counts, None)
    host = own_budgets(req)
    budgets = request_arrays(req.layout, req.features.device, budgets=host).budgets
    return Budgets(budgets, None, req.layout.per_video_sum(host))


def known_kept(req: Request) -> Optional[int]:
    """The number of output rows when the host knows it before any tensor work (exact mode, or
    a method's own counts); None when it depends on the features (FCA budgets or a method's host
    plan, not exact)."""
    if req.targets is not None:
        return int(req.targets.sum())
    if not req.fca and methods.get(req.method).plan is None:
        return int(own_budgets(req).sum())
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


def host_plan(req: Request, backend: ModuleType, scored: Scored, readback: torch.Tensor) -> tuple:
    """The budgets of a method with a host plan (:attr:`~vidcom2_kernels.methods.Method.plan`):
    its statistics (per frame or per row), the base budgets when FCA plans them on the device, and the
    validation flags come to the host in the call's one read (as float64: exact for all three);
    the plan's per-frame counts then go to the device. Returns (the request carrying the plan,
    :class:`Budgets`, the number of kept tokens)."""
    layout, method = req.layout, methods.get(req.method)
    parts = [scored.stats.double()]
    if req.fca:
        parts.append(plan_budgets(req, backend, scored.uniqueness, readback[0]).budgets.double())
    if req.validate:
        parts.append(readback[1].double())
    host = torch.cat(parts).cpu().numpy()
    F, S = layout.total_frames, scored.stats.numel()
    if req.validate:
        raise_nonfinite(np.flatnonzero(host[len(host) - layout.num_videos :]).tolist())
    base = host[S : S + F].astype(np.int64) if req.fca else own_budgets(req)
    budgets, plan = method.plan(req, host[:S], base)
    device_budgets = request_arrays(layout, req.features.device, budgets=budgets).budgets
    num_kept = int(req.targets.sum()) if req.targets is not None else int(budgets.sum())
    return replace(req, plan=plan), Budgets(device_budgets, None, layout.per_video_sum(budgets)), num_kept


def prepare(req: Request, backend: ModuleType) -> tuple[Request, Scored, Budgets, int]:
    """Scores, budgets and the host read of a checked request with at least one token; the
    method's refined scores when it refines them once the budgets are known. Returns the request
    (carrying the method's host plan, if it makes one), the scores, the budgets and the number
    of kept tokens."""
    readback = new_output((2, req.layout.num_videos), torch.int64, req.features.device)
    scored = score(req, backend, readback[1])
    method = methods.get(req.method)
    if method.plan is not None:
        req, plan, num_kept = host_plan(req, backend, scored, readback)
    else:
        plan = plan_budgets(req, backend, scored.uniqueness, readback[0])
        num_kept = read_back(req, plan, readback)
    if method.refine is not None:  # the final order keys, now that the budgets are known
        kernels = method.kernels_on(name_of(backend))
        scored = scored._replace(scores=method.refine(req, kernels, scored.scores, plan.budgets))
    return req, scored, plan, num_kept


def select(req: Request, backend: ModuleType) -> tuple[Scored, Selection]:
    """Everything but the gather: :func:`prepare` and the kept tokens (callers that apply the
    mask themselves stop here)."""
    req, scored, plan, num_kept = prepare(req, backend)
    return scored, backend.select_tokens(scored.scores, req.layout, plan.budgets, req.targets, num_kept)


def run(req: Request, backend: ModuleType) -> Compression:
    """The whole compression of a checked request on ``backend``: :func:`prepare`, then the
    selection and the gather (one launch on triton), then the method's merge if it has one."""
    x, layout = req.features, req.layout
    if layout.num_tokens == 0:
        return empty(req, backend)
    req, scored, plan, num_kept = prepare(req, backend)
    selection, kept = backend.select_and_gather(
        scored.scores, layout, plan.budgets, req.targets, num_kept, (x, *req.extras)
    )
    method, merged = methods.get(req.method), None
    if method.merge is not None:
        kept, merged = method.merge(req, method.kernels_on(name_of(backend)), scored.scores, selection, kept)
    return Compression(
        indices=selection.indices,
        features=kept[0],
        mask=selection.mask,
        budgets=selection.budgets,
        counts=selection.counts,
        scores=scored.scores,
        uniqueness=scored.uniqueness,
        merged=merged,
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
        merged=None if methods.get(req.method).merge is None else torch.zeros(0, dtype=torch.bool, device=dev),
        extras=tuple(t[:0] for t in req.extras),
        layout=req.layout,
        backend=name_of(backend),
        engine=backend,
    )
