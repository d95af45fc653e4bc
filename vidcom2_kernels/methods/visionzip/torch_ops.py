"""VisionZip's kernels on the ``torch`` backend: per video, frames in groups whose (f, T, T)
similarity block stays under :data:`BLOCK_ELEMENTS`, one batched product a group, no loop over
frames, tokens or anchors. The triton backend runs the norms and the merge from here on the
device (:mod:`.triton_ops`); its density is the fused kernel of :mod:`.kernels`.
"""

from __future__ import annotations

import torch

from ...backends.contract import nan_as_inf, write_out
from ...backends.torch_backend import as_float32, lowest_per_frame, out_of_range, video_chunks
from ...layout import VideoLayout
from .plan import NORMALIZE_EPS, dominant_counts

#: elements of one group's similarity block (f x T x T float32): 64 MiB
BLOCK_ELEMENTS = 1 << 24


def frame_groups(layout: VideoLayout, v: int):
    """(first frame, last frame + 1, first row) of video v's groups of frames."""
    F, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
    step = max(1, BLOCK_ELEMENTS // max(1, T * T))
    for f0 in range(0, F, step):
        yield f0, min(F, f0 + step), int(layout.row_start[v]) + f0 * T


def inverse_norms(x: torch.Tensor) -> torch.Tensor:
    """``1 / max(||x||, 1e-12)`` over the last dimension (the cosines are the products scaled by
    these, which the reference forms as products of normalised rows: equal up to rounding)."""
    return 1.0 / torch.linalg.vector_norm(x, dim=-1).clamp_min(NORMALIZE_EPS)


def row_norm_scores(features: torch.Tensor, layout: VideoLayout, validate: bool, out=None) -> tuple:
    """(N,) float32 ``-||x||``, NaN as +inf; (V,) non-finite videos. In frame-aligned chunks."""
    scores, bad = [], []
    for v in range(layout.num_videos):
        flags = []
        for _, x in video_chunks(features, layout, v):
            x = as_float32(x, "visionzip_x")
            scores.append(-torch.linalg.vector_norm(x, dim=1))
            if validate:
                flags.append(out_of_range(x))
        if validate:
            bad.append(torch.stack(flags).any() if flags else torch.zeros((), dtype=torch.bool))
    empty = torch.empty(0, dtype=torch.float32, device=features.device)
    nonfinite = torch.stack(bad).to(features.device) if validate else None
    return nan_as_inf(torch.cat(scores) if scores else empty), write_out(out, nonfinite)


def contextual_scores(features, layout: VideoLayout, scores, budgets, dominant_ratio: float, k_neighbors: int):
    """(N,) float32: -inf for each frame's dominant tokens, ``-density`` for the others (the
    reference's definition, :func:`.reference.contextual_scores`), NaN as +inf."""
    dominant_count = dominant_counts(budgets, dominant_ratio)
    dominant = lowest_per_frame(scores, layout, dominant_count)
    out = torch.full((layout.num_tokens,), float("-inf"), dtype=torch.float32, device=features.device)
    for v in range(layout.num_videos):
        T = int(layout.tokens_per_frame[v])
        K = min(k_neighbors + 1, T)
        for f0, f1, row0 in frame_groups(layout, v):
            rows = slice(row0, row0 + (f1 - f0) * T)
            x = features[rows].float().view(f1 - f0, T, -1)
            inv = inverse_norms(x)  # (f, T): the product is scaled afterwards, the rows are not copied
            dom = dominant[rows].view(f1 - f0, T)
            sim = torch.bmm(x, x.transpose(1, 2)).mul_(inv[:, :, None]).mul_(inv[:, None, :])
            sim.masked_fill_(dom[:, None, :], float("-inf"))
            top = torch.topk(sim, K, dim=2).values  # descending; dominant columns last
            start = int(layout.frame_start[v])
            k = torch.clamp(T - dominant_count[start + f0 : start + f1], max=k_neighbors + 1)  # (f,)
            used = (torch.arange(K, device=x.device) >= 1) & (torch.arange(K, device=x.device) < k[:, None, None])
            density = torch.where(used, top, 0.0).sum(dim=2) / (k - 1)[:, None]  # 0 / 0: NaN
            out[rows] = torch.where(dom, float("-inf"), -density).flatten()
    return nan_as_inf(out)


def merge_contextual(features, layout: VideoLayout, scores, mask, indices, rows) -> tuple:
    """The reference's merge (:func:`.reference.merge_contextual`), per group of frames: the
    anchors gathered (A, at most the group's largest anchor count, padded and masked), one product
    of every row with them (f, T, A), the argmax assignments, and the group sums as one product of
    the one-hot assignments (f, A, T) with the rows."""
    K = indices.shape[0]
    slot = torch.full((layout.num_tokens,), -1, dtype=torch.int64, device=features.device)
    slot[indices] = torch.arange(K, device=features.device)
    merged_rows, merged = rows[0].clone(), torch.zeros(K, dtype=torch.bool, device=features.device)
    dominant = scores == float("-inf")
    for v in range(layout.num_videos):
        T = int(layout.tokens_per_frame[v])
        for f0, f1, row0 in frame_groups(layout, v):
            f, rows_g = f1 - f0, slice(row0, row0 + (f1 - f0) * T)
            kept, dom = mask[rows_g].view(f, T), dominant[rows_g].view(f, T)
            anchor = kept & ~dom
            count = anchor.sum(dim=1)  # (f,)
            A = max(1, int(count.max()))
            # each frame's anchors first, in row order (a stable sort of "not an anchor")
            local = torch.sort((~anchor).to(torch.uint8), dim=1, stable=True).indices[:, :A]  # (f, A)
            valid = torch.arange(A, device=features.device)[None, :] < count[:, None]
            active = (~kept).any(dim=1) & (count > 0)  # frames that merge
            x = features[rows_g].float().view(f, T, -1)
            # the anchors normalised; a row's own norm does not change which anchor is its argmax
            xa = torch.gather(x, 1, local[..., None].expand(f, A, x.shape[2]))
            xa = xa * inverse_norms(xa)[..., None]
            sim = torch.bmm(x, xa.transpose(1, 2)).masked_fill_(~valid[:, None, :], float("-inf"))  # (f, T, A)
            assign = torch.argmax(sim, dim=2)  # (f, T): the anchor slot each row joins (the first on ties)
            member = ~dom & active[:, None]
            onehot = torch.zeros((f, A, T), dtype=torch.float32, device=x.device)
            onehot.scatter_(1, assign[:, None, :], member[:, None, :].float())
            sums, counts = group_sums(onehot, x), onehot.sum(dim=2)  # (f, A, C), (f, A)
            own = torch.gather(onehot, 2, local[..., None]).squeeze(2) > 0  # the anchor joined its own group
            joined = (counts > 0) & valid
            changed = joined & ~((counts == 1) & own)
            rows_a = (local + torch.arange(f, device=x.device)[:, None] * T + row0)[joined]  # global rows
            slots = slot[rows_a]
            merged_rows[slots] = (sums / counts.clamp(min=1)[..., None])[joined].to(merged_rows.dtype)
            merged[slots] = changed[joined]
    return [merged_rows, *rows[1:]], merged


def group_sums(onehot: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(f, A, C) ``onehot @ x``, with what a sequential sum of each group gives where ``x`` is not
    finite (the product spreads ``0 * inf = NaN`` to every group): NaN where a group holds a NaN
    or both infinities, else its infinity. Non-finite rows reach the merge only with
    ``validate=False``; the check reads the small sums (a host read, as the merge's masks make)."""
    sums = torch.bmm(onehot, x)
    if bool(torch.isfinite(sums).all()):  # any non-finite value in x reaches every group's sum
        return sums
    finite = torch.isfinite(x)
    sums = torch.bmm(onehot, torch.where(finite, x, 0.0))
    has = {
        name: torch.bmm(onehot, flag.float()) > 0
        for name, flag in (("nan", torch.isnan(x)), ("pos", x == float("inf")), ("neg", x == float("-inf")))
    }
    sums = torch.where(has["pos"], float("inf"), torch.where(has["neg"], float("-inf"), sums))
    return torch.where(has["nan"] | (has["pos"] & has["neg"]), float("nan"), sums)
