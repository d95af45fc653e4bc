"""The five stages of VidCom2 as separate public functions, so an adapter can swap one eager step
at a time. Each checks its arguments and calls the function of the same name: VidCom2's scorer
kernels on the backend (``select_channels``, ``token_scores``: :mod:`vidcom2_kernels.methods.vidcom2`)
or the backend's shared stage (the backend contract, :mod:`vidcom2_kernels.backends.contract`);
``backend=`` as in :func:`vidcom2_kernels.compress`.
Their reference twins of the same names live in :mod:`vidcom2_kernels.reference`.
"""

from __future__ import annotations

import numbers

import torch

from .backends import name_of, resolve
from .layout import FramesSpec, VideoLayout, parse_frames, parse_retention, parse_target
from .methods import vidcom2
from .records import Selection, check_extras, check_features, check_vector


def _frame_layout(frames: FramesSpec, num_frames: int) -> VideoLayout:
    """Layout for per-frame inputs: an int T means one video of ``num_frames`` frames of T tokens."""
    if isinstance(frames, numbers.Integral) and not isinstance(frames, bool):
        return parse_frames(frames, num_frames * int(frames))
    layout = parse_frames(frames, None)
    if layout.total_frames != num_frames:
        raise ValueError(
            f"uniqueness must have shape ({layout.total_frames},), one entry per frame of frames, "
            f"got {num_frames} entries"
        )
    return layout


def _scorer(backend: str, device: torch.device):
    """VidCom2's scorer kernels on the backend ``backend`` resolves to for ``device``."""
    return vidcom2.METHOD.kernels_on(name_of(resolve(backend, device)))


@torch.no_grad()
def select_channels(features: torch.Tensor, frames: FramesSpec, *, backend: str = "auto") -> torch.Tensor:
    """Step 1, channel choice. Returns (V, C) bool: the ``max(1, C // 2)`` channels of lowest
    biased variance over each video (equal variances: lower index first)."""
    features = check_features(features)
    layout = parse_frames(frames, features.shape[0])
    keep, _ = _scorer(backend, features.device).select_channels(features, layout, False)
    return keep


@torch.no_grad()
def token_scores(
    features: torch.Tensor, frames: FramesSpec, keep: torch.Tensor | None = None, *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-4 and the uniqueness of step 5. Returns ``scores`` (N,) float32, ``sv + sf`` per
    token (high = redundant), and ``uniqueness`` (F,) float32, ``-mean(sv)`` per frame.

    ``keep`` (V, C) bool is the channel choice; computed with :func:`select_channels` when None."""
    features = check_features(features)
    layout = parse_frames(frames, features.shape[0])
    module = _scorer(backend, features.device)
    if keep is None:
        keep, _ = module.select_channels(features, layout, False)
    elif not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool:
        raise TypeError("keep must be a bool tensor of shape (V, C)")
    elif tuple(keep.shape) != (layout.num_videos, features.shape[1]) or keep.device != features.device:
        raise ValueError(
            f"keep must have shape {(layout.num_videos, features.shape[1])} on {features.device}, "
            f"got {tuple(keep.shape)} on {keep.device}"
        )
    return module.token_scores(features, layout, keep)


@torch.no_grad()
def frame_budgets(
    uniqueness: torch.Tensor, frames: FramesSpec, retention=0.25, *, backend: str = "auto"
) -> torch.Tensor:
    """Step 5 (Frame Compression Adjustment). ``uniqueness`` (F,) of any scorer (higher = more
    distinctive frame). Returns (F,) int64 budgets ``max(1, round_half_even(scale_f * T))``."""
    num_frames = uniqueness.shape[0] if isinstance(uniqueness, torch.Tensor) and uniqueness.dim() else -1
    layout = _frame_layout(frames, max(num_frames, 0))
    uniqueness = check_vector(uniqueness, "uniqueness", layout.total_frames, floating=True)
    ratios = parse_retention(retention, layout)
    budgets, _ = resolve(backend, uniqueness.device).frame_budgets(uniqueness, layout, ratios)
    return budgets


@torch.no_grad()
def select_tokens(
    scores: torch.Tensor, frames: FramesSpec, budgets: torch.Tensor, *, target=None, backend: str = "auto"
) -> Selection:
    """Step 6 (and the exact-count reconcile when ``target`` is given). ``scores`` (N,) float, low
    = kept first; ``budgets`` (F,) integer, clamped to ``[0, T]``; ``target`` an int or one per
    video. Reads the kept count to size the output (one host read) unless ``target`` is given."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
        raise ValueError("scores must be a 1-D tensor of one score per token")
    layout = parse_frames(frames, scores.shape[0])
    scores = check_vector(scores, "scores", layout.num_tokens, floating=True)
    budgets = check_vector(budgets, "budgets", layout.total_frames, floating=False)
    if budgets.device != scores.device:
        raise ValueError(f"budgets is on {budgets.device} but scores is on {scores.device}")
    targets = None if target is None else parse_target(target, layout)
    module = resolve(backend, scores.device)
    if layout.num_tokens == 0:
        empty = torch.empty(0, dtype=torch.int64, device=scores.device)
        return Selection(empty, torch.zeros(0, dtype=torch.bool, device=scores.device), empty, empty)
    if targets is None:  # each frame keeps min(max(budget, 0), T) tokens
        tokens = torch.tensor(layout.frame_tokens, device=budgets.device)
        num_kept = int(torch.minimum(budgets.clamp(min=0), tokens).sum())
    else:
        num_kept = int(targets.sum())
    return module.select_tokens(scores, layout, budgets, targets, num_kept)


@torch.no_grad()
def gather_rows(indices: torch.Tensor, *tensors: torch.Tensor, backend: str = "auto") -> tuple:
    """Rows ``indices`` (K,) of each row-aligned tensor ((N, ...) -> (K, ...)), in one launch."""
    if not tensors:
        return ()
    if not isinstance(indices, torch.Tensor) or indices.dim() != 1 or indices.dtype not in (torch.int32, torch.int64):
        got = (
            f"{indices.dtype} of shape {tuple(indices.shape)}"
            if isinstance(indices, torch.Tensor)
            else type(indices).__name__
        )
        raise TypeError(f"indices must be a 1-D int64 (or int32) tensor of row numbers, got {got}")
    tensors = check_extras(tensors, tensors[0].shape[0] if tensors[0].dim() else -1, indices.device)
    if indices.numel():
        lo, hi = torch.aminmax(indices)
        if int(lo) < 0 or int(hi) >= tensors[0].shape[0]:
            raise ValueError(f"indices must be in [0, {tensors[0].shape[0]}), got [{int(lo)}, {int(hi)}]")
    return tuple(resolve(backend, indices.device).gather_rows(indices, tensors))


__all__ = ["Selection", "select_channels", "token_scores", "frame_budgets", "select_tokens", "gather_rows"]
