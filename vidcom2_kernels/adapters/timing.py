"""Where the time of a ``generate()`` call goes, and how much memory a run peaks at: the one timing
record of the adapters (the ``apply_*`` handles, the lmms-eval launcher and ``bench/bench_e2e.py``).

A call is cut into four contiguous parts by marks taken while it runs (:class:`Timeline`):

- ``encoder_s``: inside the model's ``get_video_features`` (vision tower + merger / projector),
  wherever it runs: in the adapter's pruning step, or inside ``forward`` (no compression, or
  transformers < 5.18, where ``forward`` encodes the videos again);
- ``selection_s``: the pruning step minus its encoding (the selection, the prompt's repacking and
  the hand-over of the kept features); 0 without compression;
- ``prefill_s``: from there to the end of the forward pass(es) that consume the prompt (the
  generation set-up included, any encoding inside them excluded);
- ``decode_s``: from there to the end of the call (the decoding steps, and putting the caller's
  prompt rows back in front of the new tokens).

They add up to ``total_s``, the whole call (up to float rounding). On CUDA each mark is a CUDA event
recorded on the current stream (asynchronous: nothing waits for the GPU while the call runs); the
events are read after ``generate()`` returns, waiting on the last one, which is already done (the
decoding loop itself waits for each token). On the CPU each mark is ``time.perf_counter()``.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` of the model's device, reset when the run
starts; on the CPU the process's peak resident set (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` when the run starts where the kernel allows it, else the peak since the
process started). MB are MiB (2**20 bytes), as the released VidCom2 fork prints them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .patching import MISSING, saved_value

PARTS = ("encoder_s", "selection_s", "prefill_s", "decode_s")


@dataclass
class CallTiming:
    """One ``generate()`` call: seconds per part (they add up to ``total_s``) and its tokens.
    ``samples`` the caller's prompt rows; ``prompt_tokens`` the prompt tokens the language model
    prefilled (padding excluded); ``new_tokens`` per row up to and including its first
    end-of-sequence token, summed."""

    encoder_s: float
    selection_s: float
    prefill_s: float
    decode_s: float
    total_s: float
    samples: int
    prompt_tokens: int
    video_tokens_before: int
    video_tokens_after: int
    new_tokens: int


@dataclass
class RunTiming:
    """Totals over the calls of a run, and the run's peak memory. ``calls`` every timed
    ``generate()`` call; ``video_calls`` those with video."""

    calls: int = 0
    video_calls: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    video_tokens_before: int = 0
    video_tokens_after: int = 0
    new_tokens: int = 0
    encoder_s: float = 0.0
    selection_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    peak_mem_mb: float = 0.0

    def add(self, call: CallTiming, peak_mem_mb: float) -> None:
        self.calls += 1
        self.video_calls += call.video_tokens_before > 0
        for name, value in asdict(call).items():  # every field of a call is a total here
            setattr(self, name, getattr(self, name) + value)
        self.peak_mem_mb = max(self.peak_mem_mb, peak_mem_mb)

    def merged(self, other: "RunTiming") -> "RunTiming":
        """Both runs' totals (peak memory: the larger)."""
        out = RunTiming(**asdict(self))
        for name, value in asdict(other).items():
            setattr(out, name, max(value, out.peak_mem_mb) if name == "peak_mem_mb" else getattr(out, name) + value)
        return out

    def as_dict(self) -> dict:
        return asdict(self)


class Timeline:
    """The marks of one call, in order: ``(label, stamp)``, a CUDA event or a perf_counter value."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.thread = threading.get_ident()
        self.marks: list = []
        self.mark("start")

    def mark(self, label: str) -> None:
        if self.cuda:
            stamp = torch.cuda.Event(enable_timing=True)
            stamp.record(torch.cuda.current_stream(self.device))
        else:
            stamp = time.perf_counter()
        self.marks.append((label, stamp))

    def seconds(self) -> list:
        """``(label, seconds since "start")`` per mark; on CUDA waits for the last event first."""
        first = self.marks[0][1]
        if self.cuda:
            self.marks[-1][1].synchronize()
            return [(label, first.elapsed_time(stamp) / 1e3) for label, stamp in self.marks]
        return [(label, stamp - first) for label, stamp in self.marks]

    def parts(self) -> dict:
        """The four parts and ``total_s`` from the marks ``start``, ``encoder_start`` /
        ``encoder_end`` pairs, ``selected``, ``prefilled`` and ``end`` (a missing ``selected`` or
        ``prefilled`` is taken as the mark before it: that part is then 0)."""
        times = self.seconds()
        at = {label: t for label, t in times if label not in ("encoder_start", "encoder_end")}
        at.setdefault("selected", 0.0)
        at.setdefault("prefilled", at["end"])
        spans = [t for label, t in times if label in ("encoder_start", "encoder_end")]
        encoder = list(zip(spans[0::2], spans[1::2]))

        def without_encoder(a: float, b: float) -> float:
            inside = sum(max(0.0, min(e, b) - max(s, a)) for s, e in encoder)
            return max(0.0, b - a - inside)

        return {
            "encoder_s": sum(e - s for s, e in encoder),
            "selection_s": without_encoder(0.0, at["selected"]),
            "prefill_s": without_encoder(at["selected"], at["prefilled"]),
            "decode_s": without_encoder(at["prefilled"], at["end"]),
            "total_s": at["end"],
        }


class Stopwatch:
    """One handle's timing: the running :class:`Timeline` of each thread, the run's totals and
    the last call's record. Its totals change under a lock (calls may come from several threads)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.local = threading.local()
        self.lock = threading.Lock()
        self.run = RunTiming()
        self.last: Optional[CallTiming] = None
        reset_peak_memory(device)

    def begin(self) -> Timeline:
        self.local.timeline = Timeline(self.device)
        return self.local.timeline

    def current(self) -> Optional[Timeline]:
        """The timeline of the call running in this thread, or None."""
        return getattr(self.local, "timeline", None)

    def end(self) -> None:
        self.local.timeline = None

    def record(self, call: CallTiming) -> None:
        peak = peak_memory_mb(self.device)
        with self.lock:
            self.run.add(call, peak)
            self.last = call

    def reset(self) -> None:
        """Start a new run: zero totals, and reset the peak memory."""
        with self.lock:
            self.run, self.last = RunTiming(), None
        reset_peak_memory(self.device)

    def __deepcopy__(self, memo):
        """A copied model's handle starts its own run."""
        new = Stopwatch(self.device)
        memo[id(self)] = new
        return new


class EncoderHook:
    """What ``owner.<name>`` (the inner model's ``get_video_features``) is while a handle is applied:
    the model's own, marked ``encoder_start`` / ``encoder_end`` when a timed call runs in this
    thread; during a call on transformers < 5.18, that call's compressing stand-in (:meth:`replaced`,
    per thread: concurrent calls never see each other's, and nothing is patched per call). It
    keeps what was there before as :func:`~.patching.saved_value` sees it (MISSING: the class's
    method, looked up at each call), so a deep copy of the model calls the copy's own."""

    def __init__(self, owner, name: str, stopwatch: Stopwatch):
        self.owner, self.name, self.before, self.stopwatch = owner, name, saved_value(owner, name), stopwatch
        self.local = threading.local()
        functools.update_wrapper(self, self.original())  # generate() reads the encoder's signature

    def original(self):
        if self.before is MISSING:
            return getattr(type(self.owner), self.name).__get__(self.owner)
        return self.before

    @contextlib.contextmanager
    def replaced(self, stand_in):
        """``stand_in`` answers this thread's calls (None: no change) for the ``with`` block; its own
        calls of this hook reach the model's encoder."""
        self.local.stand_in = stand_in
        try:
            yield
        finally:
            self.local.stand_in = None

    def __call__(self, *args, **kwargs):
        stand_in = getattr(self.local, "stand_in", None)
        if stand_in is not None:
            self.local.stand_in = None
            try:
                return stand_in(*args, **kwargs)
            finally:
                self.local.stand_in = stand_in
        timeline = self.stopwatch.current()
        if timeline is None:
            return self.original()(*args, **kwargs)
        timeline.mark("encoder_start")
        out = self.original()(*args, **kwargs)
        timeline.mark("encoder_end")
        return out

    def __deepcopy__(self, memo):
        """The copy hooks the copied owner, with the copied stopwatch."""
        new = copy.copy(self)
        memo[id(self)] = new
        new.owner, new.stopwatch = copy.deepcopy(self.owner, memo), copy.deepcopy(self.stopwatch, memo)
        new.before = self.before if self.before is MISSING else copy.deepcopy(self.before, memo)
        new.local = threading.local()
        new.__wrapped__ = new.original()
        return new


class PrefillMarker:
    """Forward hooks on the model for one call: mark ``prefilled`` at the end of the forward pass
    that brings the tokens processed to the prompt's ``width`` (chunked prefill: its last chunk;
    ``use_cache=False``: the first pass), or at the end of the last pass before the first
    one-token pass (a prompt continuing a cache). Only this thread's passes count; the hooks go
    away once the mark is made, so decoding steps (compiled or not) run without them."""

    def __init__(self, model, timeline: Timeline, width: int):
        self.timeline, self.width, self.seen, self.passes = timeline, width, 0, 0
        self.hooks = [
            model.register_forward_pre_hook(self.before, with_kwargs=True),
            model.register_forward_hook(self.after, with_kwargs=True),
        ]

    def positions(self, args, kwargs) -> int:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            return ids.shape[-1]
        embeds = kwargs.get("inputs_embeds")
        return embeds.shape[-2] if embeds is not None else 0

    def before(self, module, args, kwargs):
        if threading.get_ident() != self.timeline.thread:
            return
        if self.passes and self.positions(args, kwargs) == 1:
            self.done(self.last_end)

    def after(self, module, args, kwargs, output):
        if threading.get_ident() != self.timeline.thread:
            return
        self.passes += 1
        self.seen += self.positions(args, kwargs)
        self.timeline.mark("pass_end")
        self.last_end = len(self.timeline.marks) - 1
        if self.seen >= self.width:
            self.done(self.last_end)

    def done(self, index: int) -> None:
        self.timeline.marks[index] = ("prefilled", self.timeline.marks[index][1])
        self.remove()

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []


def new_tokens(sequences: torch.Tensor, width: int, eos) -> int:
    """Tokens generated after column ``width``, per row up to and including its first
    end-of-sequence token (``eos``: an id, a list of ids or None), summed over rows."""
    new = sequences[:, width:]
    if eos is None or new.numel() == 0:
        return new.numel()
    ids = torch.as_tensor(eos if isinstance(eos, (list, tuple)) else [eos], device=new.device)
    is_eos = torch.isin(new, ids).int()
    return int(((is_eos.cumsum(dim=1) - is_eos) == 0).sum())


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the process's peak resident set (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory of ``device``, or the process's peak resident set, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@dataclass
class Efficiency:
    """A run's figures as the released VidCom2 lmms-eval fork prints them, and this package's split.
    ``llm_time_s``: the ``generate()`` calls (encoder, selection, prefill and decoding), the
    released ``LLM_time_s``; ``total_time_s``: the wall time of the evaluation loop (lmms-eval's
    ``generate_until``: video decoding and preprocessing included), the released ``Total_time_s``."""

    run: RunTiming
    total_time_s: float
    extra: dict = field(default_factory=dict)

    @property
    def llm_time_s(self) -> float:
        return self.run.total_s

    def released_rows(self) -> list:
        """The released fork's three rows, its names, units and digits."""
        return [
            ("LLM_time_s", f"{self.llm_time_s:.3f}"),
            ("Total_time_s", f"{self.total_time_s:.3f}"),
            ("Peak_mem_MB", f"{self.run.peak_mem_mb:.1f}"),
        ]

    def as_dict(self) -> dict:
        run = self.run
        return {
            **self.extra,
            "LLM_time_s": self.llm_time_s,
            "Total_time_s": self.total_time_s,
            "Peak_mem_MB": run.peak_mem_mb,
            "split_s": {name[:-2]: getattr(run, name) for name in PARTS},
            "language_model_s": run.prefill_s + run.decode_s,
            "samples_per_s": run.samples / self.llm_time_s if self.llm_time_s else 0.0,
            "generated_tokens_per_s": run.new_tokens / run.decode_s if run.decode_s else 0.0,
            **{k: v for k, v in run.as_dict().items() if k not in (*PARTS, "total_s", "peak_mem_mb")},
        }


def efficiency_table(rows: list, title: str = "Efficiency Analysis") -> str:
    """``rows`` of (metric, value) as the released fork's boxed two-column table."""
    widths = [max(len("Metric"), *(len(m) for m, _ in rows)), max(len("Value"), *(len(v) for _, v in rows))]
    border = f"+{'-' * (widths[0] + 2)}+{'-' * (widths[1] + 2)}+"
    lines = [title, border, f"| {'Metric':<{widths[0]}} | {'Value':<{widths[1]}} |", border]
    lines += [f"| {m:<{widths[0]}} | {v:<{widths[1]}} |" for m, v in rows]
    return "\n".join([*lines, border])
