"""Compile every Triton kernel ahead of time for real GPUs (no GPU needed) and report resources.

For each kernel, at the launch configurations the host heuristics pick for realistic shapes, and
for each architecture (sm_80, sm_90), this compiles with ``triton.compile`` + ``GPUTarget`` and
reads registers, stack frame and shared memory off the cubin with the ``cuobjdump`` shipped
inside Triton's package, and spill stores/loads from that package's ``ptxas -v`` on the PTX. One line per kernel, config and arch.

Exit status: 1 when any compile fails or any kernel spills, else 0.

    python bench/aot_report.py [--arch 80 90] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import triton  # noqa: E402
from shapes import AOT, SHAPES  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from vidcom2_kernels.layout import VideoLayout  # noqa: E402
from vidcom2_kernels.methods.fastvid import kernels as fastvid  # noqa: E402
from vidcom2_kernels.methods.holitom import kernels as holitom  # noqa: E402
from vidcom2_kernels.methods.visionzip.kernels import density_config, density_kernel  # noqa: E402
from vidcom2_kernels.methods.visionzip.plan import DEFAULTS  # noqa: E402
from vidcom2_kernels.ops import (  # noqa: E402
    attention_row,
    centres,
    dycoke_similarity,
    frame_budgets,
    gather_rows,
    select_channels,
    select_tokens,
    token_scores,
)

FEATURE_DTYPES = ("bf16", "fp16", "fp32")


def _signature(fn, types: dict, constexprs: dict) -> dict:
    """Every argument of ``fn``: its type from ``types``, 'constexpr' for ``constexprs``,
    pointers default to int64 and scalars to i32."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in types:
            sig[name] = types[name]
        else:
            sig[name] = "*i64" if name.endswith("_ptr") else "i32"
    return sig


def _variants(layout: VideoLayout, C: int):
    """Yield (kernel, label, types, constexprs, num_warps, options) for one shape."""

    def split(cfg):
        cfg = dict(cfg)
        return cfg.pop("num_warps"), cfg

    units = centres.max_units_per_frame(layout)
    select_cfg = select_tokens.select_config(layout)
    for dt in FEATURE_DTYPES:
        x = {"x_ptr": f"*{dt}", "keep_ptr": "*i1", "stride_c": "constexpr"}
        w, cfg = split(select_channels.variance_config(C))
        moments = {"mean_ptr": "*fp32", "m2_ptr": "*fp32", "flag_ptr": "*i32", "max_abs": "i64"}
        yield select_channels.channel_variance_kernel, dt, {**x, **moments}, {**cfg, "stride_c": 1}, w, {}
        w, cfg = split(centres.partials_config(C))
        fp = {"inv_norm_ptr": "*fp32", "self_dot_ptr": "*fp32", "partial_ptr": "*fp32", "eps": "fp32"}
        yield centres.centre_partials_kernel, dt, {**x, **fp}, {**cfg, "stride_c": 1}, w, {}
        w, cfg = split(token_scores.scores_config(C, units))
        fp = {
            n: "*fp32"
            for n in (
                "inv_norm_ptr",
                "self_dot_ptr",
                "frame_centre_ptr",
                "video_centre_ptr",
                "score_ptr",
                "unit_sv_ptr",
                "uniqueness_ptr",
            )
        }
        fp["arrivals_ptr"] = "*i32"
        yield token_scores.token_scores_kernel, dt, {**x, **fp}, {**cfg, "stride_c": 1}, w, {}
        w, cfg = split(dycoke_similarity.similarity_config(C))
        yield (
            dycoke_similarity.dycoke_similarity_kernel,
            dt,
            {**x, "score_ptr": "*fp32", "eps": "fp32"},
            {**cfg, "stride_c": 1},
            w,
            {},
        )
        w, cfg = split(density_config(C, DEFAULTS["k_neighbors"] + 1))
        fp = {"dominant_ptr": "*i8", "score_ptr": "*fp32", "eps": "fp32"}
        yield density_kernel, dt, {**x, **fp}, {**cfg, "stride_c": 1}, w, {}
        w, cfg = split(fastvid.stats_config(C))
        fp = {"score_ptr": "*fp32", "partial_ptr": "*fp32", "max_abs": "fp32"}
        yield fastvid.frame_stats_kernel, dt, {**x, **fp}, {**cfg, "stride_c": 1}, w, {}
        w, cfg = split(fastvid.distance_config(C))
        fp = {"rest_ptr": "*i8", "d2_ptr": "*fp32", "density_ptr": "*fp32", "bad_ptr": "*i32", "inv_c": "fp32"}
        yield fastvid.dpc_distance_kernel, dt, {**x, **fp}, {**cfg, "stride_c": 1}, w, {}
        w, cfg = split(fastvid.assign_config(C))
        fp = {"joins_ptr": "*i8", "eps": "fp32"}
        yield fastvid.assign_kernel, dt, {**x, **fp}, {**cfg, "stride_c": 1}, w, {}
        w, cfg = split(fastvid.merge_config(C))
        fp = {"out_ptr": f"*{dt}", "merged_ptr": "*i1", "beta": "fp32"}
        yield fastvid.merge_kernel, dt, {**x, **fp}, {**cfg, "stride_c": 1}, w, {}
        w, cfg = split(holitom.cosines_config(C))
        fp = {"score_ptr": "*fp32", "cosine_ptr": "*fp32", "eps": "fp32", "max_abs": "fp32"}
        yield holitom.token_cosines_kernel, dt, {**x, **fp}, {**cfg, "stride_c": 1}, w, {}
        w, cfg = split(gather_rows.gather_config(C))
        one = {"idx_ptr": "*i64", **{f"src{i}": f"*{dt}" for i in range(4)}, **{f"dst{i}": f"*{dt}" for i in range(4)}}
        ones = {f"sc{i}": 1 for i in range(4)}
        for num in (1, 4):
            yield gather_rows.gather_rows_kernel, f"{dt} x{num}", one, {**cfg, **ones, "NUM": num}, w, {}
        w, cfg = split(select_cfg)
        rows = {"score_ptr": "*fp32", "mask_ptr": "*i1", **{f"s{i}": f"*{dt}" for i in range(4)}}
        rows.update({f"d{i}": f"*{dt}" for i in range(4)})
        _, chunk, block_c, _, _ = select_tokens.copy_plan(layout, [torch.empty(0, C)])
        for num in (1, 4):
            for exact in (False, True):
                for in_registers in (True, False):  # frames that fit one block, and wider ones
                    flags = {
                        "NUM": num,
                        "EXACT": exact,
                        "IN_REGISTERS": in_registers,
                        **{f"sc{i}": 1 for i in range(4)},
                    }
                    flags.update(BLOCK=cfg["BLOCK"], BLOCK_F=frame_budgets.frame_budgets_config(layout)["BLOCK_F"])
                    label = f"{dt} x{num} exact={int(exact)} reg={int(in_registers)}"
                    yield (
                        select_tokens.select_rows_kernel,
                        label,
                        rows,
                        {**flags, "CHUNK": chunk, "BLOCK_C": block_c},
                        w,
                        {},
                    )

    w, cfg = split(holitom.runs_config(int(layout.frame_tokens.max(initial=1))))
    yield holitom.static_runs_kernel, "", {"cosine_ptr": "*fp32", "run_ptr": "*fp32", "tau": "fp32"}, cfg, w, {}
    w, cfg = split(fastvid.similarity_config(C))
    fp = {"partial_ptr": "*fp32", "similarity_ptr": "*fp32", "eps": "fp32"}
    yield fastvid.frame_similarity_kernel, "", fp, cfg, w, {}
    w, cfg = split(fastvid.distance_config(C))
    fp = {n: "*fp32" for n in ("d2_ptr", "density_ptr", "delta_ptr", "frame_max_ptr")}
    delta_cfg = {"BLOCK_M": cfg["BLOCK_M"], "BLOCK_N": cfg["BLOCK_N"]}
    yield fastvid.dpc_delta_kernel, "", {**fp, "rest_ptr": "*i8"}, delta_cfg, w, {}
    w, cfg = split(select_channels.keep_config(C))
    fp = {"mean_ptr": "*fp32", "m2_ptr": "*fp32", "var_ptr": "*fp32", "flag_ptr": "*i32", "keep_ptr": "*i1"}
    yield select_channels.channel_keep_kernel, "", fp, cfg, w, {}
    w, cfg = split(centres.centres_config(C, units))
    fp = {"partial_ptr": "*fp32", "frame_centre_ptr": "*fp32", "video_centre_ptr": "*fp32", "arrivals_ptr": "*i32"}
    yield centres.centres_kernel, "", fp, cfg, w, {}
    w, cfg = split(frame_budgets.frame_budgets_config(layout))
    fp = {"uniqueness_ptr": "*fp32", "retention_ptr": "*fp64", "temperature": "fp32"}
    yield frame_budgets.frame_budgets_kernel, "", fp, cfg, w, {"enable_fp_fusion": False}
    w, cfg = split(select_cfg)
    for in_registers in (True, False):
        flags = {"BLOCK": cfg["BLOCK"], "IN_REGISTERS": in_registers}
        types = {"score_ptr": "*fp32", "hist_ptr": "*i32"}
        yield select_tokens.frame_threshold_kernel, f"reg={int(in_registers)}", types, flags, w, {}
    w, cfg = split(select_tokens.reconcile_config(layout))
    for p in range(select_tokens.RADIX_PASSES):
        count = {"score_ptr": "*fp32", "hist_ptr": "*i32"}
        yield select_tokens.reconcile_count_kernel, f"pass={p}", count, {**cfg, "PASS": p}, w, {}
    yield select_tokens.reconcile_frames_kernel, "", {"score_ptr": "*fp32", "hist_ptr": "*i32"}, cfg, w, {}
    for dt in ("bf16", "fp16"):  # decode-time attention row, head dim 128 (Qwen2-VL-7B, LLaVA-OV-7B)
        w, cfg = split(attention_row.row_config(128))
        types = {
            "q_ptr": f"*{dt}",
            "k_ptr": f"*{dt}",
            "valid_ptr": "*i8",
            "out_ptr": "*fp32",
            "scale": "fp32",
            "inv_heads": "fp32",
            "D": "i32",
        }
        yield attention_row.attention_row_kernel, dt, types, cfg, w, {}


RESOURCE = re.compile(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def _resources(compiled, arch: int) -> dict:
    """Registers, stack and shared memory from cuobjdump on the cubin; spill bytes from ptxas -v
    on the PTX (a stack frame alone can be a call's ABI frame, not a spill)."""
    with tempfile.TemporaryDirectory() as d:
        cubin, ptx = os.path.join(d, "k.cubin"), os.path.join(d, "k.ptx")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        out = subprocess.run(
            [os.path.join(BIN, "cuobjdump"), "--dump-resource-usage", cubin], capture_output=True, text=True, check=True
        ).stdout
        suffix = "a" if arch >= 90 else ""
        verbose = None
        for ptxas in ("ptxas", "ptxas-blackwell"):  # Triton ships two; use the one that reads this PTX
            path = os.path.join(BIN, ptxas)
            if os.path.exists(path):
                verbose = subprocess.run(
                    [path, "-v", f"--gpu-name=sm_{arch}{suffix}", ptx, "-o", os.path.join(d, "v.cubin")],
                    capture_output=True,
                    text=True,
                )
                if verbose.returncode == 0:
                    break
        if verbose is None or verbose.returncode != 0:
            raise RuntimeError(f"no ptxas in {BIN} assembled the PTX: {verbose and verbose.stderr[:300]}")
    m = RESOURCE.search(out)
    s = SPILLS.search(verbose.stdout + verbose.stderr)
    if m is None or s is None:
        raise RuntimeError(f"could not parse resource usage:\n{out}\n{verbose.stderr}")
    return {
        "regs": int(m[2]),
        "stack": int(m[3]),
        "shared": int(m[4]),
        "local": int(m[5]),
        "spill": int(s[1]) + int(s[2]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    parser.add_argument("--csv", default=None, help="also write the table as CSV")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

    seen, rows, failures = set(), [], 0
    for name in AOT:  # the shapes the launch configurations are picked for
        frames, C = SHAPES[name]
        layout = VideoLayout.from_pairs(frames)
        for fn, label, types, constexprs, warps, options in _variants(layout, C):
            key = (fn.__name__, label, tuple(sorted(constexprs.items())), warps)
            if key in seen:
                continue
            seen.add(key)
            config = (
                " ".join(f"{k}={v}" for k, v in constexprs.items() if not k.startswith(("stride", "sc")))
                + f" warps={warps}"
            )
            for arch in args.arch:
                start = time.perf_counter()
                try:
                    src = ASTSource(fn, _signature(fn, types, constexprs), constexprs=constexprs)
                    target = GPUTarget("cuda", arch, 32)
                    compiled = triton.compile(src, target=target, options={"num_warps": warps, **options})
                    res = _resources(compiled, arch)
                    status = "SPILL" if res["spill"] or res["local"] else "ok"
                except Exception as exc:  # report every failure, then exit non-zero
                    res, status = (
                        {"regs": -1, "stack": -1, "shared": -1, "local": -1, "spill": -1},
                        f"FAIL {type(exc).__name__}: {exc}",
                    )
                failures += status != "ok"
                secs = time.perf_counter() - start
                rows.append(
                    (
                        fn.__name__,
                        label,
                        config,
                        f"sm_{arch}",
                        res["regs"],
                        res["spill"],
                        res["stack"],
                        res["shared"],
                        status,
                    )
                )
                print(
                    f"{fn.__name__:28s} {label:22s} {config:58s} sm_{arch}  regs={res['regs']:3d} "
                    f"spill={res['spill']}B stack={res['stack']}B smem={res['shared']:6d}B  {status}  ({secs:.1f}s)",
                    flush=True,
                )
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("kernel,variant,config,arch,registers,spill_bytes,stack_bytes,shared_bytes,status\n")
            for r in rows:
                f.write(",".join(str(c) for c in r) + "\n")
    print(f"{len(rows)} compiles, {failures} failed or spilled; triton {triton.__version__}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
