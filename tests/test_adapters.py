"""Model adapters on tiny random models of every family, batch 1 and left-padded batch 2 with
videos of different sizes: exactness at retention 1.0, batched rows equal solo runs, positions,
rope_deltas, caches and beams, remove(), errors."""

import concurrent.futures
import copy

import pytest
import tiny_models as tm
import torch
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from vidcom2_kernels import adapters
from vidcom2_kernels.adapters import kv_prune
from vidcom2_kernels.adapters.base import accepts_encoder_outputs
from vidcom2_kernels.adapters.patching import installed
from vidcom2_kernels.adapters.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
STEPS = 4


def generate(model, inputs, **kwargs):
    kw = dict(max_new_tokens=STEPS, do_sample=False, return_dict_in_generate=True, output_logits=True)
    kw.update(kwargs)
    return model.generate(**inputs, **kw)


@pytest.mark.parametrize("batch", [1, 2])
def test_retention_one_is_identical(family, batch):
    model = tm.build(family)
    samples = tm.samples_for(family)[:batch]
    inputs = tm.make_batch(family, model, samples)
    plain = generate(model, inputs)
    with adapters.apply_vidcom2(model, 1.0, exact=True) as handle:
        pruned = generate(model, inputs)
        assert handle.last.video_tokens_after == handle.last.video_tokens_before
    assert torch.equal(plain.sequences, pruned.sequences)
    for a, b in zip(plain.logits, pruned.logits):  # prefill logits, then every decoding step's
        assert torch.equal(a, b)


@pytest.mark.parametrize("retention", [0.25, 0.5])
def test_batched_rows_equal_solo(family, retention):
    model = tm.build(family)
    samples = tm.samples_for(family)
    batch = tm.make_batch(family, model, samples)
    exact = family == "llava_onevision"  # equal kept counts keep its tensor form batchable
    with adapters.apply_vidcom2(model, retention, exact=exact) as handle:
        together = generate(model, batch)
        counts = handle.last.compression.counts
        seen = int(tm.video_mask(family, handle.last.kwargs).sum())
        always = tm.always_kept(family, samples)  # LLaVA-OV's newline, Video-LLaVA's CLS per frame
        assert seen == int(counts.sum()) + always == handle.last.video_tokens_after
        assert handle.last.video_tokens_after < handle.last.video_tokens_before
        for b in range(len(samples)):
            alone = generate(model, tm.split_batch(family, batch, b, samples))
            new = together.sequences[b, -STEPS:]
            assert torch.equal(new, alone.sequences[0, -STEPS:])
            for step_batch, step_alone in zip(together.logits, alone.logits):
                torch.testing.assert_close(step_batch[b], step_alone[0], atol=1e-5, rtol=0)


def _positions_seen(model, inputs, handle_settings=None):
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs.get("position_ids").clone())

    h = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        if handle_settings is None:
            model.generate(**inputs, max_new_tokens=3, do_sample=False)
        else:
            with adapters.apply_vidcom2(model, *handle_settings):
                model.generate(**inputs, max_new_tokens=3, do_sample=False)
    finally:
        h.remove()
    return seen


@pytest.mark.parametrize("family", [f for f in tm.FAMILIES if f not in tm.ONE_D])  # M-RoPE families
def test_decode_positions_follow_unpruned(family):
    tm.require(family)
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family))
    plain = _positions_seen(model, inputs)
    pruned = _positions_seen(model, inputs, (0.25,))
    # prefill: the last prompt token keeps its position (text after the video is not moved)
    assert torch.equal(plain[0][1:, :, -1], pruned[0][1:, :, -1])
    # the first generated token sits where the unpruned model puts it, later ones follow by one
    for step in range(1, 3):
        assert torch.equal(plain[step][1:, :, -1], pruned[step][1:, :, -1])
        assert torch.equal(pruned[step][1:, :, -1], pruned[step - 1][1:, :, -1] + 1)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "qwen3_5"])
def test_rope_deltas_consistent_for_manual_decoding(family):
    """A manual decode loop (batch 1, no mask, no position_ids) relies on model.rope_deltas."""
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family)[:1])
    pruned = adapters.adapter_for(model).prune(model, inputs, Settings(0.25))
    kwargs = pruned.kwargs
    stand_in = [(model.model, "get_video_features", pruned.encoder)] if pruned.encoder else []
    with installed(stand_in):  # transformers < 5.18 re-encodes the video inside forward
        out = model(**kwargs, use_cache=True)
        out2 = model(**kwargs, use_cache=True)
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    auto = model(input_ids=nxt, past_key_values=out.past_key_values).logits
    expect_pos = kwargs["position_ids"][..., -1:] + 1  # what generate() uses for this step
    explicit = model(input_ids=nxt, past_key_values=out2.past_key_values, position_ids=expect_pos).logits
    torch.testing.assert_close(auto, explicit, atol=1e-6, rtol=0)
    want = kwargs["position_ids"][1:].amax() + 1 - kwargs["input_ids"].shape[1]
    assert model.model.rope_deltas.flatten().tolist() == [int(want)]


def test_static_cache_beams_and_return_sequences(family):
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family))
    exact = family == "llava_onevision" and not accepts_encoder_outputs(model)  # < 5.18: equal counts only
    plain_error = tm.plain_expansion_error(model, inputs)
    if plain_error is not None:  # the plain model cannot repeat this prompt: neither may the compressed one
        with adapters.apply_vidcom2(model, 0.5), pytest.raises(type(plain_error)):
            model.generate(**inputs, max_new_tokens=STEPS, num_beams=2, num_return_sequences=2)
        return
    with adapters.apply_vidcom2(model, 0.5, exact=exact):
        dynamic = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False)
        static = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, cache_implementation="static")
        assert torch.equal(dynamic, static)
        # two return sequences of a sampler that can only pick the top token: both equal greedy
        two = model.generate(**inputs, max_new_tokens=STEPS, do_sample=True, top_k=1, num_return_sequences=2)
        assert torch.equal(two[::2], dynamic) and torch.equal(two[1::2], dynamic)
        beams = model.generate(**inputs, max_new_tokens=STEPS, num_beams=2, num_return_sequences=2)
        beams_static = model.generate(
            **inputs, max_new_tokens=STEPS, num_beams=2, num_return_sequences=2, cache_implementation="static"
        )
        assert beams.shape == (2 * dynamic.shape[0], dynamic.shape[1])
        assert torch.equal(beams, beams_static)


@pytest.mark.skipif(not accepts_encoder_outputs(tm.build("llava_onevision")), reason="transformers < 5.18")
def test_llava_onevision_beams_with_unequal_counts_equal_solo_runs():
    """Budget mode keeps different counts for the two videos; with beams and several return
    sequences every sample's rows are what the same sample gives alone."""
    model = tm.build("llava_onevision")
    samples = tm.samples_for("llava_onevision")
    batch = tm.make_batch("llava_onevision", model, samples)
    batch["pixel_values_videos"][1] = batch["pixel_values_videos"][1, :1]  # a still video: even budgets
    kw = dict(max_new_tokens=STEPS, num_beams=2, num_return_sequences=2, do_sample=False)
    with adapters.apply_vidcom2(model, 0.5) as handle:
        together = model.generate(**batch, **kw)
        counts = handle.last.compression.counts.tolist()
        assert len(set(counts)) == 2, counts  # the case under test: unequal kept counts
        for b in range(len(samples)):
            alone = model.generate(**tm.split_batch("llava_onevision", batch, b, samples), **kw)
            assert torch.equal(together[2 * b : 2 * b + 2, -STEPS:], alone[:, -STEPS:])


def test_deep_copy_of_a_compressed_model_compresses_with_its_own_weights():
    model = tm.build("qwen2_vl")
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl"))
    handle = adapters.apply_vidcom2(model, 0.5)
    before = generate(model, inputs)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(-1.0)  # weights of its own
    fresh = copy.deepcopy(twin)
    fresh.generate.vidcom2_handle.remove()  # the copy's copy, uncompressed, then compressed anew
    with adapters.apply_vidcom2(fresh, 0.5):
        expect = generate(fresh, inputs)
    got = generate(twin, inputs)
    twin_handle = twin.generate.vidcom2_handle
    assert twin_handle is not handle and twin_handle.model is twin and twin_handle.calls == 1
    assert torch.equal(got.sequences, expect.sequences) and not torch.equal(got.sequences, before.sequences)
    assert torch.equal(generate(model, inputs).sequences, before.sequences) and handle.calls == 2
    twin_handle.remove()  # undoes the copy only
    assert "generate" not in twin.__dict__ and model.generate.vidcom2_handle is handle
    handle.remove()


def test_remove_keeps_a_wrapper_added_later():
    """Something wrapped ``model.generate`` after apply: remove() leaves that wrapper, and the
    compression inside it stops; the model can be compressed again."""
    model = copy.deepcopy(tm.build("qwen2_vl"))  # its generate stays wrapped: not the shared model
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl"))
    plain = generate(model, inputs)
    handle = adapters.apply_vidcom2(model, 0.25)
    inner, seen = model.generate, []

    def wrapper(*args, **kwargs):
        seen.append(1)
        return inner(*args, **kwargs)

    model.generate = wrapper
    handle.remove()
    assert model.generate is wrapper
    assert torch.equal(generate(model, inputs).sequences, plain.sequences) and seen == [1]
    assert handle.calls == 0
    with adapters.apply_vidcom2(model, 0.25) as again:
        generate(model, inputs)
        assert again.calls == 1 and seen == [1, 1]


def test_video_llava_keeps_every_frames_cls_first():
    """Video-LLaVA's placeholders are per frame CLS + patches: the kept features handed to the
    model are, frame by frame, that frame's CLS row and then its kept patch rows in order, and the
    placeholder flags say the same."""
    model = tm.build("video_llava")
    batch = tm.make_batch("video_llava", model, tm.samples_for("video_llava"))
    adapter = adapters.adapter_for(model)
    videos = adapter.encode_videos(model, batch)
    comp = Settings(0.25).compress(videos.features, videos.frames)
    pooled = videos.output.pooler_output.clone()  # (V * F, 1 + P, C), before the hand-over edits it
    keep = comp.mask.view(pooled.shape[0], pooled.shape[1] - 1)
    expect = torch.cat([torch.cat([pooled[f, :1], pooled[f, 1:][keep[f]]]) for f in range(pooled.shape[0])])
    flags = videos.placeholder_keep(comp.mask).view(pooled.shape[0], pooled.shape[1])
    assert flags[:, 0].all() and torch.equal(flags[:, 1:], keep) and not keep.all()
    handed = adapter.kept_encoder_output(videos, comp).pooler_output
    assert handed.shape == (expect.shape[0], 1, expect.shape[1]) and torch.equal(handed[:, 0], expect)


def test_compressed_model_as_its_own_assistant():
    """``generate(assistant_model=model)``: the draft calls go to the model's own generate (the
    prompt is already pruned), the rows still start with the caller's prompt, and ``last`` is the
    caller's call."""
    model = tm.build("qwen2_vl")
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl")[:1])
    with adapters.apply_vidcom2(model, 0.25) as handle:
        greedy = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False)
        last = handle.last
        assisted = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, assistant_model=model)
        assert handle.calls == 2 and handle.last.video_tokens_before == last.video_tokens_before
        assert handle.last.video_tokens_after == last.video_tokens_after < last.video_tokens_before
    assert torch.equal(assisted[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    assert torch.equal(assisted, greedy)


def test_remove_restores_exactly(family):
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family))
    before = generate(model, inputs)
    handle = adapters.apply_vidcom2(model, 0.25, exact=True)
    assert "generate" in model.__dict__
    changed = generate(model, inputs)
    handle.remove()
    assert "generate" not in model.__dict__
    after = generate(model, inputs)
    assert torch.equal(before.sequences, after.sequences)
    assert handle.last.video_tokens_after < handle.last.video_tokens_before  # compression did happen
    assert changed.sequences.shape == before.sequences.shape  # the caller's prompt + the new tokens
    for a, b in zip(before.logits, after.logits):
        assert torch.equal(a, b)


def test_registry_names_real_classes():
    """Each adapter's declared classes exist in the installed transformers with that model_type."""
    import transformers

    for model_type, adapter in adapters.ADAPTERS.items():
        cls = getattr(transformers, adapter.model_classes[model_type], None)
        if cls is None:  # a family newer than the installed transformers (Molmo2 on 5.17)
            assert tm.unsupported(model_type), model_type
            continue
        assert cls.config_class.model_type == model_type
    assert set(adapters.ADAPTERS) == set(tm.FAMILIES) | {"qwen2_5_omni", "qwen3_omni_moe"}  # whole Omni: test_omni.py


def test_text_only_batch_untouched():
    model = tm.build("qwen2_vl")
    ids = torch.tensor([[1, 5, 6, 7]])
    plain = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)
    with adapters.apply_vidcom2(model, 0.25):
        assert torch.equal(model.generate(input_ids=ids, max_new_tokens=3, do_sample=False), plain)


def test_prune_inputs_needs_encoder_outputs_support():
    model = tm.build("qwen2_vl")
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl"))
    if accepts_encoder_outputs(model):
        assert "mm_encoder_outputs" in adapters.prune_inputs(model, inputs)
    else:
        with pytest.raises(RuntimeError, match="use apply_vidcom2"):
            adapters.prune_inputs(model, inputs)


def test_errors():
    model = tm.build("qwen2_vl")
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl"))
    bad = dict(inputs, video_grid_thw=torch.tensor([[2, 4, 6], [3, 4, 6]]))
    with pytest.raises(ValueError, match="describes"):
        adapters.adapter_for(model).prune(model, bad, Settings())
    # two placeholders turned into text: the prompt no longer matches its grids
    ids = inputs["input_ids"].clone()
    first = torch.nonzero(ids.flatten() == tm.IDS["video_token_id"])[:2].flatten()
    ids.view(-1)[first] = 5
    with pytest.raises(ValueError, match="placeholder"):
        bad = dict(inputs, input_ids=ids, mm_token_type_ids=(ids == tm.IDS["video_token_id"]).int() * 2)
        adapters.adapter_for(model).prune(model, bad, Settings())

    class Other(torch.nn.Module):
        class config:
            model_type = "bert"

    with pytest.raises(ValueError, match="no adapter for model_type 'bert'"):
        adapters.apply_vidcom2(Other())
    with adapters.apply_vidcom2(model):
        with pytest.raises(RuntimeError, match="already has a compression"):
            adapters.apply_vidcom2(model)
    with pytest.raises(ValueError, match="method must be one of"):
        adapters.apply_compression(model, method="fastv")


@pytest.mark.parametrize(
    "options,message",
    [
        ({"method": "fastv"}, "method must be one of"),
        ({"backend": "cuda"}, "backend must be one of"),
        ({"retention": 0.0}, r"retention must be in \(0, 1\]"),
        ({"frame_budgets": "own"}, "frame_budgets must be None or 'vidcom2'"),
    ],
)
def test_settings_checked_before_model_work(options, message):
    with pytest.raises(ValueError, match=message):
        adapters.apply_compression(object(), **options)  # no model is touched: the options fail first
    with pytest.raises(ValueError, match=message):
        Settings(**options)


def test_patches_restore_exactly():
    """One helper sets and restores instance attributes, values behind properties and methods."""

    class Thing:
        def method(self):
            return "class"

        @property
        def prop(self):
            return self._prop

        @prop.setter
        def prop(self, value):
            self._prop = value

    thing = Thing()
    thing.own, thing.prop = "own", "before"
    with installed([(thing, "own", 1), (thing, "prop", "during"), (thing, "method", lambda: "patched")]):
        assert (thing.own, thing.prop, thing.method()) == (1, "during", "patched")
    assert (thing.own, thing.prop, thing.method()) == ("own", "before", "class")
    assert "method" not in vars(thing)  # the class's method shows again


def test_apply_from_env(monkeypatch):
    model = tm.build("qwen2_vl")
    monkeypatch.delenv("COMPRESSOR", raising=False)
    assert adapters.apply_from_env(model) is None
    monkeypatch.setenv("COMPRESSOR", "vidcom2")
    monkeypatch.setenv("R_RATIO", "0.15")
    handle = adapters.apply_from_env(model)
    try:
        assert handle.settings.retention == 0.15 and handle.settings.exact is False
    finally:
        handle.remove()


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava_onevision", "video_llava"])
def test_dycoke_through_adapters(family):
    """method='dycoke': retention 1.0 keeps every token (identical output); at 0.5 batched rows
    equal solo runs."""
    model = tm.build(family)
    samples = tm.samples_for(family)
    batch = tm.make_batch(family, model, samples)
    plain = generate(model, batch)
    with adapters.apply_compression(model, "dycoke", 1.0):
        same = generate(model, batch)
    assert torch.equal(plain.sequences, same.sequences)
    with adapters.apply_compression(model, "dycoke", 0.5) as handle:
        together = generate(model, batch)
        assert handle.last.video_tokens_after < handle.last.video_tokens_before
        for b in range(len(samples)):
            alone = generate(model, tm.split_batch(family, batch, b, samples))
            assert torch.equal(together.sequences[b, -STEPS:], alone.sequences[0, -STEPS:])


def test_env_selects_dycoke(monkeypatch):
    model = tm.build("qwen2_vl")
    monkeypatch.setenv("COMPRESSOR", "dycoke")
    monkeypatch.setenv("R_RATIO", "0.3")
    monkeypatch.setenv("FRAME_BUDGETS", "vidcom2")
    handle = adapters.apply_from_env(model)
    try:
        assert handle.settings.method == "dycoke" and handle.settings.frame_budgets == "vidcom2"
    finally:
        handle.remove()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava_onevision"])
def test_dycoke_kv_pruning_ratio_zero_is_identical(family, attn):
    """Decode-time KV pruning at ratio 0 runs its whole machinery (attention rows, choice) but keeps
    every visual key: generation is bit-identical."""
    model = tm.build(family, attn)
    batch = tm.make_batch(family, model, tm.samples_for(family))
    with adapters.apply_compression(model, "dycoke", 0.5):
        plain = generate(model, batch)
    with adapters.apply_compression(model, "dycoke", 0.5, kv_prune=adapters.KVPrune(0.0, layer=1)) as handle:
        same = generate(model, batch)
        assert handle.kv_state.steps == STEPS - 1  # one choice per decoding step
    assert torch.equal(plain.sequences, same.sequences)
    for a, b in zip(plain.logits, same.logits):
        assert torch.equal(a, b)


def test_dycoke_kv_pruning_semantics():
    model = tm.build("qwen2_vl")
    samples = tm.samples_for("qwen2_vl")
    batch = tm.make_batch("qwen2_vl", model, samples)
    with adapters.apply_compression(model, "dycoke", 0.5):
        plain = generate(model, batch)
    kv = adapters.KVPrune(0.7, layer=1)
    with adapters.apply_compression(model, "dycoke", 0.5, kv_prune=kv) as handle:
        pruned = generate(model, batch)
        state = handle.kv_state
        visual = state.visual.sum(1).tolist()
        assert state.kept == [int(0.3 * v) for v in visual]
        # kept keys: every non-visual position plus the chosen visual ones
        nonvisual = (~state.visual).sum(1)
        assert state.keep.sum(1).tolist() == (nonvisual + torch.tensor(state.kept)).tolist()
        # rows decide independently: each equals its sample decoded alone
        for b in range(len(samples)):
            alone = generate(model, tm.split_batch("qwen2_vl", batch, b, samples))
            assert torch.equal(pruned.sequences[b, -STEPS:], alone.sequences[0, -STEPS:])
    assert not all(torch.equal(a, b) for a, b in zip(plain.logits[1:], pruned.logits[1:]))
    assert torch.equal(plain.logits[0], pruned.logits[0])  # prefill is untouched
    # a layer past the last one would prune nothing: refused when applied
    layers = model.config.get_text_config().num_hidden_layers
    with pytest.raises(ValueError, match=f"kv layer {layers} does not exist: the language model has {layers} layers"):
        adapters.apply_compression(model, "dycoke", 0.5, kv_prune=adapters.KVPrune(0.7, layer=layers))


def test_dycoke_kv_pruning_models_in_threads_do_not_mix():
    """Two models generating at once in two threads, batches of different sizes: each thread's
    sequences and logits are those of the same call run alone (the pruning state is the model's)."""
    kv = adapters.KVPrune(0.7, layer=1)
    jobs = []
    for family, n in (("qwen2_vl", 2), ("llava_onevision", 1)):
        model = tm.build(family)
        samples = tm.samples_for(family)[:n]
        jobs.append((model, tm.make_batch(family, model, samples)))

    def run(job):
        model, batch = job
        with adapters.apply_compression(model, "dycoke", 0.5, kv_prune=kv):
            return generate(model, batch)

    serial = [run(job) for job in jobs]
    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            together = list(pool.map(run, jobs))
        for alone, both in zip(serial, together):
            assert torch.equal(alone.sequences, both.sequences)
            assert all(torch.equal(a, b) for a, b in zip(alone.logits, both.logits))


def test_dycoke_kv_pruning_refuses_one_model_twice_at_once():
    """One model's attention implementation is an attribute of its config: a second pruning
    generate() on it while one runs is refused in one line, and the first goes on unharmed."""
    model = tm.build("qwen2_vl")
    visual = torch.zeros(1, 8, dtype=torch.bool)
    with kv_prune.kv_pruning(model, adapters.KVPrune(0.5, layer=1), visual):
        with pytest.raises(RuntimeError, match="already generating with DyCoke KV pruning"):
            with kv_prune.kv_pruning(model, adapters.KVPrune(0.5, layer=1), visual):
                pass
        assert model.config.get_text_config()._attn_implementation.startswith("vidcom2_dycoke_kv_")
    assert not model.config.get_text_config()._attn_implementation.startswith("vidcom2_dycoke_kv_")
    with kv_prune.kv_pruning(model, adapters.KVPrune(0.5, layer=1), visual):  # free again
        assert "vidcom2_dycoke_kv_sdpa" in ALL_ATTENTION_FUNCTIONS.valid_keys()
    # the attention functions it registered are gone with the last call that used them
    assert not [k for k in ALL_ATTENTION_FUNCTIONS.valid_keys() if k.startswith("vidcom2_")]
    assert not [k for k in ALL_MASK_ATTENTION_FUNCTIONS.valid_keys() if k.startswith("vidcom2_")]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(ratio=1.0), ValueError, r"kv ratio must be in \[0, 1\)"),
        (dict(ratio=float("nan")), ValueError, r"kv ratio must be in \[0, 1\)"),
        (dict(ratio="0.5"), TypeError, "kv ratio must be a number, got '0.5'"),
        (dict(ratio=0.5, layer=-1), ValueError, "kv layer must be >= 0"),
        (dict(ratio=0.5, layer=1.5), TypeError, "kv layer must be an int, got 1.5"),
        (dict(ratio=0.5, layer=True), TypeError, "kv layer must be an int, got True"),
        (dict(ratio=0.5, drift=2.0), ValueError, r"kv drift must be in \[-1, 1\]"),
        (dict(ratio=0.5, drift=None), TypeError, "kv drift must be a number, got None"),
    ],
)
def test_kv_prune_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        adapters.KVPrune(**kwargs)


#: (options, error, message): refused by every entry point before any model or tensor work
BAD_OPTIONS = [
    (dict(retention="0.25"), TypeError, "retention must be a number or one per video, got a string"),
    (dict(retention=True), TypeError, r"retention must be a float in \(0, 1\], got bool"),
    (dict(retention=0), ValueError, r"retention must be in \(0, 1\], got 0.0"),
    (dict(retention=float("nan")), ValueError, r"retention must be in \(0, 1\], got nan"),
    (dict(retention=torch.tensor(2.0)), ValueError, r"retention must be in \(0, 1\], got 2.0"),
    (dict(retention=[0.5, 3.0]), ValueError, r"retention must be in \(0, 1\], got 3.0 for video 1"),
    (dict(target=-5), ValueError, "target must be at least 1, got -5"),
    (dict(target="ten"), TypeError, "target must be a number or one per video, got a string"),
    (dict(target=[4, 2.5]), TypeError, "target must be an int or one int per video, got float"),
    (dict(exact="yes"), TypeError, "exact must be True or False, got 'yes'"),
    (dict(backend="cuda"), ValueError, "backend must be one of"),
    (dict(backend=None), ValueError, "backend must be one of"),
    (dict(method="fastv"), ValueError, "method must be one of"),
    (dict(method="dycoke", quirks=1), TypeError, "quirks must be True or False, got 1"),
    (dict(frame_budgets="vidcom2"), ValueError, "frame_budgets"),
]


@pytest.mark.parametrize("options, error, message", BAD_OPTIONS, ids=[str(o) for o, *_ in BAD_OPTIONS])
def test_bad_options_are_refused_before_any_work(options, error, message, monkeypatch):
    """apply_compression / apply_vidcom2 / prune_inputs refuse each bad value when called: the
    model is never run (its encoder would raise) and generate is left as it was."""
    model = copy.deepcopy(tm.build("qwen2_vl"))  # its encoder is patched: not the shared model
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl"))

    def no_work(*args, **kwargs):
        raise AssertionError("the model ran before the options were checked")

    monkeypatch.setattr(model.model, "get_video_features", no_work)
    before = model.generate
    options = {"retention": 0.25, **options}
    method = options.pop("method", "vidcom2")
    for call in (
        lambda: adapters.apply_compression(model, method, **options),
        lambda: adapters.prune_inputs(model, inputs, method=method, **options),
    ):
        with pytest.raises(error, match=message):
            call()
    if method == "vidcom2":
        with pytest.raises(error, match=message):
            adapters.apply_vidcom2(model, **options)
    assert model.generate == before and "generate" not in model.__dict__


MIXED_ROWS = {
    "image+video": [1, 5, ("image", (4, 4)), 6, ("video", (2, 4, 6)), 7, 8],
    "two videos": [1, 9, ("video", (2, 4, 4)), 10, ("video", (3, 4, 6)), 11],
    "one video": [1, 12, ("video", (2, 6, 4)), 13, 14, 15],
    "text only": [1, 16, 17, 18, 19],
}


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_omni_thinker"])
@pytest.mark.parametrize(
    "rows",
    [["image+video", "one video"], ["two videos", "text only"], ["text only", "image+video"]],
    ids=lambda r: " | ".join(r),
)
def test_images_several_videos_and_text_only_rows(rows, family):
    """Images stay whole, several videos in one sample are compressed each, samples without video
    ride along; every row equals that sample alone, and retention 1.0 changes nothing."""
    tm.require(family)
    model = tm.build(family)
    batch = tm.make_mixed_batch([MIXED_ROWS[r] for r in rows], family=family)
    plain = generate(model, batch)
    with adapters.apply_vidcom2(model, 1.0, exact=True):
        assert torch.equal(generate(model, batch).sequences, plain.sequences)
    image_tokens = int((batch["input_ids"] == tm.IDS["image_token_id"]).sum())
    with adapters.apply_vidcom2(model, 0.5) as handle:
        together = generate(model, batch)
        pruned_ids = handle.last.kwargs["input_ids"]
        assert int((pruned_ids == tm.IDS["image_token_id"]).sum()) == image_tokens
        assert handle.last.video_tokens_after < handle.last.video_tokens_before
        assert len(handle.last.compression.counts) == int(batch["video_grid_thw"].shape[0])
        for b in range(len(rows)):
            alone = generate(model, _nth_sample(model, rows, b, family))
            assert torch.equal(together.sequences[b, -STEPS:], alone.sequences[0, -STEPS:])
            for step_batch, step_alone in zip(together.logits, alone.logits):
                torch.testing.assert_close(step_batch[b], step_alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", tm.GEMMA)
def test_gemma_image_beside_a_video_stays_whole(family):
    """Gemma 4 (and Unified): an image before the video (``<boi>``, its placeholders, ``<eoi>``;
    ``mm_token_type_ids`` 1, the video's 2) goes through the model's own image path untouched:
    exact at 1.0, and at 0.5 every image placeholder is still in the prompt while the video shrinks."""
    tm.require(family)
    model = tm.build(family)
    batch = tm.make_batch(family, model, tm.samples_for(family)[:1])
    image = tm.make_batch(family, model, [([], 1, [])], seed=1)  # one frame's pixels as the image
    per = int((image["input_ids"] == tm.GEMMA_IDS["video_token_id"]).sum())
    block = [tm.GEMMA_IDS["boi_token_id"], *[tm.GEMMA_IDS["image_token_id"]] * per, tm.GEMMA_IDS["eoi_token_id"]]
    ids = torch.cat([batch["input_ids"][:, :1], torch.tensor([block]), batch["input_ids"][:, 1:]], dim=1)
    types = (ids == tm.GEMMA_IDS["image_token_id"]).long() + (ids == tm.GEMMA_IDS["video_token_id"]).long() * 2
    inputs = {
        **batch,
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": types,
        "pixel_values": image["pixel_values_videos"],
        "image_position_ids": image["video_position_ids"],
    }
    plain = generate(model, inputs)
    with adapters.apply_vidcom2(model, 1.0, exact=True):
        assert torch.equal(generate(model, inputs).sequences, plain.sequences)
    with adapters.apply_vidcom2(model, 0.5) as handle:
        generate(model, inputs)
        pruned_ids = handle.last.kwargs["input_ids"]
        assert int((pruned_ids == tm.GEMMA_IDS["image_token_id"]).sum()) == per
        assert handle.last.video_tokens_after < handle.last.video_tokens_before


def test_video_llama_3_own_compression_is_refused():
    """VideoLLaMA3's processor drops repeated patches itself (``video_compression_mask``), leaving
    frames of different sizes: refused in one line before any work, through generate() too; an
    all-true mask (``use_token_compression=False``) is what the tests above run."""
    model = tm.build("video_llama_3")
    inputs = tm.make_batch("video_llama_3", model, tm.samples_for("video_llama_3"))
    mask = inputs["video_compression_mask"].clone()
    mask[5:9] = False
    with adapters.apply_vidcom2(model, 0.5) as handle:
        with pytest.raises(ValueError, match=r"already dropped 4 of \d+ video tokens .*use_token_compression=False"):
            model.generate(**{**inputs, "video_compression_mask": mask}, max_new_tokens=2)
        assert handle.last is None and handle.failures == 1


def test_molmo2_images_with_a_video_are_refused():
    """Molmo2's forward uses the images' features for every placeholder when a call has images and a
    video, so there is no video to compress: refused in one line before any work."""
    tm.require("molmo2")
    model = tm.build("molmo2")
    inputs = tm.make_batch("molmo2", model, tm.samples_for("molmo2"))
    with adapters.apply_vidcom2(model, 0.5) as handle:
        with pytest.raises(ValueError, match="Molmo2 with images and a video in one call"):
            model.generate(**inputs, pixel_values=torch.zeros(1, 16, 3 * 14 * 14), max_new_tokens=2)
        assert handle.last is None and handle.failures == 1


def test_gemma4_without_its_video_api_is_refused():
    """A Gemma 4 whose forward takes no ``num_frames_per_video`` (transformers before 5.19, whose
    video inputs are laid out otherwise) is refused with the reason before any work; the later API
    passes the check (tests/test_transformers_versions.py runs this on 5.17)."""
    model = tm.build("gemma4")
    inputs = tm.make_batch("gemma4", model, tm.samples_for("gemma4"))
    adapter = adapters.adapter_for(model)
    if tm.unsupported("gemma4"):
        with pytest.raises(ValueError, match=r"without num_frames_per_video \(transformers < 5.19\)"):
            adapter.check_inputs(model, inputs)
    else:
        adapter.check_inputs(model, inputs)
        with pytest.raises(ValueError, match="video_position_ids is missing"):
            adapter.check_inputs(model, {**inputs, "video_position_ids": None})


def _nth_sample(model, rows, b, family="qwen2_vl"):
    """Sample b of a mixed batch on its own, with the same media it had in the batch (the pixel
    generator runs through the earlier rows' media first)."""
    full = tm.make_mixed_batch([MIXED_ROWS[r] for r in rows], family=family)
    keep = full["attention_mask"][b].bool()
    out = {k: full[k][b, keep][None] for k in ("input_ids", "attention_mask", "mm_token_type_ids") if k in full}
    for kind, pixels_key, grid_key in (
        ("video", "pixel_values_videos", "video_grid_thw"),
        ("image", "pixel_values", "image_grid_thw"),
    ):
        if grid_key not in full:
            continue
        per_row = [sum(1 for p in MIXED_ROWS[r] if isinstance(p, tuple) and p[0] == kind) for r in rows]
        first, count = sum(per_row[:b]), per_row[b]
        if count == 0:
            continue
        sizes = full[grid_key].prod(-1).tolist()
        start = sum(sizes[:first])
        out[pixels_key] = full[pixels_key][start : start + sum(sizes[first : first + count])]
        out[grid_key] = full[grid_key][first : first + count]
        if kind == "video" and "video_second_per_grid" in full:
            out["video_second_per_grid"] = full["video_second_per_grid"][first : first + count]
    return out


def test_dycoke_kv_pruning_with_text_only_row():
    """A row without video keeps every key; the video row is still pruned, and equals itself alone."""
    model = tm.build("qwen2_vl")
    rows = ["one video", "text only"]
    batch = tm.make_mixed_batch([MIXED_ROWS[r] for r in rows])
    with adapters.apply_compression(model, "dycoke", 0.5, kv_prune=adapters.KVPrune(0.7, layer=1)) as handle:
        together = generate(model, batch)
        state = handle.kv_state
        assert state.prunes and bool(state.keep[1].all()) and not bool(state.keep[0].all())
        for b in range(2):
            alone = generate(model, _nth_sample(model, rows, b))
            assert torch.equal(together.sequences[b, -STEPS:], alone.sequences[0, -STEPS:])
