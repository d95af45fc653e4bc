"""VidCom2 (Liu et al., EMNLP 2025): every token scored against its frame and its video by
multi-scale Gaussian similarity, frame budgets by the Frame Compression Adjustment over the frame
uniqueness. Scorer pieces: ``select_channels`` (step 1) and ``token_scores`` (steps 2-4) on each
backend; the budgets (step 5), the selection and the gather are the backends' shared stages.

Kernels (``reference.py``, ``torch_ops.py``, ``triton_ops.py``, one signature):

``select_channels``  (features (N, C), layout, validate, out=None) -> keep (V, C) bool, the
                     ``max(1, C // 2)`` channels of lowest variance per video; nonfinite (V,) flags,
                     nonzero: the video holds NaN, Inf or |x| >= MAX_ABS (None unless ``validate``;
                     written into ``out`` (V,) int64 when given)
``token_scores``     (features, layout, keep) -> scores (N,) float32 ``sv + sf``, uniqueness (F,)
                     float32 ``-mean(sv)`` per frame
"""

from __future__ import annotations

from types import ModuleType

import torch

from ...records import Request
from ..base import Method, Scored
from . import reference, torch_ops

try:
    from . import triton_ops
except ImportError:  # triton is optional
    triton_ops = None


def score(req: Request, kernels: ModuleType, flags: torch.Tensor) -> Scored:
    """Channel choice, then scores and uniqueness; the non-finite flags go into ``flags``."""
    keep, nonfinite = kernels.select_channels(req.features, req.layout, req.validate, out=flags)
    scores, uniqueness = kernels.token_scores(req.features, req.layout, keep)
    return Scored(scores, uniqueness, nonfinite)


METHOD = Method(
    name="vidcom2",
    summary="VidCom2: Gaussian uniqueness against the frame and the video, FCA frame budgets",
    kernels={"reference": reference, "torch": torch_ops, "triton": triton_ops},
    kernel_names=("select_channels", "token_scores"),
    score=score,
    gives_uniqueness=True,
)
