"""One preview run: check everything, then capture ‖ upscale ‖ JPEG ‖ HTTP on their own threads.

    capture --Latest--> upscale --Latest--> JPEG prefetch (one thread per view) --> viewers
                                     \\--> recorder (bounded queue, --record only)

Owns the order of the checks (recording path, port, source, size, model: cheap ones first, so a
typo never waits for the model to load), the threads' lifetime, and a clean stop: `close` stops
every thread, finishes the recording and frees the port.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..engines.upscaler import Upscaler
from ..errors import UserError
from ..video.writer import check_output_path
from .jpeg import VIEWS, Shown, View
from .record import Recorder
from .server import Hub, PreviewServer, bind_server, url_of
from .slot import Latest
from .source import Capture, Captured, open_source, parse_source
from .stats import PreviewStats
from .upscale import upscale_stage

MAX_OUTPUT_PIXELS = 8192 * 8192  # as the upscale command


@dataclass(frozen=True)
class PreviewOptions:
    """Everything `gtasr-stream preview` is told besides the model flags."""

    source: str = "/dev/video0"  # V4L2 camera, file (looped), URL, or lavfi:GRAPH
    size: tuple[int, int] | None = None  # (W, H): asked of a camera; frames of other sources are resized
    fps: float | None = None  # asked of a camera; every source is thinned to at most this rate
    host: str = "127.0.0.1"  # where the page is served; 0.0.0.0 for every interface
    port: int = 8765  # 0: any free port
    record: str | None = None  # also write the upscaled frames to this video file
    overwrite: bool = False  # replace an existing `record` file


class Preview:
    """A running preview.  `wait` until it fails or its source ends; `close` in any case."""

    def __init__(
        self, opts: PreviewOptions, make_upscaler: Callable[[], Upscaler], warn: Callable[[str], None]
    ) -> None:
        self.opts, self.warn = opts, warn
        self.stop = threading.Event()
        self.failed = threading.Event()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.recorder: Recorder | None = None
        self._serving = False
        # 1. what can be checked without opening anything
        source = parse_source(opts.source)
        if opts.record is not None:
            check_output_path(opts.record, opts.source, opts.overwrite)
        # 2. the port (an address in use is the likeliest mistake), then the source
        self.frames: Latest[Captured] = Latest()
        self.shown: Latest[Shown] = Latest()
        self.stats = PreviewStats(self.frames, {})
        self.server: PreviewServer = bind_server(opts.host, opts.port, Hub(self.shown, self.stats, self.stop))
        if not _loopback(opts.host):
            warn(
                f"--host {opts.host}: the page has no authentication; anyone who can reach this machine"
                " can watch the source (an SSH tunnel keeps it private)"
            )
        self.url = url_of(self.server)
        self.container: Any = None
        try:
            self.container, stream = open_source(source, opts.size, opts.fps, warn)
            cc = stream.codec_context
            self.size = opts.size or (cc.width, cc.height)  # (W, H) the model sees
            self._check_size(source.name)
            # 3. the model: the slow part
            self.up = make_upscaler()
            self.out_size = (self.size[1] * self.up.scale, self.size[0] * self.up.scale)  # (H, W)
            self.stats.info.update(
                source=source.name,
                input_size=list(self.size),
                output_size=[self.out_size[1], self.out_size[0]],
                device=str(self.up.device),
                precision=str(self.up.dtype).removeprefix("torch."),
            )
            if opts.record is not None:
                rate = stream.average_rate or stream.guessed_rate
                self.recorder = Recorder(
                    opts.record,
                    self.out_size,
                    float(rate) if rate else opts.fps,
                    self._fail,
                    warn,
                    opts.overwrite,
                )
            self.capture = Capture(
                source, self.container, stream, self.frames, opts.fps, warn, self.stats.on_captured
            )
        except BaseException:
            self.server.server_close()
            if self.recorder is not None:
                self.recorder.abort()
            if self.container is not None:
                self.container.close()
            raise

    def _check_size(self, name: str) -> None:
        w, h = self.size
        if w < 1 or h < 1:
            raise UserError(f"source '{name}' has no frame size")
        if 16 * w * h > MAX_OUTPUT_PIXELS:
            what = f"--size {w}x{h}:" if self.opts.size else f"source '{name}' is {w}x{h}:"
            raise UserError(
                f"{what} its 4x output {4 * w}x{4 * h} is larger than 8192x8192; pass a smaller --size"
            )

    def start(self) -> None:
        if self.up.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # leave a core to capture, JPEG and HTTP: a starved capture thread would add latency
            torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
        on_shown = self.recorder.put if self.recorder is not None else None
        work: dict[str, Callable[[], None]] = {
            "capture": lambda: self.capture.run(self.stop),
            "upscale": lambda: upscale_stage(
                self.up, self.frames, self.shown, self.size, self.stats, self.stop, on_shown
            ),
            **{f"jpeg-{v}": self._prefetcher(v) for v in VIEWS},
            "http": lambda: self.server.serve_forever(poll_interval=0.2),
        }
        for name, fn in work.items():
            th = threading.Thread(target=self._guarded(fn), name=f"gtasr-preview-{name}", daemon=True)
            self.threads.append(th)
            th.start()
        self._serving = True

    def _guarded(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:
                self._fail(e)

        return run

    def _fail(self, e: BaseException) -> None:
        self.errors.append(e)
        self.failed.set()

    def _prefetcher(self, view: View) -> Callable[[], None]:
        """Encode each new frame's JPEG as soon as it exists while anyone watches: viewers then wait less."""

        def run() -> None:
            seq = 0
            while not self.stop.is_set():
                got = self.shown.wait_newer(seq, 0.5)
                if got is None or got[0] <= seq:
                    continue
                seq, item = got
                if self.stats.active_viewers(time.monotonic()):
                    item.jpeg(view)

        return run

    def wait(self) -> None:
        """Until a thread fails (its error is raised) or the source ends (returns)."""
        while not self.failed.wait(0.2):
            if self.capture.ended:
                deadline = time.monotonic() + 5  # let the model finish the last frame
                while (
                    self.stats.upscaled + self.frames.dropped < self.stats.captured
                    and time.monotonic() < deadline
                ):
                    time.sleep(0.05)
                self.stats.state = "source ended"
                return
        raise self.errors[0]

    def close(self) -> None:
        """Stop every thread, finish (or, after a failure, remove) the recording, free the port."""
        self.stop.set()
        self.frames.close()
        self.shown.close()
        if self._serving:
            self.server.shutdown()
        self.server.server_close()
        for th in self.threads:
            th.join(timeout=10 if th.name.endswith("upscale") else 2)
        try:
            if self.recorder is not None:
                if self.errors:
                    self.recorder.abort()
                else:
                    self.recorder.close()
        finally:
            if not any(th.is_alive() for th in self.threads if th.name.endswith("capture")):
                self.container.close()  # never under a thread still blocked reading it

    def summary(self) -> str:
        s = self.stats
        line = f"{s.upscaled} frames upscaled, {self.frames.dropped} dropped of {s.captured} captured"
        if self.recorder is not None and self.recorder.written and not self.errors:
            line += f"; recorded {self.recorder.written} to {self.opts.record}"
        return line


def _loopback(host: str) -> bool:
    """127.x, ::1 or localhost: only this machine can connect."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
