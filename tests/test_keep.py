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
from gtasr_stream.video.reader import side_data

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


def _write(path: Path, *, pix_fmt: str = "yuv420p", codec: str = "libx264", options=None, extra=None) -> Path:
    """FRAMES frames of `pix_fmt`; `extra(out)` may add streams and return their packets."""
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=25, options=options or {})
        v.width, v.height, v.pix_fmt = W, H, pix_fmt
        more = extra(out) if extra else []
        packets = []
        for i in range(FRAMES):
            f = synthetic_frame(i, W, H, pix_fmt)
            f.pts, f.time_base = i, Fraction(1, 25)
            packets += v.encode(f)
        out.mux(packets + v.encode(None) + more)
    return path


def _cover(out: av.container.OutputContainer) -> list[av.Packet]:
    art = out.add_stream("mjpeg")
    art.width, art.height, art.pix_fmt = 16, 16, "yuvj420p"
    art.disposition = av.stream.Disposition.attached_pic
    picture = synthetic_frame(0, 16, 16, "yuvj420p")
    picture.pts = 0
    return art.encode(picture) + art.encode(None)


def test_cover_art_is_kept_in_mp4_and_named_elsewhere(tmp_path, upscaler):
    src = _write(tmp_path / "song.mp4", extra=_cover)
    assert run(src, tmp_path / "out.mp4", upscaler) == []
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert [bool(s.disposition & av.stream.Disposition.attached_pic) for s in c.streams] == [False, True]
    warnings = run(src, tmp_path / "out.mkv", upscaler)
    assert warnings == ["cover art (video stream #1, mjpeg) cannot be kept in matroska; it is left out"]


def test_second_video_stream_is_named(tmp_path, upscaler):
    def second(out: av.container.OutputContainer) -> list[av.Packet]:
        v = out.add_stream("mpeg4", rate=25)
        v.width, v.height, v.pix_fmt = 16, 16, "yuv420p"
        f = synthetic_frame(0, 16, 16, "yuv420p")
        f.pts, f.time_base = 0, Fraction(1, 25)
        return v.encode(f) + v.encode(None)

    src = _write(tmp_path / "two.mkv", extra=second)
    warnings = run(src, tmp_path / "out.mkv", upscaler)
    assert warnings == ["video stream #1 (mpeg4) is left out: only stream #0 is upscaled"]


def test_alpha_channel_is_named(tmp_path, upscaler):
    src = _write(tmp_path / "alpha.mkv", pix_fmt="yuva420p", codec="ffv1")
    warnings = run(src, tmp_path / "out.mkv", upscaler)
    assert warnings == [
        "the alpha channel (transparency) of the yuva420p input is left out: the output is opaque"
    ]


def test_interlacing_is_named(tmp_path, upscaler):
    src = _write(tmp_path / "tv.mkv", options={"x264-params": "interlaced=1:tff=1"})
    warnings = run(src, tmp_path / "out.mkv", upscaler)
    assert len(warnings) == 1 and warnings[0].startswith("the input is interlaced: ")
    assert "written as progressive" in warnings[0]


@pytest.mark.parametrize(("codec", "want"), [("libx265", "yuv420p12le"), ("libx264", "yuv420p10le")])
def test_12_bit_stays_12_bit_where_the_encoder_takes_it(tmp_path, upscaler, codec, want):
    from gtasr_stream import EncodeOptions

    src = _write(tmp_path / "deep.mkv", pix_fmt="yuv420p12le", codec="ffv1")
    dst = tmp_path / "out.mkv"
    warnings: list[str] = []
    upscale_video(str(src), str(dst), upscaler, EncodeOptions(codec=codec), on_warning=warnings.append)
    with av.open(str(dst)) as c:
        frame = next(c.decode(video=0))
        assert frame.format.name == want
    with av.open(str(src)) as c:
        ref = next(c.decode(video=0)).reformat(format="rgb48le").to_ndarray() / 257
    got = frame.reformat(format="rgb48le", width=W, height=H, interpolation="AREA").to_ndarray() / 257
    print(f"{codec}: mean error {np.abs(got - ref).mean():.2f} code values")
    assert np.abs(got - ref).mean() < 4.0
    if want.endswith("12le"):
        assert warnings == []
    else:
        assert warnings == [
            "libx264 cannot write 12-bit video: the output is 10-bit (-c libx265 or ffv1 keep 12 bits)"
        ]


MASTER = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"


def _hdr_side_data(path: Path) -> dict[str, bytes]:
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
    return {sd.type.name: bytes(sd) for sd in side_data(frame) if sd.type.name != "SEI_UNREGISTERED"}


@pytest.mark.parametrize("codec", ["libx265", "libx264"])
def test_hdr10_metadata_is_kept_or_named(tmp_path, upscaler, codec):
    from gtasr_stream import EncodeOptions

    # an HDR10 file: BT.2020 / PQ, 10-bit, mastering display and content light level in the bitstream
    hdr = {"x265-params": f"log-level=error:hdr10=1:master-display={MASTER}:max-cll=1000,400"}
    with av.open(str(tmp_path / "hdr.mkv"), "w") as out:
        v = out.add_stream("libx265", rate=25, options=hdr)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p10le"
        cc = v.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace = 9, 16, 9
        packets = []
        for i in range(FRAMES):
            f = synthetic_frame(i, 64, 48, "yuv420p10le")
            f.pts, f.time_base = i, Fraction(1, 25)
            packets += v.encode(f)
        out.mux(packets + v.encode(None))
    src, dst = tmp_path / "hdr.mkv", tmp_path / "out.mkv"
    want = _hdr_side_data(src)
    assert set(want) == {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"}
    warnings: list[str] = []
    upscale_video(str(src), str(dst), upscaler, EncodeOptions(codec=codec), on_warning=warnings.append)
    if codec == "libx265":
        assert warnings == [] and _hdr_side_data(dst) == want
        with av.open(str(dst)) as c:
            f = next(c.decode(video=0))
            assert (int(f.color_primaries), int(f.color_trc)) == (9, 16)
    else:
        assert warnings == [
            f"the HDR10 metadata (master-display={MASTER}, max-cll=1000,400) is left out:"
            " libx264 does not write it here (-c libx265 keeps it)"
        ]
