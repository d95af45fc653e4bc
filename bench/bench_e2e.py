"""End-to-end: a Qwen2-VL video LLM (random weights) with and without VidCom2 through the adapters.

    python bench/bench_e2e.py                          # CPU: small configuration, batch 1
    python bench/bench_e2e.py --size 7b --batch 1 8    # GPU: Qwen2-VL-7B-size configuration, bf16

Every figure comes from the adapters' timing record (``vidcom2_kernels.adapters.timing``, the one
the lmms-eval launcher prints): per ``generate()`` call the vision encoder, the selection, the
prefill and the decoding (they add up to the call), so time to first token = encoder + selection +
prefill and the language model's time = prefill + decoding; peak memory (CUDA: allocated; CPU:
the process's resident set); token counts. Settings: no compression (``apply_timing``) and VidCom2
at retention 1.0 (exact: must change nothing), 0.25 and 0.15, ALTERNATED: every repeat runs each
setting once, so drift on a shared machine spreads over all of them. Medians over ``--repeats``,
with the smallest and largest value. Writes a CSV and a table into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

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


#: the record's parts and what the table calls them; ttft and lm are sums of parts
PARTS = {"encoder": "encoder_s", "selection": "selection_s", "prefill": "prefill_s", "decode": "decode_s"}
SUMS = {"ttft": ("encoder", "selection", "prefill"), "lm": ("prefill", "decode"), "total": tuple(PARTS)}


def timed_call(model, inputs, setting: str, new_tokens: int) -> tuple:
    """One ``generate()`` under ``setting`` ("none" or a retention); returns (the call's
    CallTiming, the handle's peak memory in MiB, the handle's last Pruned, the output)."""
    if setting == "none":
        handle = adapters.apply_timing(model)
    else:
        r = float(setting)
        handle = adapters.apply_vidcom2(model, r, exact=r == 1.0)
    with handle:
        out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    return handle.last_timing, handle.timing.peak_mem_mb, handle.last, out


def summarise(calls: list) -> dict:
    """Median, min and max in ms of every part and sum over ``calls`` (CallTiming records)."""
    out = {}
    for name in (*PARTS, *SUMS):
        parts = SUMS.get(name, (name,))
        values = [1e3 * sum(getattr(c, PARTS[p]) for p in parts) for c in calls]
        out[f"{name}_ms"] = statistics.median(values)
        out[f"{name}_ms_min"], out[f"{name}_ms_max"] = min(values), max(values)
    return out


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
    settings = ["none"] + [str(r) for r in args.retentions]
    rows = []
    for batch in args.batch:
        inputs = make_inputs(model, batch, args.frames, args.height, args.width, device, dtype)
        video_tokens = int((inputs["input_ids"] == model.config.video_token_id).sum()) // batch
        for setting in settings:  # warm-up, one call each
            timed_call(model, inputs, setting, args.new_tokens)
        calls, peaks, last = {s: [] for s in settings}, {s: 0.0 for s in settings}, {}
        for _ in range(args.repeats):
            for setting in settings:  # alternated
                call, peak, pruned, out = timed_call(model, inputs, setting, args.new_tokens)
                calls[setting].append(call)
                peaks[setting] = max(peaks[setting], peak)
                last[setting] = (call, pruned, out)
        for setting in settings:
            call, pruned, out = last[setting]
            seen = call.video_tokens_after // batch
            if pruned.compression is not None:
                kept = int(pruned.compression.counts.sum()) // batch
                assert seen == kept, "the language model must see exactly the kept tokens"
            row = dict(
                device=name,
                size=args.size,
                attn=attn,
                batch=batch,
                setting=setting,
                repeats=args.repeats,
                prompt_tokens=call.prompt_tokens // batch,
                video_tokens=seen,
                video_tokens_before=video_tokens,
                **summarise(calls[setting]),
                peak_mb=peaks[setting],
                # generate() returns the caller's prompt rows + the new tokens, compressed or not
                generated=out.shape[1] - inputs["input_ids"].shape[1],
            )
            rows.append(row)
            print(
                f"{name} {args.size} {attn} batch {batch:2d} {setting:>5s}: prompt {row['prompt_tokens']:5d} tok, "
                f"video {seen:5d} tok, TTFT {row['ttft_ms']:8.1f} ms, LM {row['lm_ms']:8.1f} ms, "
                f"total {row['total_ms']:8.1f} ms [{row['total_ms_min']:.1f}, {row['total_ms_max']:.1f}], "
                f"encoder {row['encoder_ms']:.1f} selection {row['selection_ms']:.1f} prefill {row['prefill_ms']:.1f} "
                f"decode {row['decode_ms']:.1f} ms, peak {row['peak_mb']:.0f} MiB",
                flush=True,
            )
    return rows


def table(rows: list, args) -> list:
    """The RESULTS.md section: medians with [min, max] of the total and the language model's time."""
    name = rows[0]["device"]
    what = "bf16" if name != "cpu" else "fp32"
    lines = [
        f"### {name}, Qwen2-VL {args.size} random weights {what}, `python bench/bench_e2e.py "
        f"--repeats {args.repeats} --new-tokens {args.new_tokens}`, settings alternated",
        "",
        "| attention | batch | setting | prompt tokens | video tokens | encoder ms | selection ms | prefill ms "
        "| decode ms | TTFT ms | LM ms [min, max] | total ms [min, max] | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['attn']} | {r['batch']} | {r['setting']} | {r['prompt_tokens']} | {r['video_tokens']} | "
        f"{r['encoder_ms']:.1f} | {r['selection_ms']:.1f} | {r['prefill_ms']:.1f} | {r['decode_ms']:.1f} | "
        f"{r['ttft_ms']:.1f} | {r['lm_ms']:.1f} [{r['lm_ms_min']:.1f}, {r['lm_ms_max']:.1f}] | "
        f"{r['total_ms']:.1f} [{r['total_ms_min']:.1f}, {r['total_ms_max']:.1f}] | {r['peak_mb']:.0f} |"
        for r in rows
    ]
    return lines


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
    p.add_argument("--results", default="bench/RESULTS.md", help="table written here ('' for none)")
    args = p.parse_args(argv)
    args.size = args.size or ("7b" if args.device == "cuda" else "small")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = run(args)
    if args.csv:
        write_csv(args.csv, rows)
    if args.results:
        update_section(args.results, f"bench_e2e {rows[0]['device']} {args.size}", table(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
