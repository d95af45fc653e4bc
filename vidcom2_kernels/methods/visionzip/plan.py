"""VisionZip's host-side plan: its per-frame counts, the split of a frame's budget into dominant
and contextual tokens, and its options with the released defaults.

Per frame of T tokens at retention r the released code keeps ``keep = max(1, int(T * r))`` tokens:
``max(1, int(keep * dominant_ratio))`` dominant ones, the rest contextual. Both are Python
expressions on floats; here the same float64 products, truncated.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from ...layout import VideoLayout

#: the released defaults (its environment variables ``visionzip_dominant_ratio``, ``visionzip_k_neighbors``)
DEFAULTS = {"dominant_ratio": 0.6, "k_neighbors": 5}
#: ``F.normalize``'s epsilon, which the released code normalises with
NORMALIZE_EPS = 1e-12
#: the released fork's environment variable of each option
ENV = {"dominant_ratio": "visionzip_dominant_ratio", "k_neighbors": "visionzip_k_neighbors"}


def check_options(options: dict) -> dict:
    """``dominant_ratio`` a float in [0, 1], ``k_neighbors`` an int >= 1 (the released code uses
    ``max(1, k)``; 0 or less is refused here rather than silently changed)."""
    ratio, k = options["dominant_ratio"], options["k_neighbors"]
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"options['dominant_ratio'] must be a number in [0, 1], got {ratio!r}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) < 1:
        raise ValueError(f"options['k_neighbors'] must be an int >= 1, got {k!r}")
    return {"dominant_ratio": float(ratio), "k_neighbors": int(k)}


def visionzip_budgets(layout: VideoLayout, retention: np.ndarray) -> np.ndarray:
    """(F,) int64 ``max(1, int(T * r))`` per frame."""
    T = layout.frame_tokens
    return np.maximum(1, np.floor(T * retention[layout.frame_video])).astype(np.int64)


def dominant_counts(budgets: torch.Tensor, dominant_ratio: float) -> torch.Tensor:
    """(F,) int64 ``max(1, int(keep * dominant_ratio))`` of each frame's budget ``keep`` (at most
    ``keep``; 0 for a frame that keeps nothing)."""
    keep = budgets.clamp(min=0)
    dominant = torch.floor(keep.double() * dominant_ratio).long().clamp(min=1)
    return torch.minimum(dominant, keep)
