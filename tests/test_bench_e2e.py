"""Smoke-size run of the end-to-end benchmark: it must finish and report consistent token counts
and timing summaries (medians inside their spread, the baseline selecting nothing)."""

import bench_e2e


def test_e2e_smoke(tmp_path):
    args = bench_e2e.parse_args(
        [
            "--device",
            "cpu",
            "--size",
            "tiny",
            "--frames",
            "4",
            "--height",
            "56",
            "--width",
            "112",
            "--new-tokens",
            "3",
            "--repeats",
            "1",
            "--batch",
            "1",
            "2",
            "--csv",
            str(tmp_path / "e2e.csv"),
        ]
    )
    rows = bench_e2e.run(args)
    assert len(rows) == 2 * 4
    for batch in (1, 2):
        by = {r["setting"]: r for r in rows if r["batch"] == batch}
        none, full = by["none"], by["1.0"]
        assert full["video_tokens"] == none["video_tokens"] and full["prompt_tokens"] == none["prompt_tokens"]
        for r in ("0.25", "0.15"):
            dropped = none["video_tokens"] - by[r]["video_tokens"]
            assert dropped > 0
            assert none["prompt_tokens"] - by[r]["prompt_tokens"] == dropped  # only video tokens left the prompt
        assert by["0.15"]["video_tokens"] <= by["0.25"]["video_tokens"]
        assert all(r["generated"] == 3 for r in by.values())
        for r in by.values():
            for name in ("encoder", "selection", "prefill", "decode", "ttft", "lm", "total"):
                assert r[f"{name}_ms_min"] <= r[f"{name}_ms"] <= r[f"{name}_ms_max"]
            assert r["ttft_ms"] <= r["total_ms_max"] and r["peak_mb"] > 0
            assert r["encoder_ms"] > 0 and r["prefill_ms"] > 0 and r["decode_ms"] > 0
    table = bench_e2e.table(rows, args)
    assert table[0].startswith("### cpu, Qwen2-VL tiny") and sum(line.startswith("| sdpa |") for line in table) == 8
