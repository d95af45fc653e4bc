"""The timing record of the adapters (``handle.timing``, ``handle.last_timing``): the parts add up
to the call, time spent in a part lands in that part (a known delay injected into the vision
tower, the prefill or the decoding moves that part and no other), tokens and totals, threads, copies,
and ``remove()``."""

import concurrent.futures
import copy
import functools
import json
import os
import threading
import time

import pytest
import tiny_models as tm
import torch

from vidcom2_kernels import adapters
from vidcom2_kernels.adapters import lmms_eval as launcher
from vidcom2_kernels.adapters.base import accepts_encoder_outputs
from vidcom2_kernels.adapters.timing import PARTS, Efficiency, RunTiming, efficiency_table, new_tokens

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
STEPS = 4
DELAY = 0.4  # s, far above the parts' own size on the tiny models and a loaded machine's noise
FAMILIES = ["qwen2_vl", "qwen3_vl", "glm4v", "llava_onevision", "video_llava"]
HANDLES = {"none": adapters.apply_timing, "vidcom2": lambda model: adapters.apply_vidcom2(model, 0.25)}


def vision_tower(model):
    return getattr(model.model, "visual", None) or model.model.vision_tower


def run(model, inputs, **kwargs):
    """One greedy call; returns (output, wall seconds around it)."""
    start = time.perf_counter()
    out = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, **kwargs)
    return out, time.perf_counter() - start


def assert_adds_up(call, outer: float) -> None:
    """The parts add up to the call (float rounding), and the call is the wrapped call (the
    caller's wall time around it holds it; what lies outside is the handle's own bookkeeping, well
    under 0.1 s even on a loaded machine)."""
    parts = [getattr(call, name) for name in PARTS]
    assert all(p >= 0 for p in parts)
    assert abs(sum(parts) - call.total_s) <= 1e-9 * max(1.0, call.total_s)
    assert call.total_s <= outer and outer - call.total_s < 0.1


def delayed(module, when=lambda args, kwargs: True):
    """A forward pre-hook on ``module`` that sleeps DELAY when ``when(args, kwargs)``."""

    def hook(mod, args, kwargs):
        if when(args, kwargs):
            time.sleep(DELAY)

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def positions(args, kwargs) -> int:
    embeds = kwargs.get("inputs_embeds")
    return embeds.shape[1] if embeds is not None else kwargs["input_ids"].shape[1]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", list(HANDLES))
def test_parts_add_up_and_tokens(family, kind):
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family))
    with HANDLES[kind](model) as handle:
        out, outer = run(model, inputs)
        call = handle.last_timing
        assert_adds_up(call, outer)
        video = int(tm.video_mask(family, inputs).sum())
        assert call.samples == 2 and call.video_tokens_before == video
        if kind == "none":
            assert call.video_tokens_after == video and call.prompt_tokens == int(inputs["attention_mask"].sum())
            assert call.selection_s < 0.01  # nothing selected: only the handle's own bookkeeping
        else:
            assert call.video_tokens_after == handle.last.video_tokens_after < video
            dropped = video - call.video_tokens_after
            assert call.prompt_tokens == int(inputs["attention_mask"].sum()) - dropped
            assert call.selection_s > 0
        assert call.encoder_s > 0 and call.prefill_s > 0 and call.decode_s > 0
        assert call.new_tokens == out[:, inputs["input_ids"].shape[1] :].numel() == 2 * STEPS  # no EOS set
        run(model, inputs)
        totals = handle.timing
        assert totals.calls == totals.video_calls == 2 and totals.samples == 4 and totals.new_tokens == 4 * STEPS
        assert totals.total_s == pytest.approx(call.total_s + handle.last_timing.total_s)
        assert totals.peak_mem_mb > 0
        handle.reset_timing()
        assert handle.timing.calls == 0 and handle.timing.total_s == 0 and handle.last_timing is None
    assert "get_video_features" not in model.model.__dict__ and "generate" not in model.__dict__


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision"])
@pytest.mark.parametrize("kind", list(HANDLES))
def test_a_delay_lands_in_its_part(family, kind):
    """DELAY in the vision tower is encoder time (also when forward encodes, without compression);
    in the first language-model pass, prefill; in the later passes, decoding."""
    model = tm.build(family)
    inputs = tm.make_batch(family, model, tm.samples_for(family))
    language = model.model.language_model
    with HANDLES[kind](model) as handle:
        run(model, inputs)  # warm
        base = handle.last_timing
        cases = {
            "encoder_s": (vision_tower(model), lambda a, k: True),
            "prefill_s": (language, lambda a, k: positions(a, k) > 1),
            "decode_s": (language, lambda a, k: positions(a, k) == 1),
        }
        for part, (module, when) in cases.items():
            hook = delayed(module, when)
            try:
                _, outer = run(model, inputs)
            finally:
                hook.remove()
            call = handle.last_timing
            assert_adds_up(call, outer)
            steps = STEPS - 1 if part == "decode_s" else 1
            assert getattr(call, part) >= steps * DELAY, (part, call)
            for other in PARTS:
                if other != part:  # no DELAY moved there (a misplaced one moves a whole DELAY)
                    assert getattr(call, other) < getattr(base, other) + 0.8 * DELAY, (part, other, call, base)


def test_chunked_prefill_is_prefill():
    """``prefill_chunk_size``: every chunk's pass is prefill, up to the one that ends the prompt."""
    model = tm.build("qwen2_vl")
    if not accepts_encoder_outputs(model):
        pytest.skip("chunked prefill of a video prompt needs mm_encoder_outputs (transformers >= 5.18)")
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl"))
    with adapters.apply_vidcom2(model, 0.5) as handle:
        hook = delayed(model.model.language_model, lambda a, k: positions(a, k) > 1)
        try:
            _, outer = run(model, inputs, prefill_chunk_size=4)
        finally:
            hook.remove()
        call = handle.last_timing
        chunks = -(-handle.last.kwargs["input_ids"].shape[1] // 4)
        assert chunks >= 3
        assert_adds_up(call, outer)
        assert call.prefill_s >= chunks * DELAY and call.decode_s < DELAY


def test_new_tokens_stop_at_the_first_eos():
    seq = torch.tensor([[9, 9, 1, 2, 0, 5], [9, 9, 1, 0, 0, 0], [9, 9, 3, 4, 5, 6]])
    assert new_tokens(seq, 2, None) == 12
    assert new_tokens(seq, 2, 0) == 3 + 2 + 4
    assert new_tokens(seq, 2, [0, 2]) == 2 + 2 + 4
    assert new_tokens(seq, 6, 0) == 0


def test_eos_counts_through_generate():
    """A call whose rows stop at different steps counts each row to its end-of-sequence token."""
    model = tm.build("qwen2_vl")
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl"))
    plain = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False)
    width = inputs["input_ids"].shape[1]
    eos = int(plain[0, width + 1])  # row 0's second new token: that row stops there
    with adapters.apply_timing(model) as handle:
        out = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, eos_token_id=eos, pad_token_id=0)
    assert handle.last_timing.new_tokens == new_tokens(out, width, eos) < out[:, width:].numel()


def test_threads_and_copies_keep_their_own_records():
    """Calls from two threads on one handle each get their own parts (the hooks only see their
    own thread) and the answers of serial calls (on transformers < 5.18 each call's stand-in
    encoder too); a deep copy of the model has its own handle and record."""
    model = tm.build("qwen2_vl")
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl"))
    with adapters.apply_vidcom2(model, 0.25) as handle:
        serial, _ = run(model, inputs)
        first = handle.last_timing.total_s  # the process's first compressed call may be the slowest
        twin = copy.deepcopy(model)
        walls, answers, lock = [], [], threading.Lock()

        def one(_):
            out, outer = run(model, inputs)
            with lock:
                walls.append(outer)
                answers.append(out)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(one, range(6)))
        assert all(torch.equal(out, serial) for out in answers)
        assert handle.timing.calls == handle.timing.video_calls == 7
        assert handle.timing.total_s - first <= sum(walls)  # each threaded call lies in its wall time
        twin_handle = twin.generate.vidcom2_handle
        assert twin_handle is not handle and twin_handle.timing.calls == 0
        _, outer = run(twin, inputs)
        assert twin_handle.timing.calls == 1 and handle.timing.calls == 7
        assert_adds_up(twin_handle.last_timing, outer)
        assert twin.model.get_video_features.owner is twin.model
        twin_handle.remove()
        assert "get_video_features" not in twin.model.__dict__
        assert model.model.get_video_features.owner is model.model


def test_a_wrapper_added_later_stays_after_remove():
    """Something replaced ``get_video_features`` after the handle: remove() leaves it, and the
    handle's encoder wrapper inside it stops timing."""
    model = copy.deepcopy(tm.build("qwen2_vl"))
    inputs = tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl"))
    handle = adapters.apply_timing(model)
    inner, seen = model.model.get_video_features, []

    @functools.wraps(inner)  # transformers >= 5.25 reads the encoder's signature
    def wrapper(*args, **kwargs):
        seen.append(1)
        return inner(*args, **kwargs)

    model.model.get_video_features = wrapper
    handle.remove()
    assert model.model.get_video_features is wrapper
    run(model, inputs)
    assert seen == [1] and handle.timing.calls == 0


def test_efficiency_table_is_the_released_format():
    run_timing = RunTiming(calls=2, samples=2, total_s=1.23456, decode_s=0.5, new_tokens=10, peak_mem_mb=19478.94)
    figures = Efficiency(run_timing, 9.87654)
    assert efficiency_table(figures.released_rows()).splitlines() == [
        "Efficiency Analysis",
        "+--------------+---------+",
        "| Metric       | Value   |",
        "+--------------+---------+",
        "| LLM_time_s   | 1.235   |",
        "| Total_time_s | 9.877   |",
        "| Peak_mem_MB  | 19478.9 |",
        "+--------------+---------+",
    ]
    data = figures.as_dict()
    assert data["samples_per_s"] == pytest.approx(2 / 1.23456) and data["generated_tokens_per_s"] == 20.0


def rank_figures(total_s: float, loop_s: float, peak: float, calls: int) -> dict:
    parts = {name: total_s / 4 for name in PARTS}
    run_timing = RunTiming(calls=calls, video_calls=calls, samples=calls, new_tokens=3 * calls, **parts)
    run_timing.total_s, run_timing.peak_mem_mb = total_s, peak
    return Efficiency(run_timing, loop_s, {"rank": 1}).as_dict()


def test_rank_zero_writes_the_total_of_every_rank(tmp_path, monkeypatch, capsys):
    """Rank 0 waits for the other ranks' files written during this run: LLM time, calls and tokens
    add up, Total_time_s is the longest rank's, the peak the largest; a file that was there before
    the run (the same file, whatever its time stamp) is not taken, nor one that is not figures (the
    total says which rank is missing); a path that cannot be a folder costs the files, not the run."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    other = tmp_path / "vidcom2_efficiency_rank1.json"
    stale = launcher.rank_files(str(tmp_path))  # the run starts: no rank file yet
    launcher.write_json(other, rank_figures(2.0, 7.0, 900.0, 3))  # rank 1 ends first
    mine = Efficiency(launcher.run_from_figures(rank_figures(1.0, 5.0, 1000.0, 2)), 5.0, {"rank": 0})
    launcher.report(mine, str(tmp_path), stale)
    total = json.loads((tmp_path / "vidcom2_efficiency.json").read_text())
    assert total["ranks"] == [0, 1] and total["ranks_missing"] == []
    assert total["LLM_time_s"] == pytest.approx(3.0) and total["Total_time_s"] == 7.0
    assert total["Peak_mem_MB"] == 1000.0 and total["calls"] == 5 and total["new_tokens"] == 15
    assert sum(total["split_s"].values()) == pytest.approx(3.0)
    out = capsys.readouterr().out
    assert "Efficiency Analysis (rank 0 of 2)" in out and "Efficiency Analysis (total of 2 ranks)" in out
    # the next run: rank 1's file is from the run before, even with a time stamp from the future
    monkeypatch.setattr(launcher, "RANKS_WAIT_S", 0.3)
    os.utime(other, (time.time() + 60, time.time() + 60))
    launcher.report(mine, str(tmp_path), launcher.rank_files(str(tmp_path)))
    total = json.loads((tmp_path / "vidcom2_efficiency.json").read_text())
    assert total["ranks"] == [0] and total["ranks_missing"] == [1] and total["LLM_time_s"] == pytest.approx(1.0)
    assert "no figures from rank(s) [1]" in capsys.readouterr().out
    # a rank file of this run that is not figures counts as missing
    stale = launcher.rank_files(str(tmp_path))
    launcher.write_json(other, {"not": "figures"})
    launcher.report(mine, str(tmp_path), stale)
    assert json.loads((tmp_path / "vidcom2_efficiency.json").read_text())["ranks_missing"] == [1]
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    launcher.report(mine, str(blocked), {})
    assert "could not write the efficiency figures under" in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA events need a GPU")
def test_cuda_events_add_up():
    model = tm.build("qwen2_vl").cuda()
    inputs = {k: v.cuda() for k, v in tm.make_batch("qwen2_vl", model, tm.samples_for("qwen2_vl")).items()}
    with adapters.apply_vidcom2(model, 0.25) as handle:
        run(model, inputs)
        _, outer = run(model, inputs)
        assert_adds_up(handle.last_timing, outer + 0.05)
        assert handle.timing.peak_mem_mb > 0
