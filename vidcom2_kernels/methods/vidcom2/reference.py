"""VidCom2's scorer in eager PyTorch, the yardstick of its backends: steps 1-4 of ALGORITHM
(channel choice, normalised rows, centres, Gaussian similarities), one loop over videos and
frames, in float32. Imports nothing from the fast scorers; reads back to the host freely.
"""

from __future__ import annotations

import torch

from ...backends.contract import nan_as_inf, write_out
from ...backends.reference import nonfinite_videos, video_rows
from ...constants import GAUSSIAN_BANDWIDTHS, NORM_EPS, kept_channels
from ...layout import VideoLayout


# ------------------------------------------------------------------------ step 1: channel choice
def channel_variance(features: torch.Tensor, layout: VideoLayout, dtype=torch.float32) -> torch.Tensor:
    """(V, C) biased variance of every channel over each video's tokens."""
    return torch.stack(
        [features[video_rows(layout, v)].to(dtype).var(dim=0, unbiased=False) for v in range(layout.num_videos)]
    )


def select_channels(features: torch.Tensor, layout: VideoLayout, validate: bool, out=None) -> tuple:
    """(V, C) bool, the ``max(1, C // 2)`` lowest-variance channels of each video (equal
    variances: lower channel index first; NaN ranks last), and (V,) bool non-finite videos."""
    var = nan_as_inf(channel_variance(features, layout))
    keep = torch.zeros_like(var, dtype=torch.bool)
    for v in range(layout.num_videos):
        order = torch.sort(var[v], stable=True).indices  # ascending, lower index first on ties
        keep[v, order[: kept_channels(features.shape[1])]] = True
    return keep, write_out(out, nonfinite_videos(features, layout) if validate else None)


# ---------------------------------------------------------------- steps 2-4: token scores
def gaussian_similarity(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(T,) multi-scale Gaussian similarity ``sum_a exp(-||x - c||^2 / (2a))`` of rows x to c."""
    dist2 = ((x - centre) ** 2).sum(dim=-1)
    return sum(torch.exp(-dist2 / (2 * a)) for a in GAUSSIAN_BANDWIDTHS)


def token_scores(features: torch.Tensor, layout: VideoLayout, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``sv + sf`` (N,) (NaN as +inf) and frame uniqueness ``-mean(sv)`` (F,), float32:
    rows restricted to the kept channels and L2-normalised (step 2), centres of the video and of
    each frame (step 3), similarity of every row to both (step 4)."""
    scores = torch.empty(layout.num_tokens, dtype=torch.float32, device=features.device)
    uniqueness = torch.empty(layout.total_frames, dtype=torch.float32, device=features.device)
    for v in range(layout.num_videos):
        rows = video_rows(layout, v)
        s = features[rows][:, keep[v]].float()
        s = s / s.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
        video_centre = s.mean(dim=0)
        T = int(layout.tokens_per_frame[v])
        for f in range(int(layout.num_frames[v])):
            frame = s[f * T : (f + 1) * T]
            sv = gaussian_similarity(frame, video_centre)
            sf = gaussian_similarity(frame, frame.mean(dim=0))
            scores[rows.start + f * T : rows.start + (f + 1) * T] = sv + sf
            uniqueness[int(layout.frame_start[v]) + f] = -sv.mean()
    return nan_as_inf(scores), uniqueness
