"""Everything of the input besides its pixels reaches OUT, or is named in a warning before any work:
timecode tracks, streams the container refuses, global tags, chapters, track languages and titles."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media import synthetic_frame

from gtasr_stream import Upscaler, upscale_video

W, H, FRAMES = 32, 24, 3


@pytest.fixture(scope="module")
def upscaler(tiny_weights: Path) -> Upscaler:
    return Upscaler(weights=tiny_weights, device="cpu", batch=2)


def _video(out: av.container.OutputContainer) -> tuple[av.VideoStream, list[av.Packet]]:
    v = out.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = W, H, "yuv420p"
    packets = []
    for i in range(FRAMES):
        f = synthetic_frame(i, W, H, "yuv420p")
        f.pts, f.time_base = i, Fraction(1, 25)
        packets += v.encode(f)
    return v, packets + v.encode(None)


def make_camera_mov(path: Path) -> Path:
    """A MOV as cameras and editing suites write it: video with a tmcd timecode track."""
    with av.open(str(path), "w") as out:
        v, packets = _video(out)
        v.metadata["timecode"] = "01:02:03:04"  # the muxer adds the tmcd track
        out.mux(packets)
    return path


def make_tagged_mkv(path: Path) -> Path:
    """Global title and comment, two chapters, a French commentary track flagged default+forced."""
    with av.open(str(path), "w") as out:
        out.metadata.update({"title": "Holiday", "comment": "shot on a phone"})
        v, packets = _video(out)
        v.metadata["title"] = "main camera"
        a = out.add_stream("aac", rate=48000, layout="mono")
        a.metadata.update({"language": "fra", "title": "Commentary"})
        a.disposition = av.stream.Disposition.default | av.stream.Disposition.forced
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 5760), np.float32), format="fltp", layout="mono")
        tone.sample_rate, tone.pts = 48000, 0
        packets += a.encode(tone) + a.encode(None)
        ms = Fraction(1, 1000)
        out.set_chapters(
            [
                {"id": 1, "start": 0, "end": 60, "time_base": ms, "metadata": {"title": "Arrival"}},
                {"id": 2, "start": 60, "end": 120, "time_base": ms, "metadata": {"title": "Beach"}},
            ]
        )
        out.mux(packets)
    return path


def make_klv_ts(path: Path) -> Path:
    """MPEG-TS with a KLV data stream (drone telemetry), which Matroska cannot hold."""
    with av.open(str(path), "w") as out:
        _, packets = _video(out)
        d = out.add_data_stream("klv")  # every stream before the first packet (the header)
        out.mux(packets)
        for i in range(FRAMES):
            p = av.Packet(b"\x06\x0e\x2b\x34" + bytes(12))
            p.stream, p.pts, p.dts, p.time_base = d, i * 3600, i * 3600, Fraction(1, 90000)
            out.mux(p)
    return path


def run(src: Path, dst: Path, up: Upscaler) -> list[str]:
    warnings: list[str] = []
    stats = upscale_video(str(src), str(dst), up, on_warning=warnings.append)
    assert stats.encoded == FRAMES
    return warnings


@pytest.mark.parametrize("ext", ["mov", "mp4", "mkv"])
def test_timecode_track_is_kept(tmp_path, upscaler, ext):
    src = make_camera_mov(tmp_path / "cam.mov")
    dst = tmp_path / f"out.{ext}"
    assert run(src, dst, upscaler) == []
    with av.open(str(dst)) as c:
        assert sum(1 for _ in c.decode(video=0)) == FRAMES
        video = c.streams.video[0]
        assert {k.lower(): v for k, v in video.metadata.items()}["timecode"] == "01:02:03:04"
        if ext != "mkv":  # a real tmcd track that editors read, made by the muxer
            assert [s.metadata.get("timecode") for s in c.streams.data] == ["01:02:03:04"]


def test_timecode_the_container_cannot_hold_is_named(tmp_path, upscaler):
    src = make_camera_mov(tmp_path / "cam.mov")
    warnings = run(src, tmp_path / "out.avi", upscaler)
    assert warnings == ["timecode 01:02:03:04 cannot be stored in avi; it is left out"]


def test_stream_the_muxer_refuses_is_left_out_before_any_work(tmp_path, upscaler):
    src = make_klv_ts(tmp_path / "drone.ts")
    dst = tmp_path / "out.mkv"
    warnings = run(src, dst, upscaler)
    assert len(warnings) == 1 and warnings[0].startswith(
        "data stream #1 (data) cannot be written to matroska"
    )
    with av.open(str(dst)) as c:
        assert [s.type for s in c.streams] == ["video"]


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_tags_chapters_and_track_flags_are_kept(tmp_path, upscaler, ext):
    src = make_tagged_mkv(tmp_path / "in.mkv")
    dst = tmp_path / f"out.{ext}"
    assert run(src, dst, upscaler) == []
    with av.open(str(dst)) as c:
        tags = {k.lower(): v for k, v in c.metadata.items()}
        assert tags["title"] == "Holiday" and tags["comment"] == "shot on a phone"
        assert [ch["metadata"]["title"] for ch in c.chapters()] == ["Arrival", "Beach"]
        audio = c.streams.audio[0]
        assert audio.metadata["language"] == "fra"
        assert audio.metadata.get("title", audio.metadata.get("name")) == "Commentary"  # MP4 calls it name
        assert audio.disposition & av.stream.Disposition.forced
        video = c.streams.video[0]
        assert video.metadata.get("title", video.metadata.get("name")) == "main camera"


def test_chapters_the_container_cannot_hold_are_named(tmp_path, upscaler):
    src = make_tagged_mkv(tmp_path / "in.mkv")
    warnings = run(src, tmp_path / "out.avi", upscaler)
    assert "2 chapters cannot be stored in avi; they are left out (.mkv keeps them)" in warnings
