"""The adapter tests again on the oldest supported transformers (5.17, which has no
``mm_encoder_outputs``: the adapters patch ``get_video_features`` for the call instead), in the side
environment ci/transformers_env.sh builds over this one."""

import subprocess
import sys
from pathlib import Path

import pytest
import transformers
from helpers import side_environment

ROOT = Path(__file__).resolve().parents[1]
OLDEST = "5.17.0"


@pytest.mark.transformers_versions
@pytest.mark.skipif(transformers.__version__ == OLDEST, reason="this environment already runs transformers 5.17")
def test_adapters_on_oldest_supported_transformers():
    python = side_environment("transformers_env.sh", OLDEST, env={"PYTHON": sys.executable})  # over this env
    version = subprocess.run(
        [python, "-c", "import transformers; print(transformers.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == OLDEST
    run = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_adapters.py",
            "tests/test_generate_contract.py",
            "tests/test_timing.py",
            "tests/test_omni.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-4000:]
    assert " passed" in run.stdout.strip().splitlines()[-1]
