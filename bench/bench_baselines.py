"""The torch backend against the floor and the alternatives on the CPU (issue 13's table).

    python bench/bench_baselines.py [--cases llava-ov:float32 qwen2-vl:bfloat16 ...] [--rounds 9]
                                    [--no-compile] [--no-rss] [--csv F] [--results bench/RESULTS.md]

Per case (a shape of ``bench/shapes.py`` and a dtype) it times, in alternated rounds (each round
calls every implementation once, the order rotated by one each round) after one warm-up call:
the probe (two reads and the gather, :func:`baselines.probe`), ``vk.compress`` on the torch
backend (defaults: budget mode, validation on), ``torch.compile`` of the naive float32 code, the
released code's shape and vLLM's port (``bench/baselines.py``). Reported: medians in ms, the
floor (two reads of the features plus the gather at the read bandwidth measured by ``x.sum()``),
the torch backend's ratio to the probe and the compiled code's ratio to the torch backend, the
minor page faults of one torch-backend call and one probe call (medians; the probe's are the
output's own) and, measured in a fresh process per
implementation, the peak RSS above the input after two calls. ``--cases smoke:float32
--rounds 1 --no-compile --no-rss`` runs in seconds (CI does).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from baselines import naive, naive_mask, probe, released_shape, vllm_port  # noqa: E402
from results_md import update_section, write_csv  # noqa: E402
from shapes import SHAPES, features  # noqa: E402

import vidcom2_kernels as vk  # noqa: E402

#: issue 13's rows
CASES = (
    "llava-ov:float32",
    "llava-ov:bfloat16",
    "qwen2-vl:bfloat16",
    "llava-video:bfloat16",
    "mixed4:bfloat16",
    "long:bfloat16",
)
RETENTION = 0.25
IMPLS = ("probe", "torch", "compiled", "released", "vllm")


def implementations(compile_naive: bool, only=None) -> dict:
    impls = {
        "probe": probe,
        "torch": lambda x, frames, r: vk.compress(x, frames, r, backend="torch").features,
        "released": released_shape,
        "vllm": vllm_port,
    }
    if compile_naive:
        compiled = torch.compile(naive_mask)
        impls["compiled"] = lambda x, frames, r: naive(x, frames, r, mask_fn=compiled)
    return {k: v for k, v in impls.items() if only is None or k in only}


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def read_bandwidth(x: torch.Tensor, rounds: int = 7) -> float:
    """Bytes per second of ``x.sum()`` (median)."""
    x.sum()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t0)
    return x.numel() * x.element_size() / statistics.median(times)


def run_case(name: str, dtype: torch.dtype, impls: dict, rounds: int) -> dict:
    frames = SHAPES[name][0]
    x = features(name, dtype)
    bandwidth = read_bandwidth(x)
    kept_rows = sum(f * t for f, t in frames) * RETENTION
    floor_bytes = (2 * x.numel() + 2 * kept_rows * x.shape[1]) * x.element_size()  # two reads + gather (read, write)
    names = list(impls)
    for impl in names:  # warm-up (compiles, caches)
        impls[impl](x, frames, RETENTION)
    times = {impl: [] for impl in names}
    faults = {impl: [] for impl in ("torch", "probe") if impl in impls}
    for r in range(rounds):
        for impl in names[r % len(names) :] + names[: r % len(names)]:
            f0, t0 = minor_faults(), time.perf_counter()
            impls[impl](x, frames, RETENTION)
            times[impl].append(time.perf_counter() - t0)
            if impl in faults:
                faults[impl].append(minor_faults() - f0)
    row = {
        "shape": name,
        "dtype": str(dtype).replace("torch.", ""),
        "elements": x.numel(),
        "read_GBps": round(bandwidth / 1e9, 1),
        "floor_ms": round(floor_bytes / bandwidth * 1e3, 2),
        **{f"{impl}_faults": int(statistics.median(f)) for impl, f in faults.items()},
    }
    for impl in IMPLS:
        row[f"{impl}_ms"] = round(statistics.median(times[impl]) * 1e3, 2) if impl in times else ""
    return row


CHILD = r"""
import json, sys
sys.path[:0] = sys.argv[1:3]
import torch, bench_baselines as b
from shapes import features
name, dtype, impl = sys.argv[3], getattr(torch, sys.argv[4]), sys.argv[5]
x = features(name, dtype)
frames = b.SHAPES[name][0]
fn = b.implementations(False)[impl]
before = b.rss_mb("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the current RSS
fn(x, frames, b.RETENTION); fn(x, frames, b.RETENTION)
print(json.dumps(b.rss_mb("VmHWM") - before))
"""


def rss_mb(key: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak) of this process, MB, from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def peak_rss_mb(name: str, dtype: str, impl: str) -> float:
    """Peak resident memory above what the process held before two calls (the input, torch), MB,
    in a fresh process (Linux: the peak is reset through /proc/self/clear_refs)."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, here, os.path.dirname(here), name, dtype, impl],
        check=True,
        capture_output=True,
        text=True,
    )
    return round(json.loads(out.stdout.strip().splitlines()[-1]), 1)


def ratio(row: dict, a: str, b: str) -> str:
    return f"{row[a] / row[b]:.1f}x" if row[a] != "" and row[b] not in ("", 0) else "n/a"


def table(rows: list[dict], rounds: int) -> list[str]:
    device = f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    lines = [
        f"### {device}, torch {torch.__version__}, {rounds} alternated rounds: `python bench/bench_baselines.py`",
        "",
        "| shape x channels | dtype | floor | probe | torch backend (ns / element) | torch / probe | compiled naive "
        "| compiled / torch | released shape | vLLM port | page faults a call: torch, probe "
        "| peak RSS above input (MB): torch, probe |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        frames, C = SHAPES[r["shape"]]
        shape = " + ".join(f"{f}x{t}" for f, t in frames) + f" x {C}"
        lines.append(
            f"| {r['shape']} ({shape}) | {r['dtype']} | {r['floor_ms']} | {r['probe_ms']} "
            f"| {r['torch_ms']} ({r['torch_ms'] * 1e6 / r['elements']:.2f}) "
            f"| {ratio(r, 'torch_ms', 'probe_ms')} | {r['compiled_ms'] or 'n/a'} | {ratio(r, 'compiled_ms', 'torch_ms')} "
            f"| {r['released_ms'] or 'n/a'} | {r['vllm_ms'] or 'n/a'} | {r.get('torch_faults', 'n/a')}, {r.get('probe_faults', 'n/a')} "
            f"| {r.get('torch_rss_mb', 'n/a')}, {r.get('probe_rss_mb', 'n/a')} |"
        )
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), help="shape:dtype pairs")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile of the naive code")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS processes")
    ap.add_argument("--impls", nargs="+", choices=IMPLS, default=None, help="time only these")
    ap.add_argument("--key", default="bench_baselines cpu", help="the RESULTS.md section to write")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--results", default=None, help="write the table into this RESULTS.md")
    args = ap.parse_args(argv)
    impls = implementations(not args.no_compile, args.impls)
    rows = []
    for case in args.cases:
        name, dtype = case.split(":")
        row = run_case(name, getattr(torch, dtype), impls, args.rounds)
        if not args.no_rss:
            for impl in (
                ("torch", "probe") if args.impls is None else [i for i in ("torch", "probe") if i in args.impls]
            ):
                row[f"{impl}_rss_mb"] = peak_rss_mb(name, dtype, impl)
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = table(rows, args.rounds)
    print("\n".join(lines))
    if args.csv:
        write_csv(args.csv, rows)
    if args.results:
        update_section(args.results, args.key, lines)


if __name__ == "__main__":
    main()
