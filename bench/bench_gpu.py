"""GPU benchmark: reference, torch.compile of the reference, torch backend, triton backend.

    python bench/bench_gpu.py [--shapes NAME ...] (bench/shapes.py; default: its GPU list) [--csv out.csv]
                              [--results bench/RESULTS.md]

Per shape and method: median time of a whole ``compress`` call over CUDA events (after warm-up,
rotating between input copies so the L2 cache does not hold the features), effective GB/s (one read
of the features plus the gather's read and write, over the time), that floor over the device's
measured copy bandwidth, peak extra memory, and host reads per call. Writes a CSV with the device
name and a summary table into ``bench/RESULTS.md`` (between markers, replacing an older one for the
same device). ``--device cpu`` runs a tiny smoke version anywhere (no numbers worth keeping).

CUDA graphs: every sized path makes no host read and has static shapes, so it is captured once
and replayed (:func:`capture`): VidCom2 in exact mode (triton and torch backends), DyCoke, and a
DyCoke KV-pruning step (the attention row and the selection of one decoding step). The rows "...,
CUDA graph" time the replay (copying each new input into the captured buffer) after checking that
a replay on a fresh input returns what an eager call returns. Each sized path also runs once under
``torch.cuda.set_sync_debug_mode("error")`` (:func:`assert_no_sync`): a host sync raises.

vLLM: where vLLM is installed, one-video shapes also get vLLM's own VidCom2 mask function and the
plugin's (:func:`vllm_methods`).
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
import shapes as shapes_module  # noqa: E402
import torch  # noqa: E402
from results_md import update_section, write_csv  # noqa: E402
from shapes import GPU, SHAPES  # noqa: E402

import vidcom2_kernels as vk  # noqa: E402
from vidcom2_kernels import reference  # noqa: E402
from vidcom2_kernels.backends import REGISTRY  # noqa: E402
from vidcom2_kernels.layout import parse_frames  # noqa: E402
from vidcom2_kernels.testing import HostReadCounter  # noqa: E402

try:  # the vLLM plugin's mask against vLLM's own, where vLLM is installed
    from vllm.multimodal.video_prune import vidcom2 as vllm_vidcom2  # noqa: E402

    from vidcom2_kernels.integrations import vllm as vllm_plugin  # noqa: E402
except ImportError:
    vllm_vidcom2 = None


def copy_bandwidth(device) -> float:
    """Bytes per second of a large device-to-device copy (read + write counted)."""
    if device.type != "cuda":
        return float("nan")
    src = torch.empty(1 << 28, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * src.numel() * 4 / statistics.median(times[2:])


def time_call(fn, inputs, device, repeats: int) -> float:
    """Median seconds of ``fn(x)``, cycling through ``inputs``."""
    for x in inputs[:2]:
        fn(x)
    times = []
    for i in range(repeats):
        x = inputs[i % len(inputs)]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def methods(frames):
    def eager(x):
        return reference.compress(x, frames, 0.25)

    compiled = torch.compile(eager, dynamic=False)
    return {
        "reference": eager,
        "reference+torch.compile": compiled,
        "torch": lambda x: vk.compress(x, frames, 0.25, backend="torch"),
        "triton": lambda x: vk.compress(x, frames, 0.25, backend="triton"),
        "triton exact": lambda x: vk.compress(x, frames, 0.25, backend="triton", exact=True, validate=False),
        "dycoke reference": lambda x: reference.compress(x, frames, 0.3, method="dycoke"),
        "dycoke torch": lambda x: vk.compress(x, frames, 0.3, backend="torch", method="dycoke"),
        "dycoke triton": lambda x: vk.compress(x, frames, 0.3, backend="triton", method="dycoke", validate=False),
    }


def vllm_methods(frames):
    """vLLM's own VidCom2 mask and the plugin's (``bench/bench_vllm.py``'s comparison), for
    one-video shapes when vLLM is installed: the grid (F, 2, 2T) with merge 2 gives T tokens per
    frame; q = 0.75 (retention 0.25). Their rows' floor is compress()'s (they skip the gather)."""
    if vllm_vidcom2 is None or len(frames) != 1:
        return {}
    vllm_plugin.register()
    theirs = vllm_plugin._state["vllm_mask"]
    if theirs is None:  # VIDCOM2_VLLM=0
        return {}
    ((F, T),) = frames
    grid = (F, 2, 2 * T)
    return {
        "vllm mask (vLLM's own)": lambda x: theirs(x, grid, 2, 0.75),
        "vllm mask (plugin)": lambda x: vllm_plugin.retention_mask(x, grid, 2, 0.75),
    }


def sized_paths(frames, N: int, device, dtype) -> dict:
    """name -> call(x) of the paths whose output size the host knows (no host read)."""
    H, Hkv, D, S = 28, 4, 128, N + 200  # a decoding step over N visual keys and 200 text keys (Qwen2-VL-7B)
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, H, D, device=device, dtype=dtype, generator=g)
    k = torch.randn(1, Hkv, S, D, device=device, dtype=dtype, generator=g)
    valid = torch.ones(1, S, dtype=torch.bool, device=device)
    step_layout = parse_frames([(1, N)], N)
    targets = np.array([max(1, int(0.3 * N))], dtype=np.int64)
    targets_t = torch.as_tensor(targets, device=device)
    triton_backend = REGISTRY["triton"]

    def kv_step(x):  # what a KV-pruning layer runs at a decoding step (kv_prune.KVPrune.update)
        att = triton_backend.attention_row(q, k, valid, D**-0.5)
        return triton_backend.select_tokens(-att[0, :N], step_layout, targets_t, None, int(targets.sum())).mask

    return {
        "triton exact": lambda x: vk.compress(x, frames, 0.25, backend="triton", exact=True, validate=False),
        "torch exact": lambda x: vk.compress(x, frames, 0.25, backend="torch", exact=True, validate=False),
        "dycoke triton": lambda x: vk.compress(x, frames, 0.3, backend="triton", method="dycoke", validate=False),
        "kv-prune step triton": kv_step,
    }


def capture(call, example: torch.Tensor):
    """``call`` on ``example``'s shape captured in a CUDA graph. Returns ``replay(x)`` (x is copied
    into the captured input; the result's tensors are the graph's static outputs, overwritten by
    the next replay)."""
    static_x = example.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: compiles kernels, fills the layout caches
        for _ in range(3):
            call(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = call(static_x)

    def replay(x):
        static_x.copy_(x)
        graph.replay()
        return static_out

    return replay


def same_result(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return torch.equal(a.indices, b.indices) and torch.equal(a.features, b.features) and torch.equal(a.mask, b.mask)


def check_replay(name: str, replay, call, x: torch.Tensor) -> None:
    """A replay on a fresh input returns the eager call's result."""
    eager = call(x)
    got = replay(x)
    torch.cuda.synchronize()
    if not same_result(got, eager):
        raise AssertionError(f"{name}: CUDA graph replay differs from the eager call")


def assert_no_sync(name: str, call, x: torch.Tensor) -> None:
    """``call(x)`` (warm) under ``set_sync_debug_mode("error")``: any host sync raises."""
    call(x)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        call(x)
    except RuntimeError as exc:
        raise AssertionError(f"{name} synchronised with the host: {exc}") from exc
    finally:
        torch.cuda.set_sync_debug_mode(0)


def run(shapes, device, dtype, repeats, copies):
    bw = copy_bandwidth(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for shape in shapes:
        frames, C = SHAPES[shape]
        N = sum(f * t for f, t in frames)
        inputs = [shapes_module.features(shape, dtype, device, seed=i) for i in range(copies)]
        K = int(vk.compress(inputs[0], frames, 0.25, backend="torch").counts.sum())
        elt = inputs[0].element_size()
        floor_bytes = N * C * elt + 2 * K * C * elt
        cases = {**methods(frames), **vllm_methods(frames)}
        if device.type == "cuda":
            for path, call in sized_paths(frames, N, device, dtype).items():
                assert_no_sync(path, call, inputs[0])
                replay = capture(call, inputs[0])
                check_replay(path, replay, call, inputs[-1])
                cases.setdefault(path, call)
                cases[f"{path}, CUDA graph"] = replay
        for method, fn in cases.items():
            if "triton" in method and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
                continue
            try:
                secs = time_call(fn, inputs, device, repeats)
            except Exception as exc:  # torch.compile of the reference may not compile
                print(f"{shape:12s} {method:24s} failed: {type(exc).__name__}: {str(exc)[:120]}")
                rows.append(dict(device=name, shape=shape, method=method, ms=float("nan"), note=type(exc).__name__))
                continue
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            with HostReadCounter() as reads:
                fn(inputs[0])
            peak_mb = (
                (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else float("nan")
            )
            row = dict(
                device=name,
                shape=shape,
                method=method,
                tokens=N,
                channels=C,
                kept=K,
                ms=secs * 1e3,
                gbps=floor_bytes / secs / 1e9,
                floor_ms=floor_bytes / bw * 1e3,
                peak_extra_mb=peak_mb,
                host_reads=reads.total,
                note="",
            )
            row["x_floor"] = row["ms"] / row["floor_ms"]
            rows.append(row)
            print(
                f"{shape:12s} {method:24s} {row['ms']:9.3f} ms  {row['gbps']:7.1f} GB/s  "
                f"floor {row['floor_ms']:.3f} ms (x{row['x_floor']:.1f})  peak +{peak_mb:.0f} MB  reads {reads.total}",
                flush=True,
            )
    return name, bw, rows


def write_outputs(name, bw, rows, csv_path, results_path):
    keys = [
        "device",
        "shape",
        "method",
        "tokens",
        "channels",
        "kept",
        "ms",
        "gbps",
        "floor_ms",
        "x_floor",
        "peak_extra_mb",
        "host_reads",
        "note",
    ]
    write_csv(csv_path, rows, keys)
    if not results_path:
        return
    lines = [
        f"### {name} (copy bandwidth {bw / 1e9:.0f} GB/s), `python bench/bench_gpu.py`",
        "",
        "| shape | method | median ms | GB/s | x floor | vs reference | peak extra MB | host reads |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ref_ms = {
        (r["shape"], r["method"].startswith("dycoke")): r["ms"] for r in rows if r["method"].endswith("reference")
    }
    for r in rows:
        base = ref_ms.get((r["shape"], r["method"].startswith("dycoke")), float("nan"))
        speed = base / r["ms"] if r["ms"] == r["ms"] else float("nan")
        lines.append(
            f"| {r['shape']} | {r['method']} | {r['ms']:.3f} | {r.get('gbps', float('nan')):.0f} | "
            f"{r.get('x_floor', float('nan')):.1f} | {speed:.1f}x | {r.get('peak_extra_mb', float('nan')):.0f} | "
            f"{r.get('host_reads', '')} |"
        )
    update_section(results_path, f"bench_gpu {name}", lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shapes", nargs="+", default=None)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--copies", type=int, default=4, help="input copies to rotate through (defeats L2)")
    p.add_argument("--csv", default="bench/results_gpu.csv")
    p.add_argument("--results", default="bench/RESULTS.md")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    shapes = args.shapes or (GPU if device.type == "cuda" else ("smoke",))
    name, bw, rows = run(
        shapes, device, getattr(torch, args.dtype), args.repeats if device.type == "cuda" else 3, args.copies
    )
    write_outputs(name, bw, rows, args.csv, args.results if device.type == "cuda" else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
