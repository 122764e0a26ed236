"""Tiny synthetic test videos, written with PyAV only.

``make_clip`` writes a short clip with moving, colourful content and returns a
:class:`Clip` whose timestamps and audio/subtitle packets were read back from the
written file (never assumed).  The ``write_*`` helpers make broken inputs for
bad-input tests.

Codec / pixel-format notes (PyAV 18.1, FFmpeg 8.1):

* Odd sizes (e.g. 37x23) need a format without chroma subsampling for libx264 /
  libx265 (``yuv444p``, ``yuv444p10le``); ``ffv1`` takes any size with any of the
  formats used here.  libx264 with ``yuv420p``/``yuv420p10le``/``yuv422p`` at an
  odd size fails in ``avcodec_open2`` with ``av.error.ExternalError``; libx265
  fails with ``av.error.InvalidDataError``.
* libx265 with 8-bit input corrupts the heap and kills the process on small
  frames (seen at 37x23, 38x24, 40x24, 48x24), so ``make_clip`` refuses libx265
  below 32 pixels on either side.
* Colour tags are plain FFmpeg enum ints (``AVColorSpace``, ``AVColorRange``,
  ``AVColorPrimaries``, ``AVColorTransferCharacteristic``), e.g. BT.709 = 1 for
  colorspace/primaries/trc, range 1 = limited ("tv"), 2 = full ("pc").
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.subtitles.stream import SubtitleStream
from av.subtitles.subtitle import SubtitleSet
from av.video.plane import VideoPlane

AUDIO_RATE = 48_000
SUBTITLE_TIME_BASE = Fraction(1, 1000)
VFR_TICKS = (1, 3, 2)  # frame durations (in 1/rate units) cycled through when vfr=True

# Text subtitle encoders (subrip, mov_text, ...) refuse to open without an ASS header.
ASS_HEADER = b"""[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, \
BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, \
BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""


@dataclass(frozen=True)
class Clip:
    path: Path
    width: int
    height: int
    video_pts: list[int]  # read back from the file, presentation order, video_time_base units
    video_time_base: Fraction  # the file's video stream time base
    audio_packets: list[bytes]  # read back from the file; empty if no audio
    subtitle_packets: list[bytes]  # read back from the file; empty if no subtitles
    pix_fmt: str


def make_clip(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    frames: int = 12,
    rate: Fraction | int = Fraction(25),
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    vfr: bool = False,
    audio: bool = False,
    subtitles: bool = False,
    colorspace: int | None = None,
    color_range: int | None = None,
    color_primaries: int | None = None,
    color_trc: int | None = None,
    rotation: int = 0,
    sar: Fraction | None = None,
    container_format: str | None = None,
    gop: int | None = None,
) -> Clip:
    """Write a short test clip to ``path`` and describe what ended up in the file.

    Video pts count in 1/rate ticks: 0, 1, 2, ... or, with ``vfr``, with gaps
    cycling through ``VFR_TICKS``.  ``rotation`` is counter-clockwise degrees, as
    read back by ``VideoFrame.rotation``.  ``gop``: a keyframe every ``gop`` frames
    (seeking and segment tests; default: the encoder's).
    """
    path = Path(path)
    rate = Fraction(rate)
    if codec == "libx265" and min(width, height) < 32:
        raise ValueError("libx265 crashes the process on frames smaller than 32 px")

    ticks = [VFR_TICKS[i % len(VFR_TICKS)] if vfr else 1 for i in range(frames)]
    pts = [sum(ticks[:i]) for i in range(frames)]
    tick = 1 / rate
    duration = sum(ticks) * tick  # seconds, as a Fraction

    options = {"x265-params": "log-level=none"} if codec == "libx265" else {}
    with av.open(str(path), "w", format=container_format) as out:
        video = out.add_stream(codec, rate=rate, options=options)
        assert isinstance(video, av.VideoStream), f"{codec} is not a video encoder"
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = tick
        if gop is not None:
            video.codec_context.gop_size = gop
        colour = {
            "colorspace": colorspace,
            "color_range": color_range,
            "color_primaries": color_primaries,
            "color_trc": color_trc,
        }
        for name, value in colour.items():
            if value is not None:
                setattr(video.codec_context, name, value)  # encoder -> stream + bitstream
        if rotation:
            video.set_display_rotation(rotation)
        if sar is not None:
            video.codec_context.sample_aspect_ratio = sar

        packets: list[av.Packet] = []
        for index, frame_pts in enumerate(pts):
            frame = synthetic_frame(index, width, height, pix_fmt)
            for name, value in colour.items():
                if value is not None:
                    setattr(frame, name, value)
            frame.pts = frame_pts
            frame.time_base = tick
            packets += video.encode(frame)
        packets += video.encode(None)

        if audio:
            packets += _encode_audio(out, duration)
        if subtitles:
            packets += _encode_subtitles(out, duration)

        # Interleave by decode time so that no muxer has to buffer whole streams.
        packets.sort(key=_decode_time)
        out.mux(packets)

    clip = _read_back(path, width, height, pix_fmt)
    if len(clip.video_pts) != frames:
        raise RuntimeError(f"wrote {frames} frames but read back {len(clip.video_pts)}")
    return clip


def _decode_time(packet: av.Packet) -> Fraction:
    ts = packet.dts if packet.dts is not None else packet.pts
    assert ts is not None
    return ts * packet.time_base


def synthetic_frame(index: int, width: int, height: int, pix_fmt: str) -> av.VideoFrame:
    """A diagonal gradient that drifts each frame, a bright square that moves 3 px
    right and 2 px down per frame, and chroma gradients (so, colourful)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    luma = 0.2 + 0.6 * (((xx + yy + 4 * index) % (width + height)) / (width + height))
    side = max(2, min(width, height) // 4)
    x0 = (3 * index) % max(1, width - side)
    y0 = (2 * index) % max(1, height - side)
    luma[y0 : y0 + side, x0 : x0 + side] = 1.0
    cb = 0.5 + 0.45 * np.sin(2 * np.pi * (xx / width + index / 16))
    cr = 0.5 + 0.45 * np.cos(2 * np.pi * (yy / height - index / 16))

    planar = av.VideoFrame(width, height, pix_fmt)
    fmt = planar.format
    direct = (
        not fmt.is_rgb
        and not fmt.is_big_endian
        and len(planar.planes) == len(fmt.components)
        and all(c.bits <= 16 for c in fmt.components)
    )
    frame = planar if direct else av.VideoFrame(width, height, "yuv444p16le")
    for component in frame.format.components:
        plane = frame.planes[component.plane]
        if component.is_luma:
            full, low, span = luma, 16, 219
        else:
            full, low, span = (cb if component.plane == 1 else cr), 16, 224
        step_y = -(-height // plane.height)
        step_x = -(-width // plane.width)
        values = (low + span * full[::step_y, ::step_x]) * (1 << (component.bits - 8))
        write_plane(plane, np.rint(values).astype(np.uint8 if component.bits <= 8 else np.uint16))
    return frame if direct else frame.reformat(format=pix_fmt)


def write_plane(plane: VideoPlane, values: np.ndarray) -> None:
    """Copy a (plane.height, plane.width) array into a plane, keeping its line padding."""
    rows: np.ndarray = np.frombuffer(memoryview(plane), dtype=values.dtype)
    rows = rows.reshape(plane.height, plane.line_size // values.dtype.itemsize)
    rows[:, : plane.width] = values


def read_plane(plane: VideoPlane, dtype: type = np.uint8) -> np.ndarray:
    """A (plane.height, plane.width) view of a plane without its line padding (no copy)."""
    itemsize = np.dtype(dtype).itemsize
    rows: np.ndarray = np.frombuffer(memoryview(plane), dtype=dtype)
    return rows.reshape(plane.height, plane.line_size // itemsize)[:, : plane.width]


def _encode_audio(out: av.container.OutputContainer, duration: Fraction) -> list[av.Packet]:
    """A 440 Hz mono AAC tone as long as the video."""
    stream = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
    samples = round(duration * AUDIO_RATE)
    tone = 0.25 * np.sin(2 * np.pi * 440 * np.arange(samples) / AUDIO_RATE)
    frame = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None], format="fltp", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = 0
    return stream.encode(frame) + stream.encode(None)  # PyAV cuts it into 1024-sample frames


def _encode_subtitles(out: av.container.OutputContainer, duration: Fraction) -> list[av.Packet]:
    """Three text cues splitting the clip in thirds (subrip in Matroska, mov_text in MP4)."""
    fmt = out.format.name
    if fmt in {"mp4", "mov", "ipod", "3gp", "3g2"}:
        codec = "mov_text"
    elif fmt == "matroska":
        codec = "subrip"
    else:
        raise ValueError(f"no text subtitle codec known for container {fmt!r}")
    stream = out.add_stream(codec)
    assert isinstance(stream, SubtitleStream)
    stream.codec_context.subtitle_header = ASS_HEADER
    third = math.floor(duration * 1000 / 3)  # ms
    packets = []
    for cue in range(3):
        start, length = cue * third, max(1, third - 10)
        dialogue = f"{cue},0,Default,,0,0,0,,cue {cue + 1}".encode()
        packet = stream.codec_context.encode_subtitle(SubtitleSet.create(dialogue, 0, length, pts=start))
        packet.time_base = SUBTITLE_TIME_BASE  # pts/duration above are ms
        packet.stream = stream
        packets.append(packet)
    return packets


def _read_back(path: Path, width: int, height: int, pix_fmt: str) -> Clip:
    video_pts: list[int] = []
    audio: list[bytes] = []
    subtitles: list[bytes] = []
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        for packet in container.demux():
            kind = packet.stream.type
            if kind == "video":
                for frame in packet.decode():  # the final size-0 packet flushes the decoder
                    assert isinstance(frame, av.VideoFrame) and frame.pts is not None
                    video_pts.append(frame.pts)
            elif kind == "audio" and packet.size:
                audio.append(bytes(packet))
            elif kind == "subtitle" and packet.size:
                subtitles.append(bytes(packet))
        time_base = video.time_base
    assert time_base is not None
    return Clip(path, width, height, video_pts, time_base, audio, subtitles, pix_fmt)


# --- broken inputs -------------------------------------------------------------------


def write_truncated(path: Path, src: Path, fraction: float = 0.4) -> Path:
    """The first ``fraction`` of ``src``'s bytes.  An MP4 written by PyAV keeps its
    index (moov) at the end, so a truncated one fails in ``av.open``; a truncated
    Matroska file opens and decodes fewer frames without an error."""
    data = Path(src).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])
    return Path(path)


def write_garbage(path: Path, size: int = 4096, seed: int = 0) -> Path:
    """Random bytes (e.g. under a ``.mp4`` name); ``av.open`` raises InvalidDataError."""
    Path(path).write_bytes(random.Random(seed).randbytes(size))
    return Path(path)


def write_audio_only(path: Path, seconds: float = 0.5) -> Path:
    """A file with one AAC audio stream and no video stream."""
    with av.open(str(path), "w") as out:
        out.mux(_encode_audio(out, Fraction(seconds)))
    return Path(path)


def write_no_frames(path: Path) -> Path:
    """A Matroska file with an H.264 video stream that has no packets (zero frames).

    A short audio track keeps the file openable: Matroska with no packets at all
    raises ``av.error.EOFError`` in ``av.open``, and an MP4 track without samples is
    dropped by the demuxer, so ``path`` should end in ``.mkv``.
    """
    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height = 64, 48
        out.mux(_encode_audio(out, Fraction(1, 10)))
    return Path(path)
