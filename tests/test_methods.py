"""The method plug-ins (:mod:`vidcom2_kernels.methods`): every registered method provides its
kernels on every installed backend with its reference's signatures, and a method registered with
one registry entry runs through every client (``compress`` on every backend, FCA over it, the
merge stage, ``torch.compile``, the adapters' Settings and ``COMPRESSOR``, the vLLM plugin's
``VIDCOM2_VLLM_METHOD``, a tiny model's ``generate``).

The plug-in used here is a toy written for the test ("norm": keep each frame's ``int(T * r)``
rows of largest L2 norm; "norm_merge": the same, then each frame's first kept row becomes the mean
of itself and the frame's dropped rows). Its expected results are computed independently below.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pathlib
import types

import numpy as np
import pytest
import tiny_models as tm
import torch
from helpers import random_features

import vidcom2_kernels as vk
from vidcom2_kernels import adapters, backends, methods
from vidcom2_kernels.backends.contract import nan_as_inf, write_out
from vidcom2_kernels.integrations import vllm as plugin
from vidcom2_kernels.layout import parse_frames
from vidcom2_kernels.methods import Method, Scored

FRAMES = [(5, 12), (3, 20), (1, 7)]
METHODS_DIR = pathlib.Path(methods.__file__).parent


# ------------------------------------------------------------------------------- the toy plug-in
def norm_scores(features, layout, validate, out=None):
    """(N,) float32 minus the row norm (largest norm kept first); (V,) non-finite flags."""
    x = features.float()
    bad = torch.stack([~torch.isfinite(x[a:b]).all() for a, b in zip(layout.row_start[:-1], layout.row_start[1:])])
    return nan_as_inf(-torch.linalg.vector_norm(x, dim=1)), write_out(out, bad if validate else None)


def norm_merge_rows(req, kernels, scores, selection, rows):
    """Each frame's first kept row -> the mean of itself and the frame's dropped rows."""
    layout, indices = req.layout, selection.indices
    kept = indices.tolist()
    out = [t.clone() for t in rows]
    merged = torch.zeros(len(kept), dtype=torch.bool)
    position = {row: k for k, row in enumerate(kept)}
    for f in range(layout.total_frames):
        a, b = int(layout.frame_row_start[f]), int(layout.frame_row_start[f + 1])
        mine = [r for r in range(a, b) if r in position]
        dropped = [r for r in range(a, b) if r not in position]
        if mine and dropped:
            k = position[mine[0]]
            group = [mine[0], *dropped]
            for t_out, t_in in zip(out, (req.features, *req.extras)):
                t_out[k] = t_in[group].float().mean(0).to(t_in.dtype)
            merged[k] = True
    return out, merged.to(indices.device)


def norm_budgets(req):
    """int(T * r) per frame, at least 1."""
    T = req.layout.frame_tokens
    return np.maximum(1, np.floor(req.retention[req.layout.frame_video] * T)).astype(np.int64)


KERNELS = types.SimpleNamespace(norm_scores=norm_scores)


def score(req, kernels, flags):
    scores, nonfinite = kernels.norm_scores(req.features, req.layout, req.validate, out=flags)
    return Scored(scores, None, nonfinite)


NORM = Method(
    name="norm",
    summary="toy: largest row norms",
    kernels={name: KERNELS for name in backends.REGISTRY},
    kernel_names=("norm_scores",),
    score=score,
    budgets=norm_budgets,
)
TOYS = {
    "norm": NORM,
    "norm_merge": dataclasses.replace(
        NORM, name="norm_merge", summary="toy: largest row norms, dropped rows merged", merge=norm_merge_rows
    ),
}


@pytest.fixture
def toys(monkeypatch):
    """The toy methods registered for the test: one registry entry each."""
    for name, method in TOYS.items():
        monkeypatch.setitem(methods.REGISTRY, name, method)


def expected_rows(x, frames, retention):
    """The toy's kept rows by hand: per frame the int(T * r) largest norms, ties to the lower row."""
    layout, kept = parse_frames(frames, x.shape[0]), []
    for f in range(layout.total_frames):
        a, b = int(layout.frame_row_start[f]), int(layout.frame_row_start[f + 1])
        k = max(1, int(np.floor(retention * (b - a))))
        norms = torch.linalg.vector_norm(x[a:b].float(), dim=1)
        order = sorted(range(b - a), key=lambda i: (-float(norms[i]), i))
        kept += sorted(a + i for i in order[:k])
    return torch.tensor(kept)


# ------------------------------------------------------------------------ the registered methods
@pytest.mark.parametrize("name", methods.names())
def test_registered_methods_have_their_kernels_on_every_backend(name):
    """Each installed backend has the method's kernel functions, with the reference's signatures."""
    method = methods.REGISTRY[name]
    assert method.name == name
    reference = method.kernels_on("reference")
    for backend, module in backends.REGISTRY.items():
        if module is None:  # triton not installed
            continue
        kernels = method.kernels_on(backend)
        for fn in method.kernel_names:
            want = list(inspect.signature(getattr(reference, fn)).parameters)
            assert list(inspect.signature(getattr(kernels, fn)).parameters) == want, f"{name}/{backend}.{fn}"


def test_method_kernels_do_not_import_a_reference():
    """The fast kernels of a method never call into a reference (no yardstick in the hot path)."""
    for path in [*METHODS_DIR.rglob("torch_ops.py"), *METHODS_DIR.rglob("triton_ops.py")]:
        tree = ast.parse(path.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names]
        assert not [m for m in imported if "reference" in m], f"{path} imports {imported}"


def test_method_errors_list_the_registry(toys):
    with pytest.raises(
        ValueError,
        match=r"method must be one of \('vidcom2', 'dycoke', 'visionzip', 'fastvid', 'holitom', 'norm', 'norm_merge'\)",
    ):
        vk.compress(torch.randn(8, 4), 4, method="visionzip_typo")
    with pytest.raises(ValueError, match="quirks=True only applies to method='dycoke'"):
        vk.compress(torch.randn(8, 4), 4, method="norm", quirks=True)
    with pytest.raises(
        ValueError,
        match="only applies to method='dycoke' or method='visionzip' or method='fastvid' or method='holitom' or method='norm' or method='norm_merge'",
    ):
        vk.compress(torch.randn(8, 4), 4, method="vidcom2", frame_budgets="vidcom2")


# ------------------------------------------------------------------------------ through compress
@pytest.mark.parametrize("exact", [False, True])
def test_plugin_runs_on_every_backend(toys, any_backend, exact):
    x = random_features(FRAMES, 24, seed=3)
    out = vk.compress(x, FRAMES, 0.4, backend=any_backend, method="norm", exact=exact)
    want = expected_rows(x, FRAMES, 0.4)
    assert torch.equal(out.indices, want)
    assert torch.equal(out.features, x[want])
    assert out.merged is None
    assert torch.equal(out.budgets, torch.from_numpy(norm_budgets(vk.api.prepare(x, FRAMES, 0.4, method="norm"))))
    assert torch.equal(out.uniqueness, torch.zeros(sum(f for f, _ in FRAMES)))  # no FCA: no uniqueness


def test_fca_over_a_plugin_plans_vidcom2s_budgets(toys, any_backend):
    """frame_budgets='vidcom2': the per-frame budgets are VidCom2's step 5 for the same features,
    the tokens inside each frame still the method's."""
    x = random_features(FRAMES, 24, seed=4)
    vidcom2 = vk.compress(x, FRAMES, 0.4, backend=any_backend)
    out = vk.compress(x, FRAMES, 0.4, backend=any_backend, method="norm", frame_budgets="vidcom2")
    assert torch.equal(out.budgets, vidcom2.budgets)
    assert torch.equal(out.uniqueness, vidcom2.uniqueness)
    norms = torch.linalg.vector_norm(x.float(), dim=1)
    layout = parse_frames(FRAMES, x.shape[0])
    for f in range(layout.total_frames):  # each frame keeps its budget's largest norms
        a, b = int(layout.frame_row_start[f]), int(layout.frame_row_start[f + 1])
        mine = out.indices[(out.indices >= a) & (out.indices < b)]
        order = sorted(range(a, b), key=lambda i: (-float(norms[i]), i))
        assert mine.tolist() == sorted(order[: int(vidcom2.budgets[f])])
    exact = vk.compress(x, FRAMES, 0.4, backend=any_backend, method="norm", frame_budgets="vidcom2", exact=True)
    assert exact.counts.tolist() == [max(f, int(f * t * 0.4)) for f, t in FRAMES]


def test_plugin_merge_marks_merged_rows(toys, any_backend):
    x = random_features(FRAMES, 24, seed=5)
    deep = torch.randn(x.shape[0], 3)
    plain = vk.compress(x, FRAMES, 0.4, backend=any_backend, method="norm", extras=[deep])
    out = vk.compress(x, FRAMES, 0.4, backend=any_backend, method="norm_merge", extras=[deep])
    assert torch.equal(out.indices, plain.indices)  # positions unchanged: a merge sits at its anchor
    assert out.merged is not None and out.merged.dtype == torch.bool and out.merged.shape == out.indices.shape
    layout = parse_frames(FRAMES, x.shape[0])
    for f in range(layout.total_frames):
        a, b = int(layout.frame_row_start[f]), int(layout.frame_row_start[f + 1])
        slots = torch.nonzero((out.indices >= a) & (out.indices < b)).flatten()
        dropped = sorted(set(range(a, b)) - set(out.indices[slots].tolist()))
        first = int(out.indices[slots[0]])
        assert bool(out.merged[slots[0]]) == bool(dropped)
        assert not out.merged[slots[1:]].any()
        group = [first, *dropped]
        torch.testing.assert_close(out.features[slots[0]], x[group].mean(0))
        torch.testing.assert_close(out.extras[0][slots[0]], deep[group].mean(0))
        assert torch.equal(out.features[slots[1:]], x[out.indices[slots[1:]]])
    empty = vk.compress(x[:0], [], 0.4, method="norm_merge")
    assert empty.merged is not None and empty.merged.shape == (0,)


@pytest.mark.parametrize("name", ["norm", "norm_merge"])
def test_plugin_under_torch_compile(toys, name):
    torch._dynamo.reset()
    x = random_features(FRAMES, 24, seed=6)

    def user(x):
        out = vk.compress(x, FRAMES, 0.4, backend="torch", method=name, validate=False)
        return out.indices, out.features, out.merged

    compiled = torch.compile(user, fullgraph=True)(x)
    eager = user(x)
    assert torch.equal(compiled[0], eager[0]) and torch.equal(compiled[1], eager[1])
    assert (compiled[2] is None) == (eager[2] is None) == (name == "norm")
    if name == "norm_merge":
        assert torch.equal(compiled[2], eager[2])


# ------------------------------------------------------------------------------- through clients
def test_plugin_through_settings_and_the_environment(toys):
    assert adapters.Settings(method="norm").method == "norm"
    settings = adapters.settings_from_env({"COMPRESSOR": "Norm", "R_RATIO": "0.5", "FRAME_BUDGETS": "vidcom2"})
    assert settings == adapters.Settings(method="norm", retention=0.5, frame_budgets="vidcom2")
    with pytest.raises(
        ValueError,
        match="FRAME_BUDGETS=vidcom2 only applies to COMPRESSOR=dycoke or COMPRESSOR=visionzip or COMPRESSOR=fastvid or COMPRESSOR=holitom or COMPRESSOR=norm",
    ):
        adapters.settings_from_env({"COMPRESSOR": "vidcom2", "FRAME_BUDGETS": "vidcom2"})
    with pytest.raises(
        ValueError,
        match="COMPRESSOR must be one of vidcom2, dycoke, visionzip, fastvid, holitom, norm, norm_merge or none",
    ):
        adapters.settings_from_env({"COMPRESSOR": "fastv"})


def test_plugin_through_the_vllm_settings(toys):
    assert plugin.settings_from_env({"VIDCOM2_VLLM_METHOD": "norm+fca"})["method"] == "norm+fca"
    assert plugin.method_choices()["norm+fca"] == ("norm", "vidcom2")
    with pytest.raises(ValueError, match="VIDCOM2_VLLM_METHOD=norm_merge merges tokens"):
        plugin.settings_from_env({"VIDCOM2_VLLM_METHOD": "norm_merge"})
    x = random_features([(4, 16)], 24, seed=7)
    plugin._state["method"], before = "norm+fca", plugin._state["method"]
    try:
        mask = plugin.retention_mask(x, (4, 8, 8), 2, 0.6, count=lambda t, f, q: 27)
    finally:
        plugin._state["method"] = before
    assert int(mask.sum()) == 27  # exactly the count vLLM sized the placeholders with


def test_plugin_through_generate(toys):
    """A tiny Qwen2-VL with the merging toy: retention 1.0 changes nothing; at 0.5 the prefill is
    shorter, the adapter's handle reports the merges, and generate() returns its usual rows."""
    model = tm.build("qwen2_vl")
    samples = tm.samples_for("qwen2_vl")
    batch = tm.make_batch("qwen2_vl", model, samples)
    kw = dict(max_new_tokens=3, do_sample=False)
    plain = model.generate(**batch, **kw)
    with adapters.apply_compression(model, "norm_merge", 1.0):
        assert torch.equal(model.generate(**batch, **kw), plain)
    with adapters.apply_compression(model, "norm_merge", 0.5) as handle:
        pruned = model.generate(**batch, **kw)
        assert handle.last.video_tokens_after < handle.last.video_tokens_before
        assert handle.last.compression.merged.any()
    assert torch.equal(pruned[:, : batch["input_ids"].shape[1]], batch["input_ids"])
