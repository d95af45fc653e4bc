"""Each registered method on the torch backend against its released code's structure, on the CPU.

    python bench/bench_methods.py [--shapes llava-ov qwen-batch4] [--dtype float32] [--rounds 7]
                                  [--results bench/RESULTS.md]

Per (shape, method): ``vk.compress(x, frames, r, method=m)`` (budget mode, validation on, r = 0.25)
against the released structure of that method (``bench/baselines.py``: VidCom2's per-frame loop;
VisionZip's loops over frames and anchors; FastVID's over segments, frames and context frames;
HoliTom's (F, F, T) run table, its Python dynamic programme and its loops over windows, frames and
centres). Rounds alternate the two (the order flips each round)
after one warm-up call each; reported are the medians in ms, the p10-p90 spread and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from baselines import fastvid_released_shape, holitom_released_shape, released_shape, visionzip_released_shape  # noqa: E402
from results_md import update_section  # noqa: E402
from shapes import CPU, SHAPES, features  # noqa: E402

import vidcom2_kernels as vk  # noqa: E402

RETENTION = 0.25
#: method -> the released structure it is compared with
RELEASED = {
    "vidcom2": released_shape,
    "visionzip": visionzip_released_shape,
    "fastvid": fastvid_released_shape,
    "holitom": holitom_released_shape,
}


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(shapes, dtype, rounds: int) -> list:
    rows = []
    for shape in shapes:
        frames, _ = SHAPES[shape]
        x = features(shape, dtype)
        for method, released in RELEASED.items():
            calls = {
                "ours": lambda x=x, frames=frames, m=method: vk.compress(
                    x, frames, RETENTION, backend="torch", method=m
                ),
                "released": lambda x=x, frames=frames, fn=released: fn(x, frames, RETENTION),
            }
            times = {name: [] for name in calls}
            for fn in calls.values():
                fn()
            for r in range(rounds):
                for name in list(calls)[:: 1 if r % 2 == 0 else -1]:
                    times[name].append(time_once(calls[name]) * 1e3)
            med = {name: statistics.median(t) for name, t in times.items()}
            spread = {name: (sorted(t)[len(t) // 10], sorted(t)[-1 - len(t) // 10]) for name, t in times.items()}
            rows.append((shape, method, med, spread))
    return rows


def table(rows, dtype, rounds: int) -> list:
    lines = [
        f"torch backend vs the released structure, CPU ({os.cpu_count()} cores), {dtype}, retention "
        f"{RETENTION}, medians of {rounds} alternated rounds (p10-p90):",
        "",
        "| shape | method | ours ms | released structure ms | speed-up |",
        "|---|---|---|---|---|",
    ]
    for shape, method, med, spread in rows:
        lines.append(
            f"| {shape} | {method} | {med['ours']:.1f} ({spread['ours'][0]:.1f}-{spread['ours'][1]:.1f}) | "
            f"{med['released']:.1f} ({spread['released'][0]:.1f}-{spread['released'][1]:.1f}) | "
            f"{med['released'] / med['ours']:.1f}x |"
        )
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=list(CPU))
    p.add_argument("--dtype", default="float32")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--results", default=None, help="a RESULTS.md to write the table into")
    args = p.parse_args(argv)
    lines = table(run(args.shapes, getattr(torch, args.dtype), args.rounds), args.dtype, args.rounds)
    print("\n".join(lines))
    if args.results:
        update_section(args.results, "bench_methods", lines)


if __name__ == "__main__":
    main()
