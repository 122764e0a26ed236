"""Inputs on a pipe: an MP4 whose index comes last is named as such; a clean MKV raises no false alarm."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
from conftest import run_cli
from media import _encode_audio, make_clip, synthetic_frame, write_truncated

from gtasr_stream import Upscaler, upscale_video


def error_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if "error" in line or "warning" in line]


def remux(src: Path, dst: Path, **options: str) -> Path:
    with av.open(str(src)) as i, av.open(str(dst), "w", options=options) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if p.dts is not None:
                p.stream = streams[p.stream.index]
                o.mux(p)
    return dst


def test_mp4_with_its_index_last_on_stdin_says_what_to_do(tmp_path, tiny_weights):
    """Before: 'input ends early or is damaged' and 'no decodable video frames' (exit 1)."""
    clip = make_clip(tmp_path / "in.mp4", frames=60, width=320, height=240, pix_fmt="yuv444p", audio=True)
    assert clip.path.stat().st_size > 65536  # more than FFmpeg's read buffer: the data has gone by
    r = run_cli("-", tmp_path / "out.mkv", "--weights", tiny_weights, stdin=clip.path.read_bytes())
    lines = error_lines(r.stderr)
    print(lines)
    assert r.returncode == 1 and len(lines) == 1
    assert "input '-'" in lines[0] and "pass the file's path" in lines[0] and "+faststart" in lines[0]
    assert not (tmp_path / "out.mkv").exists()
    small = make_clip(tmp_path / "small.mp4", frames=4, audio=True)
    fixed = remux(small.path, tmp_path / "fast.mp4", movflags="+faststart")  # what the line advises
    r = run_cli("-", tmp_path / "out.mkv", "--weights", tiny_weights, stdin=fixed.read_bytes())
    assert r.returncode == 0 and error_lines(r.stderr) == [], r.stderr.decode()


def write_long_audio_mkv(path: Path, frames: int = 6, audio_s: int = 2) -> Path:
    """0.24 s of video and 2 s of audio: the container's duration is the audio's."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        packets = []
        for i in range(frames):
            f = synthetic_frame(i, 64, 48, "yuv420p")
            f.pts, f.time_base = i, Fraction(1, 25)
            packets += v.encode(f)
        packets += v.encode(None) + _encode_audio(out, Fraction(audio_s))
        packets.sort(key=lambda p: p.dts * p.time_base)
        out.mux(packets)
    return path


def test_clean_mkv_on_stdin_with_longer_audio_is_not_called_truncated(tmp_path, tiny_weights):
    """Before: 'decoding stopped at 0.24 s of 2.02 s: the input may be truncated or damaged'."""
    src = write_long_audio_mkv(tmp_path / "in.mkv")
    r = run_cli("-", tmp_path / "out.mkv", "--weights", tiny_weights, stdin=src.read_bytes())
    assert r.returncode == 0 and error_lines(r.stderr) == [], r.stderr.decode()


def test_truncated_video_only_mkv_is_still_reported(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "in.mkv", frames=40)
    bad = write_truncated(tmp_path / "bad.mkv", clip.path, fraction=0.5)
    warnings: list[str] = []
    up = Upscaler(weights=tiny_weights, device="cpu", batch=8)
    upscale_video(str(bad), str(tmp_path / "out.mkv"), up, on_warning=warnings.append)
    print(warnings)
    assert any("may be truncated or damaged" in w for w in warnings)
