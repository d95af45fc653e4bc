"""The vLLM plugin's mask against vLLM's own ``compute_retention_mask`` (issue 11), one video at
Qwen3-VL shapes: what vLLM passes is the main features concatenated with the deepstack features.
Run by the vLLM side environment's python (``bash ci/vllm_env.sh`` prints it):

    .venvs/vllm/bin/python bench/bench_vllm.py [--rounds 7] [--device cpu|cuda] [--shapes ...]

Alternated rounds (each round calls both once, the order swapped every round) after one warm-up
call; medians in ms and the ratio vLLM / plugin; every round checks the plugin's True count
against vLLM's and, in float32, the masks themselves.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidcom2_kernels.integrations import vllm as plugin

#: name -> (T temporal groups, H, W patch grid (merge 2), channels of main + deepstack features)
SHAPES = {
    "qwen3-vl-2b-32f": (16, 28, 28, 2048 * 4),
    "qwen3-vl-8b-32f": (16, 28, 28, 4096 * 4),
    "qwen3-vl-8b-64f": (32, 24, 40, 4096 * 4),
    "smoke": (4, 8, 8, 64),
}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def bench(shape, dtype, device, rounds, q=0.75):
    T, H, W, C = SHAPES[shape]
    x = torch.randn(T * H * W // 4, C, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    grid = (T, H, W)
    impls = {"plugin": plugin.retention_mask, "vllm": plugin._state["vllm_mask"]}
    times = {name: [] for name in impls}
    for fn in impls.values():
        fn(x, grid, 2, q)  # warm-up (kernel builds, caches)
    for r in range(rounds):
        order = list(impls) if r % 2 == 0 else list(impls)[::-1]
        masks = {}
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            masks[name] = impls[name](x, grid, 2, q)
            sync(device)
            times[name].append(time.perf_counter() - t0)
        assert int(masks["plugin"].sum()) == int(masks["vllm"].sum())
        if dtype == torch.float32:
            assert torch.equal(masks["plugin"], masks["vllm"])
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return med


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=["qwen3-vl-2b-32f", "qwen3-vl-8b-32f"])
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    plugin.register()
    print("| shape | N x C | dtype | device | plugin ms | vLLM ms | vLLM / plugin |")
    print("|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        T, H, W, C = SHAPES[shape]
        for dtype in args.dtypes:
            med = bench(shape, getattr(torch, dtype), args.device, args.rounds)
            print(
                f"| {shape} | {T * H * W // 4} x {C} | {dtype} | {args.device} | {med['plugin']:.1f} | "
                f"{med['vllm']:.1f} | {med['vllm'] / med['plugin']:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
