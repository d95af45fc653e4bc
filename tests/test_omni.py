"""Qwen2.5-Omni: the thinker with audio in the video (the audio placeholders interleaved with the
video's in time chunks are all kept, in order, at their TMRoPE positions), and the whole Omni
model, which generates text through its thinker (a call that would run the talker is refused).
The thinker's generic guarantees (exactness, batches, beams, remove) are in test_adapters.py and
test_generate_contract.py with every family."""

import copy
import re

import pytest
import tiny_models as tm
import torch

from vidcom2_kernels import adapters
from vidcom2_kernels.adapters.qwen2_5_omni import takes_return_audio
from vidcom2_kernels.adapters.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
STEPS = 4
THINKERS = ["qwen2_5_omni_thinker", "qwen3_omni_moe_thinker"]
#: (text before, video grid (t, h, w), audio feature frames, text after): two chunks of video and audio
AUDIO_SAMPLES = [([1, 5, 6], (3, 4, 6), 250, [7, 8]), ([1, 9], (2, 4, 4), 180, [10, 11, 12])]


def generate(model, inputs, **kwargs):
    kw = dict(max_new_tokens=STEPS, do_sample=False, return_dict_in_generate=True, output_logits=True)
    return model.generate(**inputs, **{**kw, **kwargs})


def sample(batch: dict, b: int) -> dict:
    """Sample ``b`` of an :func:`tm.omni_audio_video_batch`, unpadded, as a batch of one."""
    keep = batch["attention_mask"][b].bool()
    sizes = batch["video_grid_thw"].prod(-1).tolist()
    start = sum(sizes[:b])
    frames = int(batch["feature_attention_mask"][b].sum())
    return {
        "input_ids": batch["input_ids"][b, keep][None],
        "attention_mask": batch["attention_mask"][b, keep][None],
        "pixel_values_videos": batch["pixel_values_videos"][start : start + sizes[b]],
        "video_grid_thw": batch["video_grid_thw"][b : b + 1],
        "video_second_per_grid": batch["video_second_per_grid"][b : b + 1],
        "input_features": batch["input_features"][b : b + 1, :, :frames],
        "feature_attention_mask": batch["feature_attention_mask"][b : b + 1, :frames],
        "use_audio_in_video": True,
    }


@pytest.mark.parametrize("family", THINKERS)
def test_audio_in_the_video_is_kept_in_order_at_its_positions(family):
    tm.require(family)
    model = tm.build(family)
    batch = tm.omni_audio_video_batch(model, AUDIO_SAMPLES)
    ids, video = batch["input_ids"], batch["input_ids"] == tm.IDS["video_token_id"]
    plain = generate(model, batch)
    with adapters.apply_vidcom2(model, 1.0, exact=True):
        exact = generate(model, batch)
    assert torch.equal(exact.sequences, plain.sequences)
    assert all(torch.equal(a, b) for a, b in zip(exact.logits, plain.logits))

    adapter = adapters.adapter_for(model)
    full = adapter.full_positions(model, batch)  # (3, B, L) TMRoPE of the unpruned prompt
    pruned = adapter.prune(model, batch, Settings(0.25))
    kwargs = pruned.kwargs
    # the positions that stay: all text and audio, and the kept video placeholders (one video per
    # row, so the row-major placeholders are the videos' tokens in order)
    stays = batch["attention_mask"].bool() & ~video
    stays[video] = pruned.compression.mask.to(stays.device)
    for b in range(ids.shape[0]):
        kept = kwargs["attention_mask"][b].bool()
        assert torch.equal(kwargs["input_ids"][b, kept], ids[b, stays[b]])
        assert int((kwargs["input_ids"][b, kept] == tm.OMNI_IDS["audio_token_id"]).sum()) == int(
            (ids[b] == tm.OMNI_IDS["audio_token_id"]).sum()
        )
        assert torch.equal(kwargs["position_ids"][1:, b][:, kept], full[:, b][:, stays[b]])
    assert pruned.video_tokens_after < pruned.video_tokens_before

    with adapters.apply_vidcom2(model, 0.25) as handle:
        together = generate(model, batch)
        assert handle.last.video_tokens_after == pruned.video_tokens_after
        for b in range(len(AUDIO_SAMPLES)):
            alone = generate(model, sample(batch, b))
            assert torch.equal(together.sequences[b, -STEPS:], alone.sequences[0, -STEPS:])
    assert torch.equal(together.sequences[:, : ids.shape[1]], ids)


@pytest.mark.parametrize("family", THINKERS)
@pytest.mark.parametrize("seconds", [0.5, 2.0])
def test_tmrope_time_rows_follow_the_seconds_per_grid(seconds, family):
    """The kept video tokens carry the time row the unpruned prompt gives them (grid index x
    ``video_second_per_grid`` x ``position_id_per_seconds``), and decoding continues after the
    largest position, as in the plain model."""
    tm.require(family)
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family))
    inputs["video_second_per_grid"] = torch.full((2,), seconds)
    adapter = adapters.adapter_for(model)
    full = adapter.full_positions(model, inputs)
    video = inputs["input_ids"] == tm.IDS["video_token_id"]
    t, h, w = tm.samples_for(family)[0][1]
    times = full[0, 0][video[0]].view(t, h * w // 4)[:, 0]  # from the video's first position on
    # Qwen2.5-Omni truncates the time steps to integers, Qwen3-Omni keeps them in float32
    steps = torch.tensor([i * seconds * model.config.position_id_per_seconds for i in range(t)]).to(times.dtype)
    assert torch.equal(times - times[0], steps)
    pruned = adapter.prune(model, inputs, Settings(0.25)).kwargs
    kept_video = pruned["input_ids"] == tm.IDS["video_token_id"]
    assert set(pruned["position_ids"][1][kept_video].tolist()) <= set(full[0][video].tolist())
    plain = generate(model, inputs)
    with adapters.apply_vidcom2(model, 1.0, exact=True):
        assert torch.equal(generate(model, inputs).sequences, plain.sequences)


#: whole model -> its thinker's family
WHOLE = {"qwen2_5_omni": "qwen2_5_omni_thinker", "qwen3_omni_moe": "qwen3_omni_moe_thinker"}


def text_only(whole) -> dict:
    """A text-only call of ``whole``: ``return_audio=False`` where its ``generate`` takes it
    (Qwen3-Omni), else ``generation_mode="text"`` (Qwen2.5-Omni)."""
    ask = {"return_audio": False} if takes_return_audio(whole) else {"generation_mode": "text"}
    return dict(thinker_max_new_tokens=STEPS, thinker_do_sample=False, **ask)


@pytest.mark.parametrize("whole_family", list(WHOLE))
def test_whole_model_generates_compressed_text_through_its_thinker(whole_family):
    """The whole Omni model: retention 1.0 gives its plain text answer bit for bit; 0.25 gives the
    compressed thinker's answer, rows starting with the caller's prompt; the encoder and the
    prefill are timed on the thinker; remove() restores generate."""
    tm.require(whole_family)
    family = WHOLE[whole_family]
    whole, thinker = tm.build(whole_family), tm.build(family)
    inputs = tm.make_batch(family, thinker, tm.samples_for(family))
    plain = whole.generate(**inputs, **text_only(whole))
    assert torch.equal(plain, thinker.generate(**inputs, max_new_tokens=STEPS, do_sample=False))
    with adapters.apply_vidcom2(whole, 1.0, exact=True):
        assert torch.equal(whole.generate(**inputs, **text_only(whole)), plain)
    with adapters.apply_vidcom2(thinker, 0.25):
        expect = thinker.generate(**inputs, max_new_tokens=STEPS, do_sample=False)
    with adapters.apply_vidcom2(whole, 0.25) as handle:
        got = whole.generate(**inputs, **text_only(whole))
        call = handle.last_timing
        assert call.video_tokens_after < call.video_tokens_before and call.prefill_s > 0 and call.encoder_s > 0
        assert call.new_tokens == 2 * STEPS
    assert torch.equal(got, expect) and torch.equal(got[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    assert "generate" not in whole.__dict__ and "generate" not in whole.thinker.__dict__


@pytest.mark.parametrize("whole_family", list(WHOLE))
@pytest.mark.parametrize("ask", [{}, {"generation_mode": "audio"}, {"return_audio": True}])
def test_whole_model_refuses_a_call_that_would_speak(whole_family, ask):
    """With a talker, a call that does not ask for text only would hand the talker the thinker's
    hidden states of the pruned prompt: refused in one line, before the video is encoded. (The
    tiny Qwen3-Omni has no talker modules: the flag alone says it has one, which is what is read.)"""
    tm.require(whole_family)
    whole = tm.build(whole_family)
    if not whole.has_talker:
        whole = copy.deepcopy(whole)
        whole.has_talker = True
    family = WHOLE[whole_family]
    inputs = tm.make_batch(family, whole.thinker, tm.samples_for(family))
    encoded = []
    tower = adapters.adapter_for(whole).inner_model(whole).visual  # in the thinker, or its model (5.21+)
    hook = tower.register_forward_pre_hook(lambda *args: encoded.append(1))
    try:
        with adapters.apply_vidcom2(whole, 0.25) as handle:
            text = "return_audio=False" if takes_return_audio(whole) else 'generation_mode="text"'
            with pytest.raises(ValueError, match=f"would also speak.*pass {re.escape(text)}"):
                whole.generate(**inputs, thinker_max_new_tokens=STEPS, **ask)
            assert handle.last is None and handle.last_timing is None and handle.failures == 1
    finally:
        hook.remove()
    assert encoded == []


@pytest.mark.parametrize("family", THINKERS)
def test_a_thinker_without_encoder_outputs_is_refused(family):
    """A thinker whose forward takes no ``mm_encoder_outputs`` (transformers < 5.18: it re-encodes
    inside forward and garbles videos for beams, the plain model too) is refused with the reason
    before any work; later ones pass the check (test_transformers_versions.py runs this on 5.17)."""
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family))
    adapter = adapters.adapter_for(model)
    if tm.unsupported(family):
        with pytest.raises(ValueError, match=r"takes no mm_encoder_outputs \(transformers < 5.18\)"):
            adapter.check_inputs(model, inputs)
    else:
        adapter.check_inputs(model, inputs)
