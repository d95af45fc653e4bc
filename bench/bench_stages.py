"""Per-stage benchmark: each function of the backend contract, per backend, so a regression in one
kernel shows up on its own line.

    python bench/bench_stages.py [--shapes NAME ...] [--backends reference torch triton]
                                 [--dtype float32] [--rounds 9] [--csv F] [--results bench/RESULTS.md]

Every stage gets the same inputs on every backend (computed once, by the torch backend). Rounds
alternate: each round times every (backend, stage) once, in an order rotated by one each round,
so a slow phase of the machine spreads over all of them. Reports the median and the 10th / 90th
percentiles in ms, and the ratio to the reference. ``--shapes smoke`` runs anywhere in seconds
(CI does); triton is timed on CUDA only (the CPU interpreter is a correctness tool).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from results_md import update_section, write_csv  # noqa: E402
from shapes import CPU, GPU, SHAPES, features  # noqa: E402

from vidcom2_kernels.backends import REGISTRY, name_of, resolve  # noqa: E402
from vidcom2_kernels.layout import exact_targets, parse_frames  # noqa: E402
from vidcom2_kernels.methods import dycoke, vidcom2  # noqa: E402
from vidcom2_kernels.methods.dycoke.plan import anchor_frames  # noqa: E402

RETENTION = 0.25


def stage_calls(backend, x, layout):
    """name -> zero-argument call of one contract function (or method kernel: VidCom2's scorer,
    DyCoke's similarity) on shared inputs."""
    torch_backend = REGISTRY["torch"]
    scorer, similarity = (m.METHOD.kernels_on(name_of(backend)) for m in (vidcom2, dycoke))
    retention = np.full(layout.num_videos, RETENTION)
    keep, _ = vidcom2.METHOD.kernels_on("torch").select_channels(x, layout, False)
    scores, uniqueness = vidcom2.METHOD.kernels_on("torch").token_scores(x, layout, keep)
    budgets, counts = torch_backend.frame_budgets(uniqueness, layout, retention)
    num_kept = int(counts.sum())
    targets = exact_targets(layout, retention)
    indices = torch_backend.select_tokens(scores, layout, budgets, None, num_kept).indices
    anchors = anchor_frames(layout)
    return {
        "select_channels": lambda: scorer.select_channels(x, layout, True),
        "token_scores": lambda: scorer.token_scores(x, layout, keep),
        "frame_budgets": lambda: backend.frame_budgets(uniqueness, layout, retention),
        # as the pipeline calls it: the kept rows of the features gathered in the same call
        "select_tokens": lambda: backend.select_and_gather(scores, layout, budgets, None, num_kept, [x]),
        "select_tokens exact": lambda: backend.select_and_gather(
            scores, layout, budgets, targets, int(targets.sum()), [x]
        ),
        "gather_rows": lambda: backend.gather_rows(indices, [x]),
        "dycoke_similarity": lambda: similarity.dycoke_similarity(x, layout, anchors, True),
    }


def timed(call, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(shapes, backend_names, device, dtype, rounds):
    rows = []
    for shape in shapes:
        frames, C = SHAPES[shape]
        x = features(shape, dtype, device)
        layout = parse_frames(frames, x.shape[0])
        cases = [
            (b, stage, call)
            for b in backend_names
            for stage, call in stage_calls(resolve(b, device), x, layout).items()
        ]
        for _, _, call in cases:  # warm-up: compiles, caches layouts
            call()
        times = {(b, stage): [] for b, stage, _ in cases}
        for r in range(rounds):
            for b, stage, call in cases[r % len(cases) :] + cases[: r % len(cases)]:
                times[(b, stage)].append(timed(call, device))
        for (b, stage), t in times.items():
            ms = np.array(t) * 1e3
            rows.append(
                dict(
                    shape=shape,
                    stage=stage,
                    backend=b,
                    dtype=str(dtype).removeprefix("torch."),
                    median_ms=statistics.median(ms),
                    p10_ms=np.quantile(ms, 0.1),
                    p90_ms=np.quantile(ms, 0.9),
                    rounds=rounds,
                )
            )
    ref = {(r["shape"], r["stage"]): r["median_ms"] for r in rows if r["backend"] == "reference"}
    for r in rows:
        r["vs_reference"] = ref.get((r["shape"], r["stage"]), float("nan")) / r["median_ms"]
    return rows


def table(rows, title) -> list:
    lines = [
        title,
        "",
        "| shape | stage | backend | median ms | p10 | p90 | speed-up vs reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['stage']} | {r['backend']} | {r['median_ms']:.3f} | {r['p10_ms']:.3f} | "
            f"{r['p90_ms']:.3f} | {r['vs_reference']:.1f}x |"
        )
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shapes", nargs="+", default=None, help="names in bench/shapes.py (default: its CPU or GPU list)")
    p.add_argument("--backends", nargs="+", default=None, help="default: reference, torch (+ triton on CUDA)")
    p.add_argument("--dtype", default="float32", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--csv", default=None)
    p.add_argument("--results", default=None, help="write the table into this RESULTS.md")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    shapes = args.shapes or (GPU if device.type == "cuda" else CPU)
    backend_names = args.backends or (["reference", "torch"] + (["triton"] if device.type == "cuda" else []))
    rows = run(shapes, backend_names, device, getattr(torch, args.dtype), args.rounds)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    lines = table(rows, f"### {name}, {args.dtype}, {args.rounds} alternated rounds: `python bench/bench_stages.py`")
    print("\n".join(lines))
    if args.csv:
        write_csv(args.csv, rows)
    if args.results:
        update_section(args.results, f"bench_stages {name} {args.dtype}", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
