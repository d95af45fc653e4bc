"""VisionZip (``method="visionzip"``): the released semantics, checked against an independent
float64 twin written here from the released code's facts (per frame: keep ``max(1, int(T * r))``,
dominant ``max(1, int(keep * 0.6))`` largest norms, contextual anchors of highest kNN density among
the rest, every non-dominant token merged into its most similar anchor); the torch and triton
backends against the reference on random and real-video features, every dtype, odd sizes,
strides, batches of different videos, exact counts and FCA budgets; NaN/Inf; the options; and the
clients (torch.compile, the adapters, the environment, vLLM's refusal).

Near-duplicate tokens make genuine ties (equal norms or densities): kept sets are compared up to
swaps inside the reference's own margin, never with a wider tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models as tm
import torch
from helpers import assert_kept_up_to_near_ties, assert_nonfinite_contract, random_features, real_clip_features

import vidcom2_kernels as vk
from vidcom2_kernels import adapters
from vidcom2_kernels import reference as ref
from vidcom2_kernels.integrations import vllm as plugin
from vidcom2_kernels.layout import parse_frames

BATCH = [(5, 23), (2, 40), (1, 7), (3, 3)]


# ------------------------------------------------------------------ an independent float64 twin
def twin_frame(x: np.ndarray, r: float, ratio: float = 0.6, k_neighbors: int = 5):
    """One frame (T, C) float64 as the released code computes it: (kept local positions ascending,
    their output rows, the density of every non-dominant token, merged flags)."""
    T = x.shape[0]
    keep = max(1, int(T * r))
    d = max(1, int(keep * ratio))
    norms = np.linalg.norm(x, axis=1)
    dominant = sorted(sorted(range(T), key=lambda i: (-norms[i], i))[:d])
    rest = [i for i in range(T) if i not in dominant]
    xn = x / np.maximum(norms, 1e-12)[:, None]
    density = {}
    if rest:
        sim = xn[rest] @ xn[rest].T
        k = min(k_neighbors + 1, len(rest))
        top = -np.sort(-sim, axis=1)[:, :k]
        for j, i in enumerate(rest):
            density[i] = top[j, 1:].mean() if k > 1 else np.nan
    c = min(keep - d, len(rest))
    anchors = sorted(sorted(rest, key=lambda i: (-density[i], i))[:c]) if c else []
    rows = {i: x[i] for i in dominant + anchors}
    merged = {i: False for i in rows}
    if anchors and c < len(rest):
        assign = {i: anchors[int(np.argmax(xn[anchors] @ xn[i]))] for i in rest}
        for a in anchors:
            group = [i for i in rest if assign[i] == a]
            if group:
                rows[a] = x[group].mean(axis=0)
                merged[a] = group != [a]
    kept = sorted(rows)
    return kept, np.stack([rows[i] for i in kept]), density, [merged[i] for i in kept]


def assert_matches_twin(out, x, frames, r, ratio=0.6, k_neighbors=5, atol=1e-5):
    layout = parse_frames(frames, x.shape[0])
    got = out.indices.cpu()
    for f in range(layout.total_frames):
        a, b = int(layout.frame_row_start[f]), int(layout.frame_row_start[f + 1])
        kept, rows, density, merged = twin_frame(x[a:b].double().numpy(), r, ratio, k_neighbors)
        slots = torch.nonzero((got >= a) & (got < b)).flatten()
        mine = (got[slots] - a).tolist()
        for i, value in density.items():  # the order keys: -density (NaN, a lone token, ranks as +inf)
            want = float("inf") if np.isnan(value) else -value
            assert abs(float(out.scores[a + i]) - want) < 1e-5 or float(out.scores[a + i]) == want, (f, i)
        if mine != kept:  # only a density near-tie may swap an anchor
            swapped = sorted(set(mine) ^ set(kept))
            values = [density[i] for i in swapped]
            assert all(i in density for i in swapped) and max(values) - min(values) < 1e-5, (
                f"frame {f}: kept {mine} != twin {kept}"
            )
            continue
        torch.testing.assert_close(out.features.cpu()[slots].double(), torch.from_numpy(rows), atol=atol, rtol=1e-4)
        assert out.merged.cpu()[slots].tolist() == merged, f"frame {f}"


@pytest.mark.parametrize("seed", range(6))
def test_reference_is_the_released_semantics(seed):
    g = torch.Generator().manual_seed(seed)
    frames = [(int(torch.randint(1, 6, (), generator=g)), int(torch.randint(2, 60, (), generator=g)))]
    r = float(torch.rand((), generator=g)) * 0.9 + 0.05
    x = random_features(frames, 16, seed=seed) * (torch.rand(frames[0][0] * frames[0][1], 1, generator=g) + 0.5)
    out = ref.compress(x, frames, r, method="visionzip")
    assert_matches_twin(out, x, frames, r)
    assert out.counts.tolist() == [frames[0][0] * max(1, int(frames[0][1] * r))]


@pytest.mark.parametrize("options", [{"dominant_ratio": 0.3, "k_neighbors": 2}, {"dominant_ratio": 0.0}])
def test_options_follow_the_released_formulas(options):
    x = random_features([(3, 30)], 12, seed=1)
    out = ref.compress(x, 30, 0.4, method="visionzip", options=options)
    assert_matches_twin(out, x, [(3, 30)], 0.4, options.get("dominant_ratio", 0.6), options.get("k_neighbors", 5))


def test_edge_cases():
    x = random_features([(4, 9)], 8, seed=2)
    whole = vk.compress(x, 9, 1.0, method="visionzip")  # keep == T: nothing dropped, nothing merged
    assert torch.equal(whole.features, x) and not whole.merged.any()
    dominant_only = vk.compress(x, 9, 0.5, method="visionzip", options={"dominant_ratio": 1.0})
    norms = torch.linalg.vector_norm(x, dim=1).view(4, 9)
    top = torch.sort(torch.topk(norms, 4, dim=1).indices, dim=1).values + torch.arange(4)[:, None] * 9
    assert torch.equal(dominant_only.indices, top.flatten()) and not dominant_only.merged.any()
    tiny = vk.compress(x[:2], [(1, 2)], 0.1, method="visionzip")  # keep 1: one dominant token
    assert tiny.indices.tolist() == [int(torch.argmax(norms[0, :2]))]


# ------------------------------------------------------------------------------ fast vs reference
def assert_matches_reference(out, expect, layout, atol):
    """Kept sets equal up to the reference's own near-ties, merged rows close, merge flags equal."""
    segments = [(layout.frame_row_start[f], layout.frame_row_start[f + 1]) for f in range(layout.total_frames)]
    assert_kept_up_to_near_ties(out.mask, expect.mask, expect.scores, segments, 1e-6)
    # the order keys themselves (-inf for the dominant tokens, -density): equal where the dominant
    # sets agree, which they do unless two norms tie
    torch.testing.assert_close(out.scores.cpu(), expect.scores, atol=1e-5, rtol=0)
    if torch.equal(out.mask.cpu(), expect.mask.cpu()):
        assert torch.equal(out.merged.cpu(), expect.merged)
        torch.testing.assert_close(out.features.cpu().float(), expect.features.float(), atol=atol, rtol=0)
    assert torch.equal(out.budgets.cpu(), expect.budgets) and torch.equal(out.counts.cpu(), expect.counts)


@pytest.mark.parametrize("exact", [False, True], ids=["budgets", "exact"])
@pytest.mark.parametrize("fca", [False, True], ids=["own", "fca"])
def test_backends_match_reference(backend, dtype, exact, fca):
    x = random_features(BATCH, 20, dtype, seed=3)
    deep = torch.randn(x.shape[0], 2, 3)
    kw = dict(method="visionzip", exact=exact, frame_budgets="vidcom2" if fca else None, extras=[deep])
    out = vk.compress(x, BATCH, [0.3, 0.5, 0.9, 0.2], backend=backend, **kw)
    expect = ref.compress(x, BATCH, [0.3, 0.5, 0.9, 0.2], **kw)
    atol = 1e-5 if dtype == torch.float32 else 1e-2
    assert_matches_reference(out, expect, parse_frames(BATCH, x.shape[0]), atol)
    assert torch.equal(out.extras[0].cpu(), deep[out.indices.cpu()])  # the anchors' own rows, unmerged
    assert torch.equal(out.indices, torch.sort(out.indices).values) and out.indices.unique().numel() == len(out.indices)


def test_row_strided_input(backend):
    wide = random_features(BATCH, 28, seed=4)
    x = wide[:, :20]
    out = vk.compress(x, BATCH, 0.4, backend=backend, method="visionzip")
    expect = vk.compress(x.contiguous(), BATCH, 0.4, backend=backend, method="visionzip")
    for field in ("indices", "features", "merged", "budgets"):
        assert torch.equal(getattr(out, field), getattr(expect, field)), field


def test_fca_budgets_are_vidcom2s(any_backend):
    x = random_features(BATCH, 20, seed=5)
    out = vk.compress(x, BATCH, 0.35, backend=any_backend, method="visionzip", frame_budgets="vidcom2")
    assert torch.equal(out.budgets, vk.compress(x, BATCH, 0.35, backend=any_backend).budgets)


def test_real_video_features(backend):
    x, frames = real_clip_features(8, 6)
    for dtype, atol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        out = vk.compress(x.to(dtype), frames, [0.25, 0.4], backend=backend, method="visionzip")
        expect = ref.compress(x.to(dtype), frames, [0.25, 0.4], method="visionzip")
        assert_matches_reference(out, expect, parse_frames(frames, x.shape[0]), atol)
    out = ref.compress(x, frames, 0.25, method="visionzip")
    assert_matches_twin(out, x, frames, 0.25)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_features(any_backend, bad):
    x = random_features(BATCH, 20, seed=6)
    x[3, 2] = bad
    x[130, 0] = bad  # video 1 starts at row 115
    x[131, 0] = -bad  # -inf beside +inf: NaN where both join one group
    assert_nonfinite_contract(x, BATCH, "visionzip", any_backend)


def test_option_errors():
    x = random_features([(2, 10)], 8)
    with pytest.raises(ValueError, match=r"options\['dominant_ratio'\] must be a number in \[0, 1\]"):
        vk.compress(x, 10, method="visionzip", options={"dominant_ratio": 1.5})
    with pytest.raises(ValueError, match=r"options\['k_neighbors'\] must be an int >= 1"):
        vk.compress(x, 10, method="visionzip", options={"k_neighbors": 0})
    with pytest.raises(ValueError, match="method 'visionzip' has no option 'ratio'"):
        vk.compress(x, 10, method="visionzip", options={"ratio": 0.5})
    with pytest.raises(ValueError, match="method 'vidcom2' has no option 'k_neighbors'"):
        vk.compress(x, 10, options={"k_neighbors": 3})
    with pytest.raises(TypeError, match="options must be a dict"):
        vk.compress(x, 10, method="visionzip", options=[("k_neighbors", 3)])


# ------------------------------------------------------------------------------------ clients
def test_under_torch_compile(backend):
    torch._dynamo.reset()
    x = random_features(BATCH, 20, seed=7)
    options = {"dominant_ratio": 0.5, "k_neighbors": 3}

    def user(x):
        out = vk.compress(x, BATCH, 0.4, backend=backend, method="visionzip", validate=False, options=options)
        return out.indices, out.features, out.merged, out.budgets

    compiled, eager = torch.compile(user, fullgraph=True)(x), user(x)
    for a, b in zip(compiled, eager):
        assert torch.equal(a, b)


def test_environment_and_vllm():
    env = {"COMPRESSOR": "visionzip", "R_RATIO": "0.3", "visionzip_dominant_ratio": "0.5", "visionzip_k_neighbors": "4"}
    assert adapters.settings_from_env(env) == adapters.Settings(
        method="visionzip", retention=0.3, options={"dominant_ratio": 0.5, "k_neighbors": 4}
    )
    with pytest.raises(ValueError, match="visionzip_k_neighbors must be an int >= 1"):
        adapters.settings_from_env({**env, "visionzip_k_neighbors": "0"})
    with pytest.raises(ValueError, match="visionzip_dominant_ratio must be a number, got 'x'"):
        adapters.settings_from_env({**env, "visionzip_dominant_ratio": "x"})
    with pytest.raises(ValueError, match="VIDCOM2_VLLM_METHOD=visionzip merges tokens"):
        plugin.settings_from_env({"VIDCOM2_VLLM_METHOD": "visionzip"})


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava_onevision", "video_llava"])
def test_through_generate(family):
    tm.check_merging_method(family, "visionzip")
