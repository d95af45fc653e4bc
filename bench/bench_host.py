"""Host time of one ``compress()`` call on a tiny input: what Python costs per call when the
device work is negligible (the GPU waits on the host below a few thousand tokens).

    python bench/bench_host.py [--rounds 7] [--calls 200] [--results bench/RESULTS.md]

Two measurements, alternated round by round (medians over rounds, spread min-max):
- ``torch``: the torch backend on CPU tensors (its Python plus a tiny amount of CPU work);
- ``triton host``: the triton backend's own host code on CPU tensors with every kernel launch
  counted instead of run (:class:`Skipped`): argument checks, the layout and request caches,
  output allocation, launch configurations. Triton's own launcher (its argument binding, a few us
  a launch in Python) is not in it: it is counted as the launches. The sized paths only
  (exact mode and DyCoke, ``validate=False``): budget mode's host read would read counts no
  recorded launch wrote (its host code is exact mode's with 5 fewer launches, plus that read).
The target the GPU path is held to is 150 us a call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TRITON_INTERPRET", "1")  # the triton backend on CPU tensors (its launches recorded)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from kernel_traffic import Recorder  # noqa: E402
from results_md import update_section  # noqa: E402

import vidcom2_kernels as vk  # noqa: E402

FRAMES = [(4, 16)]
TARGET_US = 150.0


class Skipped(Recorder):
    """Counts kernel launches and runs none (cheaper than recording their arguments)."""

    def __enter__(self):
        self._runs = [cls.run for cls in self.CLASSES]
        launches = self.launches

        def run(fn, *args, **kwargs):
            launches.append(fn)

        for cls in self.CLASSES:
            cls.run = run
        return self


def per_call_us(call, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e6


def cases(x: torch.Tensor) -> dict:
    def triton_host(**kwargs):
        def call():
            with Skipped() as rec:  # launches counted, not run: the host code alone
                vk.compress(x, FRAMES, 0.25, backend="triton", **kwargs)
            return rec

        return call

    return {
        "torch": lambda: vk.compress(x, FRAMES, 0.25, backend="torch"),
        "torch exact": lambda: vk.compress(x, FRAMES, 0.25, backend="torch", exact=True, validate=False),
        "triton host exact": triton_host(exact=True, validate=False),
        "triton host dycoke": triton_host(method="dycoke", validate=False),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--results", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x = torch.randn(sum(f * t for f, t in FRAMES), 32)
    calls = cases(x)
    for call in calls.values():  # warm-up: caches filled, the recorder's first use
        for _ in range(20):
            call()
    samples = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():  # alternated: drift hits every case alike
            samples[name].append(per_call_us(call, args.calls))
    lines = [
        f"### Host time a call, {FRAMES} x 32 float32 on the CPU: `python bench/bench_host.py` "
        f"({args.rounds} alternated rounds of {args.calls} calls; target {TARGET_US:.0f} us)",
        "",
        "| path | median us / call | min | max | launches recorded |",
        "|---|---|---|---|---|",
    ]
    for name, values in samples.items():
        launches = ""
        if name.startswith("triton"):
            launches = str(len(calls[name]().launches))
        lines.append(
            f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} | {launches} |"
        )
    print("\n".join(lines))
    if args.results:
        update_section(args.results, "bench_host", lines)


if __name__ == "__main__":
    main()
