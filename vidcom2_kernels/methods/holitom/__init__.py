"""HoliTom (Shao et al., NeurIPS 2025) as the released VidCom2 code runs it on video features
(its outer-LLM merging): windows of frames found by a dynamic programme over the tokens' runs of
similarity with the next frame; a window's static tokens (similar throughout) averaged over it and
clustered by DPC-kNN; each frame's dynamic tokens kept by L2 norm (the stand-in for attention),
the rest clustered when ``dominant_ratio > 0``. The windows depend on the features, so the plan is
made on the host after the call's one read (:mod:`.plan`, which has the counts and the row order).

Output rows are synthesised (window means, cluster blends), so they stand at no token's position.
As in the released code their positions are placeholders, ``linspace(0, N - 1, K)`` per video:
``Compression.indices`` (ascending), ``mask`` and ``budgets`` (placeholders per frame) describe
those positions, and the extras are the rows there, as the released Qwen3-VL code gathers its
deepstack features. ``Compression.merged`` marks the window means and the blends. Even at
retention 1 the static tokens are folded (the released behaviour): the output is never the input.
``exact`` / ``target`` are refused: the method decides its own count of rows.

Own budgets: the ratio ``min(r * N / (N - R), 1)`` over each video (R: the rows its windows save);
with ``frame_budgets="vidcom2"`` each window spends the sum of its frames' FCA budgets. Options
(``options=``): ``tau`` (0.8), ``beta`` (0.6), ``dominant_ratio`` (0.0, the released ``D``),
``k_neighbors`` (7), ``max_window_size`` (1024), the released defaults.

Differences from the released code: it averages and merges in the input dtype (bf16 in its Qwen
adapters), here in float32, cast at the end; it adds random noise of 1e-6 to the DPC densities,
here the lower row is the denser on equal densities; ``torch.topk``'s order on equal norms or
scores is unspecified there, here the lower row first.

Kernels (``reference.py``, ``torch_ops.py``, ``triton_ops.py``, one signature):

``token_runs``     (features (N, C), layout, tau, validate, out=None) -> scores (N,) float32
                   ``-||x||``, runs (N,) float32 (each row's static run), nonfinite (V,) flags
``merge_windows``  (features, layout, rows, plan, beta, k_neighbors) -> (rows, merged (K,))
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch

from ...buffers import to_device
from ...records import Request, Selection
from ..base import Method, Scored
from . import reference, torch_ops
from .plan import DEFAULTS, ENV, check_options, holitom_budgets, window_plan

try:
    from . import triton_ops
except ImportError:  # triton is optional
    triton_ops = None


def score(req: Request, kernels: ModuleType, flags: torch.Tensor) -> Scored:
    """The row norms and every row's static run; the non-finite flags go into ``flags``."""
    scores, runs, nonfinite = kernels.token_runs(req.features, req.layout, req.options["tau"], req.validate, out=flags)
    return Scored(scores, None, nonfinite, runs)


def budgets(req: Request) -> np.ndarray:
    """``round(T * r)`` per frame (F,) int64 (the own plan spends the ratio per video)."""
    return holitom_budgets(req.layout, req.retention)


def plan(req: Request, runs: np.ndarray, base: np.ndarray) -> tuple:
    """The windows, the counts and the placeholders (:func:`.plan.window_plan`)."""
    p = window_plan(req.layout, req.retention, runs, base, req.fca, req.options, req.features.device)
    return p.budgets, p


def refine(req: Request, kernels: ModuleType, scores: torch.Tensor, frame_budgets: torch.Tensor) -> torch.Tensor:
    """Order keys that select exactly the placeholder rows: 0 there, +inf elsewhere."""
    keys = torch.full((req.layout.num_tokens,), float("inf"), dtype=torch.float32, device=scores.device)
    return keys.index_fill_(0, to_device(req.plan.keep, scores.device), 0.0)


def merge(req: Request, kernels: ModuleType, scores: torch.Tensor, selection: Selection, rows: list) -> tuple:
    """HoliTom's output rows in place of the rows at the placeholders."""
    beta, k = req.options["beta"], req.options["k_neighbors"]
    return kernels.merge_windows(req.features, req.layout, rows, req.plan, beta, k)


METHOD = Method(
    name="holitom",
    summary="HoliTom: static windows folded and clustered, dynamic tokens by L2 norm, placeholder positions",
    kernels={"reference": reference, "torch": torch_ops, "triton": triton_ops},
    kernel_names=("token_runs", "merge_windows"),
    score=score,
    budgets=budgets,
    plan=plan,
    refine=refine,
    merge=merge,
    exact_counts=False,
    defaults=DEFAULTS,
    check_options=check_options,
    env=ENV,
)
