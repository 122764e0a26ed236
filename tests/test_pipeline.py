"""End to end through the Python API: frames, sizes, timestamps, streams and tags survive."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from media import make_clip

from gtasr_stream import EncodeOptions, Upscaler, upscale_video
from gtasr_stream.model import upsample_lq


@dataclass
class Probe:
    width: int = 0
    height: int = 0
    pix_fmt: str = ""
    pts: list[Fraction] = field(default_factory=list)  # seconds, presentation order
    audio: list[bytes] = field(default_factory=list)
    subtitles: list[bytes] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    tags: tuple[int, int, int, int] = (0, 0, 0, 0)  # colorspace, range, primaries, trc
    sar: Fraction | None = None
    rotation: int = 0


def probe(path: Path) -> Probe:
    p = Probe()
    with av.open(str(path)) as c:
        p.kinds = [s.type for s in c.streams]
        v = c.streams.video[0]
        cc = v.codec_context
        p.width, p.height, p.pix_fmt, p.sar = cc.width, cc.height, cc.pix_fmt, v.sample_aspect_ratio
        for packet in c.demux():
            if packet.stream.type == "video":
                for f in packet.decode():
                    p.pts.append(f.pts * f.time_base)
                    p.tags = (int(f.colorspace), int(f.color_range), int(f.color_primaries), int(f.color_trc))
                    p.rotation = f.rotation
            elif packet.size and packet.stream.type == "audio":
                p.audio.append(bytes(packet))
            elif packet.size and packet.stream.type == "subtitle":
                p.subtitles.append(bytes(packet))
    return p


@pytest.fixture(scope="module")
def upscaler(tiny_weights: Path) -> Upscaler:
    return Upscaler(weights=tiny_weights, device="cpu", batch=3)


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_vfr_clip_with_audio_and_subtitles(tmp_path, upscaler, ext):
    clip = make_clip(
        tmp_path / f"in.{ext}",
        frames=10,
        vfr=True,
        audio=True,
        subtitles=True,
        colorspace=1,
        color_range=1,
        color_primaries=1,
        color_trc=1,
    )
    src, dst = probe(clip.path), tmp_path / f"out.{ext}"
    stats = upscale_video(str(clip.path), str(dst), upscaler)
    out = probe(dst)
    assert stats.encoded == len(src.pts) == 10
    assert (out.width, out.height) == (4 * src.width, 4 * src.height)
    assert out.pts == src.pts  # every timestamp, variable frame rate included
    assert out.audio == src.audio and out.audio  # packet for packet, byte for byte
    assert out.subtitles == src.subtitles and out.subtitles
    assert out.kinds == src.kinds  # stream order kept
    assert out.tags == src.tags == (1, 1, 1, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([clip.path.name, dst.name])  # no temp left


def test_ten_bit_stays_ten_bit(tmp_path, upscaler):
    clip = make_clip(
        tmp_path / "in.mkv", frames=4, pix_fmt="yuv420p10le", codec="libx265", width=64, height=48
    )
    dst = tmp_path / "out.mkv"
    stats = upscale_video(str(clip.path), str(dst), upscaler)
    out = probe(dst)
    assert stats.codec == "libx265" and out.pix_fmt == "yuv420p10le"
    assert len(out.pts) == 4


def test_ten_bit_to_eight_bit_encoder_warns(tmp_path, upscaler):
    clip = make_clip(tmp_path / "in.mkv", frames=3, pix_fmt="yuv444p10le", codec="ffv1")
    warnings: list[str] = []
    upscale_video(
        str(clip.path),
        str(tmp_path / "out.mkv"),
        upscaler,
        EncodeOptions(codec="mpeg4"),
        on_warning=warnings.append,
    )
    assert any("8-bit" in w for w in warnings)
    assert probe(tmp_path / "out.mkv").pix_fmt == "yuv420p"


def test_odd_size_444_rotation_and_sar(tmp_path, upscaler):
    clip = make_clip(
        tmp_path / "in.mkv",
        width=37,
        height=23,
        frames=3,
        pix_fmt="yuv444p",
        rotation=90,
        sar=Fraction(128, 117),
    )
    dst = tmp_path / "out.mkv"
    upscale_video(str(clip.path), str(dst), upscaler)
    out = probe(dst)
    assert (out.width, out.height) == (148, 92)
    assert out.pix_fmt == "yuv444p"
    assert out.rotation == 90
    assert out.sar == Fraction(128, 117)


def test_outscale_resizes_to_even_size(tmp_path, upscaler):
    clip = make_clip(tmp_path / "in.mp4", width=50, height=30, frames=2)
    dst = tmp_path / "out.mp4"
    upscale_video(str(clip.path), str(dst), upscaler, outscale=2.5)
    out = probe(dst)
    assert (out.width, out.height) == (126, 76)  # 125x75 rounded to even for 4:2:0


def test_output_frames_follow_input_frames(tmp_path, tiny_weights):
    """With bicubic in place of the network, each output frame is its input frame, colours kept."""
    clip = make_clip(tmp_path / "in.mkv", frames=6, pix_fmt="yuv444p", codec="ffv1", width=48, height=32)
    dst = tmp_path / "out.mkv"
    up = Upscaler(weights=tiny_weights, device="cpu", batch=4, noise="none")
    up.step = lambda lq, eps: upsample_lq(lq)
    upscale_video(str(clip.path), str(dst), up, EncodeOptions(codec="ffv1"))

    def frames(path):
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]

    src, out = frames(clip.path), frames(dst)
    small = [o.reshape(32, 4, 48, 4, 3).mean(axis=(1, 3)) for o in out]
    assert len(out) == len(src) == 6
    for i, s in enumerate(small):
        dists = [np.abs(s - x).mean() for x in src]
        print(f"frame {i}: mean abs difference to its input {dists[i]:.2f} (8-bit code values)")
        assert int(np.argmin(dists)) == i  # in order, unmixed
        assert dists[i] < 3.0  # colour conversion both ways plus bicubic/box: no colour shift


def test_benchmark_writes_nothing(tmp_path, upscaler):
    clip = make_clip(tmp_path / "in.mp4", frames=5, audio=True)
    stats = upscale_video(str(clip.path), None, upscaler)
    assert stats.encoded == 5 and set(stats.stage_fps()) == {"decode", "upscale", "encode"}
    assert stats.slowest in ("decode", "upscale", "encode")
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp4"]


def test_reads_from_http_url(tmp_path, upscaler):
    """URLs go straight to FFmpeg; a local HTTP server stands in for a remote one."""
    import functools
    import http.server
    import threading

    clip = make_clip(tmp_path / "in.mp4", frames=4, audio=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/in.mp4"
        stats = upscale_video(url, str(tmp_path / "out.mkv"), upscaler)
    finally:
        server.shutdown()
    assert stats.encoded == 4
    assert probe(tmp_path / "out.mkv").audio == probe(clip.path).audio


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_pipeline(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "in.mp4", frames=9, vfr=True, audio=True)
    up = Upscaler(weights=tiny_weights, device="cuda", batch=4)
    assert up.dtype == torch.float16
    stats = upscale_video(str(clip.path), str(tmp_path / "out.mp4"), up)
    out = probe(tmp_path / "out.mp4")
    assert stats.encoded == 9 and out.pts == probe(clip.path).pts


@pytest.mark.parametrize(("src_ext", "dst_ext"), [("mkv", "mp4"), ("mp4", "mkv")])
def test_text_subtitles_converted_between_containers(tmp_path, upscaler, src_ext, dst_ext):
    """SRT cannot go into MP4 (nor mov_text into MKV): the cues are re-encoded, text and timing kept."""
    clip = make_clip(tmp_path / f"in.{src_ext}", frames=6, subtitles=True)
    dst = tmp_path / f"out.{dst_ext}"
    warnings: list[str] = []
    upscale_video(str(clip.path), str(dst), upscaler, on_warning=warnings.append)
    assert any("converted to" in w for w in warnings)

    def cues(path):
        with av.open(str(path)) as c:
            s = c.streams.subtitles[0]
            out = []
            for p in c.demux(s):
                for rect in s.decode(p) if p.size else []:
                    text = rect.ass.split(b",", 8)[-1].split(b"}")[-1]  # drop ASS style overrides
                    if text:
                        out.append((p.pts * p.time_base, p.duration * p.time_base, text))
            return out

    assert cues(dst) == cues(clip.path) and len(cues(dst)) == 3


def test_semi_planar_encoder_format_is_repacked(tmp_path, tiny_weights):
    """Encoders that take only nv12/p010 (NVENC) get our planes repacked, colours unchanged."""
    clip = make_clip(tmp_path / "in.mkv", frames=2, pix_fmt="yuv444p", codec="ffv1", width=48, height=32)
    up = Upscaler(weights=tiny_weights, device="cpu", noise="none")
    up.step = lambda lq, eps: upsample_lq(lq)
    dst = tmp_path / "out.mkv"
    upscale_video(str(clip.path), str(dst), up, EncodeOptions(pix_fmt="nv12", crf=0))
    with av.open(str(clip.path)) as c:
        src = c.decode(video=0).__next__().to_ndarray(format="rgb24").astype(np.float32)
    with av.open(str(dst)) as c:  # (H.264 stores nv12 input as plain 4:2:0)
        out = c.decode(video=0).__next__().to_ndarray(format="rgb24").astype(np.float32)
    diff = np.abs(out.reshape(32, 4, 48, 4, 3).mean(axis=(1, 3)) - src).mean()
    print(f"mean abs difference after the nv12 round trip: {diff:.2f}")
    assert diff < 4.0


@pytest.mark.parametrize("ext", ["mkv", "ts"])
def test_other_containers_keep_timestamps_and_audio(tmp_path, upscaler, ext):
    """MP4 -> MKV/TS: no shift of all timestamps (AAC priming is negative) and the audio stays."""
    clip = make_clip(tmp_path / "in.mp4", frames=6, audio=True)
    dst = tmp_path / f"out.{ext}"
    upscale_video(str(clip.path), str(dst), upscaler)

    def first_times(path):
        times: dict[str, float] = {}
        with av.open(str(path)) as c:
            for p in c.demux():
                if p.pts is not None:
                    t = float(p.pts * p.time_base)
                    times[p.stream.type] = min(t, times.get(p.stream.type, t))
        return times

    src, out = first_times(clip.path), first_times(dst)
    assert set(out) == {"video", "audio"}
    offset = out["video"] - src["video"]  # MPEG-TS starts its clock at 1.4 s by design; MKV at 0
    assert abs((out["audio"] - src["audio"]) - offset) < 1.5e-3  # audio/video sync to the millisecond
    if ext == "mkv":
        assert abs(offset) < 1e-3
    audio = probe(dst).audio
    if ext == "ts":  # MPEG-TS carries AAC with a 7-byte ADTS header in front of the same payload
        audio = [p[7:] for p in audio]
    assert audio == probe(clip.path).audio


def test_encoder_probe_opens_a_software_encoder() -> None:
    """`-c auto` asks NVENC whether the GPU has it by opening it; the probe itself must work
    (it once called a close() PyAV does not have and so said no to every encoder)."""
    from gtasr_stream.video.writer import _encoder_opens

    assert _encoder_opens("libx264")
    assert not _encoder_opens("no_such_encoder")
