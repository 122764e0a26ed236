"""Segments of a long video: where to cut it (at keyframes), and joining the encoded segments into OUT.

The PyAV half of `long_run.py`.  `plan` reads the video stream's packets once (no decoding) and
cuts the frames of the cut at keyframes into segments of about the asked length.  Each segment is
then upscaled on its own into a video-only MOV (or NUT) file: both keep the input's time base, so
every timestamp survives exactly (Matroska would round them to milliseconds).  `join` copies the
segments' packets into OUT one after the other and the other streams once, from the source,
interleaved by time: no decoding or encoding happens there.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from ..errors import UserError
from .cut import INTERLEAVE, Cut, container_start, cut_items, seek, trim_packet
from .reader import decode, is_cover, open_input, pick_video_stream, video_info
from .writer import EncodeOptions, Sink


def segment_format(codec: str) -> str:
    """MOV for the segments when it holds the codec: it keeps the input's time base and gives every
    packet its dts; else NUT (ffv1), which also keeps the time base but leaves the first dts of a
    B-frame stream unset (harmless for the intra-only codecs MOV refuses)."""
    if codec == "auto":  # libx264, libx265, libsvtav1, NVENC: all fit
        return "mov"
    with contextlib.suppress(Exception), av.open(io.BytesIO(), "w", format="mov") as probe:
        probe.add_stream(codec)
        return "mov"
    return "nut"


@dataclass(frozen=True)
class Segment:
    """Frames [start, end) of the input, in seconds on its timeline (as `Cut` counts them)."""

    index: int
    start: Fraction  # the pts of its first frame (a keyframe, except for the first segment of a cut)
    end: Fraction | None  # the next segment's start, or the end of the cut; None: to the end
    frames: int  # how many frames the index says it holds (checked after encoding)

    def name(self, ext: str) -> str:
        return f"seg-{self.index:05d}.{ext}"


@dataclass(frozen=True)
class Plan:
    segments: list[Segment]
    duration: Fraction  # of the video to upscale, seconds


def plan(src: str, cut: Cut | None, seconds: float) -> Plan | None:
    """Segments of about `seconds` each, cut at keyframes; None when the input's packets carry no
    presentation times (AVI, raw streams): those are upscaled in one pass."""
    with open_input(src) as container:
        stream = pick_video_stream(container, src)
        origin = container_start(container)
        tb = stream.time_base
        if tb is None:
            return None
        pts: list[int] = []
        keys: set[int] = set()
        for p in container.demux(stream):
            if not p.size:
                continue
            if p.pts is None:
                return None
            pts.append(p.pts)
            if p.is_keyframe:
                keys.add(p.pts)
    pts.sort()
    c = cut.on_timeline(origin) if cut is not None else Cut()
    kept = [t for t in pts if (c.start is None or t * tb >= c.start) and (c.end is None or t * tb < c.end)]
    after = None
    if c.frames is not None and len(kept) > c.frames:
        after, kept = kept[c.frames], kept[: c.frames]
    if not kept:
        what = "--start: input" if c.start is not None else "input"
        raise UserError(f"{what} '{src}' has no video frames from there on")
    end = after * tb if after is not None else c.end
    starts = [0]
    for i, t in enumerate(kept):
        if t in keys and (t - kept[starts[-1]]) * tb >= seconds:
            starts.append(i)
    segments = []
    for n, (i, j) in enumerate(itertools.pairwise([*starts, len(kept)])):
        seg_end = kept[j] * tb if j < len(kept) else end
        segments.append(Segment(n, kept[i] * tb, seg_end, j - i))
    last = kept[-1] + (kept[-1] - kept[-2] if len(kept) > 1 else 1)
    return Plan(segments, (last - kept[0]) * tb)


def segment_cut(seg: Segment, cut: Cut | None, origin: Fraction) -> Cut:
    """The `Cut` (counted from the input's start, as upscale_video takes it) that makes `seg`."""
    return Cut(
        start=seg.start - origin,
        end=None if seg.end is None else seg.end - origin,
        shift=cut.shift if cut is not None else Fraction(0),
    )


def origin_of(src: str) -> Fraction:
    with open_input(src) as container:
        return container_start(container)


def join(
    src: str,
    dst: str,
    parts: list[str],
    encode: EncodeOptions,
    cut: Cut | None,
    end: Fraction | None,
    cuda: bool,
    overwrite: bool,
    warn: Callable[[str], None],
) -> tuple[int, str, tuple[int, int]]:
    """OUT from the encoded segments (packets copied in order) and the source's other streams
    (copied once, cut as `cut` says, up to `end` on the input's timeline: the plan's last segment's);
    returns the number of video packets written, the encoder's name and the (height, width)."""
    with open_input(src) as container, av.open(parts[0]) as first:
        stream = pick_video_stream(container, src)
        c = cut.on_timeline(container_start(container)) if cut is not None else Cut()
        c = Cut(start=c.start, end=end, shift=c.shift)
        template = first.streams.video[0]
        info = video_info(stream)
        size = (template.codec_context.height, template.codec_context.width)
        frame = _first_frame(src, c)
        copy = [
            s for s in container.streams if s.index != stream.index and (s.type != "video" or is_cover(s))
        ]
        sink = Sink(dst, encode, info, copy, stream.index, size, cuda, warn, overwrite, container, template)
        try:
            sink.start(frame.layout, frame.rotation, frame.hdr10)
            written = 0
            for _, _, is_video, packet in heapq.merge(_video(parts), _others(container, stream, sink, c)):
                if is_video:
                    sink.mux_video(packet)
                    written += 1
                else:
                    sink.mux(packet)
            sink.close()
        except BaseException:
            sink.abort()
            raise
    return written, sink.codec, size


_order = itertools.count()  # ties in time keep their order; packets themselves never get compared


def _key(p: av.Packet) -> Fraction:
    ts = p.dts if p.dts is not None else p.pts
    return (ts or 0) * p.time_base


def _video(parts: list[str]) -> Iterator[tuple[Fraction, int, bool, av.Packet]]:
    for path in parts:
        with av.open(path) as seg:
            for p in seg.demux(seg.streams.video[0]):
                if p.size:
                    yield _key(p), next(_order), True, p


def _others(container: Any, stream: Any, sink: Sink, c: Cut) -> Iterator[tuple[Fraction, int, bool, Any]]:
    wanted = [s for s in container.streams if s.index in sink.stream_map]
    if not wanted:
        return
    seek(container, stream, c)
    for p in container.demux(wanted):
        if not p.size:
            continue
        if c.end is not None and _key(p) > c.end + INTERLEAVE:
            break
        if (kept := trim_packet(p, c, c.end)) is not None:
            yield _key(kept), next(_order), False, kept


def _first_frame(src: str, c: Cut) -> Any:
    """The first frame of the cut: its colours, rotation and HDR10 metadata set OUT's tags."""
    with open_input(src) as container:
        stream = pick_video_stream(container, src)
        seek(container, stream, c)
        first = Cut(start=c.start, frames=1)
        tb = stream.time_base or Fraction(1, 90000)  # plan() refused a stream without one
        for frame in cut_items(decode(container, stream, [], lambda msg: None), first, tb, False):
            return frame
    raise UserError(f"input '{src}' has no decodable video frames")
