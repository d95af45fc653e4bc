"""The torch backend's native CPU passes (``vidcom2_kernels/cpu``) against its eager path and the
reference: every dtype, row strides, NaN/Inf in kept and dropped channels, the out-of-range limit
at its exact boundary, thread-count independence, and the fallback when no compiler builds them."""

import concurrent.futures
import json
import os
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from helpers import (
    assert_budgets_up_to_rounding_ties,
    assert_kept_up_to_near_ties,
    assert_matches_reference,
    identical_tokens,
    moving_object,
    random_features,
    reference_pair,
    repeated_frames,
    scene_cuts,
)

import vidcom2_kernels as vk
from vidcom2_kernels import cpu
from vidcom2_kernels.backends import torch_backend
from vidcom2_kernels.constants import MAX_ABS
from vidcom2_kernels.layout import exact_targets, parse_frames
from vidcom2_kernels.methods.dycoke import torch_ops as dycoke_torch
from vidcom2_kernels.methods.dycoke.plan import anchor_frames
from vidcom2_kernels.methods.vidcom2 import torch_ops as vidcom2_torch

pytestmark = pytest.mark.skipif(cpu.library() is None, reason="no C compiler: the native passes are not built")

FRAMES = [(5, 23), (2, 40), (1, 7)]


def features(dtype, seed=0, row_stride=0):
    x = random_features(FRAMES, 48, dtype, seed=seed) * 3 + 1
    if row_stride:  # rows further apart than their width: a column slice of a wider tensor
        wide = torch.zeros(x.shape[0], x.shape[1] + row_stride, dtype=dtype)
        wide[:, : x.shape[1]] = x
        x = wide[:, : x.shape[1]]
    return x


def passes(x, frames=FRAMES):
    """Every pass the native kernels replace: variance, kept channels, validation flags, scores,
    uniqueness, DyCoke's scores and flags."""
    layout = parse_frames(frames, x.shape[0])
    keep, bad = vidcom2_torch.select_channels(x, layout, True)
    scores, uniqueness = vidcom2_torch.token_scores(x, layout, keep)
    var, _ = vidcom2_torch.channel_variance(x, layout)
    dycoke, dycoke_bad = dycoke_torch.dycoke_similarity(x, layout, anchor_frames(layout), True)
    return var, keep, bad, scores, uniqueness, dycoke, dycoke_bad


@pytest.mark.parametrize("row_stride", [0, 5], ids=["contiguous", "row-strided"])
def test_native_matches_eager_and_reference(dtype, row_stride, monkeypatch):
    x = features(dtype, row_stride=row_stride)
    assert cpu.usable(x)
    native = passes(x)
    monkeypatch.setattr(cpu, "usable", lambda features: False)
    eager = passes(x)
    torch.testing.assert_close(native[0], eager[0], rtol=1e-5, atol=0)  # variances
    assert torch.equal(native[1], eager[1]) and torch.equal(native[2], eager[2])  # channels, flags
    torch.testing.assert_close(native[3], eager[3], rtol=0, atol=2e-5)  # scores
    torch.testing.assert_close(native[4], eager[4], rtol=0, atol=2e-5)  # uniqueness
    torch.testing.assert_close(native[5], eager[5], rtol=0, atol=2e-6)  # DyCoke's cosine similarities
    assert torch.equal(native[6], eager[6])
    monkeypatch.undo()
    expect, layout = reference_pair(x, FRAMES)
    assert_matches_reference(vk.compress(x, FRAMES, 0.25, backend="torch"), expect, x, layout, 0.25)


def test_channel_strided_features_take_the_eager_path():
    x = features(torch.float32).T.contiguous().T  # channels not contiguous
    assert not cpu.usable(x)
    expect, layout = reference_pair(x, FRAMES)
    assert_matches_reference(vk.compress(x, FRAMES, 0.25, backend="torch"), expect, x, layout, 0.25)


def test_variance_accurate_under_a_large_offset(dtype):
    """Features around 1e4 (bf16 keeps ~3 digits of them): float64 sums of shifted values."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(300, 40, generator=g) * torch.linspace(0.5, 1.5, 40) + 1e4).to(dtype)
    var, _ = vidcom2_torch.channel_variance(x, parse_frames(30, 300))
    want = x.double().var(dim=0, unbiased=False)
    torch.testing.assert_close(var[0].double(), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("where", ["kept", "dropped"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_values_like_eager(dtype, where, value, monkeypatch):
    x = scene_cuts(6, 10, 32, dtype=dtype, seed=1)
    layout = parse_frames(10, x.shape[0])
    var, _ = vidcom2_torch.channel_variance(x, layout)
    order = torch.argsort(var[0])
    channel = int(order[0] if where == "kept" else order[-1])
    x[13, channel] = value
    native = passes(x, 10)
    monkeypatch.setattr(cpu, "usable", lambda features: False)
    eager = passes(x, 10)
    assert torch.equal(native[1], eager[1]) and bool(native[2].all()) and bool(eager[2].all())
    assert bool(native[6].all()) and bool(eager[6].all())
    for i in (3, 5):  # VidCom2's and DyCoke's scores: +inf exactly where eager has it
        same = torch.isfinite(eager[i])
        assert torch.equal(torch.isfinite(native[i]), same)
        torch.testing.assert_close(native[i][same], eager[i][same], rtol=0, atol=2e-5)


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16", "float16"])
def test_out_of_range_limit_is_exact(dtype_name):
    """Validation flags a magnitude >= 2**44 and nothing below it, for either sign."""
    dtype = getattr(torch, dtype_name)
    largest = float(torch.finfo(dtype).max)
    limit = torch.tensor(min(float(MAX_ABS), largest), dtype=dtype)
    below = torch.nextafter(limit, torch.tensor(0.0, dtype=dtype)) if MAX_ABS <= largest else limit
    for value, flagged in [(below, False), (-below, False)] + (
        [(limit, True), (-limit, True)] if MAX_ABS <= largest else []
    ):
        x = torch.ones(8, 4, dtype=dtype)
        x[5, 2] = value
        _, _, bad = cpu.channel_moments(x, torch.zeros(4), float(MAX_ABS))
        _, dycoke_bad = cpu.dycoke_similarity(x, 2, 4, torch.tensor([-1, 0]), 1e-8, float(MAX_ABS))
        assert bool(bad) == bool(dycoke_bad) == flagged, (dtype_name, float(value))


def test_results_do_not_depend_on_the_thread_count():
    x = features(torch.bfloat16, seed=4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = passes(x)
        torch.set_num_threads(max(2, before))
        many = passes(x)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, many):
        assert torch.equal(a, b)


def test_no_compiler_falls_back_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDCOM2_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(cpu, "_LOADED", {})
    with pytest.warns(UserWarning, match="native CPU kernels unavailable"):
        assert cpu.library() is None
    x = features(torch.float32)
    assert not cpu.usable(x)
    expect, layout = reference_pair(x, FRAMES)
    assert_matches_reference(vk.compress(x, FRAMES, 0.25, backend="torch"), expect, x, layout, 0.25)


def test_switch_off(monkeypatch):
    monkeypatch.setenv(cpu.SWITCH, "0")
    assert cpu.library() is None and not cpu.usable(features(torch.float32))


def test_build_is_cached_per_source_and_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDCOM2_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu, "_LOADED", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lib = cpu.library()
    assert lib is not None
    path = cpu.library_path(cpu.compiler())
    assert sorted(str(p) for p in tmp_path.iterdir()) == [path, path + ".sha256"]  # no temporary left
    assert cpu.verified(path)


#: a fresh process loads the native library from VIDCOM2_CACHE and reports what it found
PROBE = """
import json, os, warnings
from vidcom2_kernels import cpu
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    lib = cpu.library()
path = cpu.library_path(cpu.compiler())
print(json.dumps({"loaded": lib is not None, "path": path, "verified": cpu.verified(path),
                  "warnings": [str(w.message) for w in caught], "name": getattr(lib, "_name", None)}))
"""


def probe(cache, umask=None, **env) -> dict:
    environ = {**os.environ, "VIDCOM2_CACHE": str(cache), **env}
    environ.pop(cpu.SWITCH, None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=environ,
        preexec_fn=None if umask is None else lambda: os.umask(umask),
    )
    assert done.returncode == 0, done.stderr[-2000:]  # a damaged library must never kill the process
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "umask, so_mode, digest_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600), (0o002, 0o775, 0o664)]
)
def test_cache_files_follow_the_umask(tmp_path, umask, so_mode, digest_mode):
    """A shared cache is readable by its other users when the umask allows it (and only then)."""
    out = probe(tmp_path, umask=umask)
    assert out["loaded"] and out["verified"] and out["warnings"] == []
    assert stat.S_IMODE(os.stat(out["path"]).st_mode) == so_mode
    assert stat.S_IMODE(os.stat(out["path"] + ".sha256").st_mode) == digest_mode


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "no digest", "empty"])
def test_a_damaged_or_foreign_library_is_rebuilt_not_loaded(tmp_path, damage):
    first = probe(tmp_path)
    path = first["path"]
    good = open(path, "rb").read()
    if damage == "truncated":
        open(path, "wb").write(good[: len(good) // 2])  # loading this could SIGBUS the process
    elif damage == "garbage":
        open(path, "wb").write(b"not a shared object" * 100)
    elif damage == "foreign":  # another library at that path: the symbols would be missing
        other = tmp_path / "other.c"
        other.write_text("int unrelated(void) { return 1; }\n")
        subprocess.run([*cpu.compiler(), "-shared", "-fPIC", "-o", path, str(other)], check=True)
    elif damage == "no digest":
        os.remove(path + ".sha256")
    elif damage == "empty":
        open(path, "wb").close()
    again = probe(tmp_path)
    assert again["loaded"] and again["verified"] and again["warnings"] == [] and again["path"] == path
    assert open(path, "rb").read() == good  # rebuilt: the same bytes as the first build


def test_an_unwritable_cache_gets_a_private_build(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = probe(blocker / "cache")  # below a file: the cache directory cannot be made
    assert out["loaded"] and out["warnings"] == [] and not out["name"].startswith(str(blocker))


def test_concurrent_first_use(tmp_path):
    """Four processes start on an empty cache at once: all load, one verified build is left, no temporaries."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: probe(tmp_path), range(4)))
    assert all(o["loaded"] and o["warnings"] == [] for o in outs)
    path = outs[0]["path"]
    assert sorted(str(p) for p in tmp_path.iterdir()) == [path, path + ".sha256"] and cpu.verified(path)


def test_cc_with_arguments_is_split_as_a_shell_would(tmp_path):
    cc = cpu.compiler()[0]
    out = probe(tmp_path, CC=f"{cc} -O2")
    assert out["loaded"] and out["warnings"] == []
    assert out["path"] != probe(tmp_path, CC=cc)["path"]  # another command, another build


CASES = {
    "C1": (lambda: random_features([(3, 7)], 1, seed=5), [(3, 7)]),
    "C33-T1": (lambda: random_features([(6, 1), (2, 9)], 33, seed=6), [(6, 1), (2, 9)]),
    "repeated": (lambda: repeated_frames(5, 12, 40), [(5, 12)]),
    "identical": (lambda: identical_tokens(4, 10, 24), [(4, 10)]),
    "moving": (lambda: moving_object(6, 5, 20), [(6, 25)]),
}


@pytest.mark.parametrize("path", ["native", "eager"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("exact", [False, True], ids=["budgets", "exact"])
def test_both_paths_match_the_reference_on_edge_cases(case, path, exact, dtype, monkeypatch):
    make, frames = CASES[case]
    x = make().to(dtype)
    if path == "eager":
        monkeypatch.setattr(cpu, "usable", lambda features: False)
    expect, layout = reference_pair(x, frames, exact=exact)
    out = vk.compress(x, frames, 0.25, backend="torch", exact=exact)
    targets = exact_targets(layout, np.full(layout.num_videos, 0.25)) if exact else None
    assert_matches_reference(out, expect, x, layout, 0.25, targets)
    out = vk.compress(x, frames, 0.3, backend="torch", method="dycoke")
    expect = vk.compress(x, frames, 0.3, backend="reference", method="dycoke")
    score_err = float((out.scores - expect.scores).abs().max())
    assert score_err <= 1e-5
    fr = layout.frame_row_start
    assert_kept_up_to_near_ties(out.mask, expect.mask, expect.scores, list(zip(fr[:-1], fr[1:])), score_err)


def test_float16_without_compiler_support(monkeypatch, tmp_path):
    """Compilers before GCC 12 have no _Float16: kernels.c widens the half's bits by hand there.
    That build (the macro undefined) gives bit-identical results on every float16 value class."""
    monkeypatch.setenv("VIDCOM2_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", f"{cpu.compiler()[0]} -U__FLT16_MAX__")
    fallback = cpu._load()
    assert fallback is not None
    x = features(torch.float16, seed=7)
    specials = torch.tensor([0.0, -0.0, 6e-8, -6e-8, 1e-5, 65504.0, -65504.0, 3.14], dtype=torch.float16)
    x[: specials.numel(), 3] = specials  # zeros, subnormals, the largest finite, a normal value
    native, native_lib = passes(x), cpu.library()
    with open(fallback._name, "rb") as a, open(native_lib._name, "rb") as b:
        assert a.read() != b.read()  # the other conversion was compiled
    monkeypatch.setitem(cpu._LOADED, "lib", fallback)
    for a, b in zip(native, passes(x)):
        assert torch.equal(a, b)
    # every finite half pattern, one channel each: the channel sums are the widened values
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16)
    every = every[torch.isfinite(every)][None, :]
    zero = torch.zeros(every.shape[1])
    for lib in (fallback, native_lib):
        monkeypatch.setitem(cpu._LOADED, "lib", lib)
        sums, _, bad = cpu.channel_moments(every, zero, float("inf"))
        assert torch.equal(sums, every[0].double()) and not bool(bad)
        _, _, bad = cpu.channel_moments(
            torch.tensor([[float("nan"), float("-inf")]], dtype=torch.float16), zero[:2], 1.0
        )
        assert bool(bad)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
def test_one_openmp_runtime_in_the_process():
    """The library asks for libgomp.so.1 by soname; torch has already loaded the one it bundles
    under that soname, so the dynamic linker reuses it: one OpenMP runtime (one thread pool, one
    fork handler) for torch and the native passes, never a second one from the system."""
    assert cpu.library() is not None and bool(passes(features(torch.float32))[1].any())
    with open("/proc/self/maps") as f:
        runtimes = {line.split()[-1] for line in f if "libgomp" in line or "libiomp" in line}
    assert len({os.path.realpath(p) for p in runtimes}) == 1, runtimes


BATCH = [(5, 23), (2, 40), (1, 7), (3, 1), (6, 17)]


@pytest.mark.parametrize("frames", [[(4, 16)], [(8, 729), (16, 196), (3, 4096), (1, 7), (40, 3)]], ids=["one", "batch"])
def test_native_budgets_match_eager(frames, monkeypatch):
    """FCA budgets from the same uniqueness: the softmax, the float64 mean, the clamp and the
    half-even rounding as the eager path computes them; a budget may differ only where the
    reference's own ``scale * T`` lies at a rounding tie (``exp`` from another library)."""
    layout = parse_frames(frames, None)
    g = torch.Generator().manual_seed(len(frames))
    for trial in range(40):
        u = -5 + 0.02 * (trial + 1) * torch.randn(layout.total_frames, generator=g)
        if trial % 5 == 4:
            u[int(layout.frame_start[1 % layout.num_videos])] = float("nan")  # that video falls back to r
        retention = np.array([0.05 + 0.9 * ((v * 7 + trial) % 11) / 10 for v in range(layout.num_videos)])
        budgets, counts = torch_backend.frame_budgets(u, layout, retention)
        with monkeypatch.context() as eager:  # the same call on the eager path
            eager.setattr(cpu, "usable", lambda features: False)
            want_budgets, want_counts = torch_backend.frame_budgets(u, layout, retention)
        assert budgets.dtype == counts.dtype == torch.int64
        assert_budgets_up_to_rounding_ties(budgets, want_budgets, u, frames, retention)
        assert torch.equal(counts, torch.as_tensor(layout.per_video_sum(budgets.numpy())))
        if torch.equal(budgets, want_budgets):
            assert torch.equal(counts, want_counts)


def selection_scores(layout, seed):
    """Scores with every tie the selection must break by index: repeated values, -0.0 beside
    +0.0, +inf, NaN (as +inf), and an all-equal frame."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 6, (layout.num_tokens,), generator=g).float() * 0.5
    s[::7] = -0.0
    s[3::11] = 0.0
    s[5::13] = float("inf")
    s[9::17] = float("nan")
    r0, r1 = int(layout.frame_row_start[0]), int(layout.frame_row_start[1])
    s[r0:r1] = 1.25
    return s


@pytest.mark.parametrize("frames", [[(4, 16)], BATCH], ids=["one", "batch"])
@pytest.mark.parametrize("exact", [False, True], ids=["budgets", "exact"])
def test_native_selection_equals_eager(frames, exact, monkeypatch):
    """The same scores and budgets select exactly the same rows: indices, mask, kept per frame and
    per video, in budget mode and after the exact-mode reconcile (cutting and growing), with budgets
    of 0, of more than a frame's rows, and every kind of tie."""
    layout = parse_frames(frames, None)
    g = torch.Generator().manual_seed(7)
    for trial in range(12):
        scores = selection_scores(layout, trial)
        budgets = torch.randint(-1, int(layout.frame_tokens.max()) + 3, (layout.total_frames,), generator=g)
        targets = None
        if exact:
            targets = exact_targets(layout, np.full(layout.num_videos, 0.1 + 0.08 * trial))
            num_kept = int(targets.sum())
        else:
            num_kept = int(budgets.clamp(0).minimum(torch.tensor(layout.frame_tokens)).sum())
        got = torch_backend.select_tokens(scores, layout, budgets, targets, num_kept)
        with monkeypatch.context() as eager:
            eager.setattr(cpu, "usable", lambda features: False)
            want = torch_backend.select_tokens(scores, layout, budgets, targets, num_kept)
        for name, a, b in zip(got._fields, got, want):
            assert a.dtype == b.dtype and torch.equal(a, b), (trial, name)


def test_native_selection_refuses_a_wrong_size():
    """A kept count that disagrees with the sized output raises (never an index left unwritten)."""
    layout = parse_frames([(2, 5)], None)
    with pytest.raises(RuntimeError, match="kept 4 tokens where 5 were sized"):
        torch_backend.select_tokens(torch.arange(10.0), layout, torch.tensor([2, 2]), None, 5)


def test_videos_past_the_sort_key_take_the_eager_selection(monkeypatch):
    """A video with more rows than a sort key's 32 index bits hold is selected by the eager path
    (the same rows: here the limit is lowered to reach it)."""
    layout = parse_frames(BATCH, None)
    scores, budgets = selection_scores(layout, 3), torch.tensor(layout.frame_tokens) // 3
    num_kept = int(budgets.sum())
    native = torch_backend.select_tokens(scores, layout, budgets, None, num_kept)
    monkeypatch.setattr(cpu, "MAX_SORT_ROWS", int(layout.tokens_per_video.max()))
    monkeypatch.setattr(cpu, "select", None)  # would raise if still called
    for a, b in zip(torch_backend.select_tokens(scores, layout, budgets, None, num_kept), native):
        assert torch.equal(a, b)
