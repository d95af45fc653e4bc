"""Drives vLLM offline on the CPU for tests/test_vllm_plugin.py, run by the vLLM side environment's
python (ci/vllm_env.sh):

    python tests/vllm_harness.py checkpoint FAMILY DIR    # tiny random model + processor (as lmms-eval's)
    python tests/vllm_harness.py generate DIR OUT.json Q  # greedy outputs of vllm.LLM with VidCom2 at rate Q

``VIDCOM2_HARNESS_SIMULATE`` makes the installed vLLM look like another release before the engine
(and so the plugin) starts: ``version-0.34`` (vLLM 0.34: the same hooks, another version),
``signature`` (an unknown release whose ``compute_retention_mask`` takes another argument),
``moved`` (vLLM main's layout: the video_prune modules under ``vllm.frontend.processing.multimodal``,
a re-exporting shim at the old path).

``generate`` runs the engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) on two prompts with
videos of different sizes and writes, per prompt, the prompt's token ids (their video placeholders are
what the language model sees) and the generated token ids, plus the plugin's state: whether it was
registered and how many masks it computed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types

import numpy as np

# every loaded vllm module's name for a function rebound, as a release that shipped the other would have it
from vidcom2_kernels.integrations.vllm import _replace as rebind

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


NEW_PRUNE_PACKAGE = "vllm.frontend.processing.multimodal.video_prune"


def move_prune_modules() -> tuple:
    """vLLM main's layout: the video_prune modules' own code loaded again as
    ``NEW_PRUNE_PACKAGE.evs`` and ``.vidcom2`` (under new empty packages); returns those two."""
    from vllm.multimodal.video_prune import evs, vidcom2

    parts = NEW_PRUNE_PACKAGE.split(".")
    for i in range(2, len(parts) + 1):
        name = ".".join(parts[:i])
        package = sys.modules.setdefault(name, types.ModuleType(name))
        package.__path__ = []
        setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], package)
    moved = []
    for old in (evs, vidcom2):
        leaf = old.__name__.rsplit(".", 1)[1]
        spec = importlib.util.spec_from_file_location(f"{NEW_PRUNE_PACKAGE}.{leaf}", old.__file__)
        sys.modules[spec.name] = new = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(new)
        setattr(sys.modules[NEW_PRUNE_PACKAGE], leaf, new)
        moved.append(new)
    return tuple(moved)


def simulate(kind: str) -> None:
    import vllm
    from vllm.multimodal.video_prune import evs, vidcom2

    if kind == "version-0.34":
        vllm.__version__ = "0.34.0"
    elif kind == "signature":
        vllm.__version__ = "0.99.0"
        original = vidcom2.compute_retention_mask

        def compute_retention_mask(video_embeds, video_size_thw, spatial_merge_size, q, deepstack_embeds=None):
            return original(video_embeds, video_size_thw, spatial_merge_size, q)

        rebind(original, compute_retention_mask)
    elif kind == "moved":
        for old, new in zip((evs, vidcom2), move_prune_modules()):  # the old path: a shim re-exporting the new
            for attr, value in list(vars(old).items()):
                if getattr(value, "__module__", None) == old.__name__ and hasattr(new, attr):
                    rebind(value, getattr(new, attr))
    elif kind:
        raise SystemExit(f"unknown VIDCOM2_HARNESS_SIMULATE {kind!r}")


def generate(model: str, out: str, q: float) -> None:
    from vllm import LLM, SamplingParams

    from vidcom2_kernels.integrations import vllm as plugin

    simulate(os.environ.get("VIDCOM2_HARNESS_SIMULATE", ""))

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
            "prune_package": plugin._state["hooks"] and plugin._state["hooks"].vidcom2.__name__.rsplit(".", 1)[0],
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
