"""VisionZip's kernels in eager PyTorch, the yardstick of its backends: one loop over frames, in
float32, as the released code computes each frame (``token_compressor/visionzip``).
"""

from __future__ import annotations

import torch

from ...backends.contract import nan_as_inf, write_out
from ...backends.reference import frame_rows, nonfinite_videos, normalized
from ...layout import VideoLayout
from .plan import dominant_counts


def row_norm_scores(features: torch.Tensor, layout: VideoLayout, validate: bool, out=None) -> tuple:
    """(N,) float32 ``-||x||`` (a frame's dominant tokens are its largest norms, the released
    stand-in for attention), NaN as +inf; (V,) non-finite videos."""
    scores = nan_as_inf(-torch.linalg.vector_norm(features.float(), dim=1))
    return scores, write_out(out, nonfinite_videos(features, layout) if validate else None)


def contextual_scores(
    features: torch.Tensor,
    layout: VideoLayout,
    scores: torch.Tensor,
    budgets: torch.Tensor,
    dominant_ratio: float,
    k_neighbors: int,
) -> torch.Tensor:
    """(N,) float32 order keys once the frame budgets are known: -inf for each frame's dominant
    tokens (its ``dominant_counts`` lowest ``scores``, the lower row first on ties), ``-density``
    for the others, the density being the mean cosine similarity to the ``k_neighbors`` nearest
    among the frame's non-dominant tokens (of the ``k_neighbors + 1`` largest similarities the
    largest, normally the token itself, is dropped; NaN with one non-dominant token); NaN as +inf."""
    out = torch.empty(layout.num_tokens, dtype=torch.float32, device=features.device)
    dominant = dominant_counts(budgets, dominant_ratio)
    for f in range(layout.total_frames):
        rows = frame_rows(layout, f)
        order = torch.sort(nan_as_inf(scores[rows].float()), stable=True).indices
        is_dominant = torch.zeros(rows.stop - rows.start, dtype=torch.bool, device=features.device)
        is_dominant[order[: int(dominant[f])]] = True
        rest = torch.nonzero(~is_dominant).flatten()
        frame = out[rows]  # a view: writes go to out
        frame[is_dominant] = float("-inf")
        if len(rest) == 0:
            continue
        x = normalized(features[rows][rest].float())
        k = min(k_neighbors + 1, len(rest))
        top = torch.topk(x @ x.T, k, dim=1).values  # descending
        frame[rest] = -(top[:, 1:].sum(dim=1) / (k - 1))  # 0 / 0: NaN for a single token
    return nan_as_inf(out)


def merge_contextual(
    features: torch.Tensor, layout: VideoLayout, scores: torch.Tensor, mask: torch.Tensor, indices, rows
) -> tuple:
    """In each frame with dropped tokens, every non-dominant token (score above -inf), kept or
    not, joins the contextual token (an anchor: kept, not dominant) it is most cosine-similar to
    (the first anchor by position on ties); an anchor's output row becomes the mean of the tokens
    that joined it, or stays its own when none did. Only the features (``rows[0]``) change: the
    extras stay the anchor's own rows, as the released Qwen3-VL code gathers its deepstack
    features. Returns (rows, merged (K,) bool: the anchors whose row is not their own)."""
    slot = {int(r): k for k, r in enumerate(indices.tolist())}
    merged_rows = rows[0].clone()
    merged = torch.zeros(len(slot), dtype=torch.bool, device=features.device)
    for f in range(layout.total_frames):
        rows_f = frame_rows(layout, f)
        kept, dominant = mask[rows_f], scores[rows_f] == float("-inf")
        anchors = torch.nonzero(kept & ~dominant).flatten()
        members = torch.nonzero(~dominant).flatten()
        if bool(kept.all()) or len(anchors) == 0:
            continue
        x = features[rows_f].float()
        xn = normalized(x)
        assign = torch.argmax(xn[members] @ xn[anchors].T, dim=1)
        for i, a in enumerate(anchors.tolist()):
            group = members[assign == i]
            if len(group) == 0:
                continue
            k = slot[rows_f.start + a]
            merged_rows[k] = x[group].mean(dim=0).to(merged_rows.dtype)
            merged[k] = not (len(group) == 1 and int(group[0]) == a)
    return [merged_rows, *rows[1:]], merged
