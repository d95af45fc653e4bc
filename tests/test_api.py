"""The public API: exported names, argument forms, clear errors for bad input, empty input."""

import numpy as np
import pytest
import torch

import vidcom2_kernels as vk
from vidcom2_kernels import reference
from vidcom2_kernels.backends import triton_backend
from vidcom2_kernels.layout import parse_frames


def test_public_names():
    expected = {
        "compress",
        "Compression",
        "select_channels",
        "token_scores",
        "frame_budgets",
        "select_tokens",
        "gather_rows",
        "Selection",
        "VideoLayout",
        "parse_frames",
        "exact_targets",
    }
    assert expected <= set(vk.__all__)
    for name in ("compress", "select_channels", "token_scores", "frame_budgets", "select_tokens", "gather_rows"):
        assert callable(getattr(reference, name)), f"reference twin {name} missing"
    fields = vk.Compression.__dataclass_fields__
    for name in ("indices", "features", "mask", "budgets", "counts", "extras"):
        assert name in fields


def test_frames_forms_agree(any_backend, device):
    x = torch.randn(4 * 9, 6, device=device)
    a = vk.compress(x, 9, 0.3, backend=any_backend)
    b = vk.compress(x, [(4, 9)], 0.3, backend=any_backend)
    c = vk.compress(x, torch.tensor([[4, 9]]), 0.3, backend=any_backend)
    d = vk.compress(x, np.array([[4, 9]]), 0.3, backend=any_backend)
    for other in (b, c, d):
        assert torch.equal(a.indices, other.indices)
    assert a.features.shape == (int(a.counts.sum()), 6)


def test_layouts_are_interned_and_read_only():
    """Equal frames give one shared layout (what it derives is computed once), so its arrays are
    read only: a caller cannot change another call's layout through ``Compression.layout``."""
    x = torch.randn(5 * 7 + 2 * 3, 8)
    a = vk.compress(x, [(5, 7), (2, 3)], 0.5, backend="torch").layout
    b = parse_frames(np.array([[5, 7], [2, 3]]), x.shape[0])
    assert a is b and a is not parse_frames([(5, 7)], None)
    for name in ("num_frames", "tokens_per_frame", "row_start", "frame_start", "frame_tokens", "frame_row_start"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(a, name)[0] = 1
    assert a.pairs() == [(5, 7), (2, 3)] and a.num_tokens == x.shape[0]


def test_reference_compress_same_type():
    x = torch.randn(20, 4)
    out = reference.compress(x, 5, 0.5)
    assert isinstance(out, vk.Compression)


def test_empty_input(any_backend, device):
    for frames in (7, [], torch.zeros((0, 2), dtype=torch.int64)):
        out = vk.compress(torch.zeros(0, 5, device=device), frames, backend=any_backend)
        assert out.indices.shape == (0,) and out.features.shape == (0, 5)
        assert out.mask.shape == (0,)


def test_retention_one_exact_keeps_all(device):
    x = torch.randn(3 * 8, 5, device=device)
    out = vk.compress(x, 8, 1.0, exact=True, backend="triton")
    assert out.indices.tolist() == list(range(24))


BAD = [
    (lambda x: vk.compress(x[0], 4), ValueError, "features must be 2-D"),
    (lambda x: vk.compress(x.long(), 4), TypeError, "features must be float16, bfloat16 or float32"),
    (lambda x: vk.compress(x.double(), 4), TypeError, "float16, bfloat16 or float32"),
    (lambda x: vk.compress([[1.0]], 4), TypeError, "features must be a torch.Tensor"),
    (lambda x: vk.compress(x, 5), ValueError, "does not divide"),
    (lambda x: vk.compress(x, 0), ValueError, "must be positive"),
    (lambda x: vk.compress(x, -4), ValueError, "must be positive"),
    (lambda x: vk.compress(x, [(2, 4), (1, 4)]), ValueError, "add up to 12 tokens"),
    (lambda x: vk.compress(x, [(2, 4), (0, 4)]), ValueError, r"frames\[1\] num_frames must be positive"),
    (lambda x: vk.compress(x, [(4, -4)]), ValueError, "tokens_per_frame must be positive"),
    (lambda x: vk.compress(x, [(4,)]), ValueError, r"frames\[0\] must be a \(num_frames, tokens_per_frame\) pair"),
    (lambda x: vk.compress(x, 4.0), TypeError, "frames must be"),
    (lambda x: vk.compress(x, torch.ones(2, 3, dtype=torch.long)), ValueError, "shape \\(V, 2\\)"),
    (lambda x: vk.compress(x, torch.ones(1, 2)), TypeError, "frames tensor must hold integers"),
    (lambda x: vk.compress(x, 4, 0.0), ValueError, r"retention must be in \(0, 1\]"),
    (lambda x: vk.compress(x, 4, 1.5), ValueError, r"retention must be in \(0, 1\]"),
    (lambda x: vk.compress(x, 4, float("nan")), ValueError, r"retention must be in \(0, 1\]"),
    (lambda x: vk.compress(x, 4, "0.3"), TypeError, "retention must be a number"),
    (lambda x: vk.compress(x, [(2, 4), (2, 4)], [0.5]), ValueError, "retention has 1 entries but there are 2 videos"),
    (lambda x: vk.compress(x, [(2, 4), (2, 4)], [0.5, 2.0]), ValueError, "for video 1"),
    (
        lambda x: vk.compress(x, 4, target=3),
        ValueError,
        r"target for video 0 must be in \[num_frames, tokens\] = \[4, 16\]",
    ),
    (lambda x: vk.compress(x, 4, target=17), ValueError, "target for video 0"),
    (lambda x: vk.compress(x, 4, target=4.5), TypeError, "target must be an int"),
    (lambda x: vk.compress(x, [(2, 4), (2, 4)], target=[4, 4, 4]), ValueError, "target has 3 entries"),
    (lambda x: vk.compress(x, 4, backend="cuda"), ValueError, "backend must be one of"),
    (lambda x: vk.compress(x, 4, extras=[torch.zeros(3, 2)]), ValueError, r"extras\[0\] must have 16 rows"),
    (lambda x: vk.compress(x, 4, extras=[torch.zeros(16, 2, device="meta")]), ValueError, r"extras\[0\] is on meta"),
    (lambda x: vk.compress(x[:, :0], 4), ValueError, "at least one channel"),
]


@pytest.mark.parametrize("call,error,match", BAD, ids=[m for _, _, m in BAD])
def test_bad_input_errors(call, error, match):
    x = torch.randn(16, 6)
    with pytest.raises(error, match=match):
        call(x)


def test_stage_errors():
    x = torch.randn(12, 4)
    with pytest.raises(ValueError, match="keep must have shape"):
        vk.token_scores(x, 4, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="keep must be a bool tensor"):
        vk.token_scores(x, 4, torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"uniqueness must have shape \(3,\)"):
        vk.frame_budgets(torch.zeros(2), [(3, 4)])
    with pytest.raises(ValueError, match=r"budgets must have shape \(3,\)"):
        vk.select_tokens(torch.zeros(12), 4, torch.ones(2, dtype=torch.long))
    with pytest.raises(TypeError, match="budgets must be integer"):
        vk.select_tokens(torch.zeros(12), 4, torch.ones(3))
    with pytest.raises(ValueError, match=r"indices must be in \[0, 12\)"):
        vk.gather_rows(torch.tensor([0, 12]), x)
    with pytest.raises(ValueError, match="budgets is on meta"):
        vk.select_tokens(torch.zeros(12), 4, torch.ones(3, dtype=torch.long, device="meta"))


def test_triton_backend_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setattr(triton_backend, "is_interpreter", lambda: False)  # as if TRITON_INTERPRET were unset
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
        vk.compress(torch.randn(8, 3), 4, backend="triton")


def test_auto_backend_on_cpu_is_torch():
    out = vk.compress(torch.randn(8, 3), 4)
    assert out.backend == "torch"


def test_inputs_requiring_grad(any_backend, device):
    """Inference-only: features that require grad (a vision tower run with grad on) work, and no
    autograd graph is built."""
    x = torch.randn(3 * 8, 6, device=device, requires_grad=True)
    out = vk.compress(x, 8, 0.5, backend=any_backend)
    plain = vk.compress(x.detach(), 8, 0.5, backend=any_backend)
    assert torch.equal(out.indices, plain.indices) and not out.features.requires_grad
    scores, _ = vk.token_scores(x, 8, backend=any_backend)
    assert not scores.requires_grad
