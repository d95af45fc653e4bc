"""Offline material for driving lmms-eval end to end (tests/test_lmms_eval.py), run by the side
environment's python (ci/lmms_eval_env.sh: it has torchvision, which transformers' video
processors need):

    python tests/lmms_eval_harness.py checkpoint FAMILY DIR   # tiny random model + processor
    python tests/lmms_eval_harness.py task DIR VIDEO [ITEMS]  # a local lmms-eval task over VIDEO

FAMILY is a tiny_models family (``qwen3_omni_moe``: the whole Omni model, its processor with Whisper's
feature extractor). The checkpoint is what ``from_pretrained`` loads from a hub: config, random
weights, a byte-level tokenizer with the family's special tokens (Gemma 4's and the Omni
processor's read their media tokens off it), its image and video processors and a chat template, so
lmms-eval's own model classes load and prompt it as they would a real one. The language model's
output rows of special tokens, of bytes that decode to whitespace and of bytes that decode to no
ASCII character are zero, so greedy answers are never empty: not through a special token, and not
through whitespace that lmms-eval strips."""

from __future__ import annotations

import json
import os
import sys

import tiny_models as tm
import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
#: whole Omni models (their thinker holds the language model and the towers)
OMNI_MODELS = ("qwen3_omni_moe",)
LLAVA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
#: Gemma 4's tokenizer names its media tokens (the processor reads them off it; <|video|> it adds)
GEMMA_TOKENS = {
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
}
GEMMA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|video|>", *GEMMA_TOKENS.values()]
#: the Qwen Omni tokenizer's named tokens (its processor reads them off it)
OMNI_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "audio_token": "<|audio_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
}
OMNI_SPECIALS = [*QWEN_SPECIALS, "<|audio_pad|>", "<|audio_start|>", "<|audio_end|>"]
# Qwen's layout (my own template): text as is, media as <|vision_start|><|X_pad|><|vision_end|>
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen Omni's: an audio clip as <|audio_start|><|audio_pad|><|audio_end|> (a video's own audio, the
# processor interleaves inside the video's placeholder)
OMNI_TEMPLATE = QWEN_TEMPLATE.replace(
    "{% endif %}{% endfor %}{% endif %}",
    "{% elif c['type'] == 'audio' %}<|audio_start|><|audio_pad|><|audio_end|>{% endif %}{% endfor %}{% endif %}",
)
# Gemma 4's media as the placeholders its processor expands (a video: per frame "mm:ss <boi> V...<eoi>")
GEMMA_TEMPLATE = QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<|image|>").replace(
    "<|vision_start|><|video_pad|><|vision_end|>", "<|video|>"
)
PLAIN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer(specials: list, named: dict | None = None) -> tf.PreTrainedTokenizerFast:
    """256 byte tokens (ids 0-255, no merges) then ``specials`` (ids 256, 257, ...); ``named``
    special tokens are attributes of the tokenizer (``tokenizer.image_token``, ``..._id``)."""
    vocab = {ch: i for i, ch in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_special_tokens=named or {}
    )


def checkpoint(family: str, out: str, text_overrides: dict | None = None) -> None:
    """Save the tiny model of ``family`` to ``out``; ``text_overrides`` change its language model's
    config (e.g. a head size another runtime supports) before the weights are drawn."""
    if family in tm.GEMMA:
        specials, named = GEMMA_SPECIALS, GEMMA_TOKENS
    elif family in OMNI_MODELS:
        specials, named = OMNI_SPECIALS, OMNI_TOKENS
    else:
        specials, named = LLAVA_SPECIALS if family in tm.FRAME_PIXELS else QWEN_SPECIALS, None
    tokenizer = byte_tokenizer(specials, named)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    tiny = tm.build(family)  # the tiny model of the adapter tests, re-keyed to this vocabulary
    config = tiny.config
    whole = config  # an Omni model: the ids below are its thinker's
    if family in OMNI_MODELS:
        config = config.thinker_config
        config.audio_token_id, config.audio_start_token_id = ids["<|audio_pad|>"], ids["<|audio_start|>"]
    if family in tm.TIMESTAMPED:
        config.vision_config.patch_size = 16  # lmms-eval's Qwen3 classes resize frames for 16-pixel patches
    text = config.text_config
    text.vocab_size, text.pad_token_id = 272, ids["<|endoftext|>"]
    text.bos_token_id = text.eos_token_id = ids["<|im_end|>"]
    for key, value in (text_overrides or {}).items():
        setattr(text, key, value)
    if family in tm.GEMMA:
        text.vocab_size_per_layer_input = text.vocab_size
        config.image_token_id, config.video_token_id = ids["<|image|>"], ids["<|video|>"]
        config.boi_token_id, config.eoi_token_id = ids["<|image>"], ids["<image|>"]
        config.audio_token_id, config.boa_token_id, config.eoa_token_index = (
            ids["<|audio|>"],
            ids["<|audio>"],
            ids["<audio|>"],
        )
    elif family in tm.FRAME_PIXELS:
        config.image_token_id, config.video_token_id = ids["<image>"], ids["<video>"]
    else:
        config.image_token_id, config.video_token_id = ids["<|image_pad|>"], ids["<|video_pad|>"]
        config.vision_start_token_id, config.vision_end_token_id = ids["<|vision_start|>"], ids["<|vision_end|>"]
    torch.manual_seed(1)
    model = type(tiny)(whole)
    head = model.thinker.lm_head if family in OMNI_MODELS else model.lm_head
    with torch.no_grad():
        head.weight[256:] = 0  # special tokens never win a greedy step: answers are text
        # nor does a byte that decodes to whitespace or to no ASCII character: a random model's
        # greedy answer can repeat one token, and 12 x "\x1c" strips to "" (lmms-eval strips answers)
        for i in range(256):
            piece = tokenizer.decode([i])
            if not piece.isascii() or not piece.strip():
                head.weight[i] = 0
    model.generation_config = tf.GenerationConfig(pad_token_id=text.pad_token_id, eos_token_id=text.eos_token_id)
    model.save_pretrained(out)
    processor(family, config, tokenizer).save_pretrained(out)


def processor(family: str, config, tokenizer):
    vision = config.vision_config
    if family == "llava_onevision":
        side = vision.image_size
        size = {"height": side, "width": side}
        return tf.LlavaOnevisionProcessor(
            image_processor=tf.LlavaOnevisionImageProcessor(
                size=size, crop_size=size, image_grid_pinpoints=[[side, side]]
            ),
            video_processor=tf.LlavaOnevisionVideoProcessor(size=size),
            tokenizer=tokenizer,
            num_image_tokens=(side // vision.patch_size) ** 2,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            chat_template=PLAIN_TEMPLATE,
        )
    if family == "video_llava":
        side = vision.image_size
        size, crop = {"shortest_edge": side}, {"height": side, "width": side}
        return tf.VideoLlavaProcessor(
            image_processor=tf.VideoLlavaImageProcessor(size=size, crop_size=crop),
            video_processor=tf.VideoLlavaVideoProcessor(size=size, crop_size=crop),
            tokenizer=tokenizer,
            patch_size=vision.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            chat_template=PLAIN_TEMPLATE,
        )
    if family in tm.GEMMA:
        pixels = dict(patch_size=vision.patch_size, pooling_kernel_size=vision.pooling_kernel_size)
        unified = family == "gemma4_unified"
        cls, audio, image, video = (
            (tf.Gemma4UnifiedProcessor, tf.Gemma4UnifiedAudioFeatureExtractor)
            + (tf.Gemma4UnifiedImageProcessor, tf.Gemma4UnifiedVideoProcessor)
            if unified
            else (tf.Gemma4Processor, tf.Gemma4AudioFeatureExtractor, tf.Gemma4ImageProcessor, tf.Gemma4VideoProcessor)
        )
        return cls(
            feature_extractor=audio(),
            image_processor=image(**pixels),
            video_processor=video(**pixels),
            tokenizer=tokenizer,
            chat_template=GEMMA_TEMPLATE,
        )
    pixels = dict(patch_size=vision.patch_size, temporal_patch_size=2, merge_size=2)
    if family in OMNI_MODELS:
        return tf.Qwen3OmniMoeProcessor(
            image_processor=tf.Qwen2VLImageProcessor(**pixels),
            video_processor=tf.Qwen2VLVideoProcessor(**pixels),
            feature_extractor=tf.WhisperFeatureExtractor(feature_size=config.audio_config.num_mel_bins),
            tokenizer=tokenizer,
            chat_template=OMNI_TEMPLATE,
        )
    if family in tm.TIMESTAMPED:
        cls, image_cls, video_cls = tf.Qwen3VLProcessor, tf.Qwen2VLImageProcessor, tf.Qwen3VLVideoProcessor
    else:
        cls, image_cls, video_cls = tf.Qwen2VLProcessor, tf.Qwen2VLImageProcessor, tf.Qwen2VLVideoProcessor
    return cls(
        image_processor=image_cls(**pixels),
        video_processor=video_cls(**pixels),
        tokenizer=tokenizer,
        chat_template=QWEN_TEMPLATE,
    )


TASK_YAML = """\
task: vidcom2_smoke
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
process_results: !function utils.process_results
generation_kwargs:
  max_new_tokens: 12
  temperature: 0
  do_sample: false
  until: []
metric_list:
  - metric: answered
    aggregation: mean
    higher_is_better: true
"""

TASK_UTILS = """\
def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"answered": float(bool(results[0].strip()))}
"""


QUESTIONS = [
    "What happens in the video?",
    "Which animal appears first, and what colour is it?",
    "Describe the scene in one word.",
    "How many times does the camera cut?",
]


def task(out: str, video: str, items: int = 3) -> None:
    """A local generate_until task ``vidcom2_smoke`` of ``items`` questions over ``video``."""
    os.makedirs(out, exist_ok=True)
    data = os.path.join(out, "data.jsonl")
    with open(data, "w") as f:
        for i in range(items):
            f.write(
                json.dumps({"video": video, "question": QUESTIONS[i % len(QUESTIONS)], "answer": "a rabbit"}) + "\n"
            )
    with open(os.path.join(out, "vidcom2_smoke.yaml"), "w") as f:
        f.write(TASK_YAML.format(data=data))
    with open(os.path.join(out, "utils.py"), "w") as f:
        f.write(TASK_UTILS)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"checkpoint": checkpoint, "task": task}[command](*args[:2], *map(int, args[2:]))
