"""What the torch backend is measured against on the CPU (``bench/bench_baselines.py``), each a
function ``(features (N, C), frames [(F, T)], retention) -> kept features (K, C)``:

- :func:`probe`: no selection at all, just the memory traffic the algorithm cannot avoid below
  three reads: two reads of the features (a column and a row reduction) and the gather of a
  quarter of the rows. The floor any implementation is compared with.
- :func:`naive_mask` / :func:`naive`: VidCom2 written the obvious way in float32, vectorised over
  frames (no Python loop over frames, no host read until the gather): the channel gather copy,
  the normalise copy, a subtract-and-square temporary per centre. ``torch.compile(naive_mask)``
  is the "compile the naive code" alternative.
- :func:`released_shape`: the shape of the released code (ALGORITHM.md, "Where the time goes"):
  arithmetic in the input dtype, a Python loop over frames, a host read per frame for its budget.
- :func:`vllm_port`: the shape of vLLM's port (``vllm/multimodal/video_prune/vidcom2.py``, its
  published semantics): one video per call, arithmetic in the input dtype, a per-frame top-k
  loop after one host read of the budgets, then the exact count (``max(F, int(N * r))``) by
  dropping the highest / adding the lowest scores over the whole video.

- :func:`visionzip_released_shape`, :func:`fastvid_released_shape`, :func:`holitom_released_shape`:
  the other released compressors' structure (``bench/bench_methods.py``).

Written here from the published semantics for timing; ``tests/test_bench_baselines.py`` checks
that the three selecting ones keep the reference's tokens on float32 inputs.
"""

from __future__ import annotations

import math

import torch

from vidcom2_kernels.constants import GAUSSIAN_BANDWIDTHS, TEMPERATURE, kept_channels


def _videos(x: torch.Tensor, frames):
    row = 0
    for F, T in frames:
        yield x[row : row + F * T], F, T
        row += F * T


def probe(x: torch.Tensor, frames, retention: float = 0.25) -> torch.Tensor:
    """Two reads (column sums, row sums) and the gather of every ``1 / retention``-th row."""
    x.sum(dim=0)
    x.sum(dim=1)
    return x.index_select(0, torch.arange(0, x.shape[0], max(1, round(1 / retention))))


def _gaussian(dist2: torch.Tensor) -> torch.Tensor:
    return sum(torch.exp(-dist2 / (2 * a)) for a in GAUSSIAN_BANDWIDTHS)


def naive_mask(x: torch.Tensor, F: int, T: int, retention: float) -> torch.Tensor:
    """(F * T,) bool kept mask of one video, VidCom2 in float32 without loops."""
    s = x.float()
    var = s.var(dim=0, unbiased=False)
    channels = torch.sort(var, stable=True).indices[: kept_channels(x.shape[1])]
    s = s[:, channels]
    s = (s / torch.linalg.vector_norm(s, dim=1, keepdim=True).clamp_min(1e-12)).view(F, T, -1)
    sv = _gaussian(((s - s.mean(dim=(0, 1))) ** 2).sum(-1))
    sf = _gaussian(((s - s.mean(dim=1, keepdim=True)) ** 2).sum(-1))
    p = torch.softmax(-sv.mean(dim=1) / TEMPERATURE, dim=0)
    k = torch.round(torch.clamp(retention * (1 + p - p.mean()), max=1.0) * T).clamp_min(1)
    order = torch.sort(sv + sf, dim=1, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(T).expand(F, T))
    return (rank < k[:, None]).flatten()


def naive(x: torch.Tensor, frames, retention: float = 0.25, mask_fn=naive_mask) -> torch.Tensor:
    return torch.cat([v[mask_fn(v, F, T, retention)] for v, F, T in _videos(x, frames)])


def _scores_in_dtype(v: torch.Tensor, F: int, T: int):
    """Per-frame lists of (sv, sf) in the input dtype, a Python loop over frames."""
    var = v.var(dim=0, unbiased=False)
    s = v[:, torch.topk(var, kept_channels(v.shape[1]), largest=False).indices]
    s = torch.nn.functional.normalize(s, dim=-1)
    g = s.mean(dim=0)
    out = []
    for f in range(F):
        frame = s[f * T : (f + 1) * T]
        out.append((_gaussian(((frame - g) ** 2).sum(-1)), _gaussian(((frame - frame.mean(0)) ** 2).sum(-1))))
    return out


def _scales(sv: list, retention: float) -> torch.Tensor:
    p = torch.softmax(torch.stack([-x.float().mean() for x in sv]) / TEMPERATURE, dim=0)
    return torch.clamp(retention * (1 + p - p.mean()), max=1.0)


def released_shape(x: torch.Tensor, frames, retention: float = 0.25) -> torch.Tensor:
    kept = []
    for v, F, T in _videos(x, frames):
        per_frame = _scores_in_dtype(v, F, T)
        scale = _scales([sv for sv, _ in per_frame], retention)
        for f, (sv, sf) in enumerate(per_frame):
            k = max(1, int(torch.round(scale[f] * T).item()))  # a host read per frame
            idx = torch.topk(sv + sf, k, largest=False).indices.sort().values
            kept.append(v[f * T + idx])
    return torch.cat(kept)


def vllm_mask(v: torch.Tensor, F: int, T: int, retention: float) -> torch.Tensor:
    """(F * T,) bool kept mask of one video with vLLM's exact count."""
    per_frame = _scores_in_dtype(v, F, T)
    budgets = torch.round(_scales([sv for sv, _ in per_frame], retention) * T).clamp_min(1).long().tolist()
    scores = torch.cat([sv + sf for sv, sf in per_frame]).float()
    mask = torch.zeros(F * T, dtype=torch.bool)
    for f, k in enumerate(budgets):
        mask[f * T + torch.topk(scores[f * T : (f + 1) * T], k, largest=False).indices] = True
    target = max(F, min(int(F * T * retention), F * T))
    surplus = int(mask.sum()) - target
    if surplus > 0:  # drop the highest scores among the kept
        mask[torch.topk(torch.where(mask, scores, -torch.inf), surplus).indices] = False
    elif surplus < 0:  # add the lowest scores among the dropped
        mask[torch.topk(torch.where(mask, torch.inf, scores), -surplus, largest=False).indices] = True
    return mask


def vllm_port(x: torch.Tensor, frames, retention: float = 0.25) -> torch.Tensor:
    return torch.cat([v[vllm_mask(v, F, T, retention)] for v, F, T in _videos(x, frames)])


def visionzip_released_shape(
    x: torch.Tensor, frames, retention: float = 0.25, dominant_ratio: float = 0.6, k_neighbors: int = 5
) -> torch.Tensor:
    """VisionZip with the released code's structure, one video at a time: the dominant tokens of
    all frames by one batched top-k of the norms, then a Python loop over frames (the density of
    the remaining tokens, the anchors) and inside it a loop over anchors (each group's mean)."""
    out = []
    for v, F, T in _videos(x, frames):
        keep = max(1, int(T * retention))
        d = max(1, int(keep * dominant_ratio))
        rows = v.view(F, T, -1)
        dominant = torch.topk(rows.norm(dim=-1), d, dim=1).indices.sort(dim=1).values
        for f in range(F):
            rest_mask = torch.ones(T, dtype=torch.bool)
            rest_mask[dominant[f]] = False
            rest = rows[f][rest_mask]
            kept = [rows[f][dominant[f]]]
            if keep - d > 0 and len(rest):
                xn = torch.nn.functional.normalize(rest, dim=-1)
                k = min(k_neighbors + 1, len(rest))
                density = torch.topk(xn @ xn.T, k, dim=1).values[:, 1:].mean(dim=1)
                anchors = torch.topk(density, min(keep - d, len(rest))).indices.sort().values
                if len(anchors) < len(rest):
                    assign = (xn @ xn[anchors].T).argmax(dim=1)
                    groups = [
                        rest[assign == i].mean(dim=0) if (assign == i).any() else rest[a] for i, a in enumerate(anchors)
                    ]
                    kept.append(torch.stack(groups))
                else:
                    kept.append(rest[anchors])
            out.append(torch.cat(kept))
    return torch.cat(out)


def _fastvid_dpc(x: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` DPC-kNN centres of the rows of x, ascending (torch.cdist, 4 nearest, random
    jitter on the density as in the released helper)."""
    dist = torch.cdist(x[None], x[None])[0] / x.shape[1] ** 0.5
    density = torch.exp(-(torch.topk(dist, min(4, len(x)), dim=1, largest=False).values ** 2).mean(dim=1))
    density = density + torch.rand(density.shape) * 1e-6
    denser = density[None, :] > density[:, None]
    delta = torch.where(denser, dist, dist.max()).min(dim=1).values
    return torch.topk(delta * density, min(count, len(x))).indices.sort().values


def fastvid_released_shape(x: torch.Tensor, frames, retention: float = 0.25, c=8, tau=0.84, d=0.5, p=4, beta=0.5):
    """FastVID with the released code's structure, one video at a time, default options: segments
    from host reads of the frame similarities, then Python loops over segments, over their frames
    (a top-k of the norms, a DPC-kNN over the rest) and over the frames with context tokens (one
    merge product each); rows in position order."""
    out = []
    for v, F, T in _videos(x, frames):
        rows = v.view(F, T, -1)
        means = torch.nn.functional.normalize(rows.mean(dim=1).float(), dim=-1)
        sim = (means[:-1] * means[1:]).sum(dim=1).tolist()
        cuts = set(sorted(range(F - 1), key=lambda i: sim[i])[: min(c - 1, F - 1)]) | {
            i for i in range(F - 1) if sim[i] < tau
        }
        bounds = [0, *sorted(i + 1 for i in cuts), F]
        retain = max(1, min(T, int(T * retention)))
        for f0, f1 in zip(bounds[:-1], bounds[1:]):
            L = f1 - f0
            total = retain * L
            n_ctx = max(1, int(total * d)) if total > 1 else 0
            inner = [f0, *[f + 1 for f in range(f0, f1 - 1) if sim[f] < 0.99], f1] if L > 1 else [f0, f1]
            n = len(inner) - 1
            give = [0] * n
            shares = -(-n // p)
            for t, i in enumerate(range(0, n, p)):
                give[i] = min(n_ctx // shares + (t < n_ctx % shares), T // 2) if L > 1 else n_ctx
            give.reverse()
            n_sal = total - n_ctx
            flat = rows[f0:f1].reshape(L * T, -1)
            salient, context = [], []
            for i in range(n):
                f = inner[i + 1] - 1
                s = min(n_sal // n + (i < n_sal % n), T - give[i])
                top = torch.topk(rows[f].float().norm(dim=-1), s).indices
                rest = torch.ones(T, dtype=torch.bool)
                rest[top] = False
                salient.append(top + (f - f0) * T)
                if give[i] > 0:
                    remaining = torch.nonzero(rest).flatten()
                    context.append(remaining[_fastvid_dpc(rows[f][remaining].float(), give[i])] + (f - f0) * T)
            salient = torch.cat(salient)
            unit = torch.nn.functional.normalize(flat.float(), dim=-1)
            kept = {int(i): flat[i] for i in salient}
            for anchors in context:
                pool = torch.ones(L * T, dtype=torch.bool)
                pool[salient] = False
                pool[anchors] = False
                assign = (unit[pool] @ unit[anchors].T).argmax(dim=1)
                onehot = torch.nn.functional.one_hot(assign, len(anchors)).float().T
                counts = onehot.sum(dim=1, keepdim=True)
                w = (1 / (counts + 1)).clamp(min=beta)
                merged = w * flat[anchors] + (1 - w) * (onehot @ flat[pool]) / counts.clamp(min=1)
                kept.update({int(a): merged[j] for j, a in enumerate(anchors)})
            out.append(torch.stack([kept[i] for i in sorted(kept)]))
    return torch.cat(out)


def _holitom_clusters(x: torch.Tensor, count: int, k: int, beta: float) -> torch.Tensor:
    """``count`` DPC-kNN clusters of the rows of x as the released helper makes them: torch.cdist,
    ``min(k, count)`` nearest, random jitter on the density, the centres' top-k, then a Python loop
    over the centres for the blends ``beta * centre + (1 - beta) * mean``."""
    dist = torch.cdist(x[None], x[None])[0] / x.shape[1] ** 0.5
    nearest = torch.topk(dist, min(k, count, len(x)), dim=1, largest=False).values
    density = torch.exp(-(nearest**2).mean(dim=1)) + torch.rand(len(x)) * 1e-6
    denser = density[None, :] > density[:, None]
    delta = torch.where(denser, dist, dist.max()).min(dim=1).values
    centres = torch.topk(delta * density, count).indices.sort().values
    others = torch.ones(len(x), dtype=torch.bool)
    others[centres] = False
    assign = dist[others][:, centres].argmin(dim=1)
    rest = x[others]
    rows = []
    for i, c in enumerate(centres.tolist()):
        group = rest[assign == i]
        rows.append(beta * x[c] + (1 - beta) * group.mean(dim=0) if len(group) else x[c])
    return torch.stack(rows)


def holitom_released_shape(x: torch.Tensor, frames, retention: float = 0.25, tau=0.8, beta=0.6, k=7, max_window=1024):
    """HoliTom with the released code's structure, one video at a time, default options (D = 0):
    the (F, F, T) static-run table filled by a loop over start frames, the dynamic programme as a
    Python double loop over tensor elements, then per window the static means clustered (a loop
    over centres) and a top-k of the norms per frame."""
    out = []
    for v, F, T in _videos(x, frames):
        rows = v.view(F, T, -1).float()
        unit = torch.nn.functional.normalize(rows, dim=-1)
        sim = torch.nn.functional.cosine_similarity(unit[:-1], unit[1:], dim=-1)  # (F - 1, T)
        table = torch.ones(F, F, T)
        for s in range(F - 1):
            run = torch.cumprod(sim[s:] > tau, dim=0)
            table[s, s + 1 : s + 1 + len(run)] = run
        lengths = (torch.arange(F)[None, :] - torch.arange(F)[:, None]).clamp(min=0)
        saved = table.sum(dim=-1) * lengths
        dp, prev = torch.zeros(F), torch.zeros(F, dtype=torch.long)
        for i in range(F):
            best, start = (dp[i - 1] if i > 0 else 0), i
            for size in range(2, min(i + 1, max_window) + 1):
                j = i - size
                value = (dp[j] if j >= 0 else 0) + saved[j + 1, i]
                if value > best:
                    best, start = value, j + 1
            dp[i], prev[i] = best, start
        windows, i = [], F - 1
        while i >= 0:
            windows.append((int(prev[i]), i))
            i = int(prev[i]) - 1
        N, R = F * T, dp[-1].item()
        ratio = min(retention / ((N - R) / N), 1.0) if N > R else retention
        for s, e in windows[::-1]:
            static = (sim[s:e] > tau).all(dim=0) if e > s else torch.zeros(T, dtype=torch.bool)
            if e > s and static.any() and round(int(static.sum()) * ratio) > 0:
                out.append(
                    _holitom_clusters(rows[s : e + 1][:, static].mean(dim=0), round(int(static.sum()) * ratio), k, beta)
                )
            dynamic = torch.nonzero(~static).flatten()
            keep = math.ceil(len(dynamic) * ratio)
            for f in range(s, e + 1):
                top = torch.topk(rows[f, dynamic].norm(dim=-1), keep).indices.sort().values
                out.append(rows[f, dynamic[top]])
    return torch.cat(out).to(x.dtype)
