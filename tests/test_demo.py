"""The main job: runs end to end on the sample clip and on the generated clip, writes the PNG,
and turns bad input into a one-line error with a non-zero exit."""

import subprocess
import sys

import av
import pytest
import torch

from vidcom2_kernels import compress, demo
from vidcom2_kernels.backends import triton_backend
from vidcom2_kernels.demo import main
from vidcom2_kernels.video import decode_frames, synthetic_clip
from vidcom2_kernels.vision import qwen2vl_patches


def test_sample_clip(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["--frames", "8", "--max-pixels", str(224 * 126), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bigbuckbunny.mp4: 8 frames sampled, 25 fps" in text and "tokens kept" in text
    assert "selection time, torch" in text
    if triton_backend is not None and not torch.cuda.is_available():  # the tests run triton interpreted
        assert "(Triton interpreter on the CPU)" in text and "triton     n/a" not in text
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generated_clip_exact(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["--synthetic", "--frames", "6", "--max-pixels", str(224 * 126), "--exact", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "generated clip: --synthetic, 6 frames sampled, 25 fps" in text and "((" not in text
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
        (["--out", ""], "--out must name a file, got an empty path"),
        (["--out", "demo.xyz"], "--out demo.xyz: .xyz pictures are not supported; use one of"),
    ],
)
def test_bad_input(argv, message, capsys, monkeypatch):
    if argv[0] != "/no/such/video.mp4":  # (that check is decode_frames' own first step)
        monkeypatch.setattr(demo, "decode_frames", None)  # every other refusal comes before any decoding
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


def test_fewer_frames_than_asked_are_said(tmp_path, capsys):
    import av
    import numpy as np

    path = tmp_path / "short.mp4"
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 112, 64, "yuv420p"
        for i in range(6):
            frame = np.full((64, 112, 3), 40 * i, dtype=np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    assert main([str(path), "--frames", "20", "--out", str(tmp_path / "d.png")]) == 0
    assert "6 frames sampled (--frames 20: the video has only 6)" in capsys.readouterr().out


@pytest.mark.parametrize("groups", [1, 2, 17, 200])
def test_picture_for_1_to_200_frames(groups, tmp_path):
    """The figure's layout holds from one temporal group to 200: it is written, its size stays
    in a sane range, and the strip says how many frames it shows."""
    import matplotlib.image

    patches = qwen2vl_patches(synthetic_clip(2 * groups, height=112, width=196), 112 * 196)
    x = torch.randn(patches.num_groups * patches.tokens_per_frame, 32, generator=torch.Generator().manual_seed(0))
    out = compress(x, patches.tokens_per_frame, 0.25)
    path = tmp_path / "g.png"
    demo.draw(str(path), patches, out, 0.25, "title", "caption")
    height, width, _ = matplotlib.image.imread(str(path)).shape
    assert width == 1300 and 600 <= height <= 1100
    shown = "the one frame" if groups == 1 else f"all {groups} frames" if groups <= 16 else f"16 of the {groups} frames"
    assert shown in demo.groups_text(groups)


def test_out_without_extension_is_written_where_it_says(tmp_path, capsys):
    out = tmp_path / "noext"
    assert main(["--synthetic", "--frames", "4", "--max-pixels", str(224 * 126), "--out", str(out)]) == 0
    assert f"picture                    {out}.png" in capsys.readouterr().out
    assert (tmp_path / "noext.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not out.exists()


def test_raw_h264_stream(tmp_path, capsys):
    """A raw H.264 elementary stream records no frame count and cannot seek: counted, then read again."""
    path = tmp_path / "clip.h264"
    container = av.open(str(path), "w", format="h264")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 224, 126, "yuv420p"
    for frame in synthetic_clip(12, 126, 224):
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
    container.close()
    frames, _ = decode_frames(str(path), 6)
    assert frames.shape == (6, 126, 224, 3)
    assert main([str(path), "--frames", "6", "--max-pixels", str(224 * 126), "--out", str(tmp_path / "d.png")]) == 0
    assert "clip.h264: 6 frames sampled" in capsys.readouterr().out


def test_without_the_video_extra_one_line(tmp_path):
    """matplotlib (or Pillow, which it needs) missing: one line naming the extra, exit code 2."""
    code = "import sys; sys.modules['matplotlib'] = None; from vidcom2_kernels import demo; sys.exit(demo.main([]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("vidcom2-demo: error: ") and 'pip install "vidcom2_kernels[video]"' in lines[0]
