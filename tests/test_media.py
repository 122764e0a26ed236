"""Tests of the test-video generator in tests/media.py: every property it claims is
checked by reopening the written file with PyAV."""

from __future__ import annotations

import itertools
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.subtitles.subtitle import AssSubtitle
from media import (
    VFR_TICKS,
    make_clip,
    read_plane,
    synthetic_frame,
    write_audio_only,
    write_garbage,
    write_no_frames,
    write_plane,
    write_truncated,
)


def decode_video(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_default_clip_metadata(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mkv")
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (64, 48)
        assert stream.time_base == clip.video_time_base == Fraction(1, 1000)
        frames = list(container.decode(stream))
    assert len(frames) == 12
    assert {(f.width, f.height, f.format.name) for f in frames} == {(64, 48, "yuv420p")}
    assert [f.pts for f in frames] == clip.video_pts == [40 * i for i in range(12)]
    assert (clip.width, clip.height, clip.pix_fmt) == (64, 48, "yuv420p")
    assert clip.audio_packets == [] and clip.subtitle_packets == []
    with av.open(str(clip.path)) as container:
        assert [s.type for s in container.streams] == ["video"]


def test_frames_move_and_are_colourful(tmp_path: Path) -> None:
    frames = decode_video(make_clip(tmp_path / "clip.mkv", codec="ffv1").path)
    lumas = [read_plane(f.planes[0]).astype(int) for f in frames]
    for before, after in itertools.pairwise(lumas):
        assert np.abs(after - before).mean() > 1
    for plane in frames[0].planes[1:]:
        chroma = read_plane(plane)
        assert chroma.max() - chroma.min() > 100


def test_white_square_moves_3_right_2_down(tmp_path: Path) -> None:
    frames = decode_video(make_clip(tmp_path / "clip.mkv", codec="ffv1", frames=3).path)
    corners = []
    for frame in frames:
        rows, cols = np.nonzero(read_plane(frame.planes[0]) == 235)  # 8-bit limited-range white
        assert len(rows) == 12 * 12  # min(64, 48) // 4 squared
        corners.append((rows.min(), cols.min()))
    assert corners == [(0, 0), (2, 3), (4, 6)]


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "width", "height", "dtype"),
    [
        ("libx264", "yuv420p", 64, 48, np.uint8),
        ("libx264", "yuv420p10le", 64, 48, np.uint16),
        ("libx264", "yuv444p", 37, 23, np.uint8),
        ("libx264", "yuv444p10le", 37, 23, np.uint16),
        ("libx265", "yuv420p10le", 64, 48, np.uint16),
        ("libx265", "yuv444p", 64, 48, np.uint8),
        ("ffv1", "yuv420p", 37, 23, np.uint8),
        ("ffv1", "yuv420p10le", 37, 23, np.uint16),
        ("ffv1", "yuv444p10le", 37, 23, np.uint16),
    ],
)
def test_formats_and_sizes(
    tmp_path: Path, codec: str, pix_fmt: str, width: int, height: int, dtype: type
) -> None:
    clip = make_clip(tmp_path / "clip.mkv", codec=codec, pix_fmt=pix_fmt, width=width, height=height)
    frames = decode_video(clip.path)
    assert len(frames) == 12
    frame = frames[5]
    assert (frame.width, frame.height, frame.format.name) == (width, height, pix_fmt)
    subsampled = pix_fmt.startswith("yuv420")
    chroma = (-(-width // 2), -(-height // 2)) if subsampled else (width, height)
    assert [(p.width, p.height) for p in frame.planes] == [(width, height), chroma, chroma]
    luma = read_plane(frame.planes[0], dtype)
    assert luma.shape == (height, width)
    assert luma.max() > (700 if dtype is np.uint16 else 180)  # 10-bit values really use 10 bits


def test_content_is_as_generated_and_plane_helpers_round_trip(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mkv", codec="ffv1", pix_fmt="yuv444p10le", width=37)
    decoded = decode_video(clip.path)
    for index in (0, 7):
        expected = synthetic_frame(index, 37, 48, "yuv444p10le")
        for got, want in zip(decoded[index].planes, expected.planes, strict=True):
            assert np.array_equal(read_plane(got, np.uint16), read_plane(want, np.uint16))
    copy = av.VideoFrame(37, 48, "yuv444p10le")
    for source, target in zip(decoded[3].planes, copy.planes, strict=True):
        write_plane(target, read_plane(source, np.uint16))
        assert np.array_equal(read_plane(target, np.uint16), read_plane(source, np.uint16))


def test_odd_size_420_is_rejected_by_libx264(tmp_path: Path) -> None:
    with pytest.raises(av.error.ExternalError):
        make_clip(tmp_path / "clip.mkv", width=37, height=23, pix_fmt="yuv420p")


def test_small_libx265_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="libx265"):
        make_clip(tmp_path / "clip.mkv", codec="libx265", width=40, height=24)


@pytest.mark.parametrize(("suffix", "tick"), [(".mkv", 40), (".mp4", 512), (".mov", 512)])
def test_vfr_pts_survive_the_muxer(tmp_path: Path, suffix: str, tick: int) -> None:
    clip = make_clip(tmp_path / f"clip{suffix}", vfr=True)
    assert clip.video_time_base == Fraction(1, 25) / tick
    gaps = [b - a for a, b in itertools.pairwise(clip.video_pts)]
    assert gaps == [VFR_TICKS[i % 3] * tick for i in range(11)]
    assert [f.pts for f in decode_video(clip.path)] == clip.video_pts


def test_cfr_pts_in_mp4(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", rate=Fraction(30000, 1001), frames=5)
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(30000, 1001)
        tb = stream.time_base
    assert tb is not None
    assert [pts * tb for pts in clip.video_pts] == [Fraction(1001 * i, 30000) for i in range(5)]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_audio_track(tmp_path: Path, suffix: str) -> None:
    clip = make_clip(tmp_path / f"clip{suffix}", audio=True, frames=25)
    assert len(clip.audio_packets) > 40  # 1 s at 48 kHz in 1024-sample AAC frames
    with av.open(str(clip.path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac"
        assert stream.codec_context.sample_rate == 48000
        assert stream.codec_context.layout.name == "mono"
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    assert packets == clip.audio_packets
    with av.open(str(clip.path)) as container:
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    assert abs(len(samples) - 48000) <= 1024
    assert 0.2 < np.abs(samples[5000:40000]).max() < 0.3  # the 0.25 sine


def test_subtitles_in_matroska(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mkv", subtitles=True, audio=True)
    assert clip.subtitle_packets == [b"cue 1", b"cue 2", b"cue 3"]
    with av.open(str(clip.path)) as container:
        stream = container.streams.subtitles[0]
        assert stream.codec_context.name in {"subrip", "srt"}
        cues = [(p.pts, p.duration) for p in container.demux(stream) if p.size]
        assert stream.time_base == Fraction(1, 1000)
    assert cues == [(0, 150), (160, 150), (320, 150)]


def test_subtitles_in_mp4(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", subtitles=True)
    # mov_text samples are a 2-byte length + text; the muxer fills gaps with empty ones.
    texts = [p[2:] for p in clip.subtitle_packets if len(p) > 2]
    assert texts == [b"cue 1", b"cue 2", b"cue 3"]
    with av.open(str(clip.path)) as container:
        stream = container.streams.subtitles[0]
        assert stream.codec_context.name == "mov_text"
        decoded = [s for p in container.demux(stream) if p.size > 2 for s in p.decode()]
    assert isinstance(decoded[0], AssSubtitle)
    assert decoded[0].ass.endswith(b"cue 1")


def test_subtitles_need_a_text_capable_container(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mpegts"):
        make_clip(tmp_path / "clip.ts", subtitles=True)


@pytest.mark.parametrize(("suffix", "codec"), [(".mkv", "libx264"), (".mp4", "libx264"), (".mkv", "ffv1")])
def test_colour_tags(tmp_path: Path, suffix: str, codec: str) -> None:
    tags = {"colorspace": 9, "color_range": 2, "color_primaries": 9, "color_trc": 14}
    clip = make_clip(
        tmp_path / f"clip{suffix}", codec=codec, colorspace=9, color_range=2, color_primaries=9, color_trc=14
    )
    with av.open(str(clip.path)) as container:
        context = container.streams.video[0].codec_context
        assert {name: getattr(context, name) for name in tags} == tags
        frame = next(container.decode(video=0))
    assert {name: getattr(frame, name) for name in tags} == tags


def test_untagged_clip_is_unspecified(tmp_path: Path) -> None:
    frame = decode_video(make_clip(tmp_path / "clip.mkv").path)[0]
    # AVCOL_SPC/PRI/TRC_UNSPECIFIED == 2, AVCOL_RANGE_UNSPECIFIED == 0
    assert (frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc) == (
        2,
        0,
        2,
        2,
    )
    assert frame.rotation == 0


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
@pytest.mark.parametrize(("rotation", "read_back"), [(90, 90), (-90, -90), (270, -90), (180, -180)])
def test_rotation(tmp_path: Path, suffix: str, rotation: int, read_back: int) -> None:
    clip = make_clip(tmp_path / f"clip{suffix}", rotation=rotation)
    frames = decode_video(clip.path)
    assert {f.rotation for f in frames} == {read_back}
    assert (frames[0].width, frames[0].height) == (64, 48)  # stored unrotated


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_sample_aspect_ratio(tmp_path: Path, suffix: str) -> None:
    clip = make_clip(tmp_path / f"clip{suffix}", sar=Fraction(128, 117))
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        assert stream.sample_aspect_ratio == Fraction(128, 117)
        assert stream.codec_context.sample_aspect_ratio == Fraction(128, 117)
    with av.open(str(make_clip(tmp_path / f"square{suffix}").path)) as container:
        assert container.streams.video[0].sample_aspect_ratio is None


def test_container_format_overrides_suffix(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.bin", container_format="mpegts", audio=True)
    with av.open(str(clip.path)) as container:
        assert container.format.name == "mpegts"
        assert container.streams.video[0].time_base == Fraction(1, 90000)
    assert len(clip.video_pts) == 12 and len(clip.audio_packets) > 0


def test_everything_at_once_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    clip = make_clip(
        tmp_path / "clip.mp4",
        frames=25,
        vfr=True,
        audio=True,
        subtitles=True,
        colorspace=1,
        color_range=1,
        color_primaries=1,
        color_trc=1,
        rotation=90,
        sar=Fraction(4, 3),
        pix_fmt="yuv420p10le",
    )
    assert time.perf_counter() - start < 1.0
    assert len(clip.video_pts) == 25 and clip.audio_packets and clip.subtitle_packets


def test_truncated_mp4_does_not_open(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "clip.mp4", audio=True).path
    bad = write_truncated(tmp_path / "bad.mp4", src)
    assert bad.stat().st_size == int(src.stat().st_size * 0.4)
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(bad))


def test_truncated_mkv_loses_frames(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "clip.mkv", frames=25).path
    frames = decode_video(write_truncated(tmp_path / "bad.mkv", src))
    assert 0 < len(frames) < 25


def test_garbage(tmp_path: Path) -> None:
    bad = write_garbage(tmp_path / "bad.mp4")
    assert bad.stat().st_size == 4096
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(bad))


def test_audio_only(tmp_path: Path) -> None:
    path = write_audio_only(tmp_path / "audio.mp4")
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["audio"]
        assert len(container.streams.video) == 0
        assert sum(1 for p in container.demux() if p.size) > 10


def test_no_frames(tmp_path: Path) -> None:
    path = write_no_frames(tmp_path / "empty.mkv")
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert list(container.decode(video=0)) == []
