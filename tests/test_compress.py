"""End to end: every backend against the reference, on random and structured inputs, odd sizes,
all dtypes, multi-video batches, both count modes and per-video retentions."""

import numpy as np
import pytest
import torch
from helpers import (
    assert_matches_reference,
    exact_target_array,
    identical_tokens,
    moving_object,
    random_features,
    reference_pair,
    repeated_frames,
    scene_cuts,
)

import vidcom2_kernels as vk

# (id, frames, channels): odd token counts (T = 1, 7, 169, 196, 257), one frame, odd C, batches
SHAPES = [
    ("T1-F5-C8", [(5, 1)], 8),
    ("T7-F6-C33", [(6, 7)], 33),
    ("T169-F3-C16", [(3, 169)], 16),
    ("T196-F2-C24", [(2, 196)], 24),
    ("T257-F2-C9", [(2, 257)], 9),
    ("F1-T50-C17", [(1, 50)], 17),
    ("C1-F4-T6", [(4, 6)], 1),
    ("batch4-C20", [(3, 7), (1, 13), (4, 5), (2, 40)], 20),
]


def run(x, frames, backend, device, retention=0.25, **kwargs):
    out = vk.compress(x.to(device), frames, retention, backend=backend, **kwargs)
    expect, layout = reference_pair(x, frames, retention, **kwargs)
    return out, expect, layout


@pytest.mark.parametrize("exact", [False, True], ids=["budgets", "exact"])
@pytest.mark.parametrize("name,frames,C", SHAPES, ids=[s[0] for s in SHAPES])
def test_random(name, frames, C, dtype, exact, backend, device):
    x = random_features(frames, C, dtype, seed=len(name) + C)
    out, expect, layout = run(x, frames, backend, device, 0.3, exact=exact)
    targets = exact_target_array(layout, 0.3) if exact else None
    assert_matches_reference(out, expect, x, layout, 0.3, targets)


@pytest.mark.parametrize("exact", [False, True], ids=["budgets", "exact"])
def test_per_video_retention(backend, exact, device):
    frames = [(4, 9), (2, 30), (3, 5)]
    retention = [0.15, 0.6, 1.0]
    x = random_features(frames, 12, seed=3)
    out, expect, layout = run(x, frames, backend, device, retention, exact=exact)
    targets = exact_target_array(layout, retention) if exact else None
    assert_matches_reference(out, expect, x, layout, retention, targets)
    if exact:  # exact mode at retention 1.0 keeps the whole video
        assert bool(out.mask[-15:].all())
    else:  # budget mode at 1.0 still trims frames less unique than the average
        assert out.counts.tolist()[2] <= 15


def test_explicit_targets(backend, device):
    frames = [(4, 9), (2, 30)]
    x = random_features(frames, 10, seed=5)
    for target in ([4, 60], [36, 2], [20, 33]):
        out, expect, layout = run(x, frames, backend, device, 0.25, target=target)
        assert out.counts.tolist() == target
        assert_matches_reference(out, expect, x, layout, 0.25, np.array(target))


STRUCTURED = {
    "repeated-frames": lambda dt: (repeated_frames(6, 7, 10, dt), 7),
    "identical-tokens": lambda dt: (identical_tokens(5, 9, 8, dt), 9),
    "scene-cuts": lambda dt: (scene_cuts(10, 12, 16, dtype=dt), 12),
    "moving-object": lambda dt: (moving_object(8, 6, 12, dt), 36),
}


@pytest.mark.parametrize("exact", [False, True], ids=["budgets", "exact"])
@pytest.mark.parametrize("kind", list(STRUCTURED))
def test_structured(kind, dtype, exact, backend, device):
    x, T = STRUCTURED[kind](dtype)
    out, expect, layout = run(x, T, backend, device, 0.5, exact=exact)
    targets = exact_target_array(layout, 0.5) if exact else None
    assert_matches_reference(out, expect, x, layout, 0.5, targets)
    if kind in ("repeated-frames", "identical-tokens"):
        # exact score ties: the lower index must win everywhere, bit for bit
        assert torch.equal(out.indices.cpu(), expect.indices)
        assert torch.equal(out.budgets.cpu(), expect.budgets)


def test_videos_are_independent(backend, device):
    """A video compresses the same alone and inside a batch."""
    frames = [(3, 7), (5, 11), (2, 4)]
    x = random_features(frames, 14, seed=9)
    batch = vk.compress(x.to(device), frames, 0.4, backend=backend)
    start = 0
    for F, T in frames:
        alone = vk.compress(x[start : start + F * T].to(device), T, 0.4, backend=backend)
        got = batch.indices[batch.indices.ge(start) & batch.indices.lt(start + F * T)] - start
        assert torch.equal(got.cpu(), alone.indices.cpu())
        start += F * T


def test_non_contiguous_features(any_backend, device):
    frames = [(3, 10)]
    base = random_features([(3, 20)], 16, seed=2)
    x = base[::2].t().contiguous().t()  # rows strided and column-major
    out = vk.compress(x.to(device), frames, 0.3, backend=any_backend)
    expect, layout = reference_pair(x.contiguous(), frames, 0.3)
    assert_matches_reference(out, expect, x.contiguous(), layout, 0.3)


def test_extras_gathered_with_same_indices(any_backend, device):
    frames = [(2, 9), (3, 4)]
    x = random_features(frames, 8, torch.bfloat16, seed=1)
    deep = [torch.randn(x.shape[0], w).to(device) for w in (8, 5, 3, 16, 2)]
    ids = torch.arange(x.shape[0], device=device)[:, None]
    out = vk.compress(x.to(device), frames, 0.5, backend=any_backend, extras=[*deep, ids])
    assert len(out.extras) == 6
    for t, kept in zip([*deep, ids], out.extras):
        assert torch.equal(kept, t[out.indices])
    again = out.gather(*deep)
    for a, b in zip(again, out.extras):
        assert torch.equal(a, b)


def test_nonfinite_without_validation_stays_well_formed(any_backend, device):
    frames = [(3, 7), (2, 5)]
    x = random_features(frames, 6, seed=4)
    x[3, 2] = float("nan")
    x[22, 0] = float("inf")
    with pytest.raises(ValueError, match="video 0"):
        vk.compress(x.to(device), frames, 0.3, backend=any_backend)
    for exact in (False, True):
        out = vk.compress(x.to(device), frames, 0.3, backend=any_backend, validate=False, exact=exact)
        expect = vk.compress(x, frames, 0.3, backend="reference", validate=False, exact=exact)
        idx = out.indices.cpu()
        assert bool((idx[1:] > idx[:-1]).all()) and int(idx.min()) >= 0 and int(idx.max()) < x.shape[0]
        # NaN scores rank last and NaN uniqueness falls back to r: every backend agrees exactly
        assert torch.equal(idx, expect.indices)
        assert torch.equal(out.budgets.cpu(), expect.budgets)
