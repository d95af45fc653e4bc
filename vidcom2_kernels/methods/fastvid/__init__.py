"""FastVID (Shen et al., 2025) as the released VidCom2 code runs it on video features: frames cut
into segments where consecutive frames differ (DySeg); each segment keeps its frames' budgets,
split into salient tokens (largest L2 norms, the stand-in for attention) and context tokens
(DPC-kNN centres among the rest), on the last frame of each inner segment (STPrune); every other
token of the segment merges into its most similar context token (DTM). The plan depends on the
frames' similarities, so it is made on the host after the call's one read (:mod:`.plan`).

Own budgets: ``max(1, min(T, int(T * r)))`` a frame, summed per segment; with
``frame_budgets="vidcom2"`` VidCom2's FCA budgets, summed per segment the same way.
``Compression.budgets`` is what each frame keeps after the plan (0 on a frame that is not the
last of an inner segment). Output rows stand at their token's position (a merged context row at
its own), ascending; the extras are the context tokens' own rows, unmerged, as the released
Qwen3-VL code gathers its deepstack features. Options (``options=``): ``dyseg_c`` (8),
``dyseg_tau`` (0.84), ``dyseg_ignore`` (0.99), ``stprune_d`` (0.5), ``dtm_p`` (4), ``dtm_beta``
(0.5), the released defaults.

Differences from the released code: it averages the frames and merges in the input dtype (bf16 in
its Qwen adapters), here in float32; it adds random noise of 1e-6 to the DPC densities, here the
lower row is the denser on equal densities; ``torch.topk``'s order on equal similarities, norms or
scores is unspecified there, here the lower frame or row first. At retention >= 1 every token is
kept unmerged, as there.

Kernels (``reference.py``, ``torch_ops.py``, ``triton_ops.py``, one signature):

``frame_scores``    (features (N, C), layout, validate, out=None) -> scores (N,) float32 ``-||x||``,
                    similarity (F,) float32 of each frame with the next, nonfinite (V,) flags
``context_scores``  (features, layout, scores, salient (F,), context (F,) int64 numpy) -> (N,) float32:
                    -inf for the salient tokens, ``-dpc_score`` for the others of a frame with context
``merge_context``   (features, layout, scores, mask, indices, rows, segment (F,) int64 numpy, per_frame
                    (F,) int64 numpy or None: the context tokens a frame when the host knows them,
                    beta) -> (rows, merged (K,))
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch

from ...records import Request, Selection
from ..base import Method, Scored
from . import reference, torch_ops
from .plan import DEFAULTS, ENV, check_options, fastvid_budgets, segment_plan

try:
    from . import triton_ops
except ImportError:  # triton is optional
    triton_ops = None


def score(req: Request, kernels: ModuleType, flags: torch.Tensor) -> Scored:
    """The row norms and the consecutive-frame similarities; the non-finite flags go into ``flags``."""
    scores, similarity, nonfinite = kernels.frame_scores(req.features, req.layout, req.validate, out=flags)
    return Scored(scores, None, nonfinite, similarity)


def budgets(req: Request) -> np.ndarray:
    """The base budgets ``max(1, min(T, int(T * r)))`` per frame (F,) int64."""
    return fastvid_budgets(req.layout, req.retention)


def plan(req: Request, similarity: np.ndarray, base: np.ndarray) -> tuple:
    """The segments, and each frame's salient and context counts (:func:`.plan.segment_plan`)."""
    p = segment_plan(req.layout, req.retention, similarity, base, req.options)
    return p.budgets, p


def refine(req: Request, kernels: ModuleType, scores: torch.Tensor, frame_budgets: torch.Tensor) -> torch.Tensor:
    """Salient tokens first (-inf), then the others of a frame with context by DPC-kNN score."""
    return kernels.context_scores(req.features, req.layout, scores, req.plan.salient, req.plan.context)


def merge(req: Request, kernels: ModuleType, scores: torch.Tensor, selection: Selection, rows: list) -> tuple:
    """The context tokens absorb the rest of their segment. Their count per frame is the plan's
    (known on the host) unless exact counts moved the selection."""
    per_frame = req.plan.context if req.targets is None else None
    mask, indices, beta = selection.mask, selection.indices, req.options["dtm_beta"]
    return kernels.merge_context(
        req.features, req.layout, scores, mask, indices, rows, req.plan.segment, per_frame, beta
    )


METHOD = Method(
    name="fastvid",
    summary="FastVID: segments of similar frames, salient tokens by L2 norm, DPC-kNN context tokens merged",
    kernels={"reference": reference, "torch": torch_ops, "triton": triton_ops},
    kernel_names=("frame_scores", "context_scores", "merge_context"),
    score=score,
    budgets=budgets,
    plan=plan,
    refine=refine,
    merge=merge,
    defaults=DEFAULTS,
    check_options=check_options,
    env=ENV,
)
