"""HoliTom (``method="holitom"``): the released semantics, checked against an independent float64
twin written here from the released code's facts (static windows by a dynamic programme over the
tokens' runs of cosine > tau with the next frame, saving ``static x (length - 1)`` rows; the
ratio ``min(r / ((N - R) / N), 1)``; a window's static tokens averaged and clustered by DPC-kNN
into ``round(n_s * ratio)`` rows ``beta * centre + (1 - beta) * mean``; ``ceil(n_d * ratio)``
dynamic tokens a frame by norm; placeholder positions ``linspace(0, N - 1, K)``); the torch and
triton backends against the reference on random and real-video features, every dtype, odd sizes,
strides, batches of different videos and FCA budgets; NaN/Inf; the options; and the clients
(torch.compile, the adapters, the environment, vLLM's refusal).

The released code draws random noise of 1e-6 into its DPC densities, so clusters whose candidate
centres have densities or scores that close are genuine ties: their rows are judged by that
margin, never by a wider tolerance."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import tiny_models as tm
import torch
from helpers import assert_nonfinite_contract, random_features, real_clip_features, scene_cuts

import vidcom2_kernels as vk
from vidcom2_kernels import adapters
from vidcom2_kernels import reference as ref
from vidcom2_kernels.integrations import vllm as plugin
from vidcom2_kernels.layout import parse_frames
from vidcom2_kernels.methods.holitom.plan import DEFAULTS

#: a batch of different videos: shots with cuts (static windows), partly moving shots (static and
#: dynamic tokens in one window), a random video (single-frame windows), one token a frame
BATCH = [(12, 23), (9, 40), (3, 7), (10, 1)]
#: the released code's DPC noise: densities or scores closer than this are ties
NOISE = 1e-6


def moving_shots(F, T, C, cuts, seed, moving=0.3):
    """Shots with cuts in which a share ``moving`` of the tokens move (dynamic tokens)."""
    g = torch.Generator().manual_seed(seed + 100)
    x = scene_cuts(F, T, C, cuts=cuts, seed=seed).view(F, T, C)
    moves = torch.rand(T, generator=g) < moving
    x[:, moves] += 2 * torch.randn(F, int(moves.sum()), C, generator=g)
    return x.reshape(F * T, C)


def batch_features(dtype=torch.float32, seed=0, C=20):
    parts = [
        scene_cuts(12, 23, C, cuts=(0.3, 0.6), seed=seed),
        moving_shots(9, 40, C, cuts=(0.5,), seed=seed + 1),
        random_features([(3, 7)], C, seed=seed + 2),
        scene_cuts(10, 1, C, cuts=(0.5,), seed=seed + 3),
    ]
    return torch.cat(parts).to(dtype)


# ------------------------------------------------------------------ an independent float64 twin
def _linspace(n: int, k: int) -> list:
    """The released keep indices: ``torch.linspace(0, n - 1, k)`` with an integer dtype (on the
    CPU, where these features are)."""
    return torch.linspace(0, n - 1, k, dtype=torch.long).tolist()


def _clusters(x: np.ndarray, count: int, k: int, beta: float) -> tuple:
    """(rows, merged, tie) of DPC-kNN over the rows of x (n, C), float64: ``tie`` when the
    released code's density noise could change its centres."""
    n, C = x.shape
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)) / math.sqrt(C)
    kk = max(1, min(k, count, n))
    density = np.exp(-(np.sort(dist, axis=1)[:, :kk] ** 2).mean(axis=1))
    score = np.empty(n)
    for i in range(n):
        denser = [j for j in range(n) if density[j] > density[i] or (density[j] == density[i] and j < i)]
        score[i] = density[i] * (min(dist[i, j] for j in denser) if denser else dist.max())
    order = sorted(range(n), key=lambda i: (-score[i], i))
    centres = sorted(order[:count])
    gaps = np.diff(np.sort(density))
    tie = bool((gaps < NOISE).any()) or (count < n and score[order[count - 1]] - score[order[count]] < NOISE)
    rest = [i for i in range(n) if i not in centres]
    groups = {c: [] for c in range(count)}
    for i in rest:
        groups[int(np.argmin([dist[i, c] for c in centres]))].append(i)
    rows, merged = [], []
    for c, centre in enumerate(centres):
        g = groups[c]
        rows.append(beta * x[centre] + (1 - beta) * x[g].mean(axis=0) if g else x[centre])
        merged.append(bool(g))
    return rows, merged, tie


def twin_video(
    x: np.ndarray, r: float, base=None, tau=0.8, beta=0.6, dominant_ratio=0.0, k_neighbors=7, max_window_size=1024
):
    """(keep, rows (K, C), merged [K], tie [K]) of one video ``x`` (t, T, C) float64 at retention r
    (``base`` (t,): FCA budgets, spent per window)."""
    t, T, C = x.shape
    N = t * T
    u = x / np.maximum(np.linalg.norm(x, axis=2, keepdims=True), 1e-12)
    sim = (u[:-1] * u[1:]).sum(-1) / (np.linalg.norm(u[:-1], axis=2) * np.linalg.norm(u[1:], axis=2))
    assert t == 1 or np.abs(sim - np.float32(tau)).min() > 1e-5, "test data with a cosine at tau"
    above = sim > np.float32(tau)  # (t - 1, T), as float32 tensors compare with a Python float

    def static(s, e):
        return above[s:e].all(axis=0) if e > s else np.zeros(T, dtype=bool)

    dp, prev = [0] * t, [0] * t
    for i in range(t):
        best, start = (dp[i - 1] if i > 0 else 0), i
        for size in range(2, min(i + 1, max_window_size) + 1):
            j = i - size
            value = (dp[j] if j >= 0 else 0) + int(static(j + 1, i).sum()) * (size - 1)
            if value > best:
                best, start = value, j + 1
        dp[i], prev[i] = best, start
    windows, i = [], t - 1
    while i >= 0:
        windows.append((prev[i], i))
        i = prev[i] - 1
    saved = dp[-1]
    ratio = min(r / ((N - saved) / N), 1.0) if N > saved else r
    rows, merged, tie = [], [], []
    for s, e in windows[::-1]:
        W = e - s + 1
        st = static(s, e)
        n_s, n_d = int(st.sum()), T - int(st.sum())
        wr = ratio if base is None else min(Fraction(int(base[s : e + 1].sum()), n_s + W * n_d), Fraction(1))
        if W > 1 and n_s > 0 and round(n_s * wr) > 0:
            rs, ms, tied = _clusters(x[s : e + 1][:, st].mean(axis=0), round(n_s * wr), k_neighbors, beta)
            rows += rs
            merged += [True] * len(rs)
            tie += [tied] * len(rs)
        per = math.ceil(n_d * wr)
        dom = round(per * (1 - dominant_ratio))
        for f in range(s, e + 1):
            dyn = np.flatnonzero(~st)
            norms = np.linalg.norm(x[f, dyn], axis=1)
            by_norm = sorted(range(len(dyn)), key=lambda i: (-norms[i], i))
            rows += [x[f, dyn[i]] for i in sorted(by_norm[:dom])]
            merged += [False] * dom
            tie += [False] * dom
            if per - dom > 0:
                rest = dyn[sorted(by_norm[dom:])]
                rs, ms, tied = _clusters(x[f, rest], per - dom, k_neighbors, beta)
                rows += rs
                merged += ms
                tie += [tied] * len(rs)
    if not rows:  # the released adapter's fallback: the whole video
        return list(range(N)), x.reshape(N, C), [False] * N, [False] * N
    return _linspace(N, len(rows)), np.stack(rows), merged, tie


def assert_matches_twin(out, x, frames, r, base=None, atol=1e-5, **options) -> int:
    """Per video: the placeholders equal, rows close and merged flags equal except in clusters
    the released noise decides (their count equal). Returns the rows compared."""
    layout = parse_frames(frames, x.shape[0])
    rs = np.broadcast_to(np.asarray(r, dtype=np.float64), (layout.num_videos,))
    got, compared = out.indices.cpu(), 0
    for v in range(layout.num_videos):
        a, b = int(layout.row_start[v]), int(layout.row_start[v + 1])
        F, T = frames[v]
        f0 = int(layout.frame_start[v])
        video_base = None if base is None else base[f0 : f0 + F]
        vx = x[a:b].double().numpy().reshape(F, T, -1)
        keep, rows, merged, tie = twin_video(vx, float(rs[v]), video_base, **options)
        slots = torch.nonzero((got >= a) & (got < b)).flatten()
        assert (got[slots] - a).tolist() == keep, f"video {v}: placeholders"
        sure = ~torch.tensor(tie, dtype=torch.bool)
        mine = out.features.cpu()[slots].double()
        torch.testing.assert_close(mine[sure], torch.from_numpy(rows)[sure], atol=atol, rtol=1e-4)
        assert out.merged.cpu()[slots][sure].tolist() == np.asarray(merged)[sure.numpy()].tolist(), f"video {v}"
        compared += int(sure.sum())
    return compared


@pytest.mark.parametrize("seed", range(6))
def test_reference_is_the_released_semantics(seed):
    g = torch.Generator().manual_seed(seed)
    F, T = int(torch.randint(2, 24, (), generator=g)), int(torch.randint(2, 40, (), generator=g))
    r = float(torch.rand((), generator=g)) * 0.8 + 0.1
    cuts = tuple(sorted(float(c) for c in torch.rand(2, generator=g)))
    x = moving_shots(F, T, 16, cuts, seed) * (torch.rand(F * T, 1, generator=g) + 0.5)
    out = ref.compress(x, T, r, method="holitom")
    assert assert_matches_twin(out, x, [(F, T)], r) > 0
    assert out.merged.any()


@pytest.mark.parametrize(
    "options",
    [
        {"dominant_ratio": 0.4},
        {"tau": 0.5, "k_neighbors": 3},
        {"max_window_size": 3, "beta": 0.3},
        {"dominant_ratio": 1.0},
    ],
    ids=["d", "tau-k", "window-beta", "d1"],
)
def test_options_follow_the_released_formulas(options):
    x = moving_shots(20, 17, 12, (0.2, 0.5, 0.8), seed=1)
    out = ref.compress(x, 17, 0.4, method="holitom", options=options)
    assert assert_matches_twin(out, x, [(20, 17)], 0.4, **options) > 0


def test_plan_facts():
    x = torch.randn(240, 12, generator=torch.Generator().manual_seed(2))  # nothing static: ceil(30 * r) a frame
    out = vk.compress(x, 30, 0.3, method="holitom")
    assert out.counts.tolist() == [8 * 9] and not out.merged.any()
    assert out.indices.tolist() == torch.linspace(0, 239, 72, dtype=torch.long).tolist()  # placeholders
    assert out.budgets.tolist() == torch.bincount(out.indices // 30, minlength=8).tolist()
    assert torch.equal(out.mask.nonzero().flatten(), out.indices)
    still = scene_cuts(6, 10, 12, cuts=(), seed=3)  # one static shot: one window, every token static
    full = vk.compress(still, 10, 1.0, method="holitom")  # retention 1 still folds the static tokens
    assert int(full.counts) == 10 and full.merged.all()
    torch.testing.assert_close(full.features, still.view(6, 10, 12).mean(dim=0))
    nothing = vk.compress(still[::10][:2], 1, 0.2, method="holitom")  # round(1 * 0.4) = 0 rows: whole
    assert torch.equal(nothing.indices, torch.arange(2)) and torch.equal(nothing.features, still[::10][:2])
    assert not nothing.merged.any()
    single = vk.compress(x[:30], 30, 0.5, method="holitom")  # one frame: its ceil(30 * 0.5) largest norms
    largest = torch.sort(torch.argsort(x[:30].norm(dim=1), descending=True, stable=True)[:15]).values
    assert torch.equal(single.features, x[largest]) and single.indices.tolist() == _linspace(30, 15)


# ------------------------------------------------------------------------------ fast vs reference
def assert_matches_reference(out, expect, atol):
    """The same placeholders, counts and merged flags; rows close (float32 sums in another order
    may round to the neighbouring bf16/fp16 value: one unit in the last place)."""
    for field in ("indices", "budgets", "counts", "mask", "merged"):
        assert torch.equal(getattr(out, field).cpu(), getattr(expect, field)), field
    rtol = 0 if out.features.dtype == torch.float32 else torch.finfo(out.features.dtype).eps
    torch.testing.assert_close(out.features.cpu().float(), expect.features.float(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("fca", [False, True], ids=["own", "fca"])
@pytest.mark.parametrize("dominant_ratio", [0.0, 0.5], ids=["d0", "d0.5"])
def test_backends_match_reference(backend, dtype, fca, dominant_ratio, device):
    x = batch_features(dtype, seed=3)
    deep = torch.randn(x.shape[0], 2, 3)
    kw = dict(method="holitom", frame_budgets="vidcom2" if fca else None, options={"dominant_ratio": dominant_ratio})
    r = [0.3, 0.5, 0.9, 0.2]
    out = vk.compress(x.to(device), BATCH, r, backend=backend, extras=[deep.to(device)], **kw)
    expect = ref.compress(x, BATCH, r, extras=[deep], **kw)
    assert_matches_reference(out, expect, 1e-5 if dtype == torch.float32 else 1e-2)
    assert torch.equal(out.extras[0].cpu(), deep[out.indices.cpu()])  # the rows at the placeholders
    assert out.merged.any() and out.features.dtype == dtype


def test_row_strided_input(backend, device):
    wide = batch_features(C=28, seed=5).to(device)
    x = wide[:, :20]
    out = vk.compress(x, BATCH, 0.4, backend=backend, method="holitom")
    expect = vk.compress(x.contiguous(), BATCH, 0.4, backend=backend, method="holitom")
    for field in ("indices", "features", "merged", "budgets"):
        assert torch.equal(getattr(out, field), getattr(expect, field)), field


def test_fca_budgets_are_vidcom2s(any_backend):
    """Each window spends the sum of VidCom2's step-5 budgets of its frames (the twin planned
    from them)."""
    x = batch_features(seed=6)
    out = vk.compress(x, BATCH, 0.35, backend=any_backend, method="holitom", frame_budgets="vidcom2")
    fca = vk.compress(x, BATCH, 0.35, backend=any_backend).budgets.cpu().numpy()
    assert assert_matches_twin(out, x, BATCH, 0.35, base=fca) > 0
    own = vk.compress(x, BATCH, 0.35, backend=any_backend, method="holitom")
    assert not torch.equal(out.counts, own.counts)


def test_real_video_features(backend):
    x, frames = real_clip_features()
    for dtype, atol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        out = vk.compress(x.to(dtype), frames, [0.25, 0.4], backend=backend, method="holitom")
        expect = ref.compress(x.to(dtype), frames, [0.25, 0.4], method="holitom")
        assert_matches_reference(out, expect, atol)
    out = ref.compress(x, frames, [0.25, 0.4], method="holitom")
    assert assert_matches_twin(out, x, frames, [0.25, 0.4]) > 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_features(any_backend, bad, device):
    x = batch_features(seed=7).to(device if any_backend != "reference" else "cpu")
    x[3, 2] = bad
    x[300, 0] = bad  # video 1 starts at row 276
    assert_nonfinite_contract(x, BATCH, "holitom", any_backend)


def test_option_and_count_errors():
    x = random_features([(2, 10)], 8)
    with pytest.raises(ValueError, match=r"options\['beta'\] must be a number in \[0, 1\]"):
        vk.compress(x, 10, method="holitom", options={"beta": 1.5})
    with pytest.raises(ValueError, match=r"options\['k_neighbors'\] must be an int >= 1"):
        vk.compress(x, 10, method="holitom", options={"k_neighbors": 0})
    with pytest.raises(ValueError, match=r"options\['tau'\] must be a finite number"):
        vk.compress(x, 10, method="holitom", options={"tau": float("nan")})
    with pytest.raises(ValueError, match="method 'holitom' has no option 'dyseg_c'"):
        vk.compress(x, 10, method="holitom", options={"dyseg_c": 3})
    for kw in ({"exact": True}, {"target": 5}):
        with pytest.raises(ValueError, match="do not apply to method='holitom'"):
            vk.compress(x, 10, method="holitom", **kw)
    assert set(DEFAULTS) == {"tau", "beta", "dominant_ratio", "k_neighbors", "max_window_size"}


# ------------------------------------------------------------------------------------ clients
def test_under_torch_compile(backend):
    torch._dynamo.reset()
    x = batch_features(seed=8)

    def user(x):
        out = vk.compress(x, BATCH, 0.4, backend=backend, method="holitom", validate=False)
        return out.indices, out.features, out.merged, out.budgets

    compiled, eager = torch.compile(user, fullgraph=True)(x), user(x)
    for a, b in zip(compiled, eager):
        assert torch.equal(a, b)


def test_environment_and_vllm():
    env = {"COMPRESSOR": "holitom", "R_RATIO": "0.3", "HOLITOM_T": "0.7", "HOLITOM_K": "5"}
    assert adapters.settings_from_env(env) == adapters.Settings(
        method="holitom", retention=0.3, options={"tau": 0.7, "k_neighbors": 5}
    )
    with pytest.raises(ValueError, match="HOLITOM_K must be an int >= 1"):
        adapters.settings_from_env({**env, "HOLITOM_K": "0"})
    with pytest.raises(ValueError, match="HOLITOM_BETA must be a number, got 'x'"):
        adapters.settings_from_env({**env, "HOLITOM_BETA": "x"})
    with pytest.raises(ValueError, match="VIDCOM2_VLLM_METHOD=holitom merges tokens"):
        plugin.settings_from_env({"VIDCOM2_VLLM_METHOD": "holitom"})


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "glm4v", "llava_onevision", "video_llava"])
def test_through_generate(family):
    tm.check_merging_method(family, "holitom", options={"tau": -1.0}, identity_at_full=False)
