"""Containers: HEVC in MP4 tagged hvc1; audio a container cannot hold re-encoded, not dropped."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from media import make_clip

from gtasr_stream import EncodeOptions, Upscaler, upscale_video
from gtasr_stream.errors import UserError


@pytest.fixture(scope="module")
def upscaler(tiny_weights: Path) -> Upscaler:
    return Upscaler(weights=tiny_weights, device="cpu", batch=6)


def streams(path: Path) -> list[tuple[str, str]]:
    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name) for s in c.streams]


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        return sum(f.samples / f.sample_rate for f in c.decode(audio=0))


@pytest.mark.parametrize(("tag", "expected"), [(None, "hvc1"), ("hev1", "hev1")])
def test_hevc_in_mp4_is_tagged_hvc1(tmp_path, upscaler, tag, expected):
    clip = make_clip(tmp_path / "in.mp4", frames=3)
    dst = tmp_path / "out.mp4"
    opts = EncodeOptions(codec="libx265") if tag is None else EncodeOptions(codec="libx265", hevc_tag=tag)
    upscale_video(str(clip.path), str(dst), upscaler, opts)
    with av.open(str(dst)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.name, cc.codec_tag) == ("hevc", expected)  # FFmpeg's own default is hev1
        assert len(list(c.decode(video=0))) == 3


def test_aac_into_webm_becomes_opus_and_says_so(tmp_path, upscaler):
    clip = make_clip(tmp_path / "in.mp4", frames=6, audio=True)
    dst = tmp_path / "out.webm"
    warnings: list[str] = []
    upscale_video(str(clip.path), str(dst), upscaler, on_warning=warnings.append)
    print(warnings, streams(dst))
    assert ("audio", "opus") in streams(dst)  # was: dropped with a warning
    assert any("re-encoded to libopus (webm cannot hold aac" in w for w in warnings)
    assert abs(audio_seconds(dst) - audio_seconds(clip.path)) < 0.03  # all of it (Opus frames are 20 ms)


def test_audio_codec_re_encodes_on_request(tmp_path, upscaler):
    clip = make_clip(tmp_path / "in.mp4", frames=6, audio=True)
    dst = tmp_path / "out.mkv"
    upscale_video(str(clip.path), str(dst), upscaler, EncodeOptions(audio_codec="libopus"))
    assert streams(dst) == [("video", "h264"), ("audio", "opus")]
    with pytest.raises(UserError, match="--audio-codec: unknown encoder 'nosuch'"):
        upscale_video(str(clip.path), str(tmp_path / "o2.mkv"), upscaler, EncodeOptions(audio_codec="nosuch"))
    assert not (tmp_path / "o2.mkv").exists()
