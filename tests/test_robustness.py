"""One regression test per defect of the adversarial review (issue 10), on every backend; the
property tests (test_properties.py) search the same ground at random. The demo's argument checks
are in test_demo.py, DyCoke's released order in test_dycoke.py, the KV layer in test_adapters.py."""

import concurrent.futures
import sys

import numpy as np
import pytest
import torch
from helpers import random_features

import vidcom2_kernels as vk
from vidcom2_kernels import adapters, buffers, reference
from vidcom2_kernels.constants import MAX_ABS
from vidcom2_kernels.layout import parse_frames
from vidcom2_kernels.ops import common


def test_nan_in_a_kept_channel_without_validation(any_backend, device):
    """1. NaN in every channel of a row (so in the kept ones): the video's scores are all +inf and
    the lowest indices of every frame are kept, as in the reference."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    x[1] = float("nan")
    out = vk.compress(x.to(device), 4, 0.5, validate=False, backend=any_backend)
    assert out.indices.tolist() == [0, 1, 4, 5]
    assert bool(torch.isinf(out.scores).all()) and bool(torch.isnan(out.uniqueness).all())


def test_infinite_uniqueness_falls_back_to_r(any_backend, device):
    """2. +inf or NaN uniqueness makes the video's scale not a number: every frame gets r (a -inf
    frame is merely the least unique: p = 0)."""
    u = torch.tensor([0.0, float("inf"), 1.0, -2.0, float("nan"), -2.0, float("-inf")], device=device)
    got = vk.frame_budgets(u, [(3, 10), (2, 10), (2, 10)], 0.3, backend=any_backend).tolist()
    assert got == [3, 3, 3, 3, 3, 4, 2]


def test_strided_indices_and_keep(any_backend, device):
    """3, 4. Non-contiguous indices gather the rows they name; an expanded or transposed keep mask
    scores like its contiguous copy."""
    x = torch.arange(12.0, device=device).reshape(6, 2)
    (rows,) = vk.gather_rows(torch.tensor([5, 0, 2, 0], device=device)[::2], x, backend=any_backend)
    assert rows.tolist() == [[10.0, 11.0], [4.0, 5.0]]
    feats = random_features([(3, 5), (2, 5)], 6, seed=3).to(device)
    keep_one = torch.tensor([[True, False, True, False, True, False]], device=device)
    want = vk.token_scores(feats, [(3, 5), (2, 5)], keep_one.repeat(2, 1).contiguous(), backend=any_backend)
    got = vk.token_scores(feats, [(3, 5), (2, 5)], keep_one.expand(2, 6), backend=any_backend)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", ["vidcom2", "dycoke"])
def test_one_rule_for_values_too_large(any_backend, method, device):
    """5. NaN, Inf and any magnitude >= 2**44 make a video fail validation on every backend (no
    float32 statistic can overflow below that); just below, every backend accepts it."""
    frames = [(2, 6), (3, 6)]
    x = random_features(frames, 5, seed=1)
    for value, bad in ((1e38, True), (-1e20, True), (MAX_ABS, True), (MAX_ABS * 0.99, False)):
        y = x.clone()
        y[20, 3] = value  # a row of video 1
        if bad:
            with pytest.raises(ValueError, match="features of video 1 contain NaN, Inf or values of magnitude"):
                vk.compress(y.to(device), frames, 0.5, backend=any_backend, method=method)
            out = vk.compress(y.to(device), frames, 0.5, backend=any_backend, method=method, validate=False)
            assert bool((out.indices >= 0).all()) and bool((out.indices < y.shape[0]).all())
        else:
            vk.compress(y.to(device), frames, 0.5, backend=any_backend, method=method)


def test_zero_d_arrays_and_numpy_pairs():
    """6, 7. 0-d arrays are one value for every video; numpy pairs are pairs; sizes that would
    wrap int64 are refused before anything is built."""
    x = torch.randn(24, 4)
    assert torch.equal(
        vk.compress(x, [(2, 6), (3, 4)], np.array(0.5)).indices, vk.compress(x, [(2, 6), (3, 4)], 0.5).indices
    )
    assert vk.compress(x, [(2, 6), (3, 4)], target=np.array(5)).counts.tolist() == [5, 5]
    assert parse_frames([np.array([2, 6]), torch.tensor([3, 4])], 24).pairs() == [(2, 6), (3, 4)]
    for frames in ([(2**63, 1)], [(2**62 + 1, 4)]):
        with pytest.raises(ValueError, match=r"more than the 4611686018427387904 \(2\*\*62\)"):
            vk.compress(x, frames)


def test_tensors_without_values_or_dense_layout():
    """8, 9. Named errors for sparse and meta features and extras; extras=None is no extras;
    complex extras are gathered on every backend (test_properties covers every dtype)."""
    with pytest.raises(TypeError, match="features must be a dense tensor, got layout torch.sparse_coo"):
        vk.compress(torch.randn(8, 4).to_sparse(), 4)
    with pytest.raises(ValueError, match="features is on the meta device"):
        vk.compress(torch.empty(8, 4, device="meta"), 4)
    with pytest.raises(TypeError, match=r"extras\[0\] must be a dense tensor"):
        vk.compress(torch.randn(8, 4), 4, extras=[torch.randn(8, 2).to_sparse()])
    with pytest.raises(TypeError, match="extras must be a sequence of tensors, got int"):
        vk.compress(torch.randn(8, 4), 4, extras=3)
    assert vk.compress(torch.randn(8, 4), 4, extras=None).extras == ()


def test_complex_extras(any_backend, device):
    x = random_features([(2, 5)], 4, seed=2).to(device)
    z = torch.randn(10, 3, dtype=torch.complex64, device=device)
    out = vk.compress(x, 5, 0.5, extras=[z], backend=any_backend)
    assert torch.equal(out.extras[0], z[out.indices])


def test_gather_index_dtypes_and_empty(any_backend, device):
    """10. Bool and uint8 indices are refused (they are masks, not row numbers); zero-row tensors
    with empty indices give zero-row results."""
    x = torch.randn(4, 3, device=device)
    for idx in (torch.tensor([True, False, True, False]), torch.tensor([1, 0], dtype=torch.uint8)):
        with pytest.raises(TypeError, match="indices must be a 1-D int64 \\(or int32\\) tensor of row numbers"):
            vk.gather_rows(idx.to(device), x, backend=any_backend)
    empty = torch.empty(0, dtype=torch.int64, device=device)
    (a, b) = vk.gather_rows(
        empty, torch.zeros(0, device=device), torch.zeros(0, 2, 0, device=device), backend=any_backend
    )
    assert a.shape == (0,) and b.shape == (0, 2, 0)


def test_options_that_would_be_ignored_are_refused():
    """11. frame_budgets with VidCom2 (its own budgets already are FCA), non-bool flags, and the
    adapter options, all refused when given, before any model work."""
    x = torch.randn(8, 4)
    with pytest.raises(ValueError, match="frame_budgets='vidcom2' only applies to method='dycoke'"):
        vk.compress(x, 4, frame_budgets="vidcom2")
    for flag in ("exact", "validate", "quirks"):
        with pytest.raises(TypeError, match=f"{flag} must be True or False, got 'no'"):
            vk.compress(x, 4, method="dycoke", **{flag: "no"})
    with pytest.raises(ValueError, match=r"retention must be in \(0, 1\], got 2.0"):
        adapters.apply_vidcom2(object(), retention=2.0)
    with pytest.raises(TypeError, match="exact must be True or False"):
        adapters.apply_vidcom2(object(), exact="no")
    with pytest.raises(ValueError, match="FRAME_BUDGETS=vidcom2 only applies to COMPRESSOR=dycoke"):
        adapters.settings_from_env({"COMPRESSOR": "vidcom2", "FRAME_BUDGETS": "vidcom2"})
    with pytest.raises(ValueError, match="FRAME_BUDGETS must be unset or one of vidcom2"):
        adapters.settings_from_env({"COMPRESSOR": "dycoke", "FRAME_BUDGETS": "nonsense"})
    assert adapters.settings_from_env({"COMPRESSOR": "vidcom2", "VIDCOM2_EXACT": "true"}).exact is True


def test_reference_twin_agrees_on_the_rule():
    """The reference validates by the same rule (it is the yardstick of test 5)."""
    x = torch.randn(12, 3)
    x[7, 0] = 2.0**45
    with pytest.raises(ValueError, match="video 0"):
        reference.compress(x, 6)


def test_caches_under_threads_n_threads_by_m_layouts():
    """The per-layout and per-request caches (the device layouts and request arrays both backends
    read) under 8 threads x 40 layouts, more than either holds: no error, and every result equals
    the same call made alone (compress on the torch backend, and the cached metadata itself)."""
    layouts = [[(1 + i % 5, 3 + i % 7), (2, 4 + i % 3)] for i in range(40)]
    inputs = [random_features(frames, 8, seed=i) for i, frames in enumerate(layouts)]
    alone = [vk.compress(x, frames, 0.5, backend="torch").indices for x, frames in zip(inputs, layouts)]

    parsed = [parse_frames(frames, x.shape[0]) for frames, x in zip(layouts, inputs)]

    def work(thread):
        rng = np.random.default_rng(thread)
        for i in rng.integers(0, len(layouts), 600):  # the caches alone, as fast as they go
            meta = common.device_layout(parsed[i], torch.device("cpu"))
            request = common.request_arrays(parsed[i], torch.device("cpu"), targets=np.full(2, i))
            assert meta.row_video.shape[0] == parsed[i].num_tokens and request.targets.tolist() == [i, i]
            assert meta.num_frames.tolist() == parsed[i].num_frames.tolist()
            assert request.target_start.tolist() == [0, i, 2 * i]
        for i in rng.permutation(len(layouts)):  # and through compress
            assert torch.equal(vk.compress(inputs[i], layouts[i], 0.5, backend="torch").indices, alone[i]), i
        return True

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: races show up
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert all(pool.map(work, range(8)))
    finally:
        sys.setswitchinterval(interval)


def test_lazy_negation_and_conjugation(any_backend, device):
    """``z.conj().imag`` is a view torch negates when it reads it; a kernel reading raw memory
    would see the other sign. Features, real extras and conjugated complex extras: every backend
    gives what it gives for the materialised tensors."""
    g = torch.Generator().manual_seed(3)
    frames = [(3, 7), (2, 5)]
    N = sum(f * t for f, t in frames)
    z = torch.randn(N, 16, dtype=torch.complex64, generator=g).to(device)
    negative = z.conj().imag  # neg bit set
    assert negative.is_neg()
    w = torch.randn(N, 4, dtype=torch.complex64, generator=g).to(device)
    extras = [w.conj().imag, w.conj()]  # a negative view, and a lazily conjugated complex tensor
    out = vk.compress(negative, frames, 0.5, backend=any_backend, extras=extras)
    plain = vk.compress(negative.clone(), frames, 0.5, backend=any_backend, extras=[e.clone() for e in extras])
    assert torch.equal(out.indices, plain.indices) and torch.equal(out.features, plain.features)
    assert torch.equal(out.features, negative.clone()[out.indices])
    for got, want, e in zip(out.extras, plain.extras, extras):
        assert torch.equal(got, want) and torch.equal(got, e.resolve_conj().resolve_neg()[out.indices])


def test_tensors_no_kernel_reads_are_refused():
    nested = torch.nested.nested_tensor([torch.randn(4, 8), torch.randn(6, 8)])
    with pytest.raises(TypeError, match="features must be a regular tensor, got a nested tensor"):
        vk.compress(nested, 2)
    x = torch.randn(12, 8)
    quantized = torch.quantize_per_tensor(torch.randn(12, 3), 0.1, 0, torch.qint8)
    with pytest.raises(TypeError, match=r"extras\[0\] must not be quantized, got torch.qint8"):
        vk.compress(x, 4, extras=[quantized])


def test_cache_entries_used_during_a_capture_are_kept(monkeypatch):
    """A CUDA graph replays reads of the device arrays it captured: an entry built or used while
    a capture runs is never evicted (the LRU evicts only the others), and a lookup still finds it."""
    cache = buffers.DeviceCache(2)
    monkeypatch.setattr(buffers, "capturing", lambda device: device == "capturing")
    held = cache.get("a", lambda: object(), "capturing")  # built during a capture
    used = cache.get("b", lambda: object(), None)
    cache.get("b", lambda: object(), "capturing")  # an older entry used during a capture
    for key in "cdefg":  # more than the LRU holds
        cache.get(key, lambda: object(), None)
    assert cache.get("a", lambda: object(), None) is held
    assert cache.get("b", lambda: object(), None) is used
    assert "c" not in cache.items and len(cache.items) <= 2
