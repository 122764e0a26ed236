"""Output side of the pipeline: encoder choice, encoding with the input's timestamps, stream copy.

Owns: picking the encoder and pixel format, writing colour tags, SAR and rotation, muxing copied
audio/subtitle/data packets untouched, and the atomic write (a temporary file beside OUT, renamed
only after the container was closed without error).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.subtitles.subtitle import SubtitleSet

from ..errors import UserError
from ..files import check_writable_target, final_path, is_stream_target, move_into_place, temp_beside
from . import audio, keep
from .color import YUVLayout
from .keep import timecode_of
from .reader import AVCOL_OF_MATRIX, AVCOL_RANGE, VideoInfo, is_cover
from .realtime import keep_scheduling
from .settings import check_encoder_settings, encoder_options

# Text subtitle codecs, in the order we convert to when a container cannot hold the input's.
TEXT_SUBTITLES = ("mov_text", "subrip", "ass", "webvtt", "ssa", "text", "srt")
_ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\n\n[Events]\n"
    b"Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)
# Where a copied cover picture stays a cover (elsewhere it became a second video track, or vanished).
COVER_CONTAINERS = ("mp4", "ipod")
# Image outputs: the encoder follows OUT's extension (FFmpeg's image2 muxer would pick mjpeg for all).
IMAGE_ENCODERS = {"png": "png", "jpg": "mjpeg", "jpeg": "mjpeg", "webp": "libwebp"}
_SUB = {(1, 1): "420", (1, 0): "422", (0, 0): "444"}


@dataclass(frozen=True)
class EncodeOptions:
    """Everything the user can say about the output file."""

    codec: str = "auto"  # 'auto' or any FFmpeg encoder name
    crf: float | None = None  # quality; None = the encoder's entry in CRF_OPTION
    preset: str | None = None  # encoder speed preset, passed through
    pix_fmt: str | None = None  # None = keep the input's subsampling and bit depth where possible
    options: dict[str, str] = field(default_factory=dict)  # -e key=value, applied last
    container_format: str | None = None  # None = from OUT's extension ('matroska' for stdout)
    copy_audio: bool = True
    copy_subtitles: bool = True
    copy_data: bool = True  # data and attachment-like streams (timecodes, fonts as streams)
    audio_codec: str | None = None  # None: copy, re-encode only what OUT cannot hold; else re-encode all
    hevc_tag: str = "hvc1"  # codec tag of HEVC in MP4/MOV: hvc1 (Apple players need it) or hev1


def check_output_path(dst: str, src: str, overwrite: bool) -> None:
    """Refuse OUT == IN, an existing OUT without -y, a missing or unwritable folder."""
    if dst == "-":
        return
    out = Path(dst)
    if (
        src != "-"
        and "://" not in src
        and Path(src).exists()
        and ((out.exists() and out.samefile(src)) or out.resolve() == Path(src).resolve())
    ):
        raise UserError(f"output '{dst}' is the input file; choose another name")
    if out.is_dir():
        raise UserError(f"output '{dst}' is a directory; give a file name")
    check_writable_target(out, "output")
    if is_stream_target(out):  # a device or FIFO: written in place, nothing is replaced
        return
    if out.exists() and not overwrite:
        raise UserError(f"output '{dst}' exists; pass -y/--overwrite to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output folder '{parent}' is not writable")


def image_encoder(dst: str | None, container_format: str | None) -> str | None:
    """The image encoder for an OUT such as frame_x4.png (one frame, no other streams), else None."""
    if dst is None or dst == "-" or container_format not in (None, "image2", "webp"):
        return None
    return IMAGE_ENCODERS.get(Path(dst).suffix.lstrip(".").lower())


def choose_codec(
    opts: EncodeOptions, info: VideoInfo, container_format: str, cuda: bool, image: str | None = None
) -> str:
    if opts.codec == "auto" and image:
        return image
    if opts.codec != "auto":
        try:
            codec = av.codec.Codec(opts.codec, "w")
        except (av.codec.codec.UnknownCodecError, ValueError):
            raise UserError(f"-c/--codec: unknown encoder '{opts.codec}'") from None
        if codec.type != "video":
            raise UserError(f"-c/--codec: '{opts.codec}' is not a video encoder (it is for {codec.type})")
        return opts.codec
    if container_format in ("webm",):
        return "libsvtav1"
    deep = info.bits > 8
    if cuda:
        nv = "hevc_nvenc" if deep else "h264_nvenc"
        if _encoder_opens(nv):
            return nv
    return "libx265" if deep else "libx264"


def _encoder_opens(name: str) -> bool:
    """NVENC is in the wheel on every machine; only opening it tells whether the GPU has one."""
    try:
        ctx: Any = av.codec.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()  # PyAV frees the context when it is collected (it has no close())
        return True
    except Exception:
        return False


def choose_pix_fmt(codec: str, info: VideoInfo, requested: str | None, warn: Callable[[str], None]) -> str:
    supported = [f.name for f in (av.codec.Codec(codec, "w").video_formats or [])]
    if requested:
        if supported and requested not in supported:
            raise UserError(f"--pix-fmt: {codec} cannot encode {requested} (it takes {', '.join(supported)})")
        return requested
    sub = _SUB.get((info.sub_x, info.sub_y), "420")
    deep = info.bits > 8
    if codec == "png":  # RGB; 16 bits per channel keeps a 10-bit input's depth
        return "rgb48be" if deep else "rgb24"
    if codec == "libwebp":  # lossy WebP is 8-bit 4:2:0 only
        return "yuv420p"
    # the input's depth where the encoder takes it, else the deepest it takes (12-bit stays 12-bit in x265)
    depths = [d for d in (16, 14, 12, 10) if d <= max(info.bits, 10)] if deep else []
    wanted = [f"yuv{s}p{d}le" for s in dict.fromkeys((sub, "420")) for d in depths]
    wanted += [f"yuv{sub}p", "yuv420p"]
    for name in wanted:
        if not supported or name in supported:
            got = av.VideoFormat(name).components[0].bits
            if got < info.bits and info.bits > 8:
                hint = (
                    " (try -c libx265)"
                    if got == 8
                    else " (-c libx265 or ffv1 keep 12 bits)"
                    if got < 12
                    else ""
                )
                warn(f"{codec} cannot write {info.bits}-bit video: the output is {got}-bit{hint}")
            return name
    fallback = supported[0]
    warn(f"{codec} takes none of our planar YUV formats; converting to {fallback}")
    return fallback


def layout_for(pix_fmt: str, like: YUVLayout) -> YUVLayout:
    """The planar layout we fill for `pix_fmt` (other formats are repacked by swscale in `write`)."""
    fmt = av.VideoFormat(pix_fmt)
    bits = min(max(c.bits for c in fmt.components), 16)
    if "420" in pix_fmt or pix_fmt.startswith(("nv12", "nv21", "p01")):
        sub_x, sub_y = 1, 1
    elif "422" in pix_fmt or pix_fmt.startswith(("nv16", "nv20", "p21")):
        sub_x, sub_y = 1, 0
    else:
        sub_x, sub_y = 0, 0
    return YUVLayout(bits=bits, sub_x=sub_x, sub_y=sub_y, matrix=like.matrix, range=like.range)


class Sink:
    """The output file: call `write` per frame (in presentation order), `mux` per copied packet."""

    def __init__(
        self,
        dst: str | None,  # None: encode, then discard (--benchmark)
        opts: EncodeOptions,
        info: VideoInfo,
        copy_streams: list[av.stream.Stream],  # in input order, with the video stream's place kept
        video_index: int,  # input index of the video stream we encode
        out_size: tuple[int, int],  # (height, width) of the encoded frames
        cuda: bool,
        warn: Callable[[str], None],
        overwrite: bool = False,  # replace a file that appears at `dst` while we work
        source: Any = None,  # the input container: its tags, chapters and timecode are kept
        video_template: Any = None,  # a stream of encoded video (segments.py): `mux_video` copies its packets
    ) -> None:
        self.dst, self.warn, self.overwrite = dst, warn, overwrite
        self.template = video_template
        self.audio_codec = opts.audio_codec
        self.height, self.width = out_size
        self.tmp: Path | None = None  # what we write, renamed onto `self.final` when complete
        self.final: Path | None = None
        fmt = opts.container_format
        target: Any
        piped = dst == "-" or (dst is not None and is_stream_target(dst))
        if dst is None:
            fmt, target = "null", os.devnull
        elif dst == "-":
            fmt = fmt or "matroska"
            target = sys.stdout.buffer
        elif piped:  # /dev/null, a FIFO: written in place; renaming over it would replace the node
            target = dst
        else:
            self.final = final_path(dst)
            self.tmp = temp_beside(self.final, f".partial{Path(dst).suffix}")
            target = str(self.tmp)
        # MP4/MOV on a pipe cannot seek back to write its index: fragment it instead.
        guessed = fmt or (Path(dst).suffix.lstrip(".").lower() if dst else "")
        streaming = (
            {"movflags": "frag_keyframe+empty_moov"} if piped and guessed in ("mp4", "mov", "m4v") else {}
        )
        streaming["avoid_negative_ts"] = "disabled"  # keep input timestamps (e.g. AAC priming) as they are
        try:
            self.out = av.open(target, "w", format=fmt, options=streaming)
        except (av.FFmpegError, ValueError) as e:
            self._remove_tmp()
            if fmt is None:
                raise UserError(
                    f"output '{dst}': cannot tell the container from its extension; pass -f/--format"
                ) from None
            raise UserError(f"-f/--format: cannot write '{fmt}' ({e})") from None
        except BaseException:  # a stop (Ctrl-C, SIGTERM) while the muxer opens: no partial file left
            self._remove_tmp()
            raise
        try:
            self.image = image_encoder(dst, fmt)  # an image holds one frame: the pipeline stops after it
            self.codec = choose_codec(opts, info, self.out.format.name, cuda, self.image)
            self.pix_fmt = choose_pix_fmt(self.codec, info, opts.pix_fmt, warn)
            if opts.audio_codec not in (None, "copy"):
                audio.check_encoder(opts.audio_codec)  # before the trials below, which drop what fails
            if dst is not None:  # flag values the encoder refuses: now, not after the first batch
                options = encoder_options(self.codec, opts.crf, opts.preset, opts.options)
                check_encoder_settings(self.codec, self.pix_fmt, out_size, options, opts.preset, opts.options)
            in_video = source.streams[video_index] if source is not None else None
            copy = [s for s in copy_streams if _wanted(s, opts)]
            timecode = timecode_of(in_video, copy) if dst is not None else None
            copy = [s for s in copy if not keep.is_timecode_track(s)]
            if timecode and self.out.format.name not in keep.TIMECODE_CONTAINERS:
                warn(f"timecode {timecode} cannot be stored in {self.out.format.name}; it is left out")
                timecode = None
            if dst is not None:
                copy, timecode = self._writable(copy, opts, info, video_index, timecode)
            self.stream_map, self.convert, self.video = self._add_streams(
                self.out, copy, opts, info, video_index, timecode, warn
            )
            if source is not None and dst is not None:
                keep.copy_container_tags(source, self.out, warn)
                keep.copy_stream_tags(source.streams[video_index], self.video)
        except BaseException:
            self.abort()
            raise
        self.pending: list[av.Packet] = []  # copied packets that arrive before the first frame
        self.started = False
        self.layout: YUVLayout | None = None
        self.fill_fmt: str | None = None

    # -- setup ------------------------------------------------------------------------------------

    def _add_streams(
        self,
        out: Any,
        copy: list[av.stream.Stream],
        opts: EncodeOptions,
        info: VideoInfo,
        video_index: int,
        timecode: str | None,
        warn: Callable[[str], None],
    ) -> tuple[dict[int, Any], dict[int, Any], Any]:
        """Add the output streams to `out` in the input's order (players pick "the first audio").

        Returns (input index -> output stream, input index -> input stream of each text subtitle
        we re-encode, the video stream)."""
        convert: dict[int, Any] = {}
        mapping = self._add_copy_streams(out, [s for s in copy if s.index < video_index], convert, warn)
        video = self._add_video_stream(out, opts, info)
        if timecode:  # the muxer writes its own timecode track (MOV, MP4) or tag from it
            video.metadata["timecode"] = timecode
        mapping |= self._add_copy_streams(out, [s for s in copy if s.index > video_index], convert, warn)
        return mapping, convert, video

    def _writable(
        self,
        copy: list[av.stream.Stream],
        opts: EncodeOptions,
        info: VideoInfo,
        video_index: int,
        tc: str | None,
    ) -> tuple[list[av.stream.Stream], str | None]:
        """`keep.writable` with this output's streams: what can be written, found before any work."""
        # the encoder opens with the colour tags `start` will give it (mjpeg refuses limited range)
        layout = self.output_layout(YUVLayout(info.bits, info.sub_x, info.sub_y, "bt709", "limited"))

        def build(out: Any, streams: list[av.stream.Stream], timecode: str | None) -> None:
            _, _, video = self._add_streams(out, streams, opts, info, video_index, timecode, lambda msg: None)
            video.codec_context.colorspace = AVCOL_OF_MATRIX[layout.matrix]
            video.codec_context.color_range = AVCOL_RANGE[layout.range]

        return keep.writable(self.out.format.name, build, copy, tc, self.warn)

    def _add_copy_streams(
        self, out: Any, streams: list[av.stream.Stream], convert: dict[int, Any], warn: Callable[[str], None]
    ) -> dict[int, Any]:
        """Output streams for the packets we copy; text subtitles the container refuses are converted."""
        mapping: dict[int, Any] = {}
        for s in streams:
            name = s.codec_context.name if s.codec_context else "data"
            if is_cover(s) and out.format.name not in COVER_CONTAINERS:
                warn(
                    f"cover art (video stream #{s.index}, {name}) cannot be kept in {out.format.name}; it is left out"
                )
                continue
            if s.type == "audio" and self.audio_codec not in (None, "copy"):
                mapping[s.index], convert[s.index] = audio.reencoded(out, s, self.audio_codec, True, warn), s
                continue
            try:  # the muxer refuses a codec it cannot hold right here, with a ValueError
                mapping[s.index] = out.add_stream_from_template(s)
                keep.copy_stream_tags(s, mapping[s.index])
                continue
            except Exception as e:
                reason = str(e)
            if s.type == "subtitle" and name in TEXT_SUBTITLES and (sub := _text_subtitle_stream(out, s)):
                convert[s.index] = s
                mapping[s.index] = sub
                keep.copy_stream_tags(s, sub)
                warn(
                    f"subtitle stream #{s.index} ({name}) converted to {sub.codec_context.name} for {out.format.name}"
                )
                continue
            if s.type == "audio" and (codec := audio.FALLBACK.get(out.format.name)):
                mapping[s.index], convert[s.index] = audio.reencoded(out, s, codec, False, warn), s
                continue
            warn(
                f"{keep.describe(s)} cannot be stored in {out.format.name} ({reason});"
                " it is left out (use .mkv to keep every stream)"
            )
        return mapping

    def _add_video_stream(self, out: Any, opts: EncodeOptions, info: VideoInfo) -> Any:
        options = encoder_options(self.codec, opts.crf, opts.preset, opts.options)
        try:
            if self.template is not None:  # packets encoded elsewhere, with these settings
                stream = out.add_stream_from_template(self.template)
            else:
                stream = out.add_stream(self.codec, rate=info.rate, options=options)
        except (av.FFmpegError, ValueError) as e:
            raise UserError(f"-c/--codec: cannot use {self.codec} in {out.format.name} ({e})") from None
        cc: Any = stream.codec_context
        cc.width, cc.height, cc.pix_fmt = self.width, self.height, self.pix_fmt
        cc.time_base = info.time_base
        stream.time_base = info.time_base
        if info.sar:
            cc.sample_aspect_ratio = info.sar
        cc.color_primaries, cc.color_trc = info.color_primaries, info.color_trc
        cc.thread_count = 0
        if stream.codec.id == av.codec.Codec("hevc", "r").id and out.format.name in ("mp4", "mov"):
            cc.codec_tag = opts.hevc_tag  # FFmpeg writes hev1; Apple players play hvc1 only
        return stream

    # -- writing ----------------------------------------------------------------------------------

    def output_layout(self, in_layout: YUVLayout) -> YUVLayout:
        """The layout of the frames we encode: the input's matrix and range where the format can say so."""
        if self.codec == "mjpeg":  # JFIF: BT.601 full range, what every image viewer assumes
            in_layout = replace(in_layout, matrix="bt601", range="full")
        elif self.codec == "libwebp":  # WebP has no tags; decoders read BT.601 limited range
            in_layout = replace(in_layout, matrix="bt601", range="limited")
        return layout_for(self.pix_fmt, in_layout)

    def start(self, in_layout: YUVLayout, rotation: int, hdr10: str | None = None) -> YUVLayout:
        """Fix colour tags, rotation and HDR10 metadata (x265 parameters, see `reader.hdr10_params`)
        from the first frame, before the encoder opens; returns the layout to convert to."""
        self.layout = self.output_layout(in_layout)
        fmt = av.VideoFormat(self.pix_fmt)
        # the frames we fill are planar YUV; any other encoder format (nv12, p010) is repacked by swscale
        self.fill_fmt = self.pix_fmt if fmt.name.startswith("yuv") and len(fmt.components) >= 3 else None
        cc = self.video.codec_context
        cc.colorspace = AVCOL_OF_MATRIX[self.layout.matrix]
        cc.color_range = AVCOL_RANGE[self.layout.range]
        if rotation:
            self.video.set_display_rotation(rotation)
        if hdr10 and self.codec == "libx265":
            options = dict(cc.options)
            options["x265-params"] = f"{options.get('x265-params', 'log-level=error')}:hdr10=1:{hdr10}"
            cc.options = options
        elif hdr10:
            self.warn(
                f"the HDR10 metadata ({hdr10.replace(':', ', ')}) is left out: {self.codec} does not write it"
                " here (-c libx265 keeps it)"
            )
        with keep_scheduling():  # the encoders open here, SVT-AV1's threads with them (realtime.py)
            self.out.start_encoding()
        self.started = True
        for p in self.pending:
            self.mux(p)
        self.pending.clear()
        return self.layout

    def write(self, planes: tuple[np.ndarray, np.ndarray, np.ndarray], pts: int) -> None:
        """planes: Y (H,W), U, V code values in `self.layout`; pts in the input's time base."""
        assert self.layout is not None, "start() first"
        frame = av.VideoFrame(self.width, self.height, self.fill_fmt or _planar_name(self.layout))
        dtype = np.uint8 if self.layout.bits <= 8 else np.dtype("<u2")
        for plane, data in zip(frame.planes, planes, strict=False):
            buf = np.frombuffer(memoryview(plane), dtype=dtype)
            rows = buf.reshape(plane.height, plane.line_size // buf.itemsize)
            rows[:, : plane.width] = data.view(dtype) if data.dtype != dtype else data  # int16 -> uint16 bits
        frame.colorspace = self.video.codec_context.colorspace
        frame.color_range = self.video.codec_context.color_range
        if self.fill_fmt is None:
            frame = frame.reformat(format=self.pix_fmt)
        frame.pts = pts
        frame.time_base = self.video.codec_context.time_base
        self._mux_all(self.video.encode(frame))

    def mux_video(self, packet: av.Packet) -> None:
        """Copy one packet of the video template's stream (pts in the input's time base)."""
        packet.stream = self.video
        self._mux_all([packet])

    def mux(self, packet: av.Packet) -> None:
        """Copy one packet of another stream untouched (timestamps rebased by the muxer)."""
        out = self.stream_map.get(packet.stream.index)
        if out is None:
            return
        if not self.started:
            self.pending.append(packet)
            return
        if packet.stream.index in self.convert:
            src = self.convert[packet.stream.index]
            self._mux_all(
                audio.reencode(src, out, packet)
                if src.type == "audio"
                else self._convert_subtitle(packet, out)
            )
            return
        packet.stream = out
        self._mux_all([packet])

    def _convert_subtitle(self, packet: av.Packet, out: Any) -> list[av.Packet]:
        """Re-encode one text-subtitle packet (e.g. mov_text <-> subrip), keeping its timing."""
        packets = []
        for rect in self.convert[packet.stream.index].decode(packet):
            cue = SubtitleSet.create(rect.ass, 0, packet.duration or 0, pts=packet.pts or 0)
            new = out.codec_context.encode_subtitle(cue)
            new.pts = new.dts = packet.pts
            new.duration, new.time_base, new.stream = packet.duration, packet.time_base, out
            packets.append(new)
        return packets

    def _mux_all(self, packets: list[av.Packet]) -> None:
        try:
            self.out.mux(packets)
        except OSError as e:
            raise UserError(f"output '{self.dst}': write failed ({e.strerror or e})") from None

    def close(self) -> None:
        """Flush the encoder, finish the container, and only then move it to OUT."""
        if not self.started:
            self.abort()
            return
        if self.template is None:
            self._mux_all(self.video.encode(None))
        for index, src in self.convert.items():
            if src.type == "audio":
                self._mux_all(audio.reencode(src, self.stream_map[index], None))
        try:
            self.out.close()
        except OSError as e:
            self._remove_tmp()
            raise UserError(f"output '{self.dst}': write failed ({e.strerror or e})") from None
        if self.tmp is not None and self.final is not None:
            tmp, self.tmp = self.tmp, None  # from here on the result is never deleted
            move_into_place(tmp, self.final, self.overwrite)

    def abort(self) -> None:
        """Drop everything written so far: no partial file is left at or beside OUT."""
        with contextlib.suppress(Exception):
            self.out.close()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def _planar_name(layout: YUVLayout) -> str:
    sub = _SUB[(layout.sub_x, layout.sub_y)]
    return f"yuv{sub}p" if layout.bits == 8 else f"yuv{sub}p{layout.bits}le"


def _wanted(s: av.stream.Stream, opts: EncodeOptions) -> bool:
    return {"audio": opts.copy_audio, "subtitle": opts.copy_subtitles}.get(s.type, opts.copy_data)


def _text_subtitle_stream(out: Any, src: av.stream.Stream) -> Any:
    """A text-subtitle stream of the first codec the container accepts, or None."""
    for codec in TEXT_SUBTITLES:
        try:
            sub: Any = out.add_stream(codec)
        except Exception:
            continue
        sub.codec_context.subtitle_header = getattr(src.codec_context, "subtitle_header", None) or _ASS_HEADER
        return sub
    return None
