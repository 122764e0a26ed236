"""--start / --duration / --frames: the video cut to the frame, the other streams to the packet,
timestamps moved back by START; bad times are one line naming the flag."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest
from conftest import run_cli
from media import make_clip

from gtasr_stream import Upscaler, upscale_video
from gtasr_stream.errors import UserError
from gtasr_stream.video.cut import Cut, make_cut, parse_time


@pytest.fixture(scope="module")
def upscaler(tiny_weights: Path) -> Upscaler:
    return Upscaler(weights=tiny_weights, device="cpu", batch=4)


def streams_of(path: Path) -> tuple[list[Fraction], list[tuple[Fraction, bytes]], list[Fraction]]:
    """(video frame times, (audio packet time, bytes), subtitle packet times), all in seconds."""
    video, audio, subs = [], [], []
    with av.open(str(path)) as c:
        for p in c.demux():
            if p.stream.type == "video":
                video += [f.pts * f.time_base for f in p.decode()]
            elif p.size and p.stream.type == "audio":
                audio.append((p.pts * p.time_base, bytes(p)))
            elif p.size and p.stream.type == "subtitle" and bytes(p) != b"\x00\x00":  # MP4's empty gap cue
                subs.append(p.pts * p.time_base)
    return sorted(video), audio, subs


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("1.5", Fraction(3, 2)),
        (".25", Fraction(1, 4)),
        ("1:30", 90),
        ("01:02:03.5", Fraction(7447, 2)),
    ],
)
def test_parse_time(text, seconds):
    assert parse_time(text, "--start") == seconds


@pytest.mark.parametrize("text", ["-1", "abc", "1e3", "nan", "inf", "1:75", "1:00:99", ""])
def test_parse_time_refuses(text):
    with pytest.raises(UserError, match=r"^--start: "):
        parse_time(text, "--start")


def test_make_cut():
    assert make_cut(None, None, None) is None
    assert make_cut("2", "1.5", None) == Cut(start=Fraction(2), end=Fraction(7, 2), shift=Fraction(2))
    assert make_cut(None, None, 8) == Cut(frames=8)  # no --start: timestamps stay as they are
    with pytest.raises(UserError, match=r"^--duration: "):
        make_cut("1", "0", None)
    with pytest.raises(UserError, match=r"^--frames: "):
        make_cut(None, None, 0)


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_start_and_duration_cut_exactly(tmp_path, upscaler, ext):
    """Keyframes every 5 frames: the seek lands on one before START and decoding drops up to it."""
    clip = make_clip(tmp_path / f"in.{ext}", frames=50, audio=True, subtitles=True, gop=5)
    src_video, src_audio, _ = streams_of(clip.path)
    out = tmp_path / f"out.{ext}"
    stats = upscale_video(str(clip.path), str(out), upscaler, cut=make_cut("0.52", "0.6", None), outscale=1)
    video, audio, subs = streams_of(out)
    start, end = Fraction(52, 100), Fraction(112, 100)
    want = [t - start for t in src_video if start <= t < end]  # frames 13..27 of 25 fps
    assert stats.encoded == len(video) == len(want) == 15
    assert video == want
    assert video[0] == 0  # 0.52 s is frame 13's time
    # audio: every packet overlapping the cut, untouched, each moved back by START
    kept = [(t - start, b) for t, b in src_audio if t + Fraction(21, 1000) > start and t < end]
    assert [b for _, b in audio] == [b for _, b in kept]
    assert [t for t, _ in audio] == pytest.approx([float(t) for t, _ in kept], abs=1e-3)
    assert audio[0][0] < 0 < audio[1][0]  # the packet that straddles START comes along
    # cues at 0, 0.666 and 1.332 s: the second is inside, the third starts after END; the first is on
    # screen at START: kept from 0 in MP4 (whose demuxer seeks every track), not seen in Matroska (it
    # lies before the keyframe the demuxer starts from; documented)
    assert subs == ([Fraction(0)] if ext == "mp4" else []) + [Fraction(666 - 520, 1000)]


def test_frames_from_start_on_vfr(tmp_path, upscaler):
    clip = make_clip(tmp_path / "in.mkv", frames=30, vfr=True, audio=True, gop=4)
    src_video, _, _ = streams_of(clip.path)
    out = tmp_path / "out.mkv"
    upscale_video(str(clip.path), str(out), upscaler, cut=make_cut("0.5", None, 7), outscale=1)
    video, audio, _ = streams_of(out)
    after = [t for t in src_video if t >= Fraction(1, 2)]
    assert video == [t - Fraction(1, 2) for t in after[:7]]
    last_end = after[7]  # the first frame left out: audio stops before it
    assert max(t for t, _ in audio) < last_end - Fraction(1, 2)
    assert max(t for t, _ in audio) + Fraction(22, 1000) >= after[6] - Fraction(1, 2)


def test_frames_without_start_keeps_timestamps(tmp_path, upscaler):
    clip = make_clip(tmp_path / "in.mp4", frames=12, audio=True)
    src_video, src_audio, _ = streams_of(clip.path)
    out = tmp_path / "out.mp4"
    upscale_video(str(clip.path), str(out), upscaler, cut=make_cut(None, None, 5), outscale=1)
    video, audio, _ = streams_of(out)
    assert video == src_video[:5]
    assert audio[0] == src_audio[0]  # the AAC priming packet (negative pts) is kept as it was


def test_start_past_the_end_is_one_line(tmp_path, upscaler):
    clip = make_clip(tmp_path / "in.mkv", frames=6)
    with pytest.raises(UserError, match=r"^--start: input .* has no video frames from there on"):
        upscale_video(str(clip.path), str(tmp_path / "o.mkv"), upscaler, cut=make_cut("9", None, None))
    assert not (tmp_path / "o.mkv").exists()


@pytest.mark.parametrize(
    ("flags", "flag"), [(["--start", "1:2:3:4"], "--start"), (["--duration", "-3"], "--duration")]
)
def test_cli_bad_time(tmp_path, flags, flag):
    clip = make_clip(tmp_path / "in.mkv", frames=2)
    r = run_cli(clip.path, tmp_path / "o.mkv", *flags)
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and f"error: {flag}: " in lines[0], r.stderr
    assert not (tmp_path / "o.mkv").exists()


def test_cli_cut(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "in.mkv", frames=20, gop=3)
    out = tmp_path / "o.mkv"
    r = run_cli(clip.path, out, "--weights", tiny_weights, "-d", "cpu", "--start", "0:00.2", "--frames", "4")
    assert r.returncode == 0, r.stderr
    video, _, _ = streams_of(out)
    assert len(video) == 4 and video[0] == 0
