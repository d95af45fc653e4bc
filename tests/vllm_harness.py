"""Drives vLLM offline on the CPU for tests/test_vllm_plugin.py, run by the vLLM side environment's
python (ci/vllm_env.sh):

    python tests/vllm_harness.py checkpoint FAMILY DIR    # tiny random model + processor (as lmms-eval's)
    python tests/vllm_harness.py generate DIR OUT.json Q  # greedy outputs of vllm.LLM with VidCom2 at rate Q

``generate`` runs the engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) on two prompts with
videos of different sizes and writes, per prompt, the prompt's token ids (their video placeholders are
what the language model sees) and the generated token ids, plus the plugin's state: whether it was
registered and how many masks it computed.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

PROMPT = "<|im_start|>user\n{}{}<|im_end|>\n<|im_start|>assistant\n"
# A video's placeholder as each family's chat template writes it. Qwen3-VL: the bare video token,
# which transformers >= 5.10 expands into every frame's timestamp and <|vision_start|> ...
# <|vision_end|> (the form vLLM 0.32's pruned M-RoPE recompute expects).
PLACEHOLDER = {"qwen3_vl": "<|video_pad|>", "qwen2_5_vl": "<|vision_start|><|video_pad|><|vision_end|>"}
# vLLM's CPU attention has kernels for head sizes 32 and up (the adapter tests' tiny models use 16)
HEAD_32 = {"qwen3_vl": {"head_dim": 32}, "qwen2_5_vl": {"num_attention_heads": 2, "num_key_value_heads": 1}}
ROPE_32 = {"mrope_section": [4, 6, 6]}  # sums to head_dim / 2
# (frames, height, width, question): two videos of different patch grids
VIDEOS = [(8, 64, 96, "What happens?"), (6, 96, 64, "Describe it.")]


def videos(family: str):
    rng = np.random.default_rng(0)
    out = []
    for frames, h, w, question in VIDEOS:
        base = rng.integers(0, 256, (1, h, w, 3))
        drift = rng.integers(-40, 40, (frames, h, w, 3)).cumsum(0)  # frames that change over time
        clip = np.clip(base + drift, 0, 255).astype(np.uint8)
        metadata = {
            "fps": 2.0,
            "total_num_frames": frames,
            "frames_indices": list(range(frames)),
            "duration": frames / 2.0,
            "video_backend": "opencv",
        }
        out.append((PROMPT.format(PLACEHOLDER[family], question), (clip, metadata)))
    return out


def generate(model: str, out: str, q: float) -> None:
    from vllm import LLM, SamplingParams

    from vidcom2_kernels.integrations import vllm as plugin

    llm = LLM(
        model=model,
        dtype="float32",
        max_model_len=4096,
        enforce_eager=True,
        max_num_batched_tokens=8192,
        video_pruning_rate=q,
        video_pruning_method="vidcom2",
        limit_mm_per_prompt={"video": 1, "image": 0},
        mm_processor_kwargs={"do_sample_frames": False},
        seed=0,
    )
    with open(os.path.join(model, "config.json")) as f:
        family = json.load(f)["model_type"]
    requests = [{"prompt": p, "multi_modal_data": {"video": v}} for p, v in videos(family)]
    results = llm.generate(requests, SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True))
    record = {
        "outputs": [
            {"prompt_token_ids": list(r.prompt_token_ids), "token_ids": list(r.outputs[0].token_ids)} for r in results
        ],
        "plugin": {
            "registered": plugin._state["registered"],
            "calls": plugin._state["calls"],
            "method": plugin._state["method"],
        },
    }
    with open(out, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if sys.argv[1] == "checkpoint":
        import lmms_eval_harness

        family = sys.argv[2]
        rope = dict(lmms_eval_harness.tm.build(family).config.text_config.rope_parameters, **ROPE_32)
        lmms_eval_harness.checkpoint(family, sys.argv[3], dict(HEAD_32[family], rope_parameters=rope))
    elif sys.argv[1] == "generate":
        generate(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        raise SystemExit(__doc__)
