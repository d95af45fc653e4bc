"""How the test suite itself is run: ``--device=cuda`` without a GPU stops at once with one clear
line (pytest's usage error, exit 4) instead of failing every GPU test."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: --device=cuda runs")
@pytest.mark.parametrize("device", ["cuda", "tpu"])
def test_unusable_device_is_one_clear_stop(device):
    out = subprocess.run(
        [sys.executable, "-m", "pytest", f"--device={device}", "-q", "-p", "no:cacheprovider", "tests/test_usage.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 4
    errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "--device" in errors[0] and "Traceback" not in out.stderr
