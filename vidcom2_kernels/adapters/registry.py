"""The one registry of model families: ``model_type`` -> adapter, from each adapter's declared
``model_classes`` (the lmms-eval launcher reads it too)."""

from __future__ import annotations

from .base import Adapter
from .gemma4 import Gemma4Adapter, Gemma4UnifiedAdapter
from .glm4v import Glm4vAdapter
from .llava_next_video import LlavaNextVideoAdapter
from .llava_onevision import LlavaOnevisionAdapter
from .molmo2 import Molmo2Adapter
from .perception_lm import PerceptionLMAdapter
from .qwen2_5_omni import Qwen25OmniAdapter
from .qwen2_5_vl import Qwen25VLAdapter
from .qwen2_vl import Qwen2VLAdapter
from .qwen3_5 import Qwen35Adapter
from .qwen3_omni import Qwen3OmniAdapter
from .qwen3_vl import Qwen3VLAdapter
from .video_llama_3 import VideoLlama3Adapter
from .video_llava import VideoLlavaAdapter

FAMILIES = (
    Qwen2VLAdapter,
    Qwen25VLAdapter,
    Qwen3VLAdapter,
    Qwen35Adapter,
    Qwen25OmniAdapter,
    Qwen3OmniAdapter,
    Glm4vAdapter,
    Gemma4Adapter,
    Gemma4UnifiedAdapter,
    LlavaOnevisionAdapter,
    LlavaNextVideoAdapter,
    VideoLlavaAdapter,
    VideoLlama3Adapter,
    Molmo2Adapter,
    PerceptionLMAdapter,
)
#: model_type -> adapter class
ADAPTERS = {model_type: cls for cls in FAMILIES for model_type in cls.model_classes}
#: lmms-eval ``--model`` names whose models have an adapter (once each: a name may load several)
LMMS_EVAL_MODELS = tuple(dict.fromkeys(name for cls in FAMILIES for name in cls.lmms_eval_models))


def adapter_for(model) -> Adapter:
    """The adapter registered for ``model.config.model_type``; a clear error otherwise."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTERS:
        raise ValueError(f"VidCom2 has no adapter for model_type {model_type!r}; supported: {sorted(ADAPTERS)}")
    return ADAPTERS[model_type]()
