"""Input side of the pipeline: open any FFmpeg-readable source, decode its video, pass the rest on.

Owns: opening files/URLs/stdin with clear errors, choosing the video stream, NVDEC decoders when
asked, reading each frame's planes as numpy views (no RGB conversion on the CPU) and resolving the
colour matrix/range that the device-side conversion in `color.py` uses.
"""

from __future__ import annotations

import os
import struct
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from av.codec.hwaccel import HWAccel
from av.sidedata.sidedata import SideData
from av.sidedata.sidedata import Type as SideDataType

from ..errors import UserError
from .color import Matrix, Range, YUVLayout

# AVColorSpace values (libavutil/pixfmt.h) -> our matrix names; 0 (RGB) and 2 (unspecified) are absent.
_MATRIX_OF_AVCOL: dict[int, Matrix] = {
    1: "bt709",
    4: "fcc",
    5: "bt601",
    6: "bt601",
    7: "smpte240m",
    9: "bt2020",
    10: "bt2020",
}
AVCOL_OF_MATRIX: dict[Matrix, int] = {"bt709": 1, "fcc": 4, "bt601": 6, "smpte240m": 7, "bt2020": 9}
AVCOL_RANGE: dict[Range, int] = {"limited": 1, "full": 2}  # AVColorRange MPEG / JPEG
Hwaccel = Literal["auto", "none", "nvdec"]


@dataclass
class Frame:
    """One decoded frame as planes ready to upload.  Planes are numpy views into `frame`'s buffers."""

    planes: tuple[np.ndarray, np.ndarray, np.ndarray]  # Y (H,W), U, V (subsampled) code values
    layout: YUVLayout
    pts: int | None  # in the video stream's time base, exactly as decoded
    rotation: int  # degrees counter-clockwise the player would rotate it: 0/90/180/270
    frame: av.VideoFrame  # keeps the buffers alive
    hdr10: str | None = None  # the first frame's HDR10 metadata as x265 parameters (see `hdr10_params`)

    @property
    def size(self) -> tuple[int, int]:  # (height, width) as stored
        return self.planes[0].shape[0], self.planes[0].shape[1]


@dataclass(frozen=True)
class VideoInfo:
    """What the writer needs to know about the input video stream."""

    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None  # average frame rate if known (encoder rate control only)
    frames: int | None  # the container's frame count if it has one: for progress, never trusted
    bits: int  # bit depth of the decoded samples
    sub_x: int
    sub_y: int
    color_primaries: int  # AVColorPrimaries, copied to the output
    color_trc: int  # AVColorTransferCharacteristic, copied to the output
    sar: Fraction | None  # sample aspect ratio, copied so the display aspect stays the same


def open_input(src: str, nvdec: Hwaccel = "none", gpu: int = 0) -> av.container.InputContainer:
    """Open a path, URL or '-' (stdin), turning every failure into a one-line UserError.

    nvdec: 'none', 'auto' (NVDEC on CUDA device `gpu` when it opens, else software decoding) or
    'nvdec' (NVDEC or a UserError).  Decoded frames come back in system memory either way.
    """
    if src == "-":
        target: Any = sys.stdin.buffer
    elif "://" in src:
        target = src
    else:
        p = Path(src)
        if not p.exists():
            raise UserError(f"input '{src}' does not exist")
        if p.is_dir():
            raise UserError(f"input '{src}' is a directory, not a video file")
        if not os.access(p, os.R_OK):
            raise UserError(f"input '{src}' is not readable (permission denied)")
        target = src
    timeout = 30.0 if "://" in src else None
    if nvdec != "none" and src != "-":  # a failed try would have consumed stdin
        try:
            accel = HWAccel("cuda", device=str(gpu), allow_software_fallback=nvdec == "auto")
            return av.open(target, "r", timeout=timeout, hwaccel=accel)
        except (av.FFmpegError, OSError) as e:
            if nvdec == "nvdec":
                raise UserError(f"--hwaccel nvdec: NVDEC cannot decode '{src}' here ({_reason(e)})") from None
    try:
        return av.open(target, "r", timeout=timeout)
    except (av.FFmpegError, OSError) as e:
        raise UserError(f"input '{src}' cannot be read as a video: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return msg.split(":")[0].strip() if msg.count(":") > 2 else msg.strip()


def pick_video_stream(container: av.container.InputContainer, src: str) -> av.video.stream.VideoStream:
    """The first video stream that is not a cover picture."""
    for s in container.streams.video:
        if not is_cover(s):
            return s
    raise UserError(f"input '{src}' has no video stream")


def is_cover(s: av.stream.Stream) -> bool:
    """A cover picture (an attached picture): copied like audio, never upscaled."""
    return s.type == "video" and bool(s.disposition & av.stream.Disposition.attached_pic)


def left_out(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> list[str]:
    """One warning for each part of the input's pictures that OUT will not carry."""
    notes = []
    for s in container.streams.video:
        if s.index != stream.index and not is_cover(s):
            name = s.codec_context.name if s.codec_context else "unknown codec"
            notes.append(
                f"video stream #{s.index} ({name}) is left out: only stream #{stream.index} is upscaled"
            )
    fmt = stream.codec_context.format
    if fmt is not None and any(c.is_alpha for c in fmt.components):
        notes.append(
            f"the alpha channel (transparency) of the {fmt.name} input is left out: the output is opaque"
        )
    return notes


def configure_decoder(stream: av.video.stream.VideoStream, threads: int = 0) -> str:
    """Frame and slice threads for software decoders; returns the decoder's name."""
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    return stream.codec_context.name


def video_info(stream: av.video.stream.VideoStream) -> VideoInfo:
    cc = stream.codec_context
    fmt = cc.format
    bits = max((c.bits for c in fmt.components), default=8) if fmt is not None else 8
    sub_x = sub_y = 1
    if fmt is not None and len(fmt.components) >= 3 and not fmt.is_rgb:
        c0, c1 = fmt.components[0], fmt.components[1]
        sub_x = int(c0.width > c1.width) if c1.width else 1
        sub_y = int(c0.height > c1.height) if c1.height else 1
    elif fmt is not None and fmt.is_rgb:
        sub_x = sub_y = 0
    rate = stream.average_rate or stream.guessed_rate
    sar = stream.sample_aspect_ratio
    return VideoInfo(
        width=cc.width,
        height=cc.height,
        time_base=stream.time_base or Fraction(1, 90000),
        rate=Fraction(rate) if rate else None,
        frames=stream.frames or None,
        bits=8 if bits <= 8 else 10 if bits <= 10 else bits,
        sub_x=sub_x,
        sub_y=sub_y,
        color_primaries=int(cc.color_primaries or 2),
        color_trc=int(cc.color_trc or 2),
        sar=Fraction(sar) if sar and sar.numerator else None,
    )


def resolve_layout(frame: av.VideoFrame) -> tuple[av.VideoFrame, YUVLayout]:
    """Return planes of a planar YUV format and how to read them, converting only when we must.

    Raises UserError naming the pixel format when FFmpeg's swscale cannot read it.
    """
    fmt = frame.format
    name = fmt.name
    comps = fmt.components
    if name.startswith("bayer_"):  # swscale's demosaicing is nearest-neighbour: 9 code values off
        raise UserError(f"input pixel format '{name}' is raw Bayer sensor data; demosaic it first")
    if name.startswith("yaf32"):  # swscale (FFmpeg 8.1) aborts the process on these
        raise UserError(f"input pixel format '{name}' cannot be converted by FFmpeg's swscale")
    planar_yuv = (
        not fmt.is_rgb
        and len(comps) >= 3
        and [c.plane for c in comps[:3]] == [0, 1, 2]
        and (name.endswith("le") or max(c.bits for c in comps) == 8)
        and "msb" not in name  # samples in the high bits of each word (FFmpeg 8): let swscale shift them
        and "f16" not in name
        and "f32" not in name
        and not name.startswith(("gray", "pal", "xyz"))
    )
    matrix = _MATRIX_OF_AVCOL.get(int(frame.colorspace))
    if matrix is None:  # unspecified: the convention of players (mpv, browsers): HD is 709, SD is 601
        matrix = "bt709" if frame.height > 576 or frame.width > 1024 else "bt601"
    rng: Range = "full" if int(frame.color_range) == 2 or name.startswith("yuvj") else "limited"
    if not planar_yuv:
        # RGB, packed, semi-planar (nv12, p010), big-endian, float or grey input: let swscale repack it
        # into a planar format with the matrix and range we then decode with, so both ends agree.
        # Deep input goes to 16 bits (read as unsigned by `color.codes`).
        deep = max((c.bits for c in comps), default=8) > 8
        if fmt.is_rgb:
            matrix, rng = "bt709", "full"
        try:
            frame = frame.reformat(
                format="yuv444p16le" if deep else "yuv444p",
                dst_colorspace=AVCOL_OF_MATRIX[matrix] if matrix != "bt601" else 5,
                dst_color_range=AVCOL_RANGE[rng],
            )
        except (av.FFmpegError, OSError, ValueError) as e:
            raise UserError(
                f"input pixel format '{name}' cannot be converted by FFmpeg's swscale ({_reason(e)});"
                " convert the video to another pixel format first"
            ) from None
        fmt, comps = frame.format, frame.format.components
    bits = comps[0].bits
    p0, p1 = frame.planes[0], frame.planes[1]
    layout = YUVLayout(
        bits=bits,
        sub_x=_shift(p0.width, p1.width),
        sub_y=_shift(p0.height, p1.height),
        matrix=matrix,
        range=rng,
    )
    return frame, layout


def check_pixel_format(stream: av.video.stream.VideoStream, src: str) -> None:
    """Refuse, before any work, a pixel format that `resolve_layout` cannot convert."""
    fmt = stream.codec_context.format
    if fmt is None:
        return
    try:
        probe = av.VideoFrame(16, 16, fmt.name)
    except (av.FFmpegError, OSError, ValueError):  # a hardware format: frames arrive downloaded
        return
    try:
        resolve_layout(probe)
    except UserError as e:
        raise UserError(f"input '{src}': {e}") from None


def _shift(full: int, sub: int) -> int:
    """Chroma subsampling shift s with ceil(full / 2^s) == sub: 0 (4:4:4), 1 (4:2:x), 2 (4:1:x)."""
    for s in range(3):
        if -(-full >> s) == sub:
            return s
    raise ValueError(f"chroma plane of {sub} for {full} samples: not a subsampling FFmpeg makes")


def plane_arrays(frame: av.VideoFrame, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the three planes without their line padding: (H,W) uint8 or uint16."""
    dtype = np.uint8 if bits <= 8 else np.dtype("<u2")
    out = []
    for p in frame.planes[:3]:
        a = np.frombuffer(memoryview(p), dtype=dtype)
        out.append(a.reshape(p.height, p.line_size // a.itemsize)[:, : p.width])
    return out[0], out[1], out[2]


def decode(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    copy_streams: list[av.stream.Stream],
    on_warning: Any,
) -> Iterator[Frame | av.Packet]:
    """Demux everything once: yield decoded video `Frame`s and, in file order, packets to copy.

    Corrupt packets are skipped with one warning (as ffmpeg does); a source that ends early simply
    ends the stream.  Frames without a pts get the previous pts plus the previous duration.
    """
    wanted = [stream, *copy_streams]
    copy_ids = {s.index for s in copy_streams}
    last_pts: int | None = None
    step = 1
    if stream.average_rate and stream.time_base:
        step = max(1, round(1 / (stream.average_rate * stream.time_base)))
    warned_corrupt = warned_pts = warned_interlaced = False
    first = True
    # AVI has no presentation times: a chunk is one frame period, and the demuxer's guess of pts for
    # B-frames (packed or not) comes out one frame late.  The n-th frame shown takes the n-th chunk's slot.
    slots: deque[int] | None = deque() if container.format.name == "avi" else None

    def frames_of(packet: av.Packet | None) -> Iterator[Frame]:
        nonlocal last_pts, warned_corrupt, warned_pts, warned_interlaced, first
        try:
            decoded = stream.decode(packet)
        except av.FFmpegError as e:
            if not warned_corrupt:
                on_warning(f"skipping undecodable video data ({_reason(e)})")
                warned_corrupt = True
            return
        for f in decoded:
            pts = slots.popleft() if slots else f.pts
            if pts is None:
                pts = 0 if last_pts is None else last_pts + step
            elif last_pts is not None and pts <= last_pts:
                if not warned_pts:
                    on_warning(f"non-increasing timestamp {pts} after {last_pts}; shifting it")
                    warned_pts = True
                pts = last_pts + 1
            last_pts = pts
            if f.interlaced_frame and not warned_interlaced:
                on_warning(
                    "the input is interlaced: its frames are upscaled whole and written as progressive video"
                    " (deinterlace it first, e.g. ffmpeg -vf bwdif, for clean motion)"
                )
                warned_interlaced = True
            g, layout = resolve_layout(f)
            hdr10 = hdr10_params(f) if first else None
            first = False
            yield Frame(plane_arrays(g, layout.bits), layout, pts, int(f.rotation or 0) % 360, g, hdr10)

    try:
        for packet in container.demux(wanted):
            if packet.stream.index in copy_ids:
                if packet.size:
                    yield packet
                continue
            if packet.size == 0:  # the demuxer's end marker for this stream: flush below
                continue
            if slots is not None and packet.dts is not None:
                slots.append(packet.dts)
            yield from frames_of(packet)
    except av.FFmpegError as e:  # truncated or damaged container: keep what was decoded
        if last_pts is None and _mp4_from_pipe(container):
            raise UserError(
                "input '-': this MP4 keeps its index (moov) after the video data, which a pipe cannot go back"
                " to; pass the file's path instead of '-', or remux it once with"
                " `ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4`"
            ) from None
        on_warning(f"input ends early or is damaged ({_reason(e)}); keeping the frames before it")
    yield from frames_of(None)
    _check_complete(container, stream, last_pts, step, on_warning)


def side_data(frame: av.VideoFrame) -> list[SideData]:
    """A frame's side data. PyAV up to 18.1.0 iterated the SideData objects themselves; 18.1.1 iterates
    their types, as the Mapping it is should (and its stubs said); this takes either."""
    side: Any = frame.side_data
    return [item if isinstance(item, SideData) else side[item] for item in side]


def hdr10_params(frame: av.VideoFrame) -> str | None:
    """A frame's HDR10 side data (mastering display, content light level) as x265 parameters."""
    parts = []
    for sd in side_data(frame):
        data = bytes(sd)
        if sd.type == SideDataType.MASTERING_DISPLAY_METADATA and len(data) >= 88:
            # AVMasteringDisplayMetadata: (num, den) of R, G, B, white point xy; min, max luminance;
            # has_primaries, has_luminance.  x265 counts xy in 1/50000 and luminance in 1/10000 cd/m2.
            v = struct.unpack("=22i", data[:88])
            xy = [round(v[2 * i] * 50000 / v[2 * i + 1]) if v[2 * i + 1] else 0 for i in range(8)]
            lum = [round(v[i] * 10000 / v[i + 1]) if v[i + 1] else 0 for i in (16, 18)]
            if v[20] and v[21]:
                r, g, b, wp = (f"({xy[i]},{xy[i + 1]})" for i in (0, 2, 4, 6))
                parts.append(f"master-display=G{g}B{b}R{r}WP{wp}L({lum[1]},{lum[0]})")
        elif sd.type == SideDataType.CONTENT_LIGHT_LEVEL and len(data) >= 8:
            parts.append("max-cll={},{}".format(*struct.unpack("=2I", data[:8])))
    return ":".join(parts) or None


def _mp4_from_pipe(container: Any) -> bool:
    """An MP4/MOV on a pipe: FFmpeg reads on to find the index; if it came last, the data has gone by."""
    return "mp4" in container.format.name and container.name == "<stdin>" and not sys.stdin.buffer.seekable()


def _video_duration(container: Any, stream: Any) -> Fraction | None:
    """The video stream's stated length in seconds, or None when only a longer stream's may be known."""
    if stream.duration and stream.time_base:
        return stream.duration * stream.time_base
    tag = stream.metadata.get("DURATION", "")  # Matroska: per stream, "HH:MM:SS.nnnnnnnnn"
    h, m, sec = [*tag.split(":"), "", "", ""][:3]
    if h.isdigit() and m.isdigit() and sec.replace(".", "", 1).isdigit():
        return Fraction(int(h) * 3600 + int(m) * 60) + Fraction(sec)
    others = [s for s in container.streams if s.type in ("video", "audio") and s.index != stream.index]
    if container.duration and not others:  # the container's length is the video's
        return Fraction(container.duration, 1_000_000)  # AV_TIME_BASE
    return None  # e.g. MKV without tags: its length is the longest stream's, often the audio's


def _check_complete(container: Any, stream: Any, last_pts: int | None, step: int, on_warning: Any) -> None:
    """Some demuxers stop silently at damage: compare where decoding ended with the stated length."""
    stated = _video_duration(container, stream)
    if last_pts is None or not stream.time_base or stated is None:
        return
    start = (stream.start_time or 0) * stream.time_base
    ended = (last_pts + step) * stream.time_base - start
    if stated - ended > max(3 * step * stream.time_base, stated / 50):
        on_warning(
            f"decoding stopped at {float(ended):.2f} s of {float(stated):.2f} s:"
            " the input may be truncated or damaged; the output ends there"
        )
