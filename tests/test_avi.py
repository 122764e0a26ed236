"""AVI with B-frames: each frame keeps its own time (AVI stores none; the demuxer's guess is a frame late)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest
from media import synthetic_frame

from gtasr_stream import Upscaler, upscale_video


def write_bframe_avi(path: Path, frames: int = 12, b_frames: int = 2) -> Path:
    """MPEG-4 Part 2 (what Xvid/DivX write) with B-frames in AVI, frame i shown at i/25 s."""
    with av.open(str(path), "w", format="avi") as out:
        v = out.add_stream("mpeg4", rate=25, options={"bf": str(b_frames)})
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        packets = []
        for i in range(frames):
            f = synthetic_frame(i, 64, 48, "yuv420p")
            f.pts, f.time_base = i, Fraction(1, 25)
            packets += v.encode(f)
        out.mux(packets + v.encode(None))
    return path


def times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        return [f.pts * f.time_base for f in c.decode(video=0)]


@pytest.mark.parametrize("b_frames", [0, 2])
def test_avi_frames_keep_their_times(tmp_path, tiny_weights, b_frames):
    src = write_bframe_avi(tmp_path / "in.avi", b_frames=b_frames)
    print(f"decoder's times of the AVI: {[float(t) for t in times(src)]}")
    dst = tmp_path / "out.mkv"
    upscale_video(str(src), str(dst), Upscaler(weights=tiny_weights, device="cpu", batch=6), None)
    got = times(dst)
    print(f"output times: {[float(t) for t in got]}")
    assert got == [Fraction(i, 25) for i in range(12)]  # was 1/25 .. 12/25 with B-frames: a frame late
