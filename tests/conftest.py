"""Test configuration.

Without a GPU, the Triton kernels run under ``TRITON_INTERPRET=1`` (it must be set before triton is
imported). ``--device=cuda`` runs the same tests on a GPU with compiled kernels.
"""

import importlib.util
import os
import sys

import pytest
import tiny_models as tm
import torch


def _test_the_installed_package() -> None:
    """``python -m pytest`` puts the working directory first on sys.path, which would shadow a
    non-editable install of vidcom2_kernels with the source tree: where the package is installed
    elsewhere, drop that entry so the tests import what is installed (an editable install and a
    plain checkout resolve to the source tree either way)."""
    here = [p for p in sys.path if os.path.abspath(p or ".") == os.getcwd()]
    rest = [p for p in sys.path if p not in here]
    saved, sys.path[:] = sys.path[:], rest
    spec = importlib.util.find_spec("vidcom2_kernels")
    if spec is None:
        sys.path[:] = saved


_test_the_installed_package()

#: the production backends, each compared with the reference
BACKENDS = ("torch", "triton")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def pytest_addoption(parser):
    parser.addoption("--device", default=None, help="cpu (Triton interpreter) or cuda; default: cuda if present")
    parser.addoption("--run-slow", action="store_true", help="also run the tests marked slow (minutes, GBs)")


def pytest_configure(config):
    device = config.getoption("--device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(
            f"--device=cuda, but this torch ({torch.__version__}) sees no CUDA GPU; "
            "run without --device (the CPU, Triton kernels interpreted) or on a GPU machine"
        )
    config.option.device = device
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    config.addinivalue_line("markers", "slow: minutes and gigabytes (inputs past 2**31 elements); run with --run-slow")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--run-slow"):
        skip = pytest.mark.skip(reason="slow: run with --run-slow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each production backend (the reference is what they are compared with)."""
    return request.param


@pytest.fixture(params=(*BACKENDS, "reference"))
def any_backend(request):
    """Every backend, the reference included (for properties all of them share)."""
    return request.param


@pytest.fixture(params=DTYPES, ids=["fp32", "fp16", "bf16"])
def dtype(request):
    """Every feature dtype."""
    return request.param


@pytest.fixture(params=tm.FAMILIES)
def family(request):
    """Every model family with an adapter (tiny random models, tests/tiny_models.py) that the
    installed transformers can run."""
    tm.require(request.param)
    return request.param


@pytest.fixture(scope="session")
def device(pytestconfig):
    return pytestconfig.getoption("--device")


@pytest.fixture(autouse=True)
def poison_outputs():
    """Every output buffer starts as NaN / -1 / True, so an element no kernel wrote fails a test."""
    # imported here, not at the top: importing the package defines the Triton kernels, which must
    # happen after pytest_configure has set TRITON_INTERPRET
    from vidcom2_kernels.testing import poisoned_outputs

    with poisoned_outputs():
        yield


@pytest.fixture(autouse=True)
def shared_models_left_as_built(request):
    """After each test, the shared tiny models (``tiny_models.build``) must be as built: a test that
    leaves a patch on one fails here, naming what it left, and that model is rebuilt for the next
    test (a leftover would otherwise show up as another test's failure, or hide one)."""
    yield
    for key, model in list(tm.BUILT.items()):
        left = tm.left_changed(model)
        if left:
            del tm.BUILT[key]
            pytest.fail(f"{request.node.nodeid} left the shared {key[0]} model changed: {', '.join(left)}")
