"""The multi-tensor row gather vs index_select: dtypes, widths, more than one launch's worth."""

import torch

import vidcom2_kernels as vk
from vidcom2_kernels import reference


def test_gather_many_tensors(backend, device):
    N = 37
    g = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(N, 33, generator=g).to(torch.bfloat16),
        torch.randn(N, 1, generator=g).half(),
        torch.randn(N, 300, generator=g),
        torch.randint(0, 9, (N, 4), generator=g),
        torch.randn(N, 2, 3, generator=g),  # trailing dims
        torch.rand(N, 5, generator=g) > 0.5,
    ]
    tensors.append(tensors[2][:, ::3])  # strided
    tensors = [t.to(device) for t in tensors]
    idx = torch.tensor([0, 3, 4, 17, 36], device=device)
    got = vk.gather_rows(idx, *tensors, backend=backend)
    assert len(got) == len(tensors)
    twin = reference.gather_rows(idx, *tensors)
    for t, out, want in zip(tensors, got, twin):
        assert out.dtype == t.dtype and torch.equal(out, want)


def test_gather_empty(backend, device):
    x = torch.randn(5, 3, device=device)
    (out,) = vk.gather_rows(torch.empty(0, dtype=torch.long, device=device), x, backend=backend)
    assert out.shape == (0, 3)
