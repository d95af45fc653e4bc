"""Tiny randomly initialised video LLMs built from configs (no downloads), and prompts for them
laid out the way each family's processor lays them out."""

from __future__ import annotations

import copy
import importlib.util
import inspect

import torch

TEXT = dict(
    vocab_size=160,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
# Qwen3-VL(-MoE): interleaved M-RoPE and a vision tower with two deepstack layers
QWEN3_ROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}
QWEN3_VISION = dict(
    depth=3,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    out_hidden_size=64,
    deepstack_visual_indexes=[0, 1],
    num_position_embeddings=64,
    patch_size=14,
)
IDS = dict(image_token_id=150, video_token_id=151, vision_start_token_id=152, vision_end_token_id=153)
FAMILIES = [
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "qwen3_vl_moe",
    "qwen3_5",
    "qwen3_5_moe",
    "qwen2_5_omni_thinker",
    "qwen3_omni_moe_thinker",
    "glm4v",
    "glm4v_moe",
    "glm46v",
    "gemma4",
    "gemma4_unified",
    "llava_onevision",
    "llava_next_video",
    "video_llava",
    "video_llama_3",
    "molmo2",
    "perception_lm",
]
# the Omni thinkers (Qwen2.5-Omni, Qwen3-Omni): the Qwen ids, audio placeholders and markers, a small audio tower
OMNI = ("qwen2_5_omni_thinker", "qwen3_omni_moe_thinker")
OMNI_IDS = dict(audio_token_id=154, audio_start_token_id=155, audio_end_token_id=156)
OMNI_AUDIO = dict(
    d_model=32,
    encoder_layers=1,
    encoder_attention_heads=2,
    encoder_ffn_dim=64,
    output_dim=64,
    num_mel_bins=16,
    max_source_positions=100,
    n_window=4,
)
# the whole Omni model's talker and vocoder (its generate() reads the talker even for text)
OMNI_TALKER = dict(
    vocab_size=64,
    embedding_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
    tts_codec_start_token_id=60,
    tts_codec_end_token_id=61,
    tts_codec_pad_token_id=62,
    tts_codec_mask_token_id=63,
    audio_start_token_id=56,
    audio_end_token_id=57,
)
OMNI_TOKEN2WAV = dict(
    dit_config=dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        emb_dim=16,
        head_dim=16,
        enc_emb_dim=16,
        enc_dim=16,
        enc_channels=[16, 16, 16, 16, 48],
        enc_attention_channels=8,
        enc_se_channels=8,
        num_embeds=64,
        mel_dim=16,
    ),
    bigvgan_config=dict(mel_dim=16, upsample_initial_channel=16, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4]),
)
OMNI_SECONDS_PER_GRID = 1.0  # a temporal patch group every second: time rows 0, 25, 50, ...
# Gemma 4: frames of every video concatenated, (frames, patches, 3 * 14 * 14) pixels with (x, y) patch
# positions, a 6 x 6 patch frame pooled 3 x 3 into 4 placeholders between <boi> / <eoi>, after its timestamp
GEMMA = ("gemma4", "gemma4_unified")
GEMMA_IDS = dict(image_token_id=150, video_token_id=151, boi_token_id=152, eoi_token_id=153)
GEMMA_SIDE = 6
# Gemma 4 Unified: no vision tower; its processor merges 3 x 3 pixel patches of 2 pixels into one
# 6-pixel model patch (a placeholder each), a 2 x 2 grid per frame, padded with one (-1, -1) patch
# as the processor pads to its soft-token budget
UNIFIED_PIXELS = 3 * 6 * 6
UNIFIED_PADDING = 1
# families with 1-D positions (the others have M-RoPE): LLaVA-style, Gemma 4, VideoLLaMA3, Molmo2
ONE_D = ("llava_onevision", "llava_next_video", "video_llava", *GEMMA, "video_llama_3", "molmo2", "perception_lm")
# Molmo2: frames of 4 x 4 patches, each pooled 2 x 2 into 2 x 2 placeholders (image_patch_id) between
# <frame_start> / <frame_end> after the frame's timestamp; markers and placeholders have mm_token_type_ids 1
MOLMO = ("molmo2",)
MOLMO_IDS = dict(image_patch_id=151, frame_start_token_id=154, frame_end_token_id=155)
MOLMO_SIDE = 4
# VideoLLaMA3: (t, h, w) patch grids with t = frames and a spatial merge of 2 per video; every frame
# "t.1f" (text) then its placeholders, frames joined by ","
VIDEO_LLAMA_3 = ("video_llama_3",)
# families whose videos are (videos, frames, 3, H, W) pixels, a frame count per sample in the tests
FRAME_PIXELS = ("llava_onevision", "llava_next_video", "video_llava", "perception_lm")
# PerceptionLM: a timm ViT of 4 x 4 patches of 8 pixels per 32-pixel frame (its CLS token dropped),
# pooled 2 x 2 by the projector: 4 placeholders a frame
PLM_VISION = dict(
    architecture="vit_tiny_patch16_224", model_args=dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
)
PLM_SIDE = 32
# their vision tower: CLIP (SigLIP for LLaVA-OneVision), 4 x 4 patches of 14 pixels per frame
CLIP_VISION = dict(
    model_type="clip_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=56,
    patch_size=14,
    projection_dim=32,
)
# GLM-4V: the video placeholder is the image token id (mm_token_type_ids 2 marks it as video), every
# temporal group between <begin_of_image> / <end_of_image> and followed by its timestamp
GLM = ("glm4v", "glm4v_moe", "glm46v")
GLM_IDS = dict(
    image_token_id=150,
    video_token_id=151,
    image_start_token_id=152,
    image_end_token_id=153,
    video_start_token_id=154,
    video_end_token_id=155,
)
GLM_ROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2], "partial_rotary_factor": 0.5}
GLM_VISION = dict(
    depth=1,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    out_hidden_size=64,
    patch_size=14,
    image_size=56,
    spatial_merge_size=2,
    temporal_patch_size=2,
)
# families whose processor puts a timestamp (text) before every temporal patch group
TIMESTAMPED = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")


#: (family, attn) -> the model :func:`build` made, shared by every test of the process: a test that
#: changes a model works on ``copy.deepcopy(build(...))``; tests/conftest.py fails a test that
#: leaves one of these changed (:func:`left_changed`) and drops that model from here
BUILT: dict = {}


def build(family: str, attn: str = "sdpa"):
    """The tiny random model of ``family`` (built once per process, see :data:`BUILT`)."""
    key = (family, attn)
    if key not in BUILT:
        BUILT[key] = _build(family, attn)
    return BUILT[key]


def unsupported(family: str) -> str | None:
    """Why the installed transformers cannot run ``family``'s tests, or None."""
    import transformers as tf

    if family in GEMMA and "num_frames_per_video" not in inspect.signature(tf.Gemma4Model.forward).parameters:
        return f"transformers {tf.__version__}'s Gemma 4 has another video API (num_frames_per_video: 5.19+)"
    if family == "gemma4_unified" and not hasattr(tf, "Gemma4UnifiedForConditionalGeneration"):
        return f"transformers {tf.__version__} has no Gemma 4 Unified"
    if family in MOLMO and not hasattr(tf, "Molmo2ForConditionalGeneration"):
        return f"transformers {tf.__version__} has no Molmo2"
    if family == "perception_lm":
        if importlib.util.find_spec("timm") is None:
            return "timm is not installed: PerceptionLM's vision tower is a timm model (tests/test_perception_lm.py runs these in ci/timm_env.sh)"
        if "mm_encoder_outputs" not in inspect.signature(tf.PerceptionLMForConditionalGeneration.forward).parameters:
            return f"transformers {tf.__version__}'s PerceptionLM takes no mm_encoder_outputs (refused before 5.18)"
    thinker = {
        "qwen2_5_omni_thinker": "Qwen2_5OmniThinkerForConditionalGeneration",
        "qwen2_5_omni": "Qwen2_5OmniThinkerForConditionalGeneration",
        "qwen3_omni_moe_thinker": "Qwen3OmniMoeThinkerForConditionalGeneration",
        "qwen3_omni_moe": "Qwen3OmniMoeThinkerForConditionalGeneration",
    }.get(family)
    if thinker and "mm_encoder_outputs" not in inspect.signature(getattr(tf, thinker).forward).parameters:
        return f"transformers {tf.__version__}'s Omni thinkers take no mm_encoder_outputs (refused: test_omni.py)"
    return None


def require(family: str) -> None:
    """Skip the calling test where the installed transformers cannot run ``family``."""
    import pytest  # here: the side environments import this module to build models, without pytest

    reason = unsupported(family)
    if reason:
        pytest.skip(reason)


def foreign_hooks(model) -> list:
    """The modules of ``model`` with a forward hook or pre-hook that is not transformers' own
    (transformers adds its output-recording hooks when a model first runs)."""

    def foreign(hook) -> bool:
        module = getattr(getattr(hook, "__func__", hook), "__module__", None) or ""
        return not module.startswith(("transformers.", "torch."))

    return [
        name or type(model).__name__
        for name, module in model.named_modules()
        if any(map(foreign, [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]))
    ]


def left_changed(model) -> list:
    """What a test left changed on a shared model: instance attributes that shadow the class's
    ``generate`` / ``get_video_features``, forward hooks, a changed attention implementation."""
    found = [f"{type(model).__name__}.generate"] if "generate" in model.__dict__ else []
    inner = getattr(model, "model", None)
    for name in ("get_video_features", "get_image_features"):  # the adapters' encoders (PerceptionLM: images')
        if inner is not None and name in inner.__dict__:
            found.append(f"{type(inner).__name__}.{name}")
    found += [f"forward hooks on {name}" for name in foreign_hooks(model)]
    attn = model.config.get_text_config()._attn_implementation
    if attn is not None and attn.startswith("vidcom2_"):
        found.append(f"attention implementation {attn}")
    return found


def _build(family: str, attn: str):
    import transformers as tf

    torch.manual_seed(0)
    mrope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    if family == "qwen2_vl":
        cfg = tf.Qwen2VLConfig(
            text_config=dict(TEXT, rope_parameters=mrope),
            vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2),
            **IDS,
        )
        model = tf.Qwen2VLForConditionalGeneration(cfg)
    elif family == "qwen2_5_vl":
        cfg = tf.Qwen2_5_VLConfig(
            text_config=dict(TEXT, rope_parameters=mrope),
            vision_config=dict(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=64,
                fullatt_block_indexes=[1],
                window_size=56,
            ),
            **IDS,
        )
        model = tf.Qwen2_5_VLForConditionalGeneration(cfg)
    elif family == "qwen2_5_omni_thinker":
        cfg = tf.Qwen2_5OmniThinkerConfig(
            text_config=dict(TEXT, rope_parameters=mrope),
            vision_config=dict(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=64,
                fullatt_block_indexes=[1],
                window_size=56,
            ),
            audio_config=OMNI_AUDIO,
            image_token_index=IDS["image_token_id"],
            video_token_index=IDS["video_token_id"],
            audio_token_index=OMNI_IDS["audio_token_id"],
            audio_start_token_id=OMNI_IDS["audio_start_token_id"],
            audio_end_token_id=OMNI_IDS["audio_end_token_id"],
            vision_start_token_id=IDS["vision_start_token_id"],
            vision_end_token_id=IDS["vision_end_token_id"],
        )
        model = tf.Qwen2_5OmniThinkerForConditionalGeneration(cfg)
    elif family == "qwen3_vl":
        cfg = tf.Qwen3VLConfig(
            text_config=dict(TEXT, rope_parameters=QWEN3_ROPE, head_dim=16), vision_config=QWEN3_VISION, **IDS
        )
        model = tf.Qwen3VLForConditionalGeneration(cfg)
    elif family == "qwen3_vl_moe":
        cfg = tf.Qwen3VLMoeConfig(
            text_config=dict(
                TEXT,
                rope_parameters=QWEN3_ROPE,
                head_dim=16,
                moe_intermediate_size=32,
                num_experts=4,
                num_experts_per_tok=2,
            ),
            vision_config=QWEN3_VISION,
            **IDS,
        )
        model = tf.Qwen3VLMoeForConditionalGeneration(cfg)
    elif family in ("qwen3_5", "qwen3_5_moe"):
        # hybrid text model: layer 0 Gated DeltaNet (linear attention), layer 1 full attention
        rope = {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 1, 1],
            "mrope_interleaved": True,
            "partial_rotary_factor": 0.25,
        }
        text = dict(
            TEXT,
            rope_parameters=rope,
            head_dim=32,
            layer_types=["linear_attention", "full_attention"],
            linear_key_head_dim=16,
            linear_value_head_dim=16,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
        )
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            num_position_embeddings=64,
            patch_size=14,
        )
        if family == "qwen3_5":
            cfg = tf.Qwen3_5Config(text_config=text, vision_config=vision, **IDS)
            model = tf.Qwen3_5ForConditionalGeneration(cfg)
        else:
            text.pop("intermediate_size")
            text.update(
                moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2
            )
            cfg = tf.Qwen3_5MoeConfig(text_config=text, vision_config=vision, **IDS)
            model = tf.Qwen3_5MoeForConditionalGeneration(cfg)
    elif family in GLM:
        text = dict(TEXT, rope_parameters=GLM_ROPE)
        if family == "glm4v_moe":
            text.update(moe_intermediate_size=32, n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=1)
        config, cls = {
            "glm4v": (tf.Glm4vConfig, tf.Glm4vForConditionalGeneration),
            "glm4v_moe": (tf.Glm4vMoeConfig, tf.Glm4vMoeForConditionalGeneration),
            "glm46v": (tf.Glm46VConfig, tf.Glm46VForConditionalGeneration),
        }[family]
        model = cls(config(text_config=text, vision_config=GLM_VISION, **GLM_IDS))
    elif family == "llava_onevision":
        cfg = tf.LlavaOnevisionConfig(
            text_config=dict(TEXT, model_type="qwen2"),
            vision_config={k: v for k, v in CLIP_VISION.items() if k != "projection_dim"}
            | {"model_type": "siglip_vision_model"},
            image_token_id=IDS["image_token_id"],
            video_token_id=IDS["video_token_id"],
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
        )
        model = tf.LlavaOnevisionForConditionalGeneration(cfg)
    elif family == "perception_lm":
        cfg = tf.PerceptionLMConfig(
            text_config=dict(TEXT, model_type="llama"),
            vision_config=dict(PLM_VISION, model_type="timm_wrapper"),
            vision_use_cls_token=True,
            projector_pooling_ratio=2,
            image_token_id=IDS["image_token_id"],
            video_token_id=IDS["video_token_id"],
        )
        model = tf.PerceptionLMForConditionalGeneration(cfg)
    elif family in ("video_llava", "llava_next_video"):
        config, cls = {
            "video_llava": (tf.VideoLlavaConfig, tf.VideoLlavaForConditionalGeneration),
            "llava_next_video": (tf.LlavaNextVideoConfig, tf.LlavaNextVideoForConditionalGeneration),
        }[family]
        cfg = config(
            text_config=dict(TEXT, model_type="llama"),
            vision_config=CLIP_VISION,
            image_token_id=IDS["image_token_id"],
            video_token_id=IDS["video_token_id"],
            vision_feature_layer=-1,
        )
        model = cls(cfg)
    elif family == "qwen3_omni_moe_thinker":  # MoE text, Qwen3-VL's deepstack vision tower, interleaved M-RoPE
        cfg = tf.Qwen3OmniMoeThinkerConfig(
            text_config=dict(
                TEXT,
                rope_parameters=QWEN3_ROPE,
                head_dim=16,
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=32,
                decoder_sparse_step=1,
            ),
            vision_config=dict(QWEN3_VISION, spatial_merge_size=2, temporal_patch_size=2),
            audio_config=dict(
                OMNI_AUDIO, downsample_hidden_size=16, n_window=50, n_window_infer=800, conv_chunksize=500
            ),
            image_token_id=IDS["image_token_id"],
            video_token_id=IDS["video_token_id"],
            audio_token_id=OMNI_IDS["audio_token_id"],
            audio_start_token_id=OMNI_IDS["audio_start_token_id"],
            vision_start_token_id=IDS["vision_start_token_id"],
        )
        model = tf.Qwen3OmniMoeThinkerForConditionalGeneration(cfg)
    elif family == "gemma4":  # bidirectional attention inside each frame's run of placeholders
        cfg = tf.Gemma4Config(
            text_config=dict(
                TEXT,
                head_dim=16,
                vocab_size_per_layer_input=TEXT["vocab_size"],
                hidden_size_per_layer_input=8,
                sliding_window=64,
                layer_types=["sliding_attention", "full_attention"],
                use_bidirectional_attention="vision",
            ),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                head_dim=16,
                pooling_kernel_size=3,
                patch_size=14,
                position_embedding_size=64,
            ),
            audio_config=None,
            boa_token_id=154,
            eoa_token_index=155,
            audio_token_id=156,
            **GEMMA_IDS,
        )
        model = tf.Gemma4ForConditionalGeneration(cfg)
    elif family == "gemma4_unified":  # Gemma 4's text model and layout, an encoder-free linear patch embedder
        cfg = tf.Gemma4UnifiedConfig(
            text_config=build("gemma4", attn).config.text_config.to_dict(),
            vision_config=dict(
                patch_size=2, pooling_kernel_size=3, mm_embed_dim=64, mm_posemb_size=64, output_proj_dims=64
            ),
            audio_config=None,
            boa_token_id=154,
            eoa_token_index=155,
            audio_token_id=156,
            **GEMMA_IDS,
        )
        model = tf.Gemma4UnifiedForConditionalGeneration(cfg)
    elif family == "video_llama_3":
        cfg = tf.VideoLlama3Config(
            text_config=dict(TEXT, model_type="qwen2"),
            vision_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=14
            ),
            image_token_id=IDS["image_token_id"],
            video_token_id=IDS["video_token_id"],
        )
        model = tf.VideoLlama3ForConditionalGeneration(cfg)
    elif family == "molmo2":
        text = {k: v for k, v in TEXT.items() if not k.endswith("_token_id")}
        cfg = tf.Molmo2Config(
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                head_dim=16,
                image_size=[MOLMO_SIDE * 14] * 2,
                patch_size=14,
                num_position_embeddings=MOLMO_SIDE**2,
            ),
            adapter_config=dict(
                vision_feature_layer=[-1],
                hidden_size=32,
                num_attention_heads=2,
                num_key_value_heads=2,
                head_dim=16,
                intermediate_size=64,
                text_hidden_size=TEXT["hidden_size"],
            ),
            text_config=dict(text, head_dim=16, additional_vocab_size=16),
            image_start_token_id=150,
            low_res_image_start_token_id=152,
            image_end_token_id=153,
            **MOLMO_IDS,
        )
        model = tf.Molmo2ForConditionalGeneration(cfg)
    elif family == "qwen2_5_omni":  # the whole model: the thinker family's thinker, a tiny talker and vocoder
        thinker = build("qwen2_5_omni_thinker", attn)
        cfg = tf.Qwen2_5OmniConfig(
            thinker_config=thinker.config.to_dict(),
            talker_config=OMNI_TALKER,
            token2wav_config=OMNI_TOKEN2WAV,
            enable_audio_output=True,
        )
        model = tf.Qwen2_5OmniForConditionalGeneration(cfg)
        model.thinker.load_state_dict(thinker.state_dict())
        model.thinker.generation_config = copy.deepcopy(thinker.generation_config)
        model.speaker_map = {"Chelsie": {}}  # generate() checks the speaker even for text
    elif family == "qwen3_omni_moe":  # the whole model without its talker (its generate() writes text then)
        thinker = build("qwen3_omni_moe_thinker", attn)
        model = tf.Qwen3OmniMoeForConditionalGeneration(
            tf.Qwen3OmniMoeConfig(thinker_config=thinker.config.to_dict(), enable_audio_output=False)
        )
        model.thinker.load_state_dict(thinker.state_dict())
        model.thinker.generation_config = copy.deepcopy(thinker.generation_config)
    else:
        raise ValueError(family)
    model.config._attn_implementation = attn
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None  # generate the full length: more steps to compare
    return model.eval()


def video_tokens(family: str, model, video) -> list:
    """Placeholder ids of one video, with the family's separators (Qwen3-VL: a timestamp per frame)."""
    V, S, E, TOK = (
        IDS["video_token_id"],
        IDS["vision_start_token_id"],
        IDS["vision_end_token_id"],
        IDS["video_token_id"],
    )
    if (
        family in MOLMO
    ):  # per frame " " (between frames), "t.1f " (two text tokens), <frame_start>, placeholders, <frame_end>
        per = (MOLMO_SIDE // 2) ** 2
        out = []
        for f in range(video):
            out += ([40] if f else []) + [41, 42 + f, MOLMO_IDS["frame_start_token_id"]]
            out += [MOLMO_IDS["image_patch_id"]] * per + [MOLMO_IDS["frame_end_token_id"]]
        return out
    if family in GEMMA:  # per frame "mm:ss" (two text tokens), <boi>, its placeholders, <eoi>; frames joined by " "
        per = (GEMMA_SIDE // model.config.vision_config.pooling_kernel_size) ** 2
        out = []
        for f in range(video):
            out += ([40] if f else []) + [41, 42 + f, GEMMA_IDS["boi_token_id"]]
            out += [GEMMA_IDS["video_token_id"]] * per + [GEMMA_IDS["eoi_token_id"]]
        return out
    if family == "llava_onevision":
        frames = video.shape[0]
        side = model.config.vision_config.image_size // model.config.vision_config.patch_size
        return [TOK] * (frames * ((side + 1) // 2) ** 2 + 1)
    if family == "video_llava":  # CLS + patches per frame
        side = model.config.vision_config.image_size // model.config.vision_config.patch_size
        return [TOK] * (video.shape[0] * (side * side + 1))
    if family == "perception_lm":  # patches (CLS dropped) pooled by the projector per frame
        side = PLM_SIDE // PLM_VISION["model_args"]["patch_size"] // model.config.projector_pooling_ratio
        return [TOK] * (video.shape[0] * side * side)
    if family == "llava_next_video":  # patches pooled by the stride per frame
        side = model.config.vision_config.image_size // model.config.vision_config.patch_size
        return [TOK] * (video.shape[0] * (side // model.config.spatial_pool_stride) ** 2)
    t, h, w = video
    per = h * w // 4
    if family in GLM:
        ids = GLM_IDS
        out = [ids["video_start_token_id"]]
        for i in range(t):  # each group: its placeholders (the IMAGE token id), then its timestamp
            out += [ids["image_start_token_id"]] + [ids["image_token_id"]] * per + [ids["image_end_token_id"], 40 + i]
        return out + [ids["video_end_token_id"]]
    if family in VIDEO_LLAMA_3:  # per frame "t.1fs:" (two text tokens) then its placeholders, "," between frames
        out = []
        for i in range(t):
            out += ([43] if i else []) + [44, 45 + i] + [V] * per
        return out
    if family in TIMESTAMPED:
        out = []
        for i in range(t):
            out += [40 + i, 41, S] + [V] * per + [E]  # "<t0.5 seconds>" style text, then the frame
        return out
    return [S] + [V] * (t * per) + [E]


def video_mask(family: str, inputs: dict) -> torch.Tensor:
    """(B, L) bool: the video placeholders of a prompt made for ``family`` (GLM-4V: image token ids
    that mm_token_type_ids marks as video)."""
    if family in GLM:
        return (inputs["input_ids"] == GLM_IDS["image_token_id"]) & (inputs["mm_token_type_ids"] == 2)
    return inputs["input_ids"] == IDS["video_token_id"]


def plain_expansion_error(model, inputs) -> Exception | None:
    """The error the PLAIN model raises for a prompt repeated for beams and return sequences, or
    None. transformers 5.25 counts the video placeholders it repeats by ``video_token_id``, so a
    GLM-4V video (image token ids) fails there with or without compression; the adapter tests then
    require the same error, not an answer."""
    try:
        model.generate(**inputs, max_new_tokens=2, num_beams=2, num_return_sequences=2)
    except ValueError as error:
        return error
    return None


def always_kept(family: str, samples) -> int:
    """Video placeholders of ``samples`` that every selection keeps: LLaVA-OneVision's newline per
    video, Video-LLaVA's CLS token per frame."""
    if family == "llava_onevision":
        return len(samples)
    if family == "video_llava":
        return sum(frames for _, frames, _ in samples)
    return 0


def samples_for(family: str) -> list:
    """The two samples of the adapter tests (different video sizes, different text lengths):
    (text_before, video, text_after), video as ``make_batch`` takes it."""
    if family in FRAME_PIXELS:
        return [([1, 5, 6], 3, [7, 8]), ([1, 9], 3, [10, 11, 12, 13])]
    if family in GEMMA + MOLMO:
        return [([1, 5, 6], 3, [7, 8]), ([1, 9], 2, [10, 11, 12, 13])]
    return [([1, 5, 6], (2, 4, 6), [7, 8]), ([1, 9], (3, 4, 4), [10, 11, 12, 13])]


def make_batch(family: str, model, samples, seed: int = 0, side: str = "left") -> dict:
    """Processor-like inputs, padded on ``side``. ``samples``: list of (text_before, video, text_after)
    where video is (t, h, w) for Qwen and a frame count for LLaVA-OneVision."""
    g = torch.Generator().manual_seed(seed)
    rows, pixels, grids = [], [], []
    for before, video, after in samples:
        if family in MOLMO:
            pixels.append(torch.randn(video, MOLMO_SIDE**2, 3 * 14 * 14, generator=g))
            grids.append([video, MOLMO_SIDE // 2, MOLMO_SIDE // 2])
            rows.append(list(before) + video_tokens(family, model, video) + list(after))
        elif family == "gemma4_unified":
            patches = (GEMMA_SIDE // 3) ** 2 + UNIFIED_PADDING
            pixels.append(torch.randn(video, patches, UNIFIED_PIXELS, generator=g))
            pixels[-1][:, -UNIFIED_PADDING:] = 0  # the processor's padding patches are zeros
            grids.append(video)
            rows.append(list(before) + video_tokens(family, model, video) + list(after))
        elif family in GEMMA:
            pixels.append(torch.randn(video, GEMMA_SIDE**2, 3 * 14 * 14, generator=g))
            grids.append(video)
            rows.append(list(before) + video_tokens(family, model, video) + list(after))
        elif family in FRAME_PIXELS:
            size = PLM_SIDE if family == "perception_lm" else model.config.vision_config.image_size
            clip = torch.randn(video, 3, size, size, generator=g)
            pixels.append(clip)
            rows.append(list(before) + video_tokens(family, model, clip) + list(after))
        else:
            t, h, w = video
            width = 3 * 14 * 14 if family in VIDEO_LLAMA_3 else 3 * 2 * 14 * 14  # no temporal patches there
            pixels.append(torch.randn(t * h * w, width, generator=g))
            grids.append([t, h, w])
            rows.append(list(before) + video_tokens(family, model, video) + list(after))
    L = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), L), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        at = slice(0, len(r)) if side == "right" else slice(L - len(r), L)
        ids[b, at] = torch.tensor(r)
        mask[b, at] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if family in MOLMO:
        out["pixel_values_videos"] = torch.cat(pixels)
        out["video_grids"] = torch.tensor(grids)
        out["video_token_pooling"] = torch.cat([molmo_pooling(frames) for frames, _, _ in grids])
        marks = (MOLMO_IDS["image_patch_id"], MOLMO_IDS["frame_start_token_id"], MOLMO_IDS["frame_end_token_id"])
        out["mm_token_type_ids"] = torch.isin(ids, torch.tensor(marks)).long()
    elif family in GEMMA:
        out["pixel_values_videos"] = torch.cat(pixels)
        out["video_position_ids"] = gemma_positions(family, out["pixel_values_videos"].shape[0])
        out["num_frames_per_video"] = torch.tensor(grids)
        out["mm_token_type_ids"] = (ids == GEMMA_IDS["video_token_id"]).long() * 2
    elif family in FRAME_PIXELS:
        out["pixel_values_videos"] = torch.stack(pixels)
    else:
        out["pixel_values_videos"] = torch.cat(pixels)
        out["video_grid_thw"] = torch.tensor(grids)
        if family in OMNI:  # no mm_token_type_ids: its processor makes none, its generate() takes none
            out["video_second_per_grid"] = torch.full((len(grids),), OMNI_SECONDS_PER_GRID)
        elif family in VIDEO_LLAMA_3:  # whole frames: what its processor gives with use_token_compression=False
            out["video_merge_sizes"] = torch.full((len(grids),), 2)
            out["video_compression_mask"] = torch.ones(sum(t * h * w // 4 for t, h, w in grids), dtype=torch.bool)
        else:
            placeholder = GLM_IDS["image_token_id"] if family in GLM else IDS["video_token_id"]
            out["mm_token_type_ids"] = (ids == placeholder).int() * 2
    return out


def omni_audio_video_batch(model, samples, seed: int = 0) -> dict:
    """Omni thinker inputs with ``use_audio_in_video``: each sample is (text_before, (t, h, w),
    audio feature frames, text_after), its video's placeholders interleaved with its audio's by the
    processor's own rule, inside ``<vision_bos> <audio_bos> ... <audio_eos> <vision_eos>``:
    Qwen2.5-Omni in time chunks (``Qwen2_5OmniProcessor.get_chunked_index``), Qwen3-Omni token by
    token in time order (each temporal group at its start time, then the audio up to the next).
    Left-padded."""
    from transformers import Qwen2_5OmniProcessor
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import _get_feat_extract_output_lengths

    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    V, A = IDS["video_token_id"], OMNI_IDS["audio_token_id"]
    rows, pixels, grids, frames = [], [], [], []
    for before, (t, h, w), audio_frames, after in samples:
        pixels.append(torch.randn(t * h * w, 3 * 2 * 14 * 14, generator=g))
        grids.append([t, h, w])
        frames.append(audio_frames)
        per_frame = h * w // 4
        times = (
            torch.arange(t).repeat_interleave(per_frame).numpy() * OMNI_SECONDS_PER_GRID * cfg.position_id_per_seconds
        )
        ids = [IDS["vision_start_token_id"], OMNI_IDS["audio_start_token_id"]]
        if cfg.model_type == "qwen3_omni_moe_thinker":
            audio = int(_get_feat_extract_output_lengths(torch.tensor(audio_frames)))
            ids += [A if kind else V for _, kind in sorted([(x, 0) for x in times] + [(j, 1) for j in range(audio)])]
        else:
            audio = ((audio_frames - 1) // 2 + 1 - 2) // 2 + 1  # the audio tower's output length (two stride-2 steps)
            per_chunk = int(cfg.position_id_per_seconds * cfg.seconds_per_chunk)
            video_chunks = Qwen2_5OmniProcessor.get_chunked_index(None, times, per_chunk)
            audio_chunks = Qwen2_5OmniProcessor.get_chunked_index(None, torch.arange(audio).numpy(), per_chunk)
            for j in range(max(len(video_chunks), len(audio_chunks))):
                if j < len(video_chunks):
                    ids += [V] * (video_chunks[j][1] - video_chunks[j][0])
                if j < len(audio_chunks):
                    ids += [A] * (audio_chunks[j][1] - audio_chunks[j][0])
        ids += [OMNI_IDS["audio_end_token_id"], IDS["vision_end_token_id"]]
        rows.append(list(before) + ids + list(after))
    L, F = max(len(r) for r in rows), max(frames)
    out = {"input_ids": torch.zeros((len(rows), L), dtype=torch.long)}
    out["attention_mask"] = torch.zeros_like(out["input_ids"])
    for b, r in enumerate(rows):
        out["input_ids"][b, L - len(r) :] = torch.tensor(r)
        out["attention_mask"][b, L - len(r) :] = 1
    out["pixel_values_videos"] = torch.cat(pixels)
    out["video_grid_thw"] = torch.tensor(grids)
    out["video_second_per_grid"] = torch.full((len(rows),), OMNI_SECONDS_PER_GRID)
    out["input_features"] = torch.randn(len(rows), cfg.audio_config.num_mel_bins, F, generator=g)
    out["feature_attention_mask"] = (torch.arange(F)[None] < torch.tensor(frames)[:, None]).long()
    out["use_audio_in_video"] = True
    return out


def molmo_pooling(frames: int) -> torch.Tensor:
    """(frames * (side/2)**2, 4) patch indices of a video: each placeholder pools its 2 x 2 patches."""
    half = MOLMO_SIDE // 2
    return torch.tensor(
        [
            [f * MOLMO_SIDE**2 + (2 * r + dr) * MOLMO_SIDE + 2 * c + dc for dr in range(2) for dc in range(2)]
            for f in range(frames)
            for r in range(half)
            for c in range(half)
        ]
    )


def gemma_positions(family: str, frames: int) -> torch.Tensor:
    """(frames, patches, 2) (x, y) of every patch of a GEMMA_SIDE x GEMMA_SIDE frame (Gemma 4), or
    of every 3 x 3-merged model patch and the (-1, -1) padding (Gemma 4 Unified)."""
    side = GEMMA_SIDE // 3 if family == "gemma4_unified" else GEMMA_SIDE
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1)
    if family == "gemma4_unified":
        grid = torch.cat([grid, torch.full((UNIFIED_PADDING, 2), -1)])
    return grid[None].repeat(frames, 1, 1)


def split_batch(family: str, batch: dict, b: int, samples) -> dict:
    """Sample b of a batch built by make_batch, unpadded, as its own batch of one."""
    keep = batch["attention_mask"][b].bool()
    out = {"input_ids": batch["input_ids"][b, keep][None], "attention_mask": batch["attention_mask"][b, keep][None]}
    if family in MOLMO:
        frames = batch["video_grids"][:, 0].tolist()
        tokens = batch["video_grids"].prod(-1).tolist()
        out["pixel_values_videos"] = batch["pixel_values_videos"][sum(frames[:b]) : sum(frames[: b + 1])]
        out["video_grids"] = batch["video_grids"][b : b + 1]
        out["video_token_pooling"] = batch["video_token_pooling"][sum(tokens[:b]) : sum(tokens[: b + 1])]
        out["mm_token_type_ids"] = batch["mm_token_type_ids"][b, keep][None]
    elif family in GEMMA:
        frames = batch["num_frames_per_video"].tolist()
        at = slice(sum(frames[:b]), sum(frames[: b + 1]))
        out["pixel_values_videos"] = batch["pixel_values_videos"][at]
        out["video_position_ids"] = batch["video_position_ids"][at]
        out["num_frames_per_video"] = batch["num_frames_per_video"][b : b + 1]
        out["mm_token_type_ids"] = batch["mm_token_type_ids"][b, keep][None]
    elif family in FRAME_PIXELS:
        out["pixel_values_videos"] = batch["pixel_values_videos"][b : b + 1]
    else:
        sizes = [t * h * w for _, (t, h, w), _ in samples]
        start = sum(sizes[:b])
        out["pixel_values_videos"] = batch["pixel_values_videos"][start : start + sizes[b]]
        out["video_grid_thw"] = batch["video_grid_thw"][b : b + 1]
        if family in OMNI:
            out["video_second_per_grid"] = batch["video_second_per_grid"][b : b + 1]
        elif family in VIDEO_LLAMA_3:
            out["video_merge_sizes"] = batch["video_merge_sizes"][b : b + 1]
            tokens = [t * h * w // 4 for _, (t, h, w), _ in samples]
            out["video_compression_mask"] = batch["video_compression_mask"][sum(tokens[:b]) : sum(tokens[: b + 1])]
        else:
            out["mm_token_type_ids"] = batch["mm_token_type_ids"][b, keep][None]
    return out


def check_merging_method(family: str, method: str, options=None, identity_at_full: bool = True) -> None:
    """A merging method (with its ``options``) through ``generate()`` on the tiny model of
    ``family``: retention 1.0 keeps the plain model's outputs (unless the method folds tokens
    even there: ``identity_at_full=False``); at 0.5 the prefill is shorter, merged rows are
    reported, each row of a left-padded batch equals its sample alone, and every row starts with
    the caller's ids."""
    from vidcom2_kernels import adapters  # the package after conftest has configured Triton

    model = build(family)
    samples = samples_for(family)
    batch = make_batch(family, model, samples)
    kw = dict(max_new_tokens=3, do_sample=False)
    plain = model.generate(**batch, **kw)
    if identity_at_full:
        with adapters.apply_compression(model, method, 1.0, options=options):
            assert torch.equal(model.generate(**batch, **kw), plain)
    with adapters.apply_compression(model, method, 0.5, options=options) as handle:
        together = model.generate(**batch, **kw)
        assert handle.last.video_tokens_after < handle.last.video_tokens_before
        assert handle.last.compression.merged.any()
        for b in range(len(samples)):
            alone = model.generate(**split_batch(family, batch, b, samples), **kw)
            assert torch.equal(together[b, -3:], alone[0, -3:])
    assert torch.equal(together[:, : batch["input_ids"].shape[1]], batch["input_ids"])


def make_mixed_batch(rows, seed: int = 0, family: str = "qwen2_vl") -> dict:
    """Qwen2-VL (or Qwen2.5-Omni thinker) inputs from rows of parts: ints are text tokens,
    ("video", (t, h, w)) and ("image", (h, w)) are media (images are one temporal patch group,
    t = 1). Left-padded."""
    g = torch.Generator().manual_seed(seed)
    ids_rows, types_rows, videos, video_grids, images, image_grids = [], [], [], [], [], []
    S, E = IDS["vision_start_token_id"], IDS["vision_end_token_id"]
    for parts in rows:
        ids, types = [], []
        for part in parts:
            if isinstance(part, int):
                ids.append(part)
                types.append(0)
                continue
            kind, grid = part
            t, h, w = grid if kind == "video" else (1, *grid)
            token, code = (IDS["video_token_id"], 2) if kind == "video" else (IDS["image_token_id"], 1)
            n = t * h * w // 4
            ids += [S] + [token] * n + [E]
            types += [0] + [code] * n + [0]
            pixels = torch.randn(t * h * w, 3 * 2 * 14 * 14, generator=g)
            (videos if kind == "video" else images).append(pixels)
            (video_grids if kind == "video" else image_grids).append([t, h, w])
        ids_rows.append(ids)
        types_rows.append(types)
    L = max(len(r) for r in ids_rows)
    out = {"input_ids": torch.zeros((len(rows), L), dtype=torch.long)}
    out["attention_mask"] = torch.zeros_like(out["input_ids"])
    out["mm_token_type_ids"] = torch.zeros_like(out["input_ids"], dtype=torch.int)
    for b, (ids, types) in enumerate(zip(ids_rows, types_rows)):
        out["input_ids"][b, L - len(ids) :] = torch.tensor(ids)
        out["attention_mask"][b, L - len(ids) :] = 1
        out["mm_token_type_ids"][b, L - len(ids) :] = torch.tensor(types, dtype=torch.int)
    if videos:
        out["pixel_values_videos"], out["video_grid_thw"] = torch.cat(videos), torch.tensor(video_grids)
    if images:
        out["pixel_values"], out["image_grid_thw"] = torch.cat(images), torch.tensor(image_grids)
    if family in OMNI:  # no mm_token_type_ids; seconds per temporal patch group, one per video
        del out["mm_token_type_ids"]
        if videos:
            out["video_second_per_grid"] = torch.full((len(videos),), OMNI_SECONDS_PER_GRID)
    return out
