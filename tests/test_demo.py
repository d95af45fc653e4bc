"""The main job: runs end to end on the sample clip and on the generated clip, writes the PNG,
and turns bad input into a one-line error with a non-zero exit."""

import pytest
import torch

from vidcom2_kernels import demo
from vidcom2_kernels.backends import triton_backend
from vidcom2_kernels.demo import main


def test_sample_clip(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["--frames", "8", "--max-pixels", str(224 * 126), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bigbuckbunny.mp4" in text and "tokens kept" in text and "selection time, torch" in text
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generated_clip_exact(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["--synthetic", "--frames", "6", "--max-pixels", str(224 * 126), "--exact", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "generated clip" in text
    kept = [line for line in text.splitlines() if "tokens kept" in line][0]
    n_kept, n_all = (int(v) for v in kept.split()[2:5:2])
    assert n_kept == int(n_all * 0.25)  # exact mode keeps int(N * r)
    assert out.exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["/no/such/video.mp4"], "no such file"),
        (["--retention", "0"], "--retention must be in (0, 1]"),
        (["--retention", "1.5"], "--retention must be in (0, 1]"),
        (["--frames", "0"], "--frames must be at least 1"),
        (["--max-pixels", "0"], "--max-pixels must be at least 784"),
        (["--max-pixels", "-5"], "--max-pixels must be at least 784"),
        (["--model", "/nonexistent"], "--model must be a local checkpoint directory with a config.json"),
        (["--out", "/nonexistent/dir/demo.png"], "--out /nonexistent/dir/demo.png is not a writable file path"),
        (["--out", "/"], "--out / is not a writable file path"),
    ],
)
def test_bad_input(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("vidcom2-demo: error:")
    assert not any("Traceback" in line for line in err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="triton runs here")
def test_triton_without_gpu_fails_before_the_work(monkeypatch, capsys):
    monkeypatch.setattr(triton_backend, "is_interpreter", lambda: False)  # as without TRITON_INTERPRET=1
    monkeypatch.setattr(demo, "decode_frames", None)  # any decoding would raise a TypeError
    assert main(["--backend", "triton"]) == 2
    assert "backend='triton' needs CUDA tensors" in capsys.readouterr().err


def test_not_a_video(tmp_path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    assert main([str(bad)]) == 2
    assert "not a readable video" in capsys.readouterr().err


def test_empty_video(tmp_path, capsys):
    import av

    path = tmp_path / "empty.mp4"
    with av.open(str(path), "w", format="mp4") as c:  # a header and no frames
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()
    assert path.exists()
    assert main([str(path)]) == 2
    assert "has no frames" in capsys.readouterr().err
