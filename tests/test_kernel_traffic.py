"""The on-paper traffic table (``bench/kernel_traffic.py``) records the triton backend's real
launches without running them: the grids it reports are the ones the host code computes."""

import pathlib
import re
import subprocess

import kernel_traffic
from shapes import SHAPES

import vidcom2_kernels as vk
from vidcom2_kernels.layout import parse_frames
from vidcom2_kernels.ops.common import SPLIT_ROWS, UNIT_ROWS


def test_recorded_grids_follow_the_layout(monkeypatch):
    monkeypatch.setitem(SHAPES, "t", ([(3, 700), (2, 9)], 80))
    calls, x = kernel_traffic.record("t", kernel_traffic.torch.bfloat16)
    layout = parse_frames(SHAPES["t"][0], x.shape[0])
    splits = sum(-(-n // SPLIT_ROWS) for n in layout.tokens_per_video)
    units = sum(-(-int(t) // UNIT_ROWS) for t in layout.frame_tokens)
    grids = {call: [(k, g) for k, g, _ in launches] for call, launches in calls.items()}
    assert grids["select_channels"] == [
        ("channel_variance_kernel", (splits, 3)),  # 80 channels in blocks of 32
        ("channel_keep_kernel", (2, 3)),
    ]
    assert grids["token_scores"] == [
        ("centre_partials_kernel", (units,)),
        ("centres_kernel", (2, 3)),
        ("token_scores_kernel", (units,)),
    ]
    exact = [k for k, _ in grids["select_tokens exact"]]
    assert exact == ["frame_threshold_kernel"] + ["reconcile_count_kernel"] * 3 + [
        "reconcile_frames_kernel",
        "select_rows_kernel",
    ]
    assert grids["select_tokens exact"][1][1] == (splits,)
    # the selection and the gather in one launch over (frames, column ranges)
    ((_, grid, select_bytes),) = calls["select_tokens"]
    assert grid[0] == 5
    # the gather moves the kept rows only (the budget mode's): read and written once each
    ((_, _, gather_bytes),) = calls["gather_rows"]
    kept = int(vk.compress(x, SHAPES["t"][0], 0.25, backend="torch", validate=False).counts.sum())
    assert gather_bytes == 2 * kept * 80 * 2 + kept * 8  # bf16 rows, int64 indices
    assert select_bytes > 2 * kept * 80 * 2 and select_bytes < x.numel() * x.element_size()


def test_table_prints_every_call(monkeypatch, capsys):
    kernel_traffic.main(["--shapes", "smoke"])
    out = capsys.readouterr().out
    for call in ("select_channels", "token_scores", "select_tokens exact", "gather_rows", "dycoke_similarity"):
        assert f"| {call} |" in out
    assert "VidCom2 estimate:" in out


def test_device_check_names_files_that_exist():
    """The prepared device check (bench/device_check.sh) runs named test files and scripts: a rename
    must not leave it running nothing on the day a GPU is lent."""
    root = pathlib.Path(__file__).resolve().parent.parent
    script = (root / "bench" / "device_check.sh").read_text()
    named = set(re.findall(r"(?:tests|bench)/[\w/]+\.(?:py|sh)", script))
    assert {"tests/test_compress.py", "tests/test_launches.py", "bench/bench_gpu.py"} <= named
    assert all((root / path).exists() for path in named), sorted(p for p in named if not (root / p).exists())
    assert subprocess.run(["bash", "-n", str(root / "bench" / "device_check.sh")]).returncode == 0
