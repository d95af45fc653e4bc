"""CPU microbenchmarks (pytest-benchmark): reference vs torch backend.

    python -m pytest bench/bench_cpu.py --benchmark-columns=median,iqr,rounds

Shapes (``bench/shapes.py``, ``CPU``): LLaVA-OneVision (32 frames x 196 tokens x 3584 channels,
fp32) and a batch of four videos of different sizes. The Triton interpreter is a correctness tool, not benchmarked here.
Run with ``--benchmark-disable`` (as CI does) to execute each case once as a smoke test.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shapes  # noqa: E402

import vidcom2_kernels as vk  # noqa: E402


@pytest.fixture(scope="module", params=shapes.CPU)
def case(request):
    return request.param, shapes.features(request.param), shapes.SHAPES[request.param][0]


@pytest.mark.parametrize("method", ["vidcom2", "dycoke", "visionzip"])
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_compress(benchmark, case, backend, method):
    name, x, frames = case
    benchmark.group = f"{method} {name}"
    benchmark.extra_info.update(shape=name, backend=backend, method=method, tokens=x.shape[0], channels=x.shape[1])
    retention = 0.25 if method == "vidcom2" else 0.3  # DyCoke: p = 0.7, its README's example
    out = benchmark(vk.compress, x, frames, retention, backend=backend, method=method)
    assert out.features.shape[0] == int(out.counts.sum())
