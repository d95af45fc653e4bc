"""The launch budget of the triton backend, counted under the interpreter (every launch a GPU would
see): at most 7 in budget mode, 12 in exact mode and 4 for DyCoke, for any batch of videos, and
no torch op with a kernel of its own beside them (DyCoke's one zeroing of its flags aside)."""

import pytest
import torch

import vidcom2_kernels as vk
from vidcom2_kernels import stages
from vidcom2_kernels.testing import LaunchCounter, poisoned_outputs

LAYOUTS = {
    "one video": [(4, 30)],
    "batch of 5": [(3, 20), (1, 7), (6, 16), (2, 33), (5, 9)],
    "frames over 1024 rows": [(2, 1100), (1, 40)],
    "many frames": [(70, 3)],
}
BUDGET = {"budget": 7, "exact": 12, "dycoke": 4}


def launches(frames, device, extras=0, **kwargs):
    N = sum(f * t for f, t in frames)
    x = torch.randn(N, 24, device=device)
    more = [torch.randn(N, 5, device=device) for _ in range(extras)]
    vk.compress(x, frames, 0.3, backend="triton", extras=more, **kwargs)  # warm-up: caches, compiles
    with poisoned_outputs(False), LaunchCounter() as counter:  # poisoning fills outputs: a launch each
        vk.compress(x, frames, 0.3, backend="triton", extras=more, **kwargs)
    return counter


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
@pytest.mark.parametrize(
    "mode,kwargs",
    [("budget", {}), ("exact", {"exact": True}), ("dycoke", {"method": "dycoke"})],
    ids=["budget", "exact", "dycoke"],
)
@pytest.mark.parametrize("validate", [True, False], ids=["validate", "novalidate"])
def test_launch_budget(layout, mode, kwargs, validate, device):
    counter = launches(LAYOUTS[layout], device, validate=validate, **kwargs)
    assert len(counter.triton) + len(counter.torch) <= BUDGET[mode], (counter.triton, counter.torch)
    # DyCoke: its flags zeroed (its kernel only sets them) and its uniqueness, zeros by definition
    assert counter.torch == (["aten::zero_", "aten::zeros"] if mode == "dycoke" else []), counter.torch
    assert counter.triton.count("select_rows_kernel") == 1  # the selection and the gather: one launch
    assert "gather_rows_kernel" not in counter.triton


def test_exact_mode_launches_by_name(device):
    counter = launches(LAYOUTS["batch of 5"], device, exact=True)
    assert counter.triton == [
        "channel_variance_kernel",
        "channel_keep_kernel",
        "centre_partials_kernel",
        "centres_kernel",
        "token_scores_kernel",
        "frame_budgets_kernel",
        "frame_threshold_kernel",
        "reconcile_count_kernel",
        "reconcile_count_kernel",
        "reconcile_count_kernel",
        "reconcile_frames_kernel",
        "select_rows_kernel",
    ]


def test_more_than_four_tensors_take_one_more_gather(device):
    """Features and three extras (Qwen3-VL's deepstack) ride in the selection's launch; a fifth
    tensor takes one gather launch (four a launch)."""
    assert "gather_rows_kernel" not in launches([(3, 20)], device, extras=3).triton
    assert launches([(3, 20)], device, extras=4).triton.count("gather_rows_kernel") == 1


def test_the_stage_selection_is_one_launch(device):
    scores = torch.rand(60, device=device)
    budgets = torch.tensor([5, 0, 30], device=device)
    stages.select_tokens(scores, [(3, 20)], budgets, backend="triton")
    with poisoned_outputs(False), LaunchCounter() as counter:
        stages.select_tokens(scores, [(3, 20)], budgets, backend="triton")
    assert counter.triton == ["select_rows_kernel"]
