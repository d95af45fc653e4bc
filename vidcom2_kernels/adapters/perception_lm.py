"""PerceptionLM: every frame is ``T`` placeholders, the tokens of its timm vision tower (the CLS
token dropped) through the projector, pooled by ``projector_pooling_ratio`` (256 at 448 px with
patches of 14 and a pooling of 2), frames one after another with no separator. Every token is
scored; nothing is always kept. Positions are 1-D. Videos are encoded by the image encoder
(``get_image_features`` of the frames): its time is the timing record's encoder time, images of the
same call included. transformers < 5.18 re-encodes the video pixels inside ``forward`` through that
shared image encoder, so PerceptionLM is refused there."""

from __future__ import annotations

from .base import EncodedVideos, FramePixelsAdapter, accepts_encoder_outputs


class PerceptionLMAdapter(FramePixelsAdapter):
    model_classes = {"perception_lm": "PerceptionLMForConditionalGeneration"}
    lmms_eval_models = ()  # lmms-eval's "plm" loads Meta's perception_models package, not transformers
    encoder_name = "get_image_features"

    def check_inputs(self, model, inputs: dict) -> None:
        if not accepts_encoder_outputs(model):
            raise ValueError(
                "PerceptionLM needs transformers >= 5.18: before, forward encodes the video pixels itself through "
                "the image encoder, which the adapter cannot hand the kept tokens to without changing the images'"
            )
        super().check_inputs(model, inputs)

    def encoder_output(self, model, inputs: dict, get_video_features=None, select_strategy: bool = False):
        """The frames through the image encoder, as ``forward`` encodes ``pixel_values_videos``."""
        encode = get_video_features or self.inner_model(model).get_image_features
        return encode(pixel_values=inputs["pixel_values_videos"], return_dict=True)

    def encode_videos(self, model, inputs: dict, get_video_features=None) -> EncodedVideos:
        out = self.encoder_output(model, inputs, get_video_features)
        V, F = inputs["pixel_values_videos"].shape[:2]
        pooled = out.pooler_output  # (V * F, T, C)
        if pooled.dim() != 3 or pooled.shape[0] != V * F:
            raise ValueError(f"expected ({V * F} frames, tokens, C) video features, got {tuple(pooled.shape)}")
        T = pooled.shape[1]
        return EncodedVideos(out, pooled.reshape(V * F * T, -1), [(F, T)] * V)
