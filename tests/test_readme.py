"""The README's code runs as written: every ```python block, in order, in one namespace (as a
reader pasting them one after another would), the GPU block with "cuda" replaced by "cpu" where
there is no GPU; the printed demo table matches what the demo prints today, row for row (timings
aside); the shell commands name modules, scripts and options that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    """The bodies of the README's fenced blocks opened with ```language ("" : a plain fence)."""
    out, body, lang = [], None, None
    for line in README.splitlines(keepends=True):
        if line.startswith("```"):
            if body is None:
                body, lang = [], line[3:].strip()
            else:
                if lang == language:
                    out.append("".join(body))
                body = None
        elif body is not None:
            body.append(line)
    return out


def test_every_python_block_runs(capsys):
    code = blocks("python")
    assert len(code) >= 6
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(code):
        if not torch.cuda.is_available():
            block = block.replace('"cuda"', '"cpu"')
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"README python block {i} failed:\n{block}") from exc
    printed = capsys.readouterr().out
    assert "[48, 48, 48, 48, 48, 55, 48, 48]" in printed and "64 -> 16" in printed  # the blocks' own comments


def test_demo_table_is_what_the_demo_prints(tmp_path, capsys):
    from vidcom2_kernels.demo import main

    shown = [block for block in blocks("") if "VidCom2 on" in block]
    assert len(shown) == 1
    assert main(["--frames", "32", "--out", str(tmp_path / "demo.png")]) == 0
    printed = capsys.readouterr().out.splitlines()
    expected = shown[0].splitlines()
    assert [line.split("  ")[1] if line.startswith("  ") else line for line in printed] == [
        line.split("  ")[1] if line.startswith("  ") else line for line in expected
    ]  # the same rows in the same order
    timing = re.compile(r"\d+\.\d+ ms")
    for got, want in zip(printed, expected):
        if "time" not in got and "picture" not in got:
            assert got == want
        elif "time" in got and "ms" in want:
            assert timing.search(got) or "n/a" in got


@pytest.mark.parametrize(
    "module", ["vidcom2_kernels.adapters.lmms_eval", "vidcom2_kernels.demo"], ids=["lmms_eval launcher", "demo"]
)
def test_modules_the_shell_blocks_run_exist(module):
    shell = "\n".join(blocks("bash"))
    assert module.split(".")[-1] in shell or module == "vidcom2_kernels.demo"
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr


def test_shell_blocks_name_existing_files_and_extras():
    shell = "\n".join(blocks("bash"))
    for path in re.findall(r"\b((?:ci|bench|python|tests)/[\w./-]+\.(?:sh|py))", README):
        assert (ROOT / path).exists(), path
    setup = (ROOT / "setup.py").read_text()
    for extra in re.findall(r"\.\[(\w+)\]", shell):
        assert f'"{extra}":' in setup, extra
    assert "vidcom2-demo" in shell and "python -m pytest" in shell
