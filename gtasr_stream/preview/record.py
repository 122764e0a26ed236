"""`preview --record OUT`: every upscaled frame, with its rebased source time, into a video file.

Owns a bounded queue and an encoder thread around the main command's `Sink` (atomic write:
nothing at OUT until it is closed).  A full queue makes the model stage wait: the recording has
every frame the model made, at the cost of the preview's rate when the encoder is the slowest.
Frames the model skipped leave gaps in the timestamps (variable frame rate), so the recording
plays in real time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from fractions import Fraction

from ..video.reader import VideoInfo
from ..video.writer import EncodeOptions, Sink
from .jpeg import JPEG_LAYOUT, Shown

TIME_BASE = Fraction(1, 1000)  # ms: ample for any camera
# libx264 "veryfast" keeps up with 4x frames where "medium" would set the pace; CRF 18 as upscale's.
RECORD_OPTIONS = EncodeOptions(codec="libx264", preset="veryfast")


class Recorder:
    """Encode `Shown` frames to `dst` on a thread; `close` finishes the file, `abort` removes it."""

    def __init__(
        self,
        dst: str,
        out_size: tuple[int, int],  # (height, width) of the upscaled frames
        rate: float | None,  # the source's frame rate, a hint for the encoder's rate control
        on_error: Callable[[BaseException], None],
        warn: Callable[[str], None],
        overwrite: bool = False,  # replace a file that appears at `dst` while recording
    ) -> None:
        h, w = out_size
        info = VideoInfo(
            width=w,
            height=h,
            time_base=TIME_BASE,
            rate=Fraction(rate).limit_denominator(1001) if rate else Fraction(30),
            frames=None,
            bits=8,
            sub_x=JPEG_LAYOUT.sub_x,
            sub_y=JPEG_LAYOUT.sub_y,
            color_primaries=2,  # unspecified: a camera does not say
            color_trc=2,
            sar=None,
        )
        self.dst = dst
        self.sink = Sink(dst, RECORD_OPTIONS, info, [], 0, out_size, False, warn, overwrite)
        self.written = 0
        self._queue: queue.Queue[Shown | None] = queue.Queue(maxsize=8)
        self._closed = threading.Event()  # no more frames are taken
        self._aborted = threading.Event()  # the thread stops without encoding what is queued
        self._failed = False
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name="gtasr-record", daemon=True)
        self._thread.start()

    def put(self, item: Shown) -> None:
        """Queue a frame, waiting while the encoder is behind (never after `close`/`abort`)."""
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            self.sink.start(JPEG_LAYOUT, 0)
            last = -1
            while not self._aborted.is_set():
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    return
                pts = max(round(item.t / TIME_BASE), last + 1)  # strictly increasing for the muxer
                self.sink.write(item.planes["output"], pts)
                last = pts
                self.written += 1
        except BaseException as e:
            self._failed = True
            self._closed.set()
            self._on_error(e)

    def close(self) -> None:
        """Encode what is queued, finish the file and move it to `dst` (nothing there if it failed)."""
        self._closed.set()
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()
        if self.written and not self._failed:
            self.sink.close()
        else:
            self.sink.abort()

    def abort(self) -> None:
        """Stop at once and leave nothing at `dst`."""
        self._closed.set()
        self._aborted.set()
        self._thread.join(timeout=10)
        self.sink.abort()
