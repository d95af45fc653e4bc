"""Qwen3-Omni's real processor and the thinker adapter, run by the lmms-eval media environment's
python (tests/test_lmms_eval.py): the sample clip (it has an audio track) and its own audio go
through qwen-omni-utils and ``Qwen3OmniMoeProcessor`` with ``use_audio_in_video=True`` and
``audio_from_video_indices=[0]`` (what transformers 5.23 asks of a caller that decodes the audio
itself), so the prompt interleaves the video's and the audio's placeholders in time chunks. Then
the whole tiny model of CHECKPOINT (lmms_eval_harness.py) generates plain, through
``apply_vidcom2`` at 1.0 exact, and at 0.25. Prints one JSON line of what the test asserts:

    python tests/omni_processor_check.py CHECKPOINT VIDEO
"""

from __future__ import annotations

import json
import sys

import torch
import transformers as tf
from qwen_omni_utils import process_mm_info

from vidcom2_kernels import adapters
from vidcom2_kernels.adapters.settings import Settings

STEPS = 4


def main(checkpoint: str, video: str) -> dict:
    processor = tf.Qwen3OmniMoeProcessor.from_pretrained(checkpoint)
    model = tf.Qwen3OmniMoeForConditionalGeneration.from_pretrained(checkpoint).eval()
    model.disable_talker()
    messages = [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": "What?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    audios, _, videos = process_mm_info(messages, use_audio_in_video=True)  # no images
    inputs = dict(
        processor(
            text=text,
            audio=audios,
            videos=videos,
            return_tensors="pt",
            use_audio_in_video=True,
            audio_from_video_indices=[0],
        )
    )
    inputs["use_audio_in_video"] = True
    tok = processor.tokenizer
    ids = inputs["input_ids"][0]
    video_id, audio_id = tok.convert_tokens_to_ids("<|video_pad|>"), tok.convert_tokens_to_ids("<|audio_pad|>")
    media = ids[(ids == video_id) | (ids == audio_id)]
    runs = int((media[1:] != media[:-1]).sum()) + 1  # placeholder runs: > 2 when interleaved

    def generate(**kw):
        out = model.generate(**inputs, return_audio=False, thinker_max_new_tokens=STEPS, thinker_do_sample=False, **kw)
        return (out[0] if isinstance(out, tuple) else out)[0, ids.numel() :].tolist()

    plain = generate()
    with adapters.apply_vidcom2(model, 1.0, exact=True):
        exact = generate()
    with adapters.apply_vidcom2(model, 0.25) as handle:
        quarter = generate()
    thinker = model.thinker
    adapter = adapters.adapter_for(thinker)
    full = adapter.full_positions(thinker, inputs)[:, 0]  # (3, L) TMRoPE of the whole prompt
    pruned = adapter.prune(thinker, inputs, Settings(0.25))
    kept_at = pruned.kwargs["attention_mask"][0].bool()
    kept = pruned.kwargs["input_ids"][0][kept_at]
    stays = ids != video_id
    stays[ids == video_id] = pruned.compression.mask
    return {
        "video_tokens": int((ids == video_id).sum()),
        "audio_tokens": int((ids == audio_id).sum()),
        "placeholder_runs": runs,
        "exact_equals_plain": exact == plain,
        "quarter_steps": len(quarter),
        "kept_video": int((kept == video_id).sum()),
        "kept_audio": int((kept == audio_id).sum()),
        # everything but the video placeholders stays, in order
        "rest_in_order": torch.equal(kept[kept != video_id], ids[ids != video_id]),
        "video_tokens_after": pruned.video_tokens_after,
        "generated_video_tokens_after": handle.last.video_tokens_after,
        # the kept tokens keep the positions they had in the whole prompt
        "positions_kept": torch.equal(pruned.kwargs["position_ids"][1:, 0][:, kept_at], full[:, stays]),
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
