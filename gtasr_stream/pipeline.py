"""decode -> upscale -> encode, one thread per stage joined by bounded queues.

Owns the order of work for one video: validate, open, run the three stages concurrently so the
slowest sets the pace, collect per-stage busy time, and finish atomically (or leave nothing).
The stages exchange only plain items: decoded `Frame`s and copied packets, then encoded planes.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .engines import memory
from .engines.upscaler import Upscaler
from .errors import UserError
from .transfer import Download, download, upload
from .video.color import YUVLayout, rgb_to_yuv, yuv_to_rgb
from .video.cut import Cut, container_start, cut_items, seek
from .video.reader import (
    Frame,
    Hwaccel,
    check_pixel_format,
    configure_decoder,
    decode,
    is_cover,
    left_out,
    open_input,
    pick_video_stream,
    video_info,
)
from .video.writer import EncodeOptions, Sink, check_output_path, image_encoder

STAGES = ("decode", "upscale", "encode")
_END = object()


@dataclass
class Stats:
    """Live counters the CLI shows; written by the worker threads (ints/floats: GIL-atomic)."""

    total: int | None = None  # frames expected, if the container says (never trusted for logic)
    decoded: int = 0
    upscaled: int = 0
    encoded: int = 0
    busy: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    started: float = field(default_factory=time.perf_counter)
    elapsed: float = 0.0
    codec: str = ""
    decoder: str = ""
    out_size: tuple[int, int] = (0, 0)  # (height, width)

    def stage_fps(self) -> dict[str, float]:
        done = {"decode": self.decoded, "upscale": self.upscaled, "encode": self.encoded}
        return {s: done[s] / self.busy[s] if self.busy[s] else math.inf for s in STAGES}

    @property
    def slowest(self) -> str:
        return max(STAGES, key=lambda s: self.busy[s])


class _Stopped(Exception):
    """Raised inside a worker when another stage failed or the user pressed Ctrl-C."""


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


def upscale_video(
    src: str,
    dst: str | None,
    upscaler: Upscaler,
    encode: EncodeOptions | None = None,
    *,
    outscale: float = 4.0,
    overwrite: bool = False,
    hwaccel: Hwaccel = "auto",
    cut: Cut | None = None,
    on_progress: Callable[[Stats], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Stats:
    """Upscale the video of `src` into `dst` (None: encode and discard, for --benchmark).

    cut: only that part of the input (video cut to the frame, other streams to the packet), its
    times counted from the input's start; None: all of it.

    Raises UserError for every problem with the input, output or flags; leaves no file at `dst`
    unless the whole video was written.
    """
    warn = on_warning or (lambda msg: None)
    encode = encode or EncodeOptions()
    # 1. check what can be checked before any work
    if not 0 < outscale <= 16:
        raise UserError(f"-s/--outscale must be in (0, 16], got {outscale}")
    if dst is not None:
        check_output_path(dst, src, overwrite)
    # 2. open the input
    dev = upscaler.device
    container = open_input(
        src, hwaccel if dev.type == "cuda" or hwaccel == "nvdec" else "none", dev.index or 0
    )
    try:
        if cut is not None:
            cut = cut.on_timeline(container_start(container))
        return _run(container, src, dst, upscaler, encode, outscale, overwrite, cut, on_progress, warn)
    finally:
        container.close()


def _run(
    container: Any,
    src: str,
    dst: str | None,
    upscaler: Upscaler,
    encode: EncodeOptions,
    outscale: float,
    overwrite: bool,
    cut: Cut | None,
    on_progress: Callable[[Stats], None] | None,
    warn: Callable[[str], None],
) -> Stats:
    stream = pick_video_stream(container, src)
    stats = Stats()
    stats.decoder = configure_decoder(stream)
    check_pixel_format(stream, src)
    for note in left_out(container, stream):
        warn(note)
    info = video_info(stream)
    if info.width <= 0 or info.height <= 0:
        raise UserError(f"input '{src}': the video stream has no frame size")
    out_h, out_w = _even(info.height * outscale), _even(info.width * outscale)
    if out_h * out_w > 8192 * 8192:
        raise UserError(
            f"input '{src}': {info.width}x{info.height} would become {out_w}x{out_h}, larger than 8192x8192;"
            " lower -s/--outscale"
        )
    stats.out_size = (out_h, out_w)
    if upscaler.device.type == "cpu":  # no OOM exception to step down from there: size it up front
        memory.fit_cpu_memory(upscaler, info.height, info.width, warn, memory.available_bytes())
    stats.total = info.frames or _estimate_frames(stream)
    if cut is not None:
        stats.total = cut.expected_frames(stats.total, info.rate)
    image = image_encoder(dst, encode.container_format)  # one frame, nothing else: said when more came
    copy = (
        []
        if dst is None or image
        else [s for s in container.streams if s.index != stream.index and (s.type != "video" or is_cover(s))]
    )
    cuda = upscaler.device.type == "cuda"
    stop = threading.Event()
    errors: list[BaseException] = []
    q_dec: queue.Queue[Any] = queue.Queue(maxsize=2 * upscaler.batch + 2)
    q_enc: queue.Queue[Any] = queue.Queue(maxsize=2 * upscaler.batch + 2)

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except _Stopped:
                pass
            except BaseException as e:
                errors.append(e)
                stop.set()

        return run

    def decode_stage() -> None:
        items: Iterator[Any] = decode(container, stream, copy, warn)
        if cut is not None:
            seek(container, stream, cut)
            items = cut_items(items, cut, info.time_base, bool(sink.stream_map))
        while True:
            t = time.perf_counter()
            item = next(items, _END)
            stats.busy["decode"] += time.perf_counter() - t
            if isinstance(item, Frame):
                stats.decoded += 1
            _put(q_dec, item, stop)
            if image and stats.decoded == 1:
                if any(isinstance(i, Frame) for i in items):
                    warn(f"output '{dst}' is an image: it holds the first frame of '{src}' only")
                _put(q_dec, _END, stop)
                return
            if item is _END:
                return

    def upscale_stage() -> None:
        pending: list[Frame] = []
        started = False
        out_layout: YUVLayout | None = None
        # On CUDA the last batch's planes are still being copied to the host while the next one is
        # uploaded and upscaled (transfer.py); it goes to the encoder once its copy has finished.
        copy_stream = torch.cuda.Stream(upscaler.device) if cuda else None
        in_flight: list[tuple[list[Frame], Download]] = []

        def hand_over() -> None:
            frames, copying = in_flight.pop()
            t = time.perf_counter()
            planes = copying.frames()
            stats.busy["upscale"] += time.perf_counter() - t
            stats.upscaled += len(frames)
            for f, p in zip(frames, planes, strict=True):
                _put(q_enc, (p, f.pts), stop)

        def flush() -> None:
            nonlocal started, out_layout
            if not pending:
                return
            if not started:
                out_layout = sink.output_layout(pending[0].layout)
                first = pending[0]
                _put(q_enc, ("start", first.layout, first.rotation, first.hdr10), stop)
                started = True
            assert out_layout is not None
            t = time.perf_counter()
            copying = _upscale_batch(upscaler, pending, out_layout, (out_h, out_w), copy_stream)
            stats.busy["upscale"] += time.perf_counter() - t
            if in_flight:
                hand_over()
            in_flight.append((list(pending), copying))
            if copying.ready:  # always on the CPU: the batch goes on at once, as it always did
                hand_over()
            pending.clear()

        while True:
            item = _get(q_dec, stop)
            if item is _END:
                flush()
                if in_flight:
                    hand_over()
                _put(q_enc, _END, stop)
                return
            if not isinstance(item, Frame):  # a packet to copy: goes ahead of the pending batch
                _put(q_enc, item, stop)
                continue
            if pending and (item.size != pending[0].size or item.layout != pending[0].layout):
                flush()
            pending.append(item)
            if len(pending) >= upscaler.batch:
                flush()

    def encode_stage() -> None:
        while True:
            item = _get(q_enc, stop)
            if item is _END:
                return
            t = time.perf_counter()
            if isinstance(item, tuple) and item[0] == "start":
                sink.start(*item[1:])
            elif isinstance(item, tuple):
                sink.write(*item)
                stats.encoded += 1
            else:
                sink.mux(item)
            stats.busy["encode"] += time.perf_counter() - t

    threads = [
        threading.Thread(target=guarded(fn), name=f"gtasr-{name}", daemon=True)
        for name, fn in zip(STAGES, (decode_stage, upscale_stage, encode_stage), strict=True)
    ]
    # 3. the output, opened before any work so that flag and path errors come first; from here on a
    # stop (Ctrl-C, SIGTERM) at any statement reaches the cleanup below
    sink = Sink(dst, encode, info, copy, stream.index, (out_h, out_w), cuda, warn, overwrite, container)
    try:
        stats.codec = sink.codec
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            threads[-1].join(timeout=0.2)
            stats.elapsed = time.perf_counter() - stats.started
            if on_progress:
                on_progress(stats)
        if errors:
            raise errors[0]
        if stats.encoded == 0 and cut is not None and cut.start is not None:
            raise UserError(f"--start: input '{src}' has no video frames from there on")
        if stats.encoded == 0:
            raise UserError(f"input '{src}' has no decodable video frames")
        t = time.perf_counter()
        sink.close()
        stats.busy["encode"] += time.perf_counter() - t
        stats.elapsed = time.perf_counter() - stats.started
        if on_progress:
            on_progress(stats)
        return stats
    except BaseException:
        stop.set()
        for th in threads:
            if th.is_alive():  # a stop while they were being started leaves some not started
                th.join(timeout=10)
        sink.abort()
        raise


def _even(x: float) -> int:
    """The nearest even size, halves rounded up (4:2:0 encoders need even sizes)."""
    return max(2, 2 * math.floor(x / 2 + 0.5))


def _estimate_frames(stream: Any) -> int | None:
    """For the progress bar only: stream duration, else the container's (MKV has no frame count)."""
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return None
    if stream.duration and stream.time_base:
        return round(stream.duration * stream.time_base * rate)
    if stream.container.duration:
        return round(stream.container.duration / 1_000_000 * rate)  # AV_TIME_BASE units
    return None


def _upscale_batch(
    up: Upscaler,
    frames: list[Frame],
    out_layout: YUVLayout,
    out_size: tuple[int, int],
    copy_stream: torch.cuda.Stream | None = None,
) -> Download:
    """Planes of B frames -> RGB on the device -> 4x -> resize to OUT's size -> planes to the CPU."""
    y, u, v = (upload([f.planes[i] for f in frames], up.device) for i in range(3))
    rgb = yuv_to_rgb(y, u, v, frames[0].layout)  # (B,3,h,w) float in [0,1]
    hr = up(rgb)  # (B,3,4h,4w) float in [0,1]
    if hr.shape[-2:] != out_size:
        down = hr.shape[-2] > out_size[0]
        hr = F.interpolate(hr, size=out_size, mode="bicubic", antialias=down).clamp_(0, 1)
    return download(rgb_to_yuv(hr, out_layout), copy_stream)
