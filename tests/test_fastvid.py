"""FastVID (``method="fastvid"``): the released semantics, checked against an independent float64
twin written here from the released code's facts (segments cut after the c - 1 lowest frame
similarities and below tau; per segment ``L * max(1, min(T, int(T * r)))`` tokens, half of them
context; inner segments where similarity stays >= 0.99, only their last frame keeping tokens;
salient tokens by norm, context tokens by DPC-kNN; every other token of the segment merged into
its most similar context token, ``0.5 * token + 0.5 * mean``); the torch and triton backends
against the reference on random and real-video features, every dtype, odd sizes, strides,
batches of different videos, exact counts and FCA budgets; NaN/Inf; the options; and the clients
(torch.compile, the adapters, the environment, vLLM's refusal).

Near-equal DPC scores make genuine ties: kept sets are compared up to swaps inside the
reference's own margin, never with a wider tolerance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tiny_models as tm
import torch
from helpers import (
    assert_kept_up_to_near_ties,
    assert_nonfinite_contract,
    random_features,
    real_clip_features,
    scene_cuts,
)

import vidcom2_kernels as vk
from vidcom2_kernels import adapters
from vidcom2_kernels import reference as ref
from vidcom2_kernels.integrations import vllm as plugin
from vidcom2_kernels.layout import exact_targets, parse_frames
from vidcom2_kernels.methods.fastvid.plan import DEFAULTS

#: a batch of different videos: static shots with cuts (segments, inner segments, merges across
#: frames), one random video (a segment a frame), a short one, one token a frame
BATCH = [(12, 23), (9, 40), (3, 7), (10, 1)]


def batch_features(dtype=torch.float32, seed=0, C=20):
    parts = [
        scene_cuts(12, 23, C, cuts=(0.3, 0.6), seed=seed),
        random_features([(9, 40)], C, seed=seed + 1),
        scene_cuts(3, 7, C, cuts=(0.5,), seed=seed + 2),
        scene_cuts(10, 1, C, cuts=(0.5,), seed=seed + 3),
    ]
    return torch.cat(parts).to(dtype)


# ------------------------------------------------------------------ an independent float64 twin
def _dpc(x: np.ndarray) -> np.ndarray:
    """DPC-kNN centre scores of the rows of x (n, C), float64; equal densities: lower row denser."""
    n, C = x.shape
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)) / math.sqrt(C)
    k = max(1, min(4, n))
    density = np.exp(-(np.sort(dist, axis=1)[:, :k] ** 2).mean(axis=1))
    score = np.empty(n)
    for i in range(n):
        denser = [j for j in range(n) if density[j] > density[i] or (density[j] == density[i] and j < i)]
        score[i] = density[i] * (min(dist[i, j] for j in denser) if denser else dist.max())
    return score


def twin_video(x: np.ndarray, r: float, base=None, c=8, tau=0.84, ignore=0.99, d=0.5, p=4, beta=0.5):
    """One video (F, T, C) float64 as the released code computes it: (kept positions ascending,
    their output rows, merged flags, {position: DPC score} of the context candidates, per-frame
    kept counts). ``base``: per-frame budgets a segment sums (default ``max(1, min(T, int(T*r)))``)."""
    F, T, C = x.shape
    flat = x.reshape(F * T, C)
    if r >= 1:
        return list(range(F * T)), flat, [False] * (F * T), {}, [T] * F
    base = [max(1, min(T, int(T * r)))] * F if base is None else list(base)
    means = x.mean(axis=1)
    means = means / np.maximum(np.linalg.norm(means, axis=1), 1e-12)[:, None]
    sim = (means[:-1] * means[1:]).sum(axis=1)
    cuts = set(sorted(range(F - 1), key=lambda i: (sim[i], i))[: min(c - 1, F - 1)])
    cuts |= {i for i in range(F - 1) if sim[i] < tau}
    segments, run = [], []
    for f in range(F):
        run.append(f)
        if f in cuts or f == F - 1:
            segments.append(run)
            run = []
    rows, merged, dpc, per_frame = {}, {}, {}, [0] * F
    for seg in segments:
        L = len(seg)
        retain = max(1, min(L * T, sum(base[f] for f in seg)))
        n_ctx = min(max(1, int(retain * d)) if retain > 1 else 0, retain)
        n_sal = retain - n_ctx
        if L == 1:
            plan = {seg[0]: (n_sal, n_ctx)}
        else:
            inner, run = [], []
            for f in seg:
                run.append(f)
                if f == seg[-1] or sim[f] < ignore:
                    inner.append(run)
                    run = []
            n = len(inner)
            sal_share = [n_sal // n + (i < n_sal % n) for i in range(n)]
            m = -(-n // p)
            ctx_share = [n_ctx // m + (i < n_ctx % m) for i in range(m)]
            give = [0] * n
            for t, i in enumerate(range(0, n, p)):
                give[i] = min(ctx_share[t], T // 2)
            give.reverse()
            plan = {f: (0, 0) for f in seg}
            for i, run in enumerate(inner):
                plan[run[-1]] = (min(sal_share[i], T - give[i]), give[i])
        if sum(s + q for s, q in plan.values()) == 0:  # the released fallback (one token a frame here)
            plan = {f: (T, 0) for f in seg}
        salient, context = set(), {}
        for f in seg:
            s, q = plan[f]
            q = min(q, T - s)
            norms = np.linalg.norm(x[f], axis=1)
            top = sorted(range(T), key=lambda i: (-norms[i], i))[:s]
            salient |= {f * T + i for i in top}
            rest = sorted(set(range(T)) - set(top))
            if q > 0 and rest:
                score = _dpc(x[f][rest])
                dpc.update({f * T + i: score[j] for j, i in enumerate(rest)})
                picks = sorted(range(len(rest)), key=lambda j: (-score[j], j))[:q]
                context[f] = sorted(f * T + rest[j] for j in picks)
            per_frame[f] = s + len(context.get(f, []))
        for i in salient:
            rows[i], merged[i] = flat[i], False
        seg_rows = [f * T + i for f in seg for i in range(T)]
        unit = flat / np.maximum(np.linalg.norm(flat, axis=1), 1e-12)[:, None]
        for anchors in context.values():
            pool = [i for i in seg_rows if i not in salient and i not in anchors]
            groups = {a: [] for a in anchors}
            for i in pool:
                groups[anchors[int(np.argmax(unit[anchors] @ unit[i]))]].append(i)
            for a, group in groups.items():
                w = max(1 / (len(group) + 1), beta)
                if group and w < 1:
                    rows[a], merged[a] = w * flat[a] + (1 - w) * flat[group].mean(axis=0), True
                else:
                    rows[a], merged[a] = flat[a], False
    kept = sorted(rows)
    return kept, np.stack([rows[i] for i in kept]), [merged[i] for i in kept], dpc, per_frame


def assert_matches_twin(out, x, frames, r, base=None, atol=1e-5, **options):
    """Per video: kept sets equal (a swap only between near-equal DPC scores of the twin), rows
    close, merged flags equal, per-frame counts equal."""
    layout = parse_frames(frames, x.shape[0])
    rs = np.broadcast_to(np.asarray(r, dtype=np.float64), (layout.num_videos,))
    got = out.indices.cpu()
    for v in range(layout.num_videos):
        a, b = int(layout.row_start[v]), int(layout.row_start[v + 1])
        F, T = frames[v]
        f0 = int(layout.frame_start[v])
        video_base = None if base is None else base[f0 : f0 + F]
        vx = x[a:b].double().numpy().reshape(F, T, -1)
        kept, rows, merged, dpc, per_frame = twin_video(vx, float(rs[v]), video_base, **options)
        slots = torch.nonzero((got >= a) & (got < b)).flatten()
        mine = (got[slots] - a).tolist()
        assert out.budgets[f0 : f0 + F].tolist() == per_frame, f"video {v}: per-frame counts"
        if mine != kept:  # only near-equal DPC scores may swap a context token
            swapped = sorted(set(mine) ^ set(kept))
            values = [dpc[i] for i in swapped if i in dpc]
            assert len(values) == len(swapped) and max(values) - min(values) < 1e-6 * max(1.0, max(values)), (
                f"video {v}: kept {mine} != twin {kept}"
            )
            continue
        torch.testing.assert_close(out.features.cpu()[slots].double(), torch.from_numpy(rows), atol=atol, rtol=1e-4)
        assert out.merged.cpu()[slots].tolist() == merged, f"video {v}"


@pytest.mark.parametrize("seed", range(6))
def test_reference_is_the_released_semantics(seed):
    g = torch.Generator().manual_seed(seed)
    F, T = int(torch.randint(2, 30, (), generator=g)), int(torch.randint(2, 40, (), generator=g))
    r = float(torch.rand((), generator=g)) * 0.9 + 0.05
    cuts = tuple(sorted(float(c) for c in torch.rand(2, generator=g)))
    x = scene_cuts(F, T, 16, cuts=cuts, seed=seed) * (torch.rand(F * T, 1, generator=g) + 0.5)
    out = ref.compress(x, T, r, method="fastvid")
    assert_matches_twin(out, x, [(F, T)], r)
    assert out.merged.any() or T * r < 2


@pytest.mark.parametrize(
    "options",
    [{"dtm_p": 2, "dyseg_c": 3}, {"stprune_d": 0.25, "dtm_beta": 0.3}, {"dyseg_tau": 0.5, "dyseg_ignore": 0.9}],
    ids=["p2-c3", "d-beta", "thresholds"],
)
def test_options_follow_the_released_formulas(options):
    x = scene_cuts(20, 17, 12, cuts=(0.2, 0.5, 0.8), seed=1)
    out = ref.compress(x, 17, 0.4, method="fastvid", options=options)
    names = {
        "dyseg_c": "c",
        "dyseg_tau": "tau",
        "dyseg_ignore": "ignore",
        "stprune_d": "d",
        "dtm_p": "p",
        "dtm_beta": "beta",
    }
    assert_matches_twin(out, x, [(20, 17)], 0.4, **{names[k]: v for k, v in options.items()})


def test_plan_facts():
    x = random_features([(8, 30)], 12, seed=2)  # 8 frames or fewer: a segment a frame
    out = vk.compress(x, 30, 0.3, method="fastvid")
    assert out.budgets.tolist() == [9] * 8  # int(30 * 0.3) a frame: 5 salient + 4 context,
    assert 0 < int(out.merged.sum()) <= 8 * 4  # the context tokens merge the frame's other 21
    whole = vk.compress(x, 30, 1.0, method="fastvid")  # the released code keeps every token
    assert torch.equal(whole.features, x) and not whole.merged.any()
    static = scene_cuts(16, 10, 12, cuts=(0.5,), seed=3)  # two shots: inner segments keep on their last frame
    out = vk.compress(static, 10, 0.3, method="fastvid")
    assert (out.budgets == 0).sum() >= 8 and int(out.counts) <= 16 * 3
    one = vk.compress(static[::10], 1, 0.5, method="fastvid", options={"stprune_d": 1.0})  # the fallback
    assert torch.equal(one.indices, torch.arange(16))


# ------------------------------------------------------------------------------ fast vs reference
def assert_matches_reference(out, expect, layout, atol):
    """Kept sets equal per frame up to the reference's own near-ties (its DPC keys), merged rows
    close where the sets agree, merge flags and per-frame counts equal."""
    assert torch.equal(out.budgets.cpu(), expect.budgets) and torch.equal(out.counts.cpu(), expect.counts)
    finite = torch.isfinite(expect.scores) & torch.isfinite(out.scores.cpu())
    err = float((out.scores.cpu() - expect.scores)[finite].abs().max()) if finite.any() else 0.0
    assert err < 1e-4, f"DPC keys differ by {err}"
    segments = [(layout.frame_row_start[f], layout.frame_row_start[f + 1]) for f in range(layout.total_frames)]
    assert_kept_up_to_near_ties(out.mask, expect.mask, expect.scores, segments, err)
    if torch.equal(out.mask.cpu(), expect.mask.cpu()):
        assert torch.equal(out.merged.cpu(), expect.merged)
        # float32 blends summed in another order may round to the neighbouring bf16/fp16 value:
        # one unit in the last place of the output dtype (2**-7 relative for bf16)
        rtol = 0 if out.features.dtype == torch.float32 else torch.finfo(out.features.dtype).eps
        torch.testing.assert_close(out.features.cpu().float(), expect.features.float(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("fca", [False, True], ids=["own", "fca"])
def test_backends_match_reference(backend, dtype, fca, device):
    x = batch_features(dtype, seed=3)
    deep = torch.randn(x.shape[0], 2, 3)
    kw = dict(method="fastvid", frame_budgets="vidcom2" if fca else None)
    out = vk.compress(x.to(device), BATCH, [0.3, 0.5, 0.9, 0.2], backend=backend, extras=[deep.to(device)], **kw)
    expect = ref.compress(x, BATCH, [0.3, 0.5, 0.9, 0.2], extras=[deep], **kw)
    atol = 1e-5 if dtype == torch.float32 else 1e-2
    assert_matches_reference(out, expect, parse_frames(BATCH, x.shape[0]), atol)
    assert torch.equal(out.extras[0].cpu(), deep[out.indices.cpu()])  # the context tokens' own rows
    assert torch.equal(out.indices, torch.sort(out.indices).values) and out.indices.unique().numel() == len(out.indices)
    assert out.merged.any()


def test_exact_counts(any_backend, device):
    x = batch_features(seed=4).to(device if any_backend != "reference" else "cpu")
    layout = parse_frames(BATCH, x.shape[0])
    out = vk.compress(x, BATCH, 0.3, backend=any_backend, method="fastvid", exact=True)
    assert out.counts.tolist() == exact_targets(layout, np.full(4, 0.3)).tolist()
    if any_backend != "reference":
        expect = ref.compress(x.cpu(), BATCH, 0.3, method="fastvid", exact=True)
        videos = [(layout.row_start[v], layout.row_start[v + 1]) for v in range(layout.num_videos)]
        assert_kept_up_to_near_ties(out.mask, expect.mask, expect.scores, videos, 1e-5)
    targeted = vk.compress(x, BATCH, 0.3, backend=any_backend, method="fastvid", target=[40, 50, 5, 10])
    assert targeted.counts.tolist() == [40, 50, 5, 10]


def test_row_strided_input(backend, device):
    wide = batch_features(C=28, seed=5).to(device)
    x = wide[:, :20]
    out = vk.compress(x, BATCH, 0.4, backend=backend, method="fastvid")
    expect = vk.compress(x.contiguous(), BATCH, 0.4, backend=backend, method="fastvid")
    for field in ("indices", "features", "merged", "budgets"):
        assert torch.equal(getattr(out, field), getattr(expect, field)), field


def test_fca_budgets_are_vidcom2s(any_backend):
    """Each segment sums VidCom2's step-5 budgets of its frames (the twin planned from them)."""
    x = batch_features(seed=6)
    out = vk.compress(x, BATCH, 0.35, backend=any_backend, method="fastvid", frame_budgets="vidcom2")
    fca = vk.compress(x, BATCH, 0.35, backend=any_backend).budgets.cpu().numpy()
    assert_matches_twin(out, x, BATCH, 0.35, base=fca)
    short = slice(21, 24)  # 3 frames, each its own segment: the plan is FCA's budgets
    assert out.budgets[short].tolist() == fca[short].tolist()


def test_real_video_features(backend):
    x, frames = real_clip_features()
    for dtype, atol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        out = vk.compress(x.to(dtype), frames, [0.25, 0.4], backend=backend, method="fastvid")
        expect = ref.compress(x.to(dtype), frames, [0.25, 0.4], method="fastvid")
        assert_matches_reference(out, expect, parse_frames(frames, x.shape[0]), atol)
    out = ref.compress(x, frames, [0.25, 0.4], method="fastvid")
    assert_matches_twin(out, x, frames, [0.25, 0.4])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_features(any_backend, bad, device):
    x = batch_features(seed=7).to(device if any_backend != "reference" else "cpu")
    x[3, 2] = bad
    x[300, 0] = bad  # video 1 starts at row 276
    assert_nonfinite_contract(x, BATCH, "fastvid", any_backend)


def test_option_errors():
    x = random_features([(2, 10)], 8)
    with pytest.raises(ValueError, match=r"options\['stprune_d'\] must be a number in \[0, 1\]"):
        vk.compress(x, 10, method="fastvid", options={"stprune_d": 1.5})
    with pytest.raises(ValueError, match=r"options\['dtm_p'\] must be an int >= 1"):
        vk.compress(x, 10, method="fastvid", options={"dtm_p": 0})
    with pytest.raises(ValueError, match=r"options\['dyseg_tau'\] must be a finite number"):
        vk.compress(x, 10, method="fastvid", options={"dyseg_tau": float("nan")})
    with pytest.raises(ValueError, match="method 'fastvid' has no option 'k_neighbors'"):
        vk.compress(x, 10, method="fastvid", options={"k_neighbors": 3})
    assert set(DEFAULTS) == {"dyseg_c", "dyseg_tau", "dyseg_ignore", "stprune_d", "dtm_p", "dtm_beta"}


# ------------------------------------------------------------------------------------ clients
@pytest.mark.parametrize("exact", [False, True], ids=["budgets", "exact"])
def test_under_torch_compile(backend, exact):
    torch._dynamo.reset()
    x = batch_features(seed=8)

    def user(x):
        out = vk.compress(x, BATCH, 0.4, backend=backend, method="fastvid", validate=False, exact=exact)
        return out.indices, out.features, out.merged, out.budgets

    compiled, eager = torch.compile(user, fullgraph=True)(x), user(x)
    for a, b in zip(compiled, eager):
        assert torch.equal(a, b)


def test_environment_and_vllm():
    env = {"COMPRESSOR": "fastvid", "R_RATIO": "0.3", "fastvid_DySeg_c": "6", "fastvid_DTM_beta": "0.4"}
    assert adapters.settings_from_env(env) == adapters.Settings(
        method="fastvid", retention=0.3, options={"dyseg_c": 6, "dtm_beta": 0.4}
    )
    with pytest.raises(ValueError, match="fastvid_DTM_p must be an int >= 1"):
        adapters.settings_from_env({**env, "fastvid_DTM_p": "0"})
    with pytest.raises(ValueError, match="fastvid_STPrune_d must be a number, got 'x'"):
        adapters.settings_from_env({**env, "fastvid_STPrune_d": "x"})
    with pytest.raises(ValueError, match="VIDCOM2_VLLM_METHOD=fastvid merges tokens"):
        plugin.settings_from_env({"VIDCOM2_VLLM_METHOD": "fastvid"})


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "glm4v", "llava_onevision", "video_llava"])
def test_through_generate(family):
    tm.check_merging_method(family, "fastvid")
