"""VisionZip (Yang et al., CVPR 2025) as the released VidCom2 code runs it on video features,
frame by frame: of each frame's budget, ``max(1, int(keep * dominant_ratio))`` dominant tokens of
largest L2 norm (the stand-in for attention when there is no CLS token), the rest contextual: the
tokens of highest density (mean cosine to their ``k_neighbors`` nearest among the non-dominant
tokens), each of which becomes the mean of the non-dominant tokens that are most similar to it.

Own budgets: ``max(1, int(T * r))`` a frame (known on the host); with ``frame_budgets="vidcom2"``
VidCom2's FCA budgets, split the same way. Output rows stand at their token's position (a merged
contextual row at its anchor's), ascending; the extras are the anchors' own rows, unmerged, as the
released Qwen3-VL code gathers its deepstack features. Options (``options=``): ``dominant_ratio``
(0.6) and ``k_neighbors`` (5), the released defaults.

Differences from the released code: it scores in the input dtype (bf16 in its Qwen adapters),
here in float32, so bf16 inputs can differ on near-ties; ``torch.topk``'s order on equal norms or
densities is unspecified there, here the lower row first.

Kernels (``reference.py``, ``torch_ops.py``, ``triton_ops.py``, one signature):

``row_norm_scores``    (features (N, C), layout, validate, out=None) -> scores (N,) float32 ``-||x||``;
                       nonfinite (V,) flags as VidCom2's ``select_channels`` gives them
``contextual_scores``  (features, layout, scores, budgets (F,), dominant_ratio, k_neighbors) -> (N,)
                       float32: -inf for the dominant tokens, ``-density`` for the others
``merge_contextual``   (features, layout, scores, mask (N,), indices (K,), rows) -> (rows, merged (K,))
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch

from ...records import Request, Selection
from ..base import Method, Scored
from . import reference, torch_ops
from .plan import DEFAULTS, ENV, check_options, visionzip_budgets

try:
    from . import triton_ops
except ImportError:  # triton is optional
    triton_ops = None


def score(req: Request, kernels: ModuleType, flags: torch.Tensor) -> Scored:
    """The row norms (the dominant tokens' key); the non-finite flags go into ``flags``."""
    scores, nonfinite = kernels.row_norm_scores(req.features, req.layout, req.validate, out=flags)
    return Scored(scores, None, nonfinite)


def budgets(req: Request) -> np.ndarray:
    """``max(1, int(T * r))`` per frame (F,) int64."""
    return visionzip_budgets(req.layout, req.retention)


def refine(req: Request, kernels: ModuleType, scores: torch.Tensor, frame_budgets: torch.Tensor) -> torch.Tensor:
    """Dominant tokens first (-inf), then the others by density, for the frames' budgets."""
    ratio, k = req.options["dominant_ratio"], req.options["k_neighbors"]
    return kernels.contextual_scores(req.features, req.layout, scores, frame_budgets, ratio, k)


def merge(req: Request, kernels: ModuleType, scores: torch.Tensor, selection: Selection, rows: list) -> tuple:
    """The contextual tokens become the means of the tokens that join them."""
    return kernels.merge_contextual(req.features, req.layout, scores, selection.mask, selection.indices, rows)


METHOD = Method(
    name="visionzip",
    summary="VisionZip: dominant tokens by L2 norm, contextual tokens merged by density",
    kernels={"reference": reference, "torch": torch_ops, "triton": triton_ops},
    kernel_names=("row_norm_scores", "contextual_scores", "merge_contextual"),
    score=score,
    budgets=budgets,
    refine=refine,
    merge=merge,
    defaults=DEFAULTS,
    check_options=check_options,
    env=ENV,
)
