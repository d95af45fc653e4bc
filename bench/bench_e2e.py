"""End-to-end: a Qwen2-VL video LLM (random weights) with and without VidCom2 through the adapters.

    python bench/bench_e2e.py                          # CPU: small configuration, batch 1
    python bench/bench_e2e.py --size 7b --batch 1 8    # GPU: Qwen2-VL-7B-size configuration, bf16

Per configuration: time to first token (vision encoding + selection + prefill), LLM generation time
(time spent inside the language model, prefill and decoding), total ``generate()`` time, peak GPU
memory, and token counts (prompt length and video tokens the language model sees), for no
compression and VidCom2 at retention 1.0 (exact: must change nothing), 0.25 and 0.15. Medians over
``--repeats``. Writes a CSV and, on a GPU, a table into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from results_md import update_section, write_csv  # noqa: E402

from vidcom2_kernels import adapters  # noqa: E402

SIZES = {
    # text: hidden, layers, heads, kv heads, intermediate; vision: embed, depth, heads
    # the small ones have a 16k vocabulary so the output head does not dwarf their few layers
    # (in the 7B model it is about a tenth of a decoding step)
    "tiny": dict(text=(64, 2, 4, 2, 128), vision=(32, 1, 2), vocab=16384),
    "small": dict(text=(512, 4, 8, 2, 1024), vision=(256, 4, 4), vocab=16384),
    "7b": dict(text=(3584, 28, 28, 4, 18944), vision=(1280, 32, 16), vocab=152064),
}


def special_ids(size: str) -> dict:
    """Qwen2-VL's own ids for the 7B size, the top of the vocabulary for the small ones."""
    if SIZES[size]["vocab"] > 151656:
        return dict(
            image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653
        )
    top = SIZES[size]["vocab"]
    return dict(
        image_token_id=top - 4, video_token_id=top - 3, vision_start_token_id=top - 2, vision_end_token_id=top - 1
    )


def build_model(size: str, device, dtype, attn: str):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    (h, layers, heads, kv, inter), (ve, vd, vh) = SIZES[size]["text"], SIZES[size]["vision"]
    cfg = Qwen2VLConfig(
        text_config=dict(
            vocab_size=SIZES[size]["vocab"],
            hidden_size=h,
            intermediate_size=inter,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            max_position_embeddings=32768,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [h // heads // 8, h // heads // 16 * 3, h // heads // 16 * 3],
            },
        ),
        vision_config=dict(embed_dim=ve, depth=vd, num_heads=vh, hidden_size=h),
        **special_ids(size),
    )
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration(cfg).to(dtype).eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    return model


def make_inputs(model, batch: int, frames: int, height: int, width: int, device, dtype):
    """A prompt of text, one video of ``frames`` frames at height x width pixels, more text."""
    t, h, w = frames // 2, height // 14, width // 14
    per_video = t * h * w // 4
    cfg = model.config
    row = [100, 101, 102, cfg.vision_start_token_id] + [cfg.video_token_id] * per_video
    row += [cfg.vision_end_token_id] + list(range(200, 220))
    ids = torch.tensor([row] * batch, device=device)
    g = torch.Generator().manual_seed(1)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values_videos": torch.randn(batch * t * h * w, 3 * 2 * 14 * 14, generator=g).to(device, dtype),
        "video_grid_thw": torch.tensor([[t, h, w]] * batch, device=device),
        "mm_token_type_ids": (ids == cfg.video_token_id).int() * 2,
    }


class LLMTimer:
    """Accumulates wall time spent inside the language model (synchronised on CUDA)."""

    def __init__(self, module, device):
        self.total, self.device = 0.0, device
        self.hooks = [module.register_forward_pre_hook(self.start), module.register_forward_hook(self.stop)]

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def start(self, *_):
        self.sync()
        self._t = time.perf_counter()

    def stop(self, *_):
        self.sync()
        self.total += time.perf_counter() - self._t

    def close(self):
        for h in self.hooks:
            h.remove()


def measure(model, inputs, new_tokens: int, device, repeats: int) -> dict:
    def timed(n):
        timer = LLMTimer(model.model.language_model, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(**inputs, max_new_tokens=n, do_sample=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        timer.close()
        return time.perf_counter() - t0, timer.total, out

    timed(1)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ttft = statistics.median(timed(1)[0] for _ in range(repeats))
    runs = [timed(new_tokens) for _ in range(repeats)]
    return {
        "ttft_ms": ttft * 1e3,
        "total_ms": statistics.median(r[0] for r in runs) * 1e3,
        "llm_ms": statistics.median(r[1] for r in runs) * 1e3,
        "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
        # generate() returns the caller's prompt rows + the new tokens, compressed or not
        "generated": runs[0][2].shape[1] - inputs["input_ids"].shape[1],
    }


def run(args) -> list[dict]:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    attn = args.attn
    if attn == "auto":
        try:
            import flash_attn  # noqa: F401

            attn = "flash_attention_2" if device.type == "cuda" else "sdpa"
        except ImportError:
            attn = "sdpa"
    model = build_model(args.size, device, dtype, attn)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for batch in args.batch:
        inputs = make_inputs(model, batch, args.frames, args.height, args.width, device, dtype)
        video_tokens = int((inputs["input_ids"] == model.config.video_token_id).sum()) // batch
        for setting in ["none"] + [str(r) for r in args.retentions]:
            if setting == "none":
                handle, prompt, seen = None, inputs["input_ids"].shape[1], video_tokens
                res = measure(model, inputs, args.new_tokens, device, args.repeats)
            else:
                r = float(setting)
                handle = adapters.apply_vidcom2(model, r, exact=r == 1.0)
                res = measure(model, inputs, args.new_tokens, device, args.repeats)
                prompt = handle.last.kwargs["input_ids"].shape[1]
                seen = handle.last.video_tokens_after // batch
                kept = int(handle.last.compression.counts.sum()) // batch
                assert seen == kept, "the language model must see exactly the kept tokens"
                handle.remove()
            row = dict(
                device=name,
                size=args.size,
                attn=attn,
                batch=batch,
                setting=setting,
                prompt_tokens=prompt,
                video_tokens=seen,
                **res,
            )
            rows.append(row)
            print(
                f"{name} {args.size} {attn} batch {batch:2d} {setting:>5s}: prompt {prompt:5d} tok, video {seen:5d} tok, "
                f"TTFT {res['ttft_ms']:9.1f} ms, LLM {res['llm_ms']:9.1f} ms, total {res['total_ms']:9.1f} ms, "
                f"peak {res['peak_gb']:.2f} GB",
                flush=True,
            )
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default=None, choices=list(SIZES), help="default: 7b on a GPU, small on the CPU")
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument("--retentions", type=float, nargs="+", default=[1.0, 0.25, 0.15])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=252)
    p.add_argument("--width", type=int, default=448)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--attn", default="auto", choices=["auto", "sdpa", "eager", "flash_attention_2"])
    p.add_argument("--csv", default="bench/results_e2e.csv")
    p.add_argument("--results", default="bench/RESULTS.md", help="table written here on a GPU")
    args = p.parse_args(argv)
    args.size = args.size or ("7b" if args.device == "cuda" else "small")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = run(args)
    if args.csv:
        write_csv(args.csv, rows)
    if args.results and args.device == "cuda":
        name = rows[0]["device"]
        lines = [
            f"### {name}, Qwen2-VL {args.size} random weights bf16, `python bench/bench_e2e.py`",
            "",
            "| attention | batch | setting | prompt tokens | video tokens | TTFT ms | LLM ms | total ms | peak GB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['attn']} | {r['batch']} | {r['setting']} | {r['prompt_tokens']} | {r['video_tokens']} | "
            f"{r['ttft_ms']:.1f} | {r['llm_ms']:.1f} | {r['total_ms']:.1f} | {r['peak_gb']:.2f} |"
            for r in rows
        ]
        update_section(args.results, f"bench_e2e {name} {args.size}", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
