"""What of the input besides its pixels is carried to OUT: tags, chapters, dispositions, timecode.

A remux is expected to keep the file's title and comment, its chapters, each track's language,
title and default/forced flags, and the timecode of camera and editing-suite files.  What the
output container cannot hold is named in a warning, never dropped silently.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import av

from ..errors import UserError
from .realtime import keep_scheduling

# Tags that describe the old encoding or that the muxer writes itself: never copied.
_NOT_COPIED = {
    "encoder",
    "major_brand",
    "minor_version",
    "compatible_brands",
    "duration",
    "bps",
    "number_of_frames",
    "number_of_bytes",
    "vendor_id",
    "handler_name",
    "timecode",  # set on the video stream (see `timecode_of`), where muxers look for it
}
# Containers whose muxer turns the video stream's "timecode" tag into a timecode track or field;
# Matroska and NUT keep it as a tag.  Elsewhere it is left out with a warning.
TIMECODE_CONTAINERS = {"mov", "mp4", "ipod", "3gp", "3g2", "mxf", "gxf", "matroska", "webm", "nut"}
# Muxers that write chapters (the others ignore them without a word).
CHAPTER_CONTAINERS = {"matroska", "webm", "mov", "mp4", "ipod", "3gp", "3g2", "ogg", "nut"}


def tags(metadata: dict[str, str]) -> dict[str, str]:
    """The tags worth copying: no statistics of the old encoding, no muxer-made ones."""
    return {
        k: v
        for k, v in metadata.items()
        if k.lower() not in _NOT_COPIED and not k.upper().startswith("_STATISTICS")
    }


def is_timecode_track(stream: av.stream.Stream) -> bool:
    """A QuickTime `tmcd` track (data stream).  Its packets cannot be copied as such (the MOV muxer
    fails at the very end: 'avg_frame_rate not set for tmcd track'), so it travels as a tag."""
    return stream.type == "data" and "timecode" in stream.metadata


def timecode_of(video: av.stream.Stream | None, others: list[av.stream.Stream]) -> str | None:
    """The start timecode of the input (HH:MM:SS:FF or with ';' for drop frame), if it has one."""
    for s in [*([video] if video is not None else []), *others]:
        if tc := s.metadata.get("timecode"):
            return tc
    if video is not None and (tc := video.container.metadata.get("timecode")):
        return tc
    return None


def copy_stream_tags(src: av.stream.Stream, dst: Any) -> None:
    """Language, title and the other tags, plus default/forced/... flags, from `src` to `dst`."""
    dst.metadata.update(tags(src.metadata))
    dst.disposition = src.disposition


def copy_container_tags(src: Any, out: Any, warn: Callable[[str], None]) -> None:
    """Global tags and chapters of the input container, where the output container takes them."""
    out.metadata.update(tags(src.metadata))
    chapters = src.chapters()
    if not chapters:
        return
    if out.format.name not in CHAPTER_CONTAINERS:
        warn(
            f"{len(chapters)} chapters cannot be stored in {out.format.name}; they are left out (.mkv keeps them)"
        )
        return
    out.set_chapters(chapters)


def writable(
    fmt: str,
    build: Callable[[Any, list[av.stream.Stream], str | None], None],
    copy: list[av.stream.Stream],
    timecode: str | None,
    warn: Callable[[str], None],
) -> tuple[list[av.stream.Stream], str | None]:
    """The streams (and timecode) a `fmt` container can write, found by writing headers into
    throwaway outputs before any frame is upscaled: a muxer that refuses a stream would otherwise
    fail after the whole video was.  `build(out, streams, timecode)` adds the streams to `out`.
    If the video stream alone cannot start, nothing is decided here: the real output reports it."""

    def trial(streams: list[av.stream.Stream], tc: str | None) -> str | None:
        out: Any = av.open(io.BytesIO(), "w", format=fmt)
        try:
            build(out, streams, tc)
            with keep_scheduling():  # the encoders open (SVT-AV1 run by root: realtime.py)
                out.start_encoding()  # the header: where muxers check their streams
            return None
        except UserError as e:
            return str(e)
        except (av.FFmpegError, ValueError, OSError) as e:
            return reason(e)
        finally:
            with contextlib.suppress(Exception):
                out.close()

    if trial(copy, timecode) is None:
        return copy, timecode
    if timecode and trial([], timecode) is not None and trial([], None) is None:
        warn(f"timecode {timecode} cannot be stored in {fmt}; it is left out")
        timecode = None
    if trial([], timecode) is not None:
        return copy, timecode
    kept = []
    for s in copy:
        if (err := trial([s], timecode)) is None:
            kept.append(s)
        else:
            warn(f"{describe(s)} cannot be written to {fmt} ({err}); it is left out")
    return kept, timecode


def describe(s: av.stream.Stream) -> str:
    """'audio stream #1 (aac)': how warnings name a stream."""
    name = s.codec_context.name if s.codec_context else "data"
    return f"{s.type} stream #{s.index} ({name})"


def reason(e: BaseException) -> str:
    """An FFmpeg error without the file name PyAV puts in front of the muxer's own message."""
    log = getattr(e, "log", None)
    if log and isinstance(log, tuple) and len(log) >= 3 and log[2]:
        return str(log[2]).strip()
    return getattr(e, "strerror", None) or str(e)
