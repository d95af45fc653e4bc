"""Per-kernel traffic and grid of the Triton pipeline, on paper (no GPU needed).

    python bench/kernel_traffic.py [--shapes llava-ov long ...] [--dtype bfloat16]
                                   [--bandwidth-tbps 3.35] [--sms 132] [--launch-us 3]
                                   [--results bench/RESULTS.md]

The triton backend's own host code runs on CPU tensors with every kernel launch intercepted
(recorded, not executed), so the grids are exactly the ones a GPU would get. For each launch:
programs (the grid's size), bytes moved and an estimated time

    launch_us + bytes / (bandwidth * min(1, programs / (2 * sms)))

i.e. HBM-bound streaming that needs about two resident programs per SM to reach full bandwidth,
plus a fixed launch cost (about 3 us from Python, about 1 us replayed in a CUDA graph). Bytes: every
tensor argument counted once at its full size (the small per-layout tensors included), except
``centre_partials_kernel``, which reads the features twice (its second sweep may hit L2), and
``gather_rows_kernel`` and ``select_rows_kernel`` (the selection with the gather fused), which
read and write only the kept rows. Serial loops inside a program
are not in the model (the per-video and per-frame loops of the small kernels: their launch cost
dominates).
Calls: those of ``bench_stages.py`` (every function of the backend contract: select_channels with
validation, token_scores, frame_budgets, select_tokens in budget and exact mode, gather_rows,
DyCoke's similarity), ``select_tokens`` gathering the features as the pipeline does; VidCom2's
total is budget mode's four, or exact mode's.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from bench_stages import stage_calls  # noqa: E402
from results_md import update_section  # noqa: E402
from shapes import SHAPES  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from vidcom2_kernels.backends import triton_backend  # noqa: E402
from vidcom2_kernels.layout import parse_frames  # noqa: E402

DEFAULT_SHAPES = ("llava-ov", "qwen-batch8", "long")


class Recorder:
    """Intercepts kernel launches (compiled, or interpreted under ``TRITON_INTERPRET=1``): records
    (kernel, grid, tensor arguments) instead of launching."""

    CLASSES = (JITFunction, InterpretedFunction)

    def __init__(self):
        self.launches = []

    def __enter__(self):
        self._runs = [cls.run for cls in self.CLASSES]
        recorder = self

        def run(fn, *args, grid, warmup, **kwargs):
            grid = grid(kwargs) if callable(grid) else grid
            tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
            name = getattr(fn, "__name__", None) or fn.fn.__name__
            recorder.launches.append((name, tuple(int(g) for g in grid), tensors))

        for cls in self.CLASSES:
            cls.run = run
        return self

    def __exit__(self, *exc):
        for cls, original in zip(self.CLASSES, self._runs):
            cls.run = original


def launch_bytes(name: str, tensors: list, features: torch.Tensor) -> int:
    nbytes = lambda t: t.numel() * t.element_size()  # noqa: E731
    unique = {(t.data_ptr(), nbytes(t)): t for t in tensors}.values()  # unused launch slots repeat a tensor
    total = sum(nbytes(t) for t in unique)
    if name == "centre_partials_kernel":
        total += nbytes(features)
    src = sum(nbytes(t) for t in unique if t.data_ptr() == features.data_ptr())
    dst = sum(
        nbytes(t) for t in unique if t.dim() == 2 and t.dtype == features.dtype and t.data_ptr() != features.data_ptr()
    )
    if name in ("gather_rows_kernel", "select_rows_kernel"):  # the features read at the kept rows only
        total += dst - src
    return total


def record(name: str, dtype: torch.dtype):
    """{call: [(kernel, grid, bytes)]} of the triton backend's calls at shape ``name``: the calls
    of ``bench_stages.py`` (their inputs made by the torch backend, on zeros)."""
    frames, C = SHAPES[name]
    N = sum(f * t for f, t in frames)
    x = torch.zeros((N, C), dtype=dtype)
    out = OrderedDict()
    for call, fn in stage_calls(triton_backend, x, parse_frames(frames, N)).items():
        with Recorder() as r:
            fn()
        out[call] = [(k, g, launch_bytes(k, t, x)) for k, g, t in r.launches]
    return out, x


def estimate_us(nbytes: int, programs: int, args) -> float:
    fill = min(1.0, programs / (2 * args.sms))
    return args.launch_us + nbytes / (args.bandwidth_tbps * 1e12 * fill) * 1e6


def table(name: str, dtype: torch.dtype, args) -> list[str]:
    calls, x = record(name, dtype)
    frames, C = SHAPES[name]
    shape = " + ".join(f"{f}x{t}" for f, t in frames) + f" x {C}"
    floor_us = 2 * x.numel() * x.element_size() / (args.bandwidth_tbps * 1e12) * 1e6
    lines = [
        f"#### {name} ({shape}, {str(dtype).replace('torch.', '')}); features {x.numel() * x.element_size() / 1e6:.1f} MB, "
        f"one read {floor_us / 2:.1f} us at {args.bandwidth_tbps} TB/s",
        "",
        "| call | kernel | grid | programs | programs / SM | MB moved | est. us |",
        "|---|---|---|---|---|---|---|",
    ]
    totals = {}
    for call, launches in calls.items():
        for kernel, grid, nbytes in launches:
            programs = math.prod(grid)
            us = estimate_us(nbytes, programs, args)
            totals[call] = totals.get(call, 0.0) + us
            lines.append(
                f"| {call} | {kernel} | {grid} | {programs} | {programs / args.sms:.1f} "
                f"| {nbytes / 1e6:.2f} | {us:.1f} |"
            )
    budget = sum(totals[c] for c in ("select_channels", "token_scores", "frame_budgets", "select_tokens"))
    exact = budget - totals["select_tokens"] + totals["select_tokens exact"]
    gather = 2 * int(sum(f * t for f, t in frames) * 0.25) * C * x.element_size()
    floor = (3 * x.numel() * x.element_size() + gather) / (args.bandwidth_tbps * 1e12) * 1e6
    lines += [
        "",
        f"VidCom2 estimate: {budget:.1f} us in budget mode, {exact:.1f} us in exact mode; the algorithm's "
        f"floor (three reads of the features and the gather, no launch cost) {floor:.1f} us.",
        "",
    ]
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES))
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--bandwidth-tbps", type=float, default=3.35, help="HBM bandwidth (H100 SXM: 3.35)")
    ap.add_argument("--sms", type=int, default=132, help="streaming multiprocessors (H100 SXM: 132)")
    ap.add_argument("--launch-us", type=float, default=3.0)
    ap.add_argument("--results", default=None, help="write the tables into this RESULTS.md")
    args = ap.parse_args(argv)
    lines = [
        f"### Triton kernels on paper: {args.sms} SMs, {args.bandwidth_tbps} TB/s, {args.launch_us} us a launch: "
        f"`python bench/kernel_traffic.py`",
        "",
    ]
    for name in args.shapes:
        lines += table(name, getattr(torch, args.dtype), args)
    print("\n".join(lines))
    if args.results:
        update_section(args.results, "kernel_traffic", lines)


if __name__ == "__main__":
    main()
