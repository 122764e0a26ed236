"""The real clips of ../shared/data/videos (skipped when ../shared is absent)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
from conftest import run_cli

from gtasr_stream import EncodeOptions, Upscaler, upscale_video
from gtasr_stream.model import upsample_lq


def frame_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        return [f.pts * f.time_base for f in c.decode(video=0)]


def head(src: Path, dst: Path, packets: int) -> Path:
    """The first `packets` video packets of src, stream-copied (a short real clip, same codec)."""
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for n, p in enumerate(i.demux(video=0)):
            if n == packets:
                break
            if p.size:
                p.stream = s
                o.mux(p)
    return dst


def test_carphone_keeps_timestamps_and_sar(tmp_path, shared_data, tiny_weights):
    src = shared_data / "videos" / "carphone_pristine.mp4"
    out = tmp_path / "out.mp4"
    r = run_cli(src, out, "--weights", tiny_weights, "-q")
    assert r.returncode == 0, r.stderr.decode()
    assert frame_times(out) == frame_times(src) and len(frame_times(out)) == 120
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (704, 576)
        assert v.sample_aspect_ratio == Fraction(128, 117)  # display aspect unchanged


def test_divx3_avi_to_mkv(tmp_path, shared_data, tiny_weights):
    """msmpeg4v3 in AVI (no modern encoder writes it): the output codec is chosen independently."""
    src = head(shared_data / "videos" / "vtest.avi", tmp_path / "vtest.avi", 12)
    up = Upscaler(weights=tiny_weights, device="cpu", noise="none")
    up.step = lambda lq, eps: upsample_lq(lq)  # the decode/encode path is under test, not the model
    stats = upscale_video(str(src), str(tmp_path / "out.mkv"), up, EncodeOptions(crf=30), outscale=1)
    assert stats.codec == "libx264" and stats.encoded == 12
    assert frame_times(tmp_path / "out.mkv") == frame_times(src)


def test_bikes_first_frames(tmp_path, shared_data, tiny_weights):
    src = head(shared_data / "videos" / "bikes.mp4", tmp_path / "bikes.mp4", 3)
    out = tmp_path / "out.mp4"
    r = run_cli(src, out, "--weights", tiny_weights, "-q")
    assert r.returncode == 0, r.stderr.decode()
    assert frame_times(out) == frame_times(src)
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (2560, 1088)
