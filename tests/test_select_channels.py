"""Stage 1, channel choice: kernels vs the reference twin, tie rule, accuracy on offset data."""

import pytest
import torch
from helpers import random_features

import vidcom2_kernels as vk
from vidcom2_kernels import reference


@pytest.mark.parametrize(
    "frames,C",
    [([(3, 7)], 1), ([(3, 7)], 2), ([(2, 50)], 33), ([(1, 5), (4, 9), (2, 70)], 70)],
    ids=["C1", "C2", "C33", "batch-C70"],
)
def test_matches_reference(frames, C, dtype, backend, device):
    x = random_features(frames, C, dtype, seed=C)
    got = vk.select_channels(x.to(device), frames, backend=backend)
    assert torch.equal(got.cpu(), reference.select_channels(x, frames))
    assert got.shape == (len(frames), C) and got.dtype == torch.bool
    assert (got.sum(1) == max(1, C // 2)).all()


def test_equal_variances_keep_lower_index(any_backend, device):
    # channels 0..5 all with the same variance: the lower half of the indices is kept
    x = torch.tensor([[1.0, -1.0] * 3, [-1.0, 1.0] * 3] * 4)
    got = vk.select_channels(x.to(device), 2, backend=any_backend)
    assert got.cpu().tolist() == [[True, True, True, False, False, False]]


def test_large_offset_variance_is_accurate(backend, device):
    """Means of 1e4 with unit-scale spread: a naive E[x^2] - E[x]^2 in float32 would be noise."""
    g = torch.Generator().manual_seed(0)
    C = 40
    spread = torch.linspace(0.5, 1.5, C)[torch.randperm(C, generator=g)]
    x = torch.randn(600, C, generator=g) * spread + 1e4
    got = vk.select_channels(x.to(device), 20, backend=backend)
    assert torch.equal(got.cpu(), reference.select_channels(x, 20))
