"""The attention row of DyCoke's KV pruning, every backend against the reference twin."""

import pytest
import torch

from vidcom2_kernels.backends import resolve
from vidcom2_kernels.reference import attention_row as attention_row_reference

SHAPES = [(1, 4, 4, 1, 8), (2, 4, 2, 37, 16), (3, 8, 1, 130, 24), (1, 28, 4, 257, 128)]


@pytest.mark.parametrize("B,H,Hkv,S,D", SHAPES, ids=[f"B{b}-H{h}-KV{k}-S{s}-D{d}" for b, h, k, s, d in SHAPES])
def test_matches_reference(B, H, Hkv, S, D, dtype, backend, device):
    attention_row = resolve(backend, torch.device(device)).attention_row
    g = torch.Generator().manual_seed(S + D)
    q = (torch.randn(B, H, D, generator=g) * 2).to(dtype)
    k = torch.randn(B, Hkv, S, D, generator=g).to(dtype)
    valid = torch.rand(B, S, generator=g) > 0.25
    valid[:, -1] = True  # every row attends to at least one key
    got = attention_row(q.to(device), k.to(device), valid.to(device), D**-0.5).cpu()
    want = attention_row_reference(q, k, valid, D**-0.5)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    assert bool((got[~valid] == 0).all())
    torch.testing.assert_close(got.sum(1), torch.ones(B), atol=1e-5, rtol=0)


def test_strided_inputs(backend, device):
    """A cache slice (keys of the first S positions of a larger static buffer) and the query of the
    last position of a (B, H, L, D) tensor, as the KV pruning passes them, are read in place."""
    attention_row = resolve(backend, torch.device(device)).attention_row
    g = torch.Generator().manual_seed(0)
    buf = torch.randn(2, 2, 50, 16, generator=g)
    k = buf[:, :, :30]
    q = torch.randn(2, 4, 3, 16, generator=g)[:, :, -1, :]
    valid = torch.ones(2, 30, dtype=torch.bool)
    got = attention_row(q.to(device), k.to(device), valid.to(device), 0.25).cpu()
    torch.testing.assert_close(got, attention_row_reference(q, k, valid, 0.25), atol=2e-6, rtol=1e-5)
