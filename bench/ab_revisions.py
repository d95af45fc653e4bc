"""A/B timing of ``compress`` between a git revision and the working tree, in alternated processes.

    python bench/ab_revisions.py REV [--shapes llava-ov qwen-batch4] [--dtype float32] [--rounds 8]
                                     [--backend torch] [--methods vidcom2 dycoke]

Each round runs one fresh process per side (the order flips every round): it imports that side's
package, times every (shape, method) call (best of 7 after a warm-up) and prints JSON. Reported: the
median over rounds per side and their ratio. Fresh processes matter on these VMs: allocator state
and page faults move timings by 10% between processes, which alternation spreads over both sides.
Shapes come from ``bench/shapes.py`` of the working tree, so both sides see the same inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from shapes import CPU, SHAPES  # noqa: E402

CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
import vidcom2_kernels as vk
cases, dtype, backend = json.loads(sys.argv[2]), getattr(torch, sys.argv[3]), sys.argv[4]
out = {}
for name, frames, C, method in cases:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sum(f * t for f, t in frames), C, generator=g).to(dtype)
    call = lambda: vk.compress(x, frames, 0.25 if method == "vidcom2" else 0.3, backend=backend, method=method)
    call()
    times = []
    for _ in range(7):
        start = time.perf_counter(); call(); times.append(time.perf_counter() - start)
    out[f"{name} {method}"] = min(times)
print(json.dumps(out))
"""


def run_side(path: str, cases, dtype: str, backend: str) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", CHILD, path, json.dumps(cases), dtype, backend],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev", help="the git revision to compare the working tree with")
    p.add_argument("--shapes", nargs="+", default=list(CPU))
    p.add_argument("--methods", nargs="+", default=["vidcom2", "dycoke"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--backend", default="torch")
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args(argv)
    root = os.path.dirname(HERE)
    cases = [(s, SHAPES[s][0], SHAPES[s][1], m) for s in args.shapes for m in args.methods]
    with tempfile.TemporaryDirectory() as tmp:
        before = os.path.join(tmp, "before")
        subprocess.run(["git", "-C", root, "worktree", "add", "-q", "--detach", before, args.rev], check=True)
        try:
            results = {"before": [], "after": []}
            for r in range(args.rounds):
                sides = [("before", before), ("after", root)]
                for side, path in sides if r % 2 == 0 else sides[::-1]:
                    results[side].append(run_side(path, cases, args.dtype, args.backend))
        finally:
            subprocess.run(["git", "-C", root, "worktree", "remove", "--force", before], check=True)
    print(f"{args.rev} vs working tree, {args.backend} backend, {args.dtype}, medians of {args.rounds} rounds")
    for key in results["before"][0]:
        b = statistics.median(d[key] for d in results["before"])
        a = statistics.median(d[key] for d in results["after"])
        print(f"  {key:28s} {b * 1e3:9.2f} ms -> {a * 1e3:9.2f} ms  ({a / b:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
