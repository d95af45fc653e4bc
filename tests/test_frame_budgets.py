"""Stage 5, frame budgets: kernels vs the reference twin, round half to even, NaN fallback."""

import numpy as np
import pytest
import torch
from helpers import assert_budgets_up_to_rounding_ties

import vidcom2_kernels as vk
from vidcom2_kernels import reference


@pytest.mark.parametrize(
    "frames", [[(1, 7)], [(5, 196)], [(33, 13)], [(3, 7), (8, 169), (1, 1), (40, 3)]], ids=["F1", "F5", "F33", "batch"]
)
def test_matches_reference(frames, backend, device):
    g = torch.Generator().manual_seed(len(frames))
    F = sum(f for f, _ in frames)
    for trial in range(5):
        # uniqueness values like real ones: -mean(sv) in about [-10, -2], spread ~1e-2
        u = -5 + 0.02 * torch.randn(F, generator=g) * (trial + 1)
        retention = [0.1 + 0.2 * ((v + trial) % 5) for v in range(len(frames))]
        got = vk.frame_budgets(u.to(device), frames, retention, backend=backend)
        want = reference.frame_budgets(u, frames, retention)
        assert got.dtype == torch.int64
        assert_budgets_up_to_rounding_ties(got.cpu(), want, u, frames, retention)


@pytest.mark.parametrize(
    "T,r,expect", [(7, 0.5, 4), (5, 0.5, 2), (9, 0.5, 4), (3, 0.5, 2), (1, 0.1, 1), (196, 0.25, 49)]
)
def test_equal_frames_round_half_to_even(T, r, expect, any_backend, device):
    """Equal uniqueness: p is uniform, scale = r exactly, k = round_half_even(r * T)."""
    u = torch.full((6,), -4.25)
    got = vk.frame_budgets(u.to(device), T, r, backend=any_backend)
    assert got.tolist() == [expect] * 6


def test_unique_frame_gets_more(any_backend, device):
    u = torch.tensor([-5.0, -5.0, -4.9, -5.0])  # frame 2 stands out by 0.1 / 0.01 = 10 logits
    got = vk.frame_budgets(u.to(device), 100, 0.25, backend=any_backend).tolist()
    # p ~ (0, 0, 1, 0): scales 0.25 * (1 - 0.25) and 0.25 * (1 + 0.75)
    assert got == [19, 19, 44, 19]


def test_clamped_at_one_and_at_least_one(any_backend, device):
    u = torch.tensor([-9.0, -1.0])
    got = vk.frame_budgets(u.to(device), 4, 0.9, backend=any_backend).tolist()
    # p = (0, 1) (exp(-800) underflows), mean 0.5: frame 1 min(1, 0.9 * 1.5) * 4 = 4,
    # frame 0 0.9 * 0.5 * 4 = 1.8 -> 2
    assert got == [2, 4]
    got = vk.frame_budgets(u.to(device), 4, 0.2, backend=any_backend).tolist()
    assert got == [1, 1]  # 0.2 * 0.5 * 4 = 0.4 rounds to 0, raised to 1; 0.2 * 1.5 * 4 = 1.2 -> 1


def test_nan_uniqueness_falls_back_to_retention(any_backend, device):
    u = torch.tensor([-5.0, float("nan"), -4.0, -6.0])
    got = vk.frame_budgets(u.to(device), 10, 0.3, backend=any_backend).tolist()
    assert got == [3, 3, 3, 3]


def test_sum_close_to_r_times_n():
    g = torch.Generator().manual_seed(0)
    u = -5 + 0.01 * torch.randn(64, generator=g)
    got = reference.frame_budgets(u, 196, 0.25)
    assert abs(int(got.sum()) - 0.25 * 64 * 196) <= 64 / 2 + 1
    assert np.all(got.numpy() >= 1)
