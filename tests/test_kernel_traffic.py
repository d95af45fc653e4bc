"""The on-paper traffic table (``bench/kernel_traffic.py``) records the triton backend's real
launches without running them: the grids it reports are the ones the host code computes."""

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
        ("variance_merge_kernel", (2, 3)),
        ("channel_rank_kernel", (2, 2)),
    ]
    assert [k for k, _ in grids["token_scores"]] == [
        "centre_partials_kernel",
        "frame_centre_kernel",
        "video_centre_kernel",
        "token_scores_kernel",
        "frame_uniqueness_kernel",
    ]
    assert grids["token_scores"][0][1] == (units,) and grids["token_scores"][1][1] == (5, 1)
    exact = [k for k, _ in grids["select_tokens exact"]]
    # 4 passes over score bits, 2 over rows (700 * 3 rows > 511), each a count and a narrow
    assert exact.count("reconcile_count_kernel") == exact.count("reconcile_narrow_kernel") == 6
    assert exact[0] == "frame_select_kernel" and exact[-1] == "frame_select_kernel"
    # the gather moves the kept rows only (the budget mode's): read and written once each
    ((_, _, gather_bytes),) = calls["gather_rows"]
    kept = int(vk.compress(x, SHAPES["t"][0], 0.25, backend="torch", validate=False).counts.sum())
    assert gather_bytes == 2 * kept * 80 * 2 + kept * 8  # bf16 rows, int64 indices


def test_table_prints_every_call(monkeypatch, capsys):
    kernel_traffic.main(["--shapes", "smoke"])
    out = capsys.readouterr().out
    for call in ("select_channels", "token_scores", "select_tokens exact", "gather_rows", "dycoke_similarity"):
        assert f"| {call} |" in out
    assert "VidCom2 estimate:" in out
