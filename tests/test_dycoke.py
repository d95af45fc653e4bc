"""DyCoke's temporal token merging on the shared kernels: every backend against the reference,
odd frame counts and windows, both quirk settings, all dtypes, batches; the composition with
VidCom2's frame budgets; the released code's quirks by hand; sync budget; bad input."""

import numpy as np
import pytest
import torch
from helpers import assert_kept_up_to_near_ties, random_features, repeated_frames, scene_cuts

import vidcom2_kernels as vk
from vidcom2_kernels import reference
from vidcom2_kernels.layout import parse_frames
from vidcom2_kernels.methods.dycoke.plan import anchor_frames, dycoke_budgets
from vidcom2_kernels.testing import HostReadCounter

FRAME_COUNTS = [1, 3, 4, 5, 8, 33]


def assert_same_selection(out, expect, layout, per_video=False):
    """Equal budgets and kept sets; a swap is allowed only between tokens whose reference
    similarities are within the observed score error of each other (a genuine near-tie)."""
    assert torch.equal(out.counts.cpu(), expect.counts)
    if not per_video:
        assert torch.equal(out.budgets.cpu(), expect.budgets)
    finite = torch.isfinite(expect.scores)
    err = float((out.scores.cpu() - expect.scores)[finite].abs().max()) if finite.any() else 0.0
    assert err <= 2e-6, f"similarities differ by {err}"
    idx = out.indices.cpu()
    assert bool((idx[1:] > idx[:-1]).all())
    bounds = layout.row_start if per_video else layout.frame_row_start
    assert_kept_up_to_near_ties(out.mask, expect.mask, expect.scores, zip(bounds[:-1], bounds[1:]), err)


@pytest.mark.parametrize("quirks", [False, True], ids=["clean", "quirks"])
@pytest.mark.parametrize("F", FRAME_COUNTS)
def test_matches_reference(F, dtype, quirks, backend, device):
    frames = [(F, 13)]
    x = random_features(frames, 11, dtype, seed=F)
    out = vk.compress(x.to(device), frames, 0.3, backend=backend, method="dycoke", quirks=quirks)
    expect = reference.compress(x, frames, 0.3, method="dycoke", quirks=quirks)
    assert_same_selection(out, expect, parse_frames(frames, x.shape[0]))
    assert torch.equal(out.features.cpu(), x[out.indices.cpu()])


@pytest.mark.parametrize("exact", [False, True], ids=["budgets", "exact"])
def test_batch_and_structured(backend, exact, device):
    parts = [repeated_frames(5, 7, 9), scene_cuts(8, 6, 9), random_features([(3, 10)], 9, seed=2)]
    frames = [(5, 7), (8, 6), (3, 10)]
    x = torch.cat(parts)
    out = vk.compress(x.to(device), frames, [0.3, 0.5, 0.2], backend=backend, method="dycoke", exact=exact)
    expect = reference.compress(x, frames, [0.3, 0.5, 0.2], method="dycoke", exact=exact)
    assert_same_selection(out, expect, parse_frames(frames, x.shape[0]))


def test_explicit_target_reconciles(backend, device):
    frames = [(6, 9), (4, 5)]
    x = random_features(frames, 8, seed=7)
    out = vk.compress(x.to(device), frames, 0.3, backend=backend, method="dycoke", target=[20, 6])
    expect = reference.compress(x, frames, 0.3, method="dycoke", target=[20, 6])
    assert out.counts.tolist() == [20, 6]
    assert_same_selection(out, expect, parse_frames(frames, x.shape[0]), per_video=True)


def test_frame_budgets_composition_is_vidcom2_step5(any_backend, device):
    """DyCoke's token scores with VidCom2's budgets: the budgets are exactly step 5's."""
    frames = [(7, 12), (4, 9)]
    x = random_features(frames, 10, seed=3)
    out = vk.compress(x.to(device), frames, 0.25, backend=any_backend, method="dycoke", frame_budgets="vidcom2")
    _, uniqueness = reference.token_scores(x, frames)
    want = reference.frame_budgets(uniqueness, frames, 0.25)
    assert torch.equal(out.budgets.cpu(), want)
    # and within each frame the tokens are DyCoke's least similar ones
    layout = parse_frames(frames, x.shape[0])
    sims, _ = reference.dycoke_similarity(x, layout, anchor_frames(layout, fca=True), False)
    mask = out.mask.cpu()
    for f in range(layout.total_frames):
        a, b = layout.frame_row_start[f], layout.frame_row_start[f + 1]
        kept, dropped = sims[a:b][mask[a:b]], sims[a:b][~mask[a:b]]
        if dropped.numel():
            assert float(kept.max()) <= float(dropped.min()) + 1e-6


def test_windows_and_quirks_by_hand():
    layout = parse_frames([(8, 10), (5, 10)], 130)
    anchors = anchor_frames(layout)
    # video 0: windows [0..3] and [4..7]; frame 3 against 2, frame 7 against 6; video 1 starts at 8
    assert anchors.tolist() == [-1, 0, 0, 2, -1, 4, 4, 6, -1, 8, 8, 10, -1]
    r = np.array([0.3, 0.3])
    assert dycoke_budgets(layout, r).tolist() == [10, 3, 3, 3, 10, 3, 3, 3, 10, 3, 3, 3, 10]
    # quirks: 8 frames (a multiple of 4) -> frame 2 of the last window (frame 6) kept whole;
    # 5 frames (odd) -> the last frame dropped
    assert dycoke_budgets(layout, r, quirks=True).tolist() == [10, 3, 3, 3, 10, 3, 10, 3, 10, 3, 3, 3, 0]
    # int((1 - p) * T) truncates: p = 0.7 on 196 tokens keeps 58
    one = parse_frames([(2, 196)], 392)
    assert dycoke_budgets(one, np.array([1 - 0.7]))[1] == int((1 - 0.7) * 196) == 58


@pytest.mark.parametrize("F", [4, 8, 7])
def test_quirk_order_is_by_similarity(F):
    """The released code emits a pruned frame's tokens by ascending similarity and a frame it keeps
    whole (a window's frame 0; frame 2 of the last window when F is a multiple of 4) in position order."""
    frames = [(F, 9)]
    x = random_features(frames, 6, seed=4)
    order = reference.dycoke_order(x, frames, 0.5, quirks=True)
    layout = parse_frames(frames, x.shape[0])
    sims, _ = reference.dycoke_similarity(x, layout, anchor_frames(layout), False)
    out = vk.compress(x, frames, 0.5, method="dycoke", quirks=True, backend="torch")
    whole = [f % 4 == 0 or (F % 4 == 0 and f == F - 2) for f in range(F)]
    for f, rows in enumerate(order):
        if whole[f]:
            assert rows == list(range(f * 9, (f + 1) * 9))
        elif rows:
            assert sims[rows].tolist() == sorted(sims[rows].tolist()) and rows != sorted(rows)
    assert sorted(r for rows in order for r in rows) == out.indices.tolist()  # the same kept set


def test_sync_budget(backend, device):
    frames = [(5, 7), (4, 6)]
    x = random_features(frames, 8, seed=1).to(device)
    for validate, expected in ((False, 0), (True, 1)):
        vk.compress(x, frames, 0.3, backend=backend, method="dycoke", validate=validate)
        with HostReadCounter() as c:
            vk.compress(x, frames, 0.3, backend=backend, method="dycoke", validate=validate)
        assert c.total == expected, dict(c.reads)


def test_nonfinite(any_backend, device):
    frames = [(4, 5), (3, 5)]
    x = random_features(frames, 6, seed=5)
    x[27, 1] = float("nan")
    with pytest.raises(ValueError, match="video 1"):
        vk.compress(x.to(device), frames, 0.4, backend=any_backend, method="dycoke")
    out = vk.compress(x.to(device), frames, 0.4, backend=any_backend, method="dycoke", validate=False)
    expect = reference.compress(x, frames, 0.4, method="dycoke", validate=False)
    assert torch.equal(out.indices.cpu(), expect.indices)


def test_bad_arguments():
    x = torch.randn(20, 4)
    with pytest.raises(ValueError, match="method must be one of"):
        vk.compress(x, 5, method="fastv")
    with pytest.raises(ValueError, match="frame_budgets must be None or 'vidcom2'"):
        vk.compress(x, 5, method="dycoke", frame_budgets="dycoke")
    with pytest.raises(ValueError, match="quirks=True only applies"):
        vk.compress(x, 5, quirks=True)
