"""The preview's input: open a camera, file, URL or lavfi graph, and capture it on a worker thread.

Owns: telling the kinds of SOURCE apart, the one-line errors of a missing, busy or unwilling
camera, and the capture loop — EAGAIN from devices retried, timestamps rebased to start at 0
(and continued across the loops of a file), files and lavfi graphs paced to their own frame rate
(they would otherwise decode as fast as the CPU can), an optional rate cap, and every frame put
into a `Latest` slot, so a slow model drops frames instead of falling behind.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import av
import numpy as np

from ..errors import UserError
from ..video.color import YUVLayout
from ..video.reader import open_input, pick_video_stream, plane_arrays, resolve_layout
from .slot import Latest

Kind = Literal["v4l2", "lavfi", "file", "url"]
BEHIND_S = 0.25  # a paced source this far behind its schedule restarts the schedule (no catch-up burst)


@dataclass(frozen=True)
class Source:
    """SOURCE as the user wrote it, and what it is."""

    name: str  # as given on the command line, for messages
    kind: Kind
    target: str  # the device path, file path, URL or lavfi filter graph to open


def parse_source(src: str) -> Source:
    """'lavfi:GRAPH', a URL (has '://'), a V4L2 device (/dev/... or a character device), else a file."""
    if src.startswith("lavfi:"):
        graph = src.removeprefix("lavfi:")
        if not graph:
            raise UserError("source 'lavfi:' has no filter graph (e.g. lavfi:testsrc2=size=640x480:rate=30)")
        return Source(src, "lavfi", graph)
    if "://" in src:
        return Source(src, "url", src)
    try:
        is_char_device = stat.S_ISCHR(os.stat(src).st_mode)
    except OSError:
        is_char_device = False
    if src.startswith("/dev/") or is_char_device:
        return Source(src, "v4l2", src)
    return Source(src, "file", src)


def device_error(dev: str, e: BaseException) -> UserError:
    """The one line for a camera that cannot be opened, by errno."""
    code = getattr(e, "errno", None)
    reason = (getattr(e, "strerror", None) or str(e)).strip()
    if code == errno.ENOENT:
        why = "no such video device (is a camera connected? `ls /dev/video*` lists them)"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied (is your user in the 'video' group?)"
    elif code == errno.EBUSY:
        why = "the camera is busy: another program is using it"
    elif code in (errno.ENODEV, errno.ENXIO, errno.ENOTTY):
        why = f"not a video capture device ({reason})"
    elif code == errno.EINVAL:
        why = f"the camera refuses these settings; try another --size or --fps ({reason})"
    else:
        why = f"cannot be opened ({reason})"
    return UserError(f"source '{dev}': {why}")


def open_source(
    source: Source, size: tuple[int, int] | None, fps: float | None, warn: Callable[[str], None]
) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open SOURCE and pick its video stream; a camera is asked for `size` (W, H) and `fps`."""
    if source.kind == "v4l2":
        options = {}
        if size is not None:
            options["video_size"] = f"{size[0]}x{size[1]}"
        if fps is not None:
            options["framerate"] = f"{fps:g}"
        try:
            container = av.open(source.target, "r", format="v4l2", options=options)
        except (av.FFmpegError, OSError) as e:
            raise device_error(source.name, e) from None
    elif source.kind == "lavfi":
        try:
            container = av.open(source.target, "r", format="lavfi")
        except (av.FFmpegError, OSError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise UserError(f"source '{source.name}' is not a working lavfi graph ({reason})") from None
    else:
        container = open_input(source.target)  # the main command's messages for files and URLs
    try:
        stream = pick_video_stream(container, source.name)
        # Frame threads hold frames back to decode several at once: latency for a live source.
        stream.thread_type = "AUTO" if source.kind == "file" else "SLICE"
        got = (stream.codec_context.width, stream.codec_context.height)
        if source.kind == "v4l2" and size is not None and got != size:
            raise UserError(
                f"--size {size[0]}x{size[1]}: '{source.name}' cannot capture that size (it offers {got[0]}x{got[1]})"
            )
        rate = stream.average_rate or stream.guessed_rate
        if source.kind == "v4l2" and fps is not None and rate and abs(float(rate) - fps) > 0.5:
            warn(f"--fps {fps:g}: '{source.name}' captures at {float(rate):g} fps")
    except BaseException:
        container.close()
        raise
    return container, stream


def read_packets(
    container: Any, stream: Any, stop: threading.Event, retry_s: float = 0.005
) -> Iterator[av.Packet]:
    """Demux `stream` until the end, retrying EAGAIN (a live device with no frame ready yet)."""
    packets = container.demux(stream)
    while not stop.is_set():
        try:
            packet = next(packets)
        except StopIteration:
            return
        except OSError as e:  # av.error.BlockingIOError is an OSError too
            if e.errno != errno.EAGAIN:
                raise
            stop.wait(retry_s)
            packets = container.demux(stream)  # a generator that raised is finished: start a new one
            continue
        if packet.size:  # size 0 is the demuxer's end-of-stream marker
            yield packet


@dataclass
class Captured:
    """One captured frame, as decoded, on its way to the model."""

    planes: tuple[np.ndarray, np.ndarray, np.ndarray]  # Y (H,W), U, V code values (views into `frame`)
    layout: YUVLayout
    t: float  # source time in s: 0 at the first frame, continued across the loops of a file
    at: float  # time.monotonic() when it left the decoder: where the latency we show starts
    frame: av.VideoFrame  # keeps the planes' buffers alive


class Capture:
    """Reads an opened source into a `Latest` slot until `stop` is set or the source ends."""

    def __init__(
        self,
        source: Source,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        slot: Latest[Captured],
        fps: float | None,  # at most this many frames a second reach the slot (None: all)
        warn: Callable[[str], None],
        on_captured: Callable[[float], None] = lambda now: None,  # called with the capture time
    ) -> None:
        self.source, self.container, self.stream, self.slot, self.warn = source, container, stream, slot, warn
        self.on_captured = on_captured
        duration = bool(container.duration)
        # Files (and lavfi graphs) decode far faster than real time: play them at their frame rate.
        # Live sources arrive in real time; pacing them would only add delay after a burst.
        self.paced = source.kind in ("file", "lavfi") or (source.kind == "url" and duration)
        self.loops = source.kind == "file" or (source.kind == "url" and duration)
        rate = stream.average_rate or stream.guessed_rate
        self.period = 1 / float(rate) if rate else 1 / 30  # s per frame, for frames without pts
        self.cap = 1 / fps if fps else 0.0
        self.time_base = stream.time_base or Fraction(1, 1_000_000)
        self.ended = False  # the source ended by itself (a live stream closed)
        self._warned_corrupt = False

    def run(self, stop: threading.Event) -> None:
        base = 0.0  # time added to this pass's timestamps: the length of the passes before it
        clock0: float | None = None  # monotonic time of t = 0, for pacing
        next_due: float | None = None  # the --fps cap's next slot
        last_t = -self.period
        while not stop.is_set():
            first_pts: int | None = None
            got = 0
            for f in self._decoded(stop):
                # 1. rebase: the first frame is at 0, a new pass goes on where the last one ended
                if f.pts is None:
                    t = last_t + self.period
                else:
                    first_pts = f.pts if first_pts is None else first_pts
                    t = base + float((f.pts - first_pts) * self.time_base)
                last_t, got = t, got + 1
                # 2. the --fps cap: keep a frame per slot, with a quarter-slot of jitter tolerance
                if self.cap:
                    if next_due is not None and t + self.cap / 4 < next_due:
                        continue
                    next_due = (
                        next_due + self.cap
                        if next_due is not None and t - next_due < self.cap
                        else t + self.cap
                    )
                # 3. pace files and graphs to their timestamps
                if self.paced:
                    now = time.monotonic()
                    if clock0 is None or now - (clock0 + t) > BEHIND_S:
                        clock0 = now - t
                    if stop.wait(max(0.0, clock0 + t - now)):
                        return
                g, layout = resolve_layout(f)
                now = time.monotonic()
                self.slot.put(Captured(plane_arrays(g, layout.bits), layout, t, now, g))
                self.on_captured(now)
            if stop.is_set():
                return
            if not self.loops:
                self.ended = True
                return
            if got == 0:
                raise UserError(f"source '{self.source.name}' has no decodable video frames")
            base = last_t + self.period
            try:
                self.container.seek(0)
            except (av.FFmpegError, OSError) as e:
                self.warn(f"source '{self.source.name}' cannot be rewound to loop it ({e}); it ended")
                self.ended = True
                return
            self.stream.codec_context.flush_buffers()

    def _decoded(self, stop: threading.Event) -> Iterator[av.VideoFrame]:
        """The frames of one pass over the source; damage in a file ends the pass, in a live source the run."""
        try:
            for packet in read_packets(self.container, self.stream, stop):
                yield from self._decode(packet)
        except (av.FFmpegError, OSError) as e:
            if self.source.kind != "file":
                reason = getattr(e, "strerror", None) or str(e)
                raise UserError(f"source '{self.source.name}' failed: {reason}") from None
            self._warn_corrupt(e)
        yield from self._decode(None)

    def _decode(self, packet: av.Packet | None) -> list[av.VideoFrame]:
        try:
            return self.stream.decode(packet)
        except av.FFmpegError as e:  # a damaged frame (webcams send some): skip it
            self._warn_corrupt(e)
            return []

    def _warn_corrupt(self, e: BaseException) -> None:
        if not self._warned_corrupt:
            self.warn(f"source '{self.source.name}': skipping undecodable video data ({e})")
            self._warned_corrupt = True
