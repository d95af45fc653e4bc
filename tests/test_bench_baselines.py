"""The CPU benchmark's baselines (``bench/baselines.py``) must compute VidCom2, or their timings
mean nothing: on float32 inputs the naive, released-shape and vLLM-port versions keep the
reference's tokens (vLLM's with the exact count), and the table runner works end to end."""

import baselines
import bench_baselines
import pytest
import torch
from helpers import moving_object, random_features, scene_cuts

import vidcom2_kernels as vk

CASES = {
    "random-batch": ([(6, 50), (3, 37), (1, 12)], 96, random_features),
    "scene-cuts": ([(10, 30)], 64, lambda frames, C, seed: scene_cuts(10, 30, C, seed=seed)),
    "moving-object": ([(8, 36)], 48, lambda frames, C, seed: moving_object(8, 6, C, seed=seed)),
}


def inputs(case, seed):
    frames, C, make = CASES[case]
    return make(frames, C, seed=seed), frames


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", ["naive", "released_shape"])
def test_budget_mode_baselines_keep_the_reference_tokens(name, case, seed):
    x, frames = inputs(case, seed)
    expect = vk.compress(x, frames, 0.25, backend="reference")
    assert torch.equal(getattr(baselines, name)(x, frames, 0.25), expect.features)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", sorted(CASES))
def test_vllm_port_keeps_the_exact_reference_tokens(case, seed):
    x, frames = inputs(case, seed)
    expect = vk.compress(x, frames, 0.25, backend="reference", exact=True)
    assert torch.equal(baselines.vllm_port(x, frames, 0.25), expect.features)


def test_probe_gathers_a_quarter():
    x = torch.arange(40.0).view(20, 2)
    assert torch.equal(baselines.probe(x, [(4, 5)], 0.25), x[::4])


def test_table_runner_smoke(tmp_path):
    csv, md = tmp_path / "t.csv", tmp_path / "R.md"
    bench_baselines.main(
        ["--cases", "smoke:float32", "smoke:bfloat16", "--rounds", "2", "--no-compile", "--no-rss"]
        + ["--csv", str(csv), "--results", str(md)]
    )
    lines = csv.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("shape,dtype")
    text = md.read_text()
    assert "<!-- bench_baselines cpu begin -->" in text and text.count("| smoke (") == 2


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fastvid_released_shape_computes_fastvid(case, seed):
    """The FastVID baseline gives the reference's rows (its random density jitter only decides
    exact ties, which these inputs do not have)."""
    x, frames = inputs(case, seed)
    expect = vk.compress(x, frames, 0.25, backend="reference", method="fastvid")
    torch.testing.assert_close(baselines.fastvid_released_shape(x, frames, 0.25), expect.features, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", sorted(CASES))
def test_holitom_released_shape_computes_holitom(case, seed):
    """The HoliTom baseline gives the reference's rows (its random density jitter only decides
    near-exact ties, which these inputs do not have)."""
    x, frames = inputs(case, seed)
    expect = vk.compress(x, frames, 0.25, backend="reference", method="holitom")
    torch.testing.assert_close(baselines.holitom_released_shape(x, frames, 0.25), expect.features, atol=1e-5, rtol=0)
