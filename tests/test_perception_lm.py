"""PerceptionLM, whose vision tower is a timm model: the generic adapter tests (exact at retention
1, batched rows equal alone, padding sides, static cache, beams, return sequences, caller rows,
``remove()``, the timing record) run for it in the side environment ci/timm_env.sh builds over
this one (timm and the torchvision it imports, which cannot be installed beside the CPU torch
here: PyPI's build for it is a CUDA one, whose pure-Python part the shim lets import). Where
timm is importable (that environment), the tests below also run directly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tiny_models as tm
import torch
from helpers import side_environment

from vidcom2_kernels import adapters
from vidcom2_kernels.adapters import perception_lm
from vidcom2_kernels.adapters.base import accepts_encoder_outputs

ROOT = Path(__file__).resolve().parents[1]
FAMILY = "perception_lm"


@pytest.mark.timm
def test_adapter_tests_in_the_timm_environment():
    if tm.unsupported(FAMILY) is None:
        pytest.skip("timm is importable here: the adapter tests ran PerceptionLM in this environment")
    python = side_environment("timm_env.sh", env={"PYTHON": sys.executable})  # over this environment
    files = ["tests/test_adapters.py", "tests/test_generate_contract.py", "tests/test_timing.py", __file__]
    run = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, "-k", f"{FAMILY} and not timm_environment"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-4000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary


def test_perception_lm_frames_and_encoder():
    """Every frame is (side / patch / pooling)^2 placeholders; the video goes through the image
    encoder, whose time is the record's encoder time; a video of a prompt is kept at the frames'
    budgets and the images of the same call keep their features."""
    tm.require(FAMILY)
    model = tm.build(FAMILY)
    samples = tm.samples_for(FAMILY)
    batch = tm.make_batch(FAMILY, model, samples)
    per_frame = (tm.PLM_SIDE // tm.PLM_VISION["model_args"]["patch_size"] // model.config.projector_pooling_ratio) ** 2
    assert int(tm.video_mask(FAMILY, batch).sum()) == sum(f for _, f, _ in samples) * per_frame
    with adapters.apply_compression(model, "vidcom2", 0.5) as handle:
        model.generate(**batch, max_new_tokens=2, do_sample=False)
        assert handle.last.compression.layout.frame_tokens.tolist() == [per_frame] * 6
        assert handle.last_timing.encoder_s > 0 and handle.last.video_tokens_after < handle.last.video_tokens_before
    assert "get_image_features" not in model.model.__dict__


def test_perception_lm_refused_without_encoder_outputs(monkeypatch):
    """transformers < 5.18 encodes the video pixels inside forward, through the image encoder the
    images share: refused with that reason before any work."""
    tm.require(FAMILY)
    model = tm.build(FAMILY)
    assert accepts_encoder_outputs(model)
    batch = tm.make_batch(FAMILY, model, tm.samples_for(FAMILY))
    adapter = adapters.adapter_for(model)
    monkeypatch.setattr(perception_lm, "accepts_encoder_outputs", lambda model: False)
    with pytest.raises(ValueError, match="PerceptionLM needs transformers >= 5.18"):
        adapter.check_inputs(model, batch)
    assert torch.is_tensor(batch["pixel_values_videos"])


def test_perception_lm_images_in_the_prompt_untouched():
    """A prompt with an image before its video: at retention 1 (exact) every step's logits equal
    the plain model's; at 0.5 every image placeholder stays and only video placeholders go."""
    tm.require(FAMILY)
    model = tm.build(FAMILY)
    per_image = (tm.PLM_SIDE // tm.PLM_VISION["model_args"]["patch_size"] // model.config.projector_pooling_ratio) ** 2
    image = [tm.IDS["image_token_id"]] * per_image
    samples = [([1, *image, 5], frames, after) for (_, frames, after) in tm.samples_for(FAMILY)]
    inputs = tm.make_batch(FAMILY, model, samples)
    g = torch.Generator().manual_seed(3)
    inputs["pixel_values"] = torch.randn(len(samples), 1, 3, tm.PLM_SIDE, tm.PLM_SIDE, generator=g)  # one tile each
    kw = dict(max_new_tokens=3, do_sample=False, return_dict_in_generate=True, output_logits=True)
    plain = model.generate(**inputs, **kw)
    with adapters.apply_vidcom2(model, 1.0, exact=True):
        same = model.generate(**inputs, **kw)
    assert torch.equal(plain.sequences, same.sequences)
    assert all(torch.equal(a, b) for a, b in zip(plain.logits, same.logits))
    with adapters.apply_vidcom2(model, 0.5) as handle:
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
        pruned = handle.last.kwargs["input_ids"]
    assert int((pruned == tm.IDS["image_token_id"]).sum()) == len(samples) * per_image
    assert int((pruned == tm.IDS["video_token_id"]).sum()) == handle.last.video_tokens_after
    assert handle.last.video_tokens_after < handle.last.video_tokens_before
