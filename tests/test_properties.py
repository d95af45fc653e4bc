"""Property tests (hypothesis): every public stage and ``compress`` on random multi-video layouts,
all dtypes, strided inputs, both count modes, NaN/Inf in kept and in dropped channels, each
production backend against the reference (tie-aware where float32 order can decide, exact where
the inputs are the same integers or keys). Examples are derandomized: CI sees the same ones."""

import numpy as np
import pytest
import torch
from conftest import DTYPES
from helpers import SCORE_ATOL, _channel_margin, _scale_times_tokens, assert_matches_reference, exact_target_array
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vidcom2_kernels as vk
from vidcom2_kernels import reference
from vidcom2_kernels.constants import kept_channels
from vidcom2_kernels.layout import parse_frames

SETTINGS = settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
layouts = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 12)), min_size=1, max_size=3)
seeds = st.integers(0, 2**31 - 1)
#: how the features are laid out in memory: contiguous, every other column, column-major
STRIDES = ("contiguous", "columns", "transposed")


def features_for(frames, C, dtype, seed, stride):
    """Random (N, C) features with per-channel scales and offsets, in the given memory layout."""
    g = torch.Generator().manual_seed(seed)
    N = sum(f * t for f, t in frames)
    x = torch.randn(N, C, generator=g) * (torch.rand(C, generator=g) * 2 + 0.25) + torch.randn(C, generator=g)
    x = x.to(dtype)
    if stride == "columns":
        wide = torch.zeros(N, 2 * C, dtype=dtype)
        wide[:, ::2] = x
        return wide[:, ::2]
    if stride == "transposed":
        return x.t().contiguous().t()
    return x


def inject(x, frames, seed, how_many_channels):
    """NaN or +-Inf in one row of one video, in ``how_many_channels`` channels. A NaN/Inf channel's
    variance is not a number and ranks last: with more such channels than C - C // 2 some are kept
    (the scores of that video then become +inf), otherwise all are dropped (the scores stay finite)."""
    g = torch.Generator().manual_seed(seed)
    N, C = x.shape
    row = int(torch.randint(0, N, (1,), generator=g))
    channels = torch.randperm(C, generator=g)[:how_many_channels]
    value = [float("nan"), float("inf"), float("-inf")][int(torch.randint(0, 3, (1,), generator=g))]
    x = x.clone()
    x[row, channels] = value
    return x


@given(
    frames=layouts,
    C=st.integers(1, 10),
    dtype=st.sampled_from(DTYPES),
    seed=seeds,
    stride=st.sampled_from(STRIDES),
    exact=st.booleans(),
    retention=st.floats(0.05, 1.0),
)
@SETTINGS
def test_compress_matches_reference(frames, C, dtype, seed, stride, exact, retention, backend, device):
    x = features_for(frames, C, dtype, seed, stride)
    out = vk.compress(x.to(device), frames, retention, exact=exact, backend=backend)
    expect = reference.compress(x, frames, retention, exact=exact)
    layout = parse_frames(frames, x.shape[0])
    targets = exact_target_array(layout, retention) if exact else None
    assert_matches_reference(out, expect, x, layout, retention, targets)


@given(
    frames=layouts,
    C=st.integers(1, 8),
    dtype=st.sampled_from(DTYPES),
    seed=seeds,
    exact=st.booleans(),
    spread=st.integers(1, 8),
    stride=st.sampled_from(STRIDES),
)
@SETTINGS
def test_nonfinite_kept_or_dropped_matches_reference(frames, C, dtype, seed, exact, spread, stride, backend, device):
    """With validate=False, NaN/Inf anywhere: every backend keeps the reference's tokens; with
    validate=True every backend names the same video."""
    x = inject(features_for(frames, C, dtype, seed, stride), frames, seed, min(spread, C))
    layout = parse_frames(frames, x.shape[0])
    bad_video = int(np.searchsorted(layout.row_start, int(torch.nonzero(~torch.isfinite(x))[0, 0]), side="right") - 1)
    with pytest.raises(ValueError, match=f"features of video {bad_video} contain NaN"):
        vk.compress(x.to(device), frames, 0.3, backend=backend)
    out = vk.compress(x.to(device), frames, 0.3, exact=exact, validate=False, backend=backend)
    expect = reference.compress(x, frames, 0.3, exact=exact, validate=False)
    targets = exact_target_array(layout, 0.3) if exact else None
    assert_matches_reference(out, expect, x, layout, 0.3, targets)


@given(frames=layouts, C=st.integers(1, 12), dtype=st.sampled_from(DTYPES), seed=seeds, stride=st.sampled_from(STRIDES))
@SETTINGS
def test_select_channels(frames, C, dtype, seed, stride, backend, device):
    x = features_for(frames, C, dtype, seed, stride)
    got = vk.select_channels(x.to(device), frames, backend=backend).cpu()
    want = reference.select_channels(x, frames)
    assert got.dtype == torch.bool and bool((got.sum(1) == kept_channels(C)).all())
    near_tie = _channel_margin(x, parse_frames(frames, x.shape[0])) < 1e-5
    assert torch.equal(got[~torch.as_tensor(near_tie)], want[~torch.as_tensor(near_tie)])


@given(
    frames=layouts,
    C=st.integers(1, 10),
    dtype=st.sampled_from(DTYPES),
    seed=seeds,
    stride=st.sampled_from(STRIDES),
    transposed_keep=st.booleans(),
)
@SETTINGS
def test_token_scores(frames, C, dtype, seed, stride, transposed_keep, backend, device):
    """Given the same channel choice (also as a non-contiguous mask), scores and uniqueness agree."""
    x = features_for(frames, C, dtype, seed, stride)
    keep = reference.select_channels(x, frames)
    keep_dev = keep.to(device).t().contiguous().t() if transposed_keep else keep.to(device)
    scores, uniqueness = vk.token_scores(x.to(device), frames, keep_dev, backend=backend)
    want_scores, want_uniqueness = reference.token_scores(x, frames, keep)
    torch.testing.assert_close(scores.cpu(), want_scores, atol=SCORE_ATOL[dtype], rtol=0)
    torch.testing.assert_close(uniqueness.cpu(), want_uniqueness, atol=SCORE_ATOL[dtype], rtol=0)


uniqueness_values = st.one_of(st.floats(-10, -1), st.sampled_from([float("inf"), float("-inf"), float("nan")]))


@given(frames=layouts, data=st.data(), retention=st.floats(0.01, 1.0))
@SETTINGS
def test_frame_budgets(frames, data, retention, backend, device):
    """Same uniqueness in, same budgets out, but where the float64 value that gets rounded is
    within float32 summation error of a .5 boundary; non-finite uniqueness falls back to r."""
    layout = parse_frames(frames, None)
    u = torch.tensor(
        data.draw(st.lists(uniqueness_values, min_size=layout.total_frames, max_size=layout.total_frames)),
        dtype=torch.float32,
    )
    got = vk.frame_budgets(u.to(device), frames, retention, backend=backend).cpu()
    want = reference.frame_budgets(u, frames, retention)
    st_ref = _scale_times_tokens(u, layout, np.full(layout.num_videos, retention))
    margin = np.abs(st_ref - (np.floor(st_ref) + 0.5))
    decided = torch.as_tensor(~(margin < 1e-4))  # NaN margins (non-finite u) are decided: the r fallback
    assert torch.equal(got[decided], want[decided]), (got, want)


@given(frames=layouts, seed=seeds, exact=st.booleans(), nan_share=st.floats(0, 0.3))
@SETTINGS
def test_select_tokens(frames, seed, exact, nan_share, backend, device):
    """Integer keys: the same scores give exactly the same selection, ties, NaN, -0.0 and budgets
    outside [0, T] included."""
    g = torch.Generator().manual_seed(seed)
    layout = parse_frames(frames, None)
    N = layout.num_tokens
    s = torch.randint(0, 5, (N,), generator=g).float() * 0.5 - 1.0
    s[torch.rand(N, generator=g) < 0.1] = -0.0
    s[torch.rand(N, generator=g) < nan_share] = float("nan")
    b = torch.randint(-2, int(layout.tokens_per_frame.max()) + 3, (layout.total_frames,), generator=g)
    target = [int(torch.randint(F, F * T + 1, (1,), generator=g)) for F, T in frames] if exact else None
    got = vk.select_tokens(s.to(device), frames, b.to(device), target=target, backend=backend)
    want = reference.select_tokens(s, frames, b, target=target)
    for g_, w_ in zip(got, want):
        assert torch.equal(g_.cpu(), w_)


GATHER_DTYPES = (
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
)


@given(
    N=st.integers(0, 40),
    width=st.integers(0, 5),
    dtype=st.sampled_from(GATHER_DTYPES),
    seed=seeds,
    step=st.integers(1, 3),
    trailing=st.booleans(),
)
@SETTINGS
def test_gather_rows(N, width, dtype, seed, step, trailing, backend, device):
    """Any dtype, any trailing shape (zero-size included), strided indices and sources."""
    g = torch.Generator().manual_seed(seed)
    shape = (N, width, 2) if trailing else (N, width)
    src = (
        (torch.randn(shape, generator=g) * 50).to(dtype)
        if dtype != torch.complex64
        else torch.randn(shape, dtype=dtype)
    )
    src = src.transpose(0, 1).contiguous().transpose(0, 1) if src.dim() == 2 and width > 1 else src
    K = int(torch.randint(0, 2 * N + 1, (1,), generator=g)) if N else 0
    idx = torch.randint(0, max(N, 1), (K * step,), generator=g)[::step] if N else torch.empty(0, dtype=torch.int64)
    (got,) = vk.gather_rows(idx.to(device), src.to(device), backend=backend)
    assert got.shape == (idx.shape[0], *shape[1:]) and got.dtype == dtype
    assert torch.equal(got.cpu(), src.index_select(0, idx))
