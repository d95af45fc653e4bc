"""Inputs past 2**31 elements on the torch backend (``--run-slow``; about 10 GB of memory): a
batch of videos whose rows start beyond int32 offsets compresses every video as it compresses
alone, and the rows it returns are the rows it names."""

import resource

import pytest
import torch

import vidcom2_kernels as vk

#: 152 videos of 64 frames x 196 tokens x 1152 channels, bf16: 2.2e9 elements, 4.4 GB
VIDEOS, FRAMES, TOKENS, C = 152, 64, 196, 1152


@pytest.mark.slow
@pytest.mark.parametrize("exact", [False, True], ids=["budgets", "exact"])
def test_batch_past_int32_offsets(exact):
    N = VIDEOS * FRAMES * TOKENS
    assert N * C > 2**31
    g = torch.Generator().manual_seed(0)
    x = torch.empty(N, C, dtype=torch.bfloat16)
    per_video = FRAMES * TOKENS
    for v in range(VIDEOS):  # filled a video at a time: no float32 copy of the whole input
        x[v * per_video : (v + 1) * per_video] = torch.randn(per_video, C, generator=g).to(torch.bfloat16)
    frames = [(FRAMES, TOKENS)] * VIDEOS
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = vk.compress(x, frames, 0.25, exact=exact, backend="torch")
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"input {x.numel() * 2 / 2**30:.2f} GiB, peak RSS {rss_peak / 2**20:.2f} GiB (before the call {rss_before / 2**20:.2f})"
    )
    assert out.indices.shape[0] == int(out.counts.sum()) and bool((out.indices[1:] > out.indices[:-1]).all())
    assert int(out.indices[-1]) < N and int(out.indices[-1]) * C > 2**31
    starts = torch.cumsum(out.counts, 0) - out.counts
    for v in (0, VIDEOS // 2, VIDEOS - 2, VIDEOS - 1):  # the last ones start past 2**31 elements
        rows = slice(v * per_video, (v + 1) * per_video)
        alone = vk.compress(x[rows], TOKENS, 0.25, exact=exact, backend="torch")
        kept = out.indices[int(starts[v]) : int(starts[v]) + int(out.counts[v])] - v * per_video
        assert torch.equal(kept, alone.indices), f"video {v} differs from the video compressed alone"
        assert torch.equal(out.features[int(starts[v]) : int(starts[v]) + int(out.counts[v])], alone.features)
