"""Inputs and comparisons shared by the tests.

Comparing a backend with the reference is exact (budgets, kept sets, indices) except where the
reference's own margin shows a near-tie: a decision may flip only when the distance of the
reference's value to its decision boundary is within the numerical difference actually observed
between the two implementations' inputs to that decision (itself checked against a tolerance).
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import vidcom2_kernels as vk
from vidcom2_kernels import reference as ref
from vidcom2_kernels.constants import TEMPERATURE, kept_channels
from vidcom2_kernels.layout import VideoLayout, exact_targets, parse_frames
from vidcom2_kernels.video import decode_frames, sample_clip_path, synthetic_clip
from vidcom2_kernels.vision import build_qwen2vl_tower, encode, qwen2vl_patches

ROOT = Path(__file__).resolve().parents[1]

#: Absolute tolerance on scores (sum of 10 exponentials in [0, 10]) and on uniqueness, per dtype.
#: The inputs are identical in every backend (the dtype is the input's), so the only differences
#: are float32 summation orders.
SCORE_ATOL = {torch.float32: 3e-5, torch.float16: 3e-5, torch.bfloat16: 3e-5}


# --------------------------------------------------------------------------------------- inputs
def random_features(frames, C, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    N = sum(f * t for f, t in frames)
    # per-channel scales spread the variances apart, a mean offset keeps cancellation honest
    scale = torch.rand(C, generator=g) * 2 + 0.25
    x = torch.randn(N, C, generator=g) * scale + torch.randn(C, generator=g)
    return x.to(dtype).to(device)


def repeated_frames(F, T, C, dtype=torch.float32, seed=0):
    """One random frame repeated F times: every frame equally unique, uniform budgets."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, C, generator=g).repeat(F, 1).to(dtype)


def identical_tokens(F, T, C, dtype=torch.float32, seed=0):
    """Every token of a frame equal (frames differ): all scores in a frame tie exactly."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(F, 1, C, generator=g).expand(F, T, C).reshape(F * T, C).to(dtype)


def scene_cuts(F, T, C, cuts=(0.4, 0.7), dtype=torch.float32, seed=0):
    """Shots of near-static content separated by hard cuts."""
    g = torch.Generator().manual_seed(seed)
    shot_of = np.searchsorted(np.array(cuts) * F, np.arange(F), side="right")
    shots = torch.randn(len(cuts) + 1, T, C, generator=g) * 2
    x = shots[torch.as_tensor(shot_of)] + 0.05 * torch.randn(F, T, C, generator=g)
    return x.reshape(F * T, C).to(dtype)


def moving_object(F, side, C, dtype=torch.float32, seed=0):
    """A static background grid of side x side tokens with a 2x2 object moving across it."""
    g = torch.Generator().manual_seed(seed)
    background = torch.randn(side, side, C, generator=g)
    obj = torch.randn(C, generator=g) * 3
    frames = []
    for f in range(F):
        frame = background.clone() + 0.01 * torch.randn(side, side, C, generator=g)
        r, c = (f * 2) % (side - 1), (f * 3) % (side - 1)
        frame[r : r + 2, c : c + 2] = obj
        frames.append(frame.reshape(side * side, C))
    return torch.cat(frames).to(dtype)


# ---------------------------------------------------------------------------------- invariants
def check_invariants(out, x, layout: VideoLayout, targets=None):
    """What must hold of any Compression, whatever the numerics."""
    N = layout.num_tokens
    idx = out.indices.cpu()
    assert idx.dtype == torch.int64 and idx.dim() == 1
    assert bool((idx >= 0).all()) and bool((idx < N).all()), "indices out of range"
    assert bool((idx[1:] > idx[:-1]).all()), "indices not strictly ascending"
    mask = out.mask.cpu()
    assert mask.dtype == torch.bool and mask.shape == (N,)
    assert torch.equal(torch.nonzero(mask).flatten(), idx), "mask disagrees with indices"
    fr = layout.frame_row_start
    per_frame = torch.tensor([int(mask[fr[f] : fr[f + 1]].sum()) for f in range(layout.total_frames)])
    assert torch.equal(out.budgets.cpu(), per_frame), "budgets are not the kept count per frame"
    rs = layout.row_start
    per_video = torch.tensor([int(mask[rs[v] : rs[v + 1]].sum()) for v in range(layout.num_videos)])
    assert torch.equal(out.counts.cpu(), per_video), "counts are not the kept count per video"
    assert bool((per_frame <= torch.tensor(layout.frame_tokens)).all())
    if targets is not None:
        assert torch.equal(per_video, torch.as_tensor(targets)), "exact mode missed its targets"
    else:
        assert bool((per_frame >= 1).all()), "a frame kept nothing"
    assert out.features.dtype == x.dtype and out.features.shape == (idx.shape[0], x.shape[1])
    # the very rows, NaN and Inf included
    torch.testing.assert_close(out.features.cpu(), x.cpu()[idx], rtol=0, atol=0, equal_nan=True)


# --------------------------------------------------------------------------------- comparisons
def _channel_margin(x, layout: VideoLayout) -> np.ndarray:
    """Relative gap between the last kept and first dropped variance, per video (float64)."""
    var = ref.channel_variance(x.cpu(), layout, dtype=torch.float64)
    k = kept_channels(x.shape[1])
    gaps = []
    for v in range(layout.num_videos):
        s = torch.sort(var[v]).values
        if k >= s.numel():
            gaps.append(math.inf)
            continue
        gaps.append(float((s[k] - s[k - 1]) / s[k].abs().clamp_min(1e-30)))
    return np.array(gaps)


def _scale_times_tokens(uniqueness: torch.Tensor, layout: VideoLayout, retention: np.ndarray) -> np.ndarray:
    """Float64 ``scale_f * T`` from a uniqueness vector (the value that gets rounded)."""
    u = uniqueness.double().cpu()
    out = np.empty(layout.total_frames)
    for v in range(layout.num_videos):
        a, b = int(layout.frame_start[v]), int(layout.frame_start[v + 1])
        p = torch.softmax(u[a:b] / TEMPERATURE, 0)
        scale = torch.clamp(retention[v] * (1 + p - p.mean()), max=1.0)
        out[a:b] = (scale * float(layout.tokens_per_frame[v])).numpy()
    return out


def assert_matches_reference(out, expect, x, layout: VideoLayout, retention, targets=None):
    """``out`` (any backend) against ``expect`` (reference), exact but for genuine near-ties."""
    retention = np.broadcast_to(np.asarray(retention, dtype=np.float64), (layout.num_videos,))
    check_invariants(out, x, layout, targets)
    check_invariants(expect, x, layout, targets)
    atol = SCORE_ATOL[x.dtype]
    finite = torch.isfinite(expect.scores.cpu())
    score_err = float((out.scores.cpu() - expect.scores.cpu())[finite].abs().max()) if finite.any() else 0.0
    # NaN/Inf features (validate=False): the same scores are +inf and the same uniqueness is NaN
    assert torch.equal(out.scores.cpu()[~finite], expect.scores.cpu()[~finite]), "non-finite scores differ"
    u_nan = torch.isnan(expect.uniqueness.cpu())
    assert torch.equal(torch.isnan(out.uniqueness.cpu()), u_nan), "NaN uniqueness differs"
    channel_ties = _channel_margin(x, layout) < 1e-5
    # a channel near-tie changes every score of the video: compare those videos on invariants only
    frame_channel_tie = np.repeat(channel_ties, layout.num_frames)
    row_channel_tie = torch.as_tensor(np.repeat(channel_ties, layout.tokens_per_video))
    if (~row_channel_tie).any():
        keep = ~row_channel_tie & finite
        score_err = float((out.scores.cpu() - expect.scores.cpu())[keep].abs().max()) if keep.any() else 0.0
        assert score_err <= atol, f"scores differ by {score_err:.3g} > {atol}"
        fkeep = torch.as_tensor(~frame_channel_tie) & ~u_nan
        uniq_err = float((out.uniqueness.cpu() - expect.uniqueness.cpu())[fkeep].abs().max()) if fkeep.any() else 0.0
        assert uniq_err <= atol, f"uniqueness differs by {uniq_err:.3g} > {atol}"

    # budgets before reconciling: recompute both sides' rounding inputs in float64
    st_ref = _scale_times_tokens(expect.uniqueness, layout, retention)
    st_out = _scale_times_tokens(out.uniqueness, layout, retention)
    boundary_margin = np.abs(st_ref - (np.floor(st_ref) + 0.5))
    budget_ties = boundary_margin <= np.abs(st_ref - st_out) + 2e-5 * np.maximum(1.0, st_ref)
    video_of_frame = layout.frame_video
    budget_tie_videos = np.zeros(layout.num_videos, dtype=bool)
    np.logical_or.at(budget_tie_videos, video_of_frame, budget_ties)

    skip_video = channel_ties | budget_tie_videos
    fr, rs = layout.frame_row_start, layout.row_start
    for v in range(layout.num_videos):
        if skip_video[v]:
            continue
        f0, f1 = int(layout.frame_start[v]), int(layout.frame_start[v + 1])
        # exact mode: final budgets follow the reconciled set, checked below as one video segment
        assert targets is not None or torch.equal(out.budgets.cpu()[f0:f1], expect.budgets.cpu()[f0:f1]), (
            f"video {v}: budgets {out.budgets.cpu()[f0:f1].tolist()} != reference "
            f"{expect.budgets.cpu()[f0:f1].tolist()} with no near-tie (margins {boundary_margin[f0:f1]})"
        )
        segments = [(rs[v], rs[v + 1])] if targets is not None else [(fr[f], fr[f + 1]) for f in range(f0, f1)]
        assert_kept_up_to_near_ties(out.mask, expect.mask, expect.scores, segments, score_err)


def assert_kept_up_to_near_ties(out_mask, expect_mask, expect_scores, segments, score_err: float):
    """The one tie-aware comparison of kept sets. In every row segment ``[a, b)`` (a frame, or a
    video in exact mode) the kept sets are equal, except for swaps between tokens whose
    REFERENCE scores are within twice the observed score error of each other: the reference's own
    margin is then below what float32 summation order can decide."""
    out_mask, expect_mask, expect_scores = out_mask.cpu(), expect_mask.cpu(), expect_scores.cpu()
    for a, b in segments:
        a, b = int(a), int(b)
        only_out = torch.nonzero(out_mask[a:b] & ~expect_mask[a:b]).flatten() + a
        only_exp = torch.nonzero(expect_mask[a:b] & ~out_mask[a:b]).flatten() + a
        assert only_out.numel() == only_exp.numel(), f"rows [{a}, {b}): kept counts differ"
        if only_out.numel() == 0:
            continue
        s_out = torch.sort(expect_scores[only_out]).values
        s_exp = torch.sort(expect_scores[only_exp]).values
        gap = float((s_out - s_exp).abs().max())
        assert gap <= 2 * score_err + 1e-7, (
            f"rows [{a}, {b}): kept set differs from the reference at rows {only_out.tolist()} vs "
            f"{only_exp.tolist()}, reference score gap {gap:.3g} is not a near-tie (observed score "
            f"error {score_err:.3g})"
        )


def reference_pair(x, frames, retention=0.25, **kwargs):
    """The reference result and the layout of a call."""
    expect = ref.compress(x.cpu(), frames, retention, **kwargs)
    return expect, parse_frames(frames, x.shape[0])


def exact_target_array(layout: VideoLayout, retention):
    r = np.broadcast_to(np.asarray(retention, dtype=np.float64), (layout.num_videos,))
    return exact_targets(layout, r)


# ------------------------------------------------------------------------------ side environments


def side_environment(script: str, *args: str, env: dict | None = None) -> str:
    """Build (or reuse) the side virtualenv a ``ci/`` script makes; returns its python. A failed
    build fails the calling test with the script's stderr. ``VIDCOM2_SIDE_PYTHON_<SCRIPT>`` (e.g.
    ``VIDCOM2_SIDE_PYTHON_VLLM_ENV`` for vllm_env.sh) names another environment's python to use
    instead, unlocked: ci/check_latest.sh runs the client tests at the newest releases that way."""
    override = os.environ.get("VIDCOM2_SIDE_PYTHON_" + script.removesuffix(".sh").upper())
    if override:
        return override
    build = subprocess.run(
        ["bash", str(ROOT / "ci" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert build.returncode == 0, f"ci/{script} failed:\n{build.stderr[-3000:]}"
    return str(ROOT / build.stdout.strip().splitlines()[-1])


#: how far ``scale`` may be from the reference's: ``exp`` is within a few ulp across libraries
#: (libdevice on the GPU, numpy under the interpreter, PyTorch's on the CPU) and p <= 1
SCALE_ERR = 1e-6


def assert_budgets_up_to_rounding_ties(got, want, u, frames, retention):
    """Budgets equal the reference's, except by one where the reference's own ``scale * T`` is
    within ``SCALE_ERR * T`` of a half-integer (a rounding that a last-ulp difference in ``exp``
    may legitimately move)."""
    layout = parse_frames(frames, None)
    scaled = ref.frame_scales(u, layout, np.asarray(retention, dtype=np.float64)).double()
    scaled = scaled * torch.tensor(layout.frame_tokens, dtype=torch.float64)
    near_half = (scaled - scaled.floor() - 0.5).abs() <= SCALE_ERR * torch.tensor(layout.frame_tokens)
    differ = got != want
    assert bool(((got - want).abs() <= 1).all()), (got, want)
    assert bool((near_half | ~differ).all()), (
        f"budgets differ away from a rounding tie: {got[differ]} vs {want[differ]}"
    )


def real_clip_features(real_frames: int = 16, generated_frames: int = 12) -> tuple:
    """(features (N, 64) float32, frames [(F, T)]) of two clips through the reduced Qwen2-VL tower
    (random weights, seed 0): ``real_frames`` of the sample clip and a generated clip of
    ``generated_frames``."""
    real, _ = decode_frames(sample_clip_path(), real_frames)
    tower = build_qwen2vl_tower(embed_dim=64, depth=2, num_heads=2, hidden_size=96, seed=0)
    feats, frames = [], []
    for clip in (real, synthetic_clip(generated_frames, 126, 224)):
        patches = qwen2vl_patches(clip, max_pixels=224 * 126)
        feats.append(encode(tower, patches))
        frames.append((patches.num_groups, patches.tokens_per_frame))
    return torch.cat(feats), frames


def assert_nonfinite_contract(x, frames, method: str, backend: str, bad_videos: str = "0, 1") -> None:
    """A method's non-finite contract: validation refuses the call naming ``bad_videos``; with
    ``validate=False`` the backend keeps the reference's rows and merge flags (NaN where they
    are NaN), and its indices are in range and ascending."""
    with pytest.raises(ValueError, match=f"features of video {bad_videos}"):
        vk.compress(x, frames, 0.4, backend=backend, method=method)
    out = vk.compress(x, frames, 0.4, backend=backend, method=method, validate=False)
    expect = ref.compress(x.cpu(), frames, 0.4, method=method, validate=False)
    assert torch.equal(out.indices.cpu(), expect.indices) and torch.equal(out.merged.cpu(), expect.merged)
    torch.testing.assert_close(out.features.cpu(), expect.features, atol=1e-5, rtol=0, equal_nan=True)
    assert out.indices.min() >= 0 and out.indices.max() < x.shape[0]
    assert torch.equal(out.indices, torch.sort(out.indices).values)
