"""Stages 2-4, token scores and frame uniqueness: kernels vs the reference twin."""

import pytest
import torch
from helpers import SCORE_ATOL, random_features

import vidcom2_kernels as vk
from vidcom2_kernels import reference

SHAPES = [
    ("T1", [(4, 1)], 6),
    ("T7-C33", [(3, 7)], 33),
    ("T196", [(2, 196)], 20),
    ("batch", [(2, 9), (3, 40), (1, 33)], 17),
]


@pytest.mark.parametrize("name,frames,C", SHAPES, ids=[s[0] for s in SHAPES])
def test_matches_reference(name, frames, C, dtype, backend, device):
    x = random_features(frames, C, dtype, seed=C)
    keep = reference.select_channels(x, frames)
    scores, uniq = vk.token_scores(x.to(device), frames, keep.to(device), backend=backend)
    want_scores, want_uniq = reference.token_scores(x, frames, keep)
    assert scores.dtype == torch.float32 and uniq.dtype == torch.float32
    torch.testing.assert_close(scores.cpu(), want_scores, atol=SCORE_ATOL[dtype], rtol=0)
    torch.testing.assert_close(uniq.cpu(), want_uniq, atol=SCORE_ATOL[dtype], rtol=0)


def test_score_bounds_and_zero_rows(backend, device):
    """Scores lie in [0, 10]; an all-zero token normalises to zero (norm clamped), not NaN."""
    x = random_features([(3, 8)], 10, seed=1)
    x[5] = 0
    scores, uniq = vk.token_scores(x.to(device), 8, backend=backend)
    want, _ = reference.token_scores(x, 8)
    assert bool(torch.isfinite(scores).all()) and float(scores.min()) >= 0 and float(scores.max()) <= 10
    torch.testing.assert_close(scores.cpu(), want, atol=3e-5, rtol=0)


def test_reference_formula_by_hand():
    """Two frames of two 1-channel... 2-channel tokens, worked out from the definitions."""
    x = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0], [5.0, 5.0]])
    # variances: channel 0 = var(3,0,1,5) = 3.6875, channel 1 = var(0,2,1,5) = 3.5 -> keep channel 1
    keep = reference.select_channels(x, 2)
    assert keep.tolist() == [[False, True]]
    # normalised kept values: 0, 1, 1, 1; video centre 0.75; frame centres 0.5 and 1
    scores, uniq = reference.token_scores(x, 2)

    def S(d2):
        return sum(torch.exp(torch.tensor(-d2 / (2 * a))) for a in vk.GAUSSIAN_BANDWIDTHS)

    want = [S(0.75**2) + S(0.25), S(0.25**2) + S(0.25), S(0.25**2) + S(0.0), S(0.25**2) + S(0.0)]
    torch.testing.assert_close(scores, torch.stack(want).float())
    torch.testing.assert_close(uniq, -torch.stack([(S(0.5625) + S(0.0625)) / 2, S(0.0625)]).float())
