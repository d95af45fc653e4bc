"""The side environments' locks (ci/locks/NAME.txt, written by ci/lock.sh from ci/locks/NAME.in):
well-formed, honouring their inputs, and what the scripts build is exactly the lock. The main
test environment is not locked: it resolves the newest releases setup.py allows, as users do."""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import side_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "ci" / "locks"
#: (lock name, script, its arguments, pytest mark of the tests that use the environment)
ENVIRONMENTS = [
    ("lmms-eval", "lmms_eval_env.sh", (), pytest.mark.lmms_eval),
    ("lmms-eval-media", "lmms_eval_media_env.sh", (), pytest.mark.lmms_eval),
    ("vllm", "vllm_env.sh", (), pytest.mark.vllm),
    ("transformers-5.17.0", "transformers_env.sh", ("5.17.0",), pytest.mark.transformers_versions),
    ("timm", "timm_env.sh", (), pytest.mark.timm),
]
#: the scripts that build over this environment (they see its packages after their own)
OVERLAYS = ("transformers_env.sh", "timm_env.sh")
#: the scripts that build over another side environment's: script -> that environment's script
OVER_SIDE = {"lmms_eval_media_env.sh": "lmms_eval_env.sh"}


def lines(path: Path) -> list:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def pins(path: Path) -> dict:
    """canonical name -> version of a lock's ``name==version`` lines."""
    return {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in lines(path)}


def test_every_lock_has_inputs_and_every_environment_a_lock():
    assert sorted(p.stem for p in LOCKS.glob("*.txt")) == sorted(p.stem for p in LOCKS.glob("*.in"))
    assert sorted(p.stem for p in LOCKS.glob("*.txt")) == sorted(name for name, *_ in ENVIRONMENTS)


@pytest.mark.parametrize("name", [e[0] for e in ENVIRONMENTS])
def test_lock_is_exact_and_honours_its_inputs(name):
    lock = LOCKS / f"{name}.txt"
    entries = lines(lock)
    assert all(len(line.split("==")) == 2 and " " not in line and ";" not in line for line in entries), entries
    assert len(pins(lock)) == len(entries), "a package twice"
    assert entries == sorted(entries, key=str.lower), "not sorted as ci/side_env.sh writes it"
    pinned = pins(lock)
    for requirement in map(Requirement, lines(LOCKS / f"{name}.in")):
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} of {name}.in is not in {name}.txt"
        assert requirement.specifier.contains(version, prereleases=True), f"{name}.txt: {requirement} but {version}"
    assert "vidcom2-kernels" not in pinned and "pip" not in pinned  # the checkout's own, and the venv's


def test_lmms_eval_lock_has_a_filelock_it_can_run_with():
    """lmms-eval 0.7.3's evaluator imports filelock._api, gone from filelock 4.3."""
    assert tuple(map(int, pins(LOCKS / "lmms-eval.txt")["filelock"].split(".")[:2])) < (4, 3)


@pytest.mark.parametrize("name, script, args", [pytest.param(*e[:3], marks=e[3], id=e[0]) for e in ENVIRONMENTS])
def test_side_environment_is_its_lock(name, script, args):
    overlay = {"PYTHON": sys.executable} if script in OVERLAYS else None  # over this environment
    python = side_environment(script, *args, env=overlay)
    own = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze", "--all", "--exclude-editable", "--path", own],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {
        canonicalize_name(line.split("==")[0]): line.split("==")[1]
        for line in freeze.splitlines()
        if "==" in line and not line.startswith("#")
    }
    installed.pop("pip")
    assert installed == pins(LOCKS / f"{name}.txt")
    seen = subprocess.run(
        [python, "-c", "import sys; print(repr(sys.path))"], capture_output=True, text=True, check=True
    ).stdout
    if overlay:  # it sees every site directory of this environment (a venv over a system site has two)
        assert all(repr(d) in seen for d in site.getsitepackages()), (seen, site.getsitepackages())
    if script in OVER_SIDE:  # and the media environment every one of the lmms-eval environment's
        parent = subprocess.run(
            [side_environment(OVER_SIDE[script]), "-c", "import site; print(*site.getsitepackages(), sep=chr(10))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert all(repr(d) in seen for d in parent.splitlines()), (seen, parent)


def test_media_environment_constrains_what_it_shares_with_lmms_eval():
    """The media lock moves nothing of the lmms-eval lock but what its inputs name (pillow, for
    moviepy), so the packages lmms-eval runs with are the ones CI was green on there."""
    media, base = pins(LOCKS / "lmms-eval-media.txt"), pins(LOCKS / "lmms-eval.txt")
    named = {canonicalize_name(Requirement(line).name) for line in lines(LOCKS / "lmms-eval-media.in")}
    moved = {name for name in media.keys() & base.keys() if media[name] != base[name]}
    assert moved <= named, moved
