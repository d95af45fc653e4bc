"""torch.compile: ``compress`` is one torch.library op (``torch.ops.vidcom2_kernels.compress``)
inside a compiled graph. ``fullgraph=True`` fails on any graph break, so these compile and run
user functions that call ``compress`` (exact mode, explicit targets, DyCoke, several videos,
extras, and the data-dependent size of non-exact mode) on every backend and compare every output
with the same function run eagerly; ``torch.library.opcheck`` checks the op's registrations
(schema, fake implementation sizes, no aliasing)."""

from __future__ import annotations

import pytest
import torch

from vidcom2_kernels import compress
from vidcom2_kernels.api import compress_op

FIELDS = ("indices", "features", "mask", "budgets", "counts", "scores", "uniqueness")
CALLS = {
    "exact": dict(frames=16, retention=0.25, exact=True),
    "target": dict(frames=[(4, 16), (3, 16), (1, 16)], retention=[0.3, 0.5, 1.0], target=[9, 20, 16]),
    "videos": dict(frames=[(5, 16), (3, 16)], retention=[0.2, 0.6], exact=True),
    "dycoke": dict(frames=16, retention=0.5, method="dycoke"),
    "dycoke_fca": dict(frames=16, retention=0.4, method="dycoke", frame_budgets="vidcom2", exact=True),
    "visionzip": dict(frames=16, retention=0.4, method="visionzip", options={"dominant_ratio": 0.5, "k_neighbors": 3}),
    "fastvid": dict(frames=16, retention=0.4, method="fastvid", options={"dyseg_c": 4}),
    "fastvid_exact": dict(frames=16, retention=0.4, method="fastvid", exact=True),
    "not_exact": dict(frames=16, retention=0.25),
}


def features(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(8 * 16, 40, generator=g).to(dtype), torch.randn(8 * 16, 3, 5, generator=g)


@pytest.mark.parametrize("call", CALLS)
def test_fullgraph_equals_eager(backend, call):
    torch._dynamo.reset()
    kwargs = dict(CALLS[call], backend=backend, validate=False)

    def user(x, deep):
        out = compress(x, extras=[deep], **kwargs)
        return (*(getattr(out, f) for f in FIELDS), out.extras[0], out.features.float().mean(0) * 2)

    x, deep = features()
    compiled = torch.compile(user, fullgraph=True)(x, deep)
    eager = user(x, deep)
    for name, a, b in zip((*FIELDS, "extras"), compiled, eager):  # the op's outputs: bit for bit
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert torch.equal(a, b), name
    torch.testing.assert_close(compiled[-1], eager[-1])  # Inductor's own reduction order


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fullgraph_low_precision(dtype):
    torch._dynamo.reset()
    x, _ = features(dtype)
    user = lambda x: compress(x, 16, 0.25, exact=True, validate=False).features  # noqa: E731
    assert torch.equal(torch.compile(user, fullgraph=True)(x), user(x))


def test_compiled_result_is_a_compression():
    torch._dynamo.reset()
    x, _ = features()
    out = torch.compile(lambda x: compress(x, [(4, 16), (4, 16)], 0.25, exact=True, validate=False), fullgraph=True)(x)
    assert out.backend == "torch" and out.counts.tolist() == [16, 16]
    assert [t.shape[0] for t in out.split()] == [16, 16]
    assert torch.equal(out.gather(x)[0], out.features)


def test_validate_still_raises_inside_the_graph():
    torch._dynamo.reset()
    x, _ = features()
    x[3, 0] = float("nan")
    with pytest.raises(ValueError, match="video 0 contain NaN"):
        torch.compile(lambda x: compress(x, 16, 0.25, exact=True).indices, fullgraph=True)(x)


def test_tensor_arguments_are_refused_by_name():
    torch._dynamo.reset()
    x, _ = features()
    frames = torch.tensor([[8, 16]])
    with pytest.raises(Exception, match="frames must be an int or"):
        torch.compile(lambda x: compress(x, frames, exact=True).indices, fullgraph=True)(x)


@pytest.mark.parametrize("call", ["exact", "target", "dycoke", "visionzip", "fastvid", "not_exact"])
def test_opcheck(call):
    kw = CALLS[call]
    frames = kw["frames"] if isinstance(kw["frames"], list) else [(8, kw["frames"])]
    flat = [n for pair in frames for n in pair]
    retention = kw["retention"] if isinstance(kw["retention"], list) else [kw["retention"]]
    x, deep = features()
    args = (
        x,
        [deep],
        flat,
        retention,
        kw.get("target", []),
        kw.get("exact", False),
        "torch",
        True,
        kw.get("method", "vidcom2"),
        kw.get("frame_budgets"),
        False,
        list(kw.get("options", {}).values()),  # the method's options, in the order of its defaults
    )
    torch.library.opcheck(compress_op, args)
