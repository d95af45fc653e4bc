"""transformers' ``generate()`` contract through the adapters, for every family: each returned row
is the caller's own ``input_ids`` row (padding included, repeated for beams and return sequences
as transformers repeats it) followed by the new tokens, whatever the prompt the model ran on.
Client code (lmms-eval included) decodes ``out[:, input_ids.shape[1]:]``: that slice must hold
exactly the tokens generated."""

import pytest
import tiny_models as tm
import torch
from transformers import GenerationConfig

from vidcom2_kernels import adapters
from vidcom2_kernels.adapters.generation import shift_length_limits

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
STEPS = 4
DICT = dict(return_dict_in_generate=True, output_logits=True, output_scores=True)


def greedy(model, inputs, **kwargs):
    return model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, **kwargs)


def new_tokens_of_pruned_call(model, handle, inputs, **generation):
    """The new tokens the unwrapped ``generate`` makes from the handle's pruned prompt of ``inputs``
    (pruned afresh: transformers expands the encoder outputs it is given in place for beams)."""
    pruned = handle.adapter.prune(model, inputs, handle.settings)
    with handle.encoder.replaced(pruned.encoder):  # transformers < 5.18: the call's stand-in encoder
        out = type(model).generate(model, **pruned.kwargs, max_new_tokens=STEPS, **generation)
    return out[:, pruned.kwargs["input_ids"].shape[1] :]


def assert_rows_start_with_prompt(sequences, input_ids, copies=1):
    B, L = input_ids.shape
    assert sequences.shape == (B * copies, L + STEPS)
    assert torch.equal(sequences[:, :L], input_ids.repeat_interleave(copies, dim=0))


@pytest.mark.parametrize("side", ["left", "right"])
def test_retention_one_is_bit_identical(family, side):
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family), side=side)
    plain = greedy(model, inputs, **DICT)
    with adapters.apply_vidcom2(model, 1.0, exact=True):
        same = greedy(model, inputs, **DICT)
    assert torch.equal(plain.sequences, same.sequences)
    for field in ("logits", "scores"):
        for a, b in zip(getattr(plain, field), getattr(same, field), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("side", ["left", "right"])
def test_pruned_rows_keep_the_callers_prompt(family, side):
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family), side=side)
    exact = family == "llava_onevision"  # equal kept counts keep its tensor form batchable
    with adapters.apply_vidcom2(model, 0.25, exact=exact) as handle:
        out = greedy(model, inputs, **DICT)
        assert handle.last.video_tokens_after < handle.last.video_tokens_before
        assert handle.last.kwargs["input_ids"].shape[1] < inputs["input_ids"].shape[1]
        new = new_tokens_of_pruned_call(model, handle, inputs, do_sample=False)
        tensor = greedy(model, inputs)  # return_dict_in_generate=False: the same rows as a tensor
    assert_rows_start_with_prompt(out.sequences, inputs["input_ids"])
    assert torch.equal(out.sequences[:, inputs["input_ids"].shape[1] :], new)
    assert torch.equal(tensor, out.sequences)
    assert len(out.logits) == len(out.scores) == STEPS


def test_beams_and_return_sequences(family):
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family))
    exact = family == "llava_onevision"
    if tm.plain_expansion_error(model, inputs) is not None:
        pytest.skip("the plain model cannot repeat this prompt for beams (test_adapters checks the same error)")
    with adapters.apply_vidcom2(model, 0.5, exact=exact) as handle:
        greedy_new = new_tokens_of_pruned_call(model, handle, inputs, do_sample=False)
        beams = model.generate(**inputs, max_new_tokens=STEPS, num_beams=2, num_return_sequences=2, **DICT)
        beam_new = new_tokens_of_pruned_call(model, handle, inputs, num_beams=2, num_return_sequences=2)
        sampled = model.generate(**inputs, max_new_tokens=STEPS, do_sample=True, top_k=1, num_return_sequences=3)
    assert_rows_start_with_prompt(beams.sequences, inputs["input_ids"], copies=2)
    assert torch.equal(beams.sequences[:, inputs["input_ids"].shape[1] :], beam_new)
    assert beams.sequences_scores.shape == (4,) and beams.beam_indices.shape[0] == 4
    assert_rows_start_with_prompt(sampled, inputs["input_ids"], copies=3)
    # a sampler that can only pick the top token: every copy is the greedy continuation
    assert torch.equal(sampled[:, inputs["input_ids"].shape[1] :], greedy_new.repeat_interleave(3, dim=0))


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava_onevision"])
def test_positional_inputs_and_generation_config(family):
    """``generate(input_ids, generation_config, ...)``, the positional form, works as on the plain model."""
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family))
    ids, rest = inputs["input_ids"], {k: v for k, v in inputs.items() if k != "input_ids"}
    config = GenerationConfig(max_new_tokens=STEPS, do_sample=False, pad_token_id=0)
    plain = model.generate(ids, config, **rest)
    with adapters.apply_vidcom2(model, 1.0, exact=True):
        assert torch.equal(model.generate(ids, config, **rest), plain)
        with pytest.raises(ValueError, match="passed alongside"):  # transformers' own error, as on the plain model
            model.generate(ids, config, input_ids=ids, **rest)
    with adapters.apply_vidcom2(model, 0.25, exact=True):
        out = model.generate(ids, config, **rest)
        assert torch.equal(out, model.generate(input_ids=ids, generation_config=config, **rest))
    assert_rows_start_with_prompt(out, ids)


@pytest.mark.parametrize("where", ["kwarg", "generation_config", "model_config"])
def test_max_length_counts_the_callers_prompt(where):
    """``max_length`` bounds the whole returned row: a pruned prompt must not buy extra new tokens."""
    model = tm.build("qwen2_vl")
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl"))
    L = inputs["input_ids"].shape[1]
    kwargs = {"do_sample": False}
    saved = model.generation_config.max_length
    if where == "kwarg":
        kwargs["max_length"] = L + 3
    elif where == "generation_config":
        kwargs["generation_config"] = GenerationConfig(max_length=L + 3, do_sample=False, pad_token_id=0)
    else:
        model.generation_config.max_length = L + 3
    try:
        plain = model.generate(**inputs, **kwargs)
        with adapters.apply_vidcom2(model, 0.25):
            out = model.generate(**inputs, **kwargs)
            longer = model.generate(**inputs, **kwargs, min_length=L + 3)
    finally:
        model.generation_config.max_length = saved
    assert plain.shape == out.shape == longer.shape == (2, L + 3)
    assert torch.equal(out[:, :L], inputs["input_ids"])


def test_shift_length_limits_precedence():
    """The call's own keywords, then the passed config, then the model's; a *_new_tokens anywhere wins."""
    model_config = GenerationConfig(max_length=50)
    assert shift_length_limits({}, [None, model_config], 10) == {"max_length": 40}
    assert shift_length_limits({"max_length": 30}, [None, model_config], 10) == {"max_length": 20}
    assert shift_length_limits({}, [GenerationConfig(max_length=35), model_config], 10) == {"max_length": 25}
    assert shift_length_limits({"max_new_tokens": 5}, [None, model_config], 10) == {"max_new_tokens": 5}
    assert shift_length_limits({}, [GenerationConfig(max_new_tokens=5), model_config], 10) == {}
    assert shift_length_limits({"min_length": 4}, [None, None], 10) == {"min_length": 0}
    assert shift_length_limits({"max_length": 30}, [None, None], 0) == {"max_length": 30}


class Recorder:
    def __init__(self):
        self.puts, self.ended = [], False

    def put(self, value):
        self.puts.append(value.clone())

    def end(self):
        self.ended = True


def test_streamer_sees_the_callers_prompt():
    model = tm.build("qwen2_vl")
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl")[:1])
    plain, compressed = Recorder(), Recorder()
    model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, streamer=plain)
    with adapters.apply_vidcom2(model, 1.0, exact=True):
        model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, streamer=compressed)
    assert compressed.ended and len(compressed.puts) == len(plain.puts) == STEPS + 1
    assert torch.equal(compressed.puts[0], inputs["input_ids"])
    for a, b in zip(plain.puts, compressed.puts, strict=True):
        assert torch.equal(a, b)
    pruned = Recorder()
    with adapters.apply_vidcom2(model, 0.25):
        out = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, streamer=pruned)
    assert torch.equal(pruned.puts[0], inputs["input_ids"])
    # what a streamer prints: the caller's prompt, then every new token, as in the returned row
    assert torch.equal(torch.cat([p.flatten() for p in pruned.puts]), out.flatten())


def test_text_only_call_passes_through():
    model = tm.build("qwen2_vl")
    ids = torch.tensor([[1, 5, 6, 7]])
    plain = model.generate(ids, max_new_tokens=3, do_sample=False, **DICT)
    with adapters.apply_vidcom2(model, 0.25) as handle:
        same = model.generate(ids, max_new_tokens=3, do_sample=False, **DICT)
        assert handle.last.compression is None
    assert torch.equal(plain.sequences, same.sequences)
