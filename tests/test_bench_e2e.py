"""Smoke-size run of the end-to-end benchmark: it must finish and report consistent token counts."""

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
