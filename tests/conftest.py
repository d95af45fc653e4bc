"""Test configuration.

Without a GPU, the Triton kernels run under ``TRITON_INTERPRET=1`` (it must be set before triton is
imported). ``--device=cuda`` runs the same tests on a GPU with compiled kernels.
"""

import os

import pytest
import tiny_models as tm


def pytest_addoption(parser):
    parser.addoption("--device", default=None, help="cpu (Triton interpreter) or cuda; default: cuda if present")


def pytest_configure(config):
    import torch

    device = config.getoption("--device") or ("cuda" if torch.cuda.is_available() else "cpu")
    config.option.device = device
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    config.addinivalue_line("markers", "slow: longer end-to-end checks (real video through a vision tower)")


@pytest.fixture(params=tm.FAMILIES)
def family(request):
    """Every model family with an adapter (tiny random models, tests/tiny_models.py)."""
    return request.param


@pytest.fixture(scope="session")
def device(pytestconfig):
    return pytestconfig.getoption("--device")


@pytest.fixture(autouse=True)
def poison_outputs():
    """Every output buffer starts as NaN / -1 / True, so an element no kernel wrote fails a test."""
    from vidcom2_kernels.testing import poisoned_outputs

    with poisoned_outputs():
        yield
