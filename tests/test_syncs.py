"""The host-sync budget: one host read that sizes the output (shared with validation), none in
exact mode with validate=False. Frames are given as a Python list (no read to parse them)."""

import pytest
import torch

import vidcom2_kernels as vk
from vidcom2_kernels.testing import HostReadCounter

FRAMES = [(3, 7), (2, 11), (4, 5)]
N = sum(f * t for f, t in FRAMES)


def reads(backend, device, **kwargs):
    x = torch.randn(N, 16, device=device)
    vk.compress(x, FRAMES, 0.3, backend=backend, **kwargs)  # warm-up: compiles, caches layouts
    with HostReadCounter() as counter:
        vk.compress(x, FRAMES, 0.3, backend=backend, **kwargs)
    return counter


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({}, 1),
        ({"validate": False}, 1),
        ({"exact": True}, 1),
        ({"exact": True, "validate": False}, 0),
        ({"target": [5, 6, 7], "validate": False}, 0),
    ],
    ids=["budgets", "budgets-novalidate", "exact", "exact-novalidate", "target-novalidate"],
)
def test_sync_budget(backend, kwargs, expected, device):
    counter = reads(backend, device, **kwargs)
    assert counter.total == expected, dict(counter.reads)


def test_counter_sees_every_kind():
    x = torch.arange(6.0)
    with HostReadCounter() as c:
        x.tolist()
        x[0].item()
        int(x[1])
        bool(x[2] > 0)
        x[x > 2]
        torch.nonzero(x)
        torch.repeat_interleave(torch.tensor([1, 2]))
        torch.repeat_interleave(torch.tensor([1, 2]), output_size=3)  # not a read
    kinds = set(c.reads)
    assert {"tolist", "item", "int()", "bool()", "index with tensor", "aten nonzero", "aten repeat_interleave"} <= kinds


def test_reference_reads_freely():
    """The reference is not held to the budget; the counter must see its reads."""
    x = torch.randn(N, 8)
    with HostReadCounter() as c:
        vk.compress(x, FRAMES, 0.3, backend="reference")
    assert c.total > 1


@pytest.mark.parametrize(
    "kwargs,expected",
    [({}, 1), ({"validate": False}, 1), ({"frame_budgets": "vidcom2"}, 1), ({"exact": True}, 2)],
    ids=["budgets", "budgets-novalidate", "fca", "exact"],
)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fastvid_sync_budget(backend, kwargs, expected, device):
    """FastVID's plan needs the frame similarities on the host: that read is the call's one (with
    the validation flags and FCA's budgets); exact counts move the selection, and the merge then
    reads the context tokens' count per frame once more."""
    counter = reads(backend, device, method="fastvid", **kwargs)
    assert counter.total == expected, dict(counter.reads)


@pytest.mark.parametrize(
    "kwargs,expected",
    [({}, 2), ({"validate": False}, 2), ({"frame_budgets": "vidcom2"}, 2), ({"options": {"dominant_ratio": 0.5}}, 2)],
    ids=["budgets", "budgets-novalidate", "fca", "contextual"],
)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_holitom_sync_budget(backend, kwargs, expected, device):
    """HoliTom's plan needs every row's static run on the host: that read is the call's first
    (with the validation flags and FCA's budgets); the placeholders, ``torch.linspace`` on the
    features' device as in the released code, are the second (one for the batch); the merge
    reads nothing (the plan is on the host)."""
    counter = reads(backend, device, method="holitom", **kwargs)
    assert counter.total == expected, dict(counter.reads)
