"""Stage 6, per-frame top-k and the exact-count reconcile: kernels vs the reference twin on scores
with many exact ties (where only the lower-index rule decides), any sign, NaN and -0.0."""

import pytest
import torch

import vidcom2_kernels as vk
from vidcom2_kernels import reference

# T = 1100 is wider than the widest block (1024): the kernels' chunked path; the others fit one
# block and run from registers
LAYOUTS = [
    ("T1", [(6, 1)]),
    ("T7", [(5, 7)]),
    ("T257", [(2, 257)]),
    ("batch", [(3, 5), (1, 40), (4, 9)]),
    ("T1100-chunked", [(2, 1100), (1, 3)]),
]


def scores_with_ties(N, seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 6, (N,), generator=g).float() * 0.5 - 1.0  # few distinct values, any sign
    s[torch.rand(N, generator=g) < 0.1] = -0.0
    return s


def budgets_for(frames, seed, low=0, high=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for F, T in frames:
        out += torch.randint(low, (high or T) + 1, (F,), generator=g).tolist()
    return torch.tensor(out)


@pytest.mark.parametrize("name,frames", LAYOUTS, ids=[n for n, _ in LAYOUTS])
def test_per_frame_matches_reference(name, frames, backend, device):
    N = sum(f * t for f, t in frames)
    for seed in range(3):
        s = scores_with_ties(N, seed)
        b = budgets_for(frames, seed)
        got = vk.select_tokens(s.to(device), frames, b.to(device), backend=backend)
        want = reference.select_tokens(s, frames, b)
        for g_, w_ in zip(got, want):
            assert torch.equal(g_.cpu(), w_)


@pytest.mark.parametrize("name,frames", LAYOUTS, ids=[n for n, _ in LAYOUTS])
def test_exact_reconcile_matches_reference(name, frames, backend, device):
    N = sum(f * t for f, t in frames)
    for seed in range(3):
        s = scores_with_ties(N, seed + 10)
        b = budgets_for(frames, seed, low=1)
        g = torch.Generator().manual_seed(seed)
        target = [int(torch.randint(F, F * T + 1, (1,), generator=g)) for F, T in frames]
        got = vk.select_tokens(s.to(device), frames, b.to(device), target=target, backend=backend)
        want = reference.select_tokens(s, frames, b, target=target)
        assert got.counts.tolist() == target
        for g_, w_ in zip(got, want):
            assert torch.equal(g_.cpu(), w_)


def test_tie_rules_by_hand(any_backend, device):
    s = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    # one frame of 6, keep 2: both zeros at the lowest indices
    got = vk.select_tokens(s.to(device), 6, torch.tensor([2], device=device), backend=any_backend)
    assert got.indices.tolist() == [1, 3]
    # two frames of 3 keep (2, 1) -> {1, 0} and {3}; target 2 drops the largest (score 1 at row 0)
    b = torch.tensor([2, 1], device=device)
    got = vk.select_tokens(s.to(device), 3, b, target=2, backend=any_backend)
    assert got.indices.tolist() == [1, 3] and got.budgets.tolist() == [1, 1]
    # target 5 adds the smallest not kept: score 0 at row 5, then score 1 at the lowest index (2)
    got = vk.select_tokens(s.to(device), 3, b, target=5, backend=any_backend)
    assert got.indices.tolist() == [0, 1, 2, 3, 5]


def test_budgets_clamped(any_backend, device):
    s = torch.arange(8.0)
    got = vk.select_tokens(s.to(device), 4, torch.tensor([-3, 9], device=device), backend=any_backend)
    assert got.indices.tolist() == [4, 5, 6, 7] and got.budgets.tolist() == [0, 4]


def test_nan_scores_rank_last(any_backend, device):
    s = torch.tensor([float("nan"), 2.0, float("inf"), 1.0, float("nan"), -float("inf")])
    got = vk.select_tokens(s.to(device), 6, torch.tensor([4], device=device), backend=any_backend)
    assert got.indices.tolist() == [0, 1, 3, 5]  # NaN ties with +inf; lower index first
