"""CPU microbenchmarks (pytest-benchmark): reference vs torch backend.

    python -m pytest bench/bench_cpu.py --benchmark-columns=median,iqr,rounds

Shapes: LLaVA-OneVision (32 frames x 196 tokens x 3584 channels, fp32) and a Qwen2-VL-like batch
of videos of different sizes. The Triton interpreter is a correctness tool, not benchmarked here.
Run with ``--benchmark-disable`` (as CI does) to execute each case once as a smoke test.
"""

import pytest
import torch

import vidcom2_kernels as vk

SHAPES = {
    "llava-ov-32x196x3584": ([(32, 196)], 3584),
    "qwen2vl-batch": ([(8, 256), (4, 391), (16, 130), (6, 221)], 1536),
}


@pytest.fixture(scope="module", params=list(SHAPES))
def case(request):
    frames, C = SHAPES[request.param]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sum(f * t for f, t in frames), C, generator=g)
    return request.param, x, frames


@pytest.mark.parametrize("method", ["vidcom2", "dycoke"])
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_compress(benchmark, case, backend, method):
    name, x, frames = case
    benchmark.group = f"{method} {name}"
    benchmark.extra_info.update(shape=name, backend=backend, method=method, tokens=x.shape[0], channels=x.shape[1])
    retention = 0.25 if method == "vidcom2" else 0.3  # DyCoke: p = 0.7, its README's example
    out = benchmark(vk.compress, x, frames, retention, backend=backend, method=method)
    assert out.features.shape[0] == int(out.counts.sum())
