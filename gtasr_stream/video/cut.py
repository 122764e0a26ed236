"""--start / --duration / --frames: which part of the input is upscaled, and its timestamps in OUT.

A cut is in seconds on the input's timeline counted from the container's start, as players show it
and as `ffmpeg -ss` counts.  Video is cut exactly: seek to the keyframe at or before START, decode
from there, keep the frames whose pts is in [START, END), at most FRAMES of them.  The other streams
are copied packet for packet, never re-encoded: every packet that overlaps [START, END) is kept, so
the audio may begin up to one packet before START and end up to one after END (AAC at 48 kHz: 21 ms);
a subtitle cue on screen at START is kept from START on.
A subtitle that starts before the keyframe the demuxer seeks to is not seen, even if it is still on
screen at START (as with `ffmpeg -ss`).  An exact audio cut would need a re-encode, which costs quality and changes the bytes a user asked us
to keep, for the sake of milliseconds that players trim by the video's timeline anyway.  Every
timestamp written is moved back by START (exactly START, not the first frame's time), so the cut
starts at 0 and a segment of a longer run gets the same timestamps as the whole run gives it.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:  # the CLI parses times before the slow imports (torch comes with the reader)
    import av

    from .reader import Frame

# Once the video of a cut is complete, the other streams' packets up to END are at most this far
# behind in the file (muxers interleave within about a second; MP4 chunks can hold a few).
INTERLEAVE = Fraction(10)
_TIME = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?|\.\d+)$")


@dataclass(frozen=True)
class Cut:
    """A part of the input, in seconds on its timeline (the container's start time included)."""

    start: Fraction | None = None  # first frame kept: the first with pts >= start; None: from the first
    end: Fraction | None = None  # frames from here on are left out; None: to the end
    frames: int | None = None  # at most this many frames; None: no limit
    shift: Fraction = Fraction(0)  # seconds subtracted from every timestamp written

    def on_timeline(self, origin: Fraction) -> Cut:
        """The same cut with start and end counted from `origin` (the container's start time)."""
        return replace(
            self,
            start=None if self.start is None else self.start + origin,
            end=None if self.end is None else self.end + origin,
        )

    def expected_frames(self, total: int | None, rate: Fraction | None) -> int | None:
        """For the progress bar: how many frames the cut will hold, if that can be told."""
        counts = [n for n in (total, self.frames) if n]
        if self.end is not None and rate:
            counts.append(math.ceil((self.end - (self.start or 0)) * rate))
        return min(counts) if counts else None


def parse_time(text: str, flag: str) -> Fraction:
    """'90', '1.5', '1:30', '01:02:03.25' -> seconds; anything else is one line naming the flag."""
    m = _TIME.match(text.strip())
    if not m:
        raise UserError(f"{flag}: '{text}' is not a time; give seconds (90, 1.5) or [HH:]MM:SS[.ms]")
    hours, minutes, seconds = m.group(1), m.group(2), m.group(3)
    if minutes is None and hours is not None:  # 'MM:SS' matched its minutes as hours
        hours, minutes = None, hours
    if minutes is not None and int(minutes) >= 60 and hours is not None:
        raise UserError(f"{flag}: '{text}' has {minutes} minutes; give [HH:]MM:SS[.ms]")
    if (hours is not None or minutes is not None) and float(seconds) >= 60:
        raise UserError(f"{flag}: '{text}' has {seconds} seconds; give [HH:]MM:SS[.ms]")
    return Fraction(int(hours or 0) * 3600 + int(minutes or 0) * 60) + Fraction(seconds)


def make_cut(start: str | None, duration: str | None, frames: int | None) -> Cut | None:
    """The cut the flags ask for (None: the whole input), relative to the input's start; times are
    checked here, before anything is opened, one line naming the flag each."""
    if start is None and duration is None and frames is None:
        return None
    begin = parse_time(start, "--start") if start is not None else None
    length = parse_time(duration, "--duration") if duration is not None else None
    if length is not None and length <= 0:
        raise UserError(f"--duration: '{duration}' is no time at all; give a length above 0")
    if frames is not None and frames < 1:
        raise UserError(f"--frames: {frames}; give at least 1")
    return Cut(
        start=begin,
        end=(begin or 0) + length if length is not None else None,
        frames=frames,
        shift=begin or Fraction(0),
    )


def container_start(container: Any) -> Fraction:
    """Where the input's timeline begins (an MPEG-TS often starts at 1.4 s): --start counts from it."""
    start = container.start_time
    return Fraction(start, 1_000_000) if start and start > 0 else Fraction(0)  # AV_TIME_BASE


def seek(container: Any, stream: Any, cut: Cut) -> None:
    """Move the demuxer to the keyframe at or before the cut's start (pipes: read from the beginning)."""
    import av

    if cut.start is None or cut.start <= 0 or not stream.time_base:
        return
    # not seekable (stdin, some URLs): decoding from the start and dropping is still exact
    with contextlib.suppress(av.FFmpegError, OSError):
        container.seek(math.floor(cut.start / stream.time_base), stream=stream, backward=True)


def _ticks(seconds: Fraction, time_base: Fraction) -> int:
    return round(seconds / time_base)


def cut_items(
    items: Iterator[Frame | av.Packet], cut: Cut, time_base: Fraction, copying: bool
) -> Iterator[Frame | av.Packet]:
    """The frames and packets of `decode` that fall in the cut, with their timestamps shifted.

    time_base: the video stream's.  copying: other streams' packets come too (else the demux
    stops as soon as the video of the cut is complete).  Packets are held back until the decoder
    has passed their time, because with --frames the end is known only when the last frame is out.
    """
    end = cut.end
    kept = 0
    done = False
    held: deque[av.Packet] = deque()
    video_shift = _ticks(cut.shift, time_base)

    def release(upto: Fraction | None) -> Iterator[av.Packet]:
        """Decide on the held packets that start before `upto` (None: all of them)."""
        while held and (upto is None or _time(held[0]) < upto):
            p = trim_packet(held.popleft(), cut, end)
            if p is not None:
                yield p

    import av

    for item in items:
        if not isinstance(item, av.Packet):  # a Frame
            assert item.pts is not None  # decode() gives every frame one
            t = item.pts * time_base
            if done or (cut.start is not None and t < cut.start):
                continue
            if (end is not None and t >= end) or (cut.frames is not None and kept >= cut.frames):
                done = True
                end = t if end is None else min(end, t)
                if not copying:
                    return
                continue
            kept += 1
            yield from release(t)
            item.pts -= video_shift
            yield item
        elif done and end is not None and _time(item) > end + INTERLEAVE:
            break
        else:
            held.append(item)
    yield from release(None)


def trim_packet(p: av.Packet, cut: Cut, end: Fraction | None) -> av.Packet | None:
    """The packet with its timestamps shifted if it overlaps [cut.start, end), else None."""
    t0 = _time(p)
    t1 = t0 + (p.duration or 0) * p.time_base
    after = cut.start is None or t1 > cut.start or t0 >= cut.start
    if not after or (end is not None and t0 >= end):
        return None
    if p.stream.type == "subtitle" and cut.start is not None and t0 < cut.start and p.duration:
        # a cue on screen at START: from START on (its text unchanged), never before 0 in OUT
        late = _ticks(cut.start - t0, p.time_base)
        p.pts, p.dts, p.duration = _plus(p.pts, late), _plus(p.dts, late), p.duration - late
    shift = _ticks(cut.shift, p.time_base)
    if p.pts is not None:
        p.pts -= shift
    if p.dts is not None:
        p.dts -= shift
    return p


def _plus(ts: int | None, ticks: int) -> int | None:
    return None if ts is None else ts + ticks


def _time(p: av.Packet) -> Fraction:
    ts = p.pts if p.pts is not None else p.dts
    return (ts or 0) * p.time_base
