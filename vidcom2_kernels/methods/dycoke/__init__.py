"""DyCoke (Tao et al., CVPR 2025), its temporal token merging: in windows of 4 frames, tokens
scored by the cosine similarity with the same-position token of an anchor frame, fixed per-frame
counts known on the host (:mod:`.plan`). Scorer piece: ``dycoke_similarity`` on each backend.

Kernels (``reference.py``, ``torch_ops.py``, ``triton_ops.py``, one signature):

``dycoke_similarity``  (features (N, C), layout, anchors (F,) int64 numpy, validate, out=None) ->
                       scores (N,) float32, cosine with the anchor frame's same-position token (0
                       without one); nonfinite (V,) flags as VidCom2's ``select_channels`` gives them
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch

from ...records import Request
from ..base import Method, Scored
from . import reference, torch_ops
from .plan import anchor_frames, dycoke_budgets

try:
    from . import triton_ops
except ImportError:  # triton is optional
    triton_ops = None


def score(req: Request, kernels: ModuleType, flags: torch.Tensor) -> Scored:
    """Similarity with the anchor frames (with FCA budgets a window's frame 0 is scored against
    frame 1); the non-finite flags go into ``flags``."""
    anchors = anchor_frames(req.layout, fca=req.fca)
    scores, nonfinite = kernels.dycoke_similarity(req.features, req.layout, anchors, req.validate, out=flags)
    return Scored(scores, None, nonfinite)


def budgets(req: Request) -> np.ndarray:
    """DyCoke's fixed per-frame counts (F,) int64."""
    return dycoke_budgets(req.layout, req.retention, req.quirks)


METHOD = Method(
    name="dycoke",
    summary="DyCoke's temporal token merging: similarity with an anchor frame in windows of 4",
    kernels={"reference": reference, "torch": torch_ops, "triton": triton_ops},
    kernel_names=("dycoke_similarity",),
    score=score,
    budgets=budgets,
    keywords=("quirks",),
)
