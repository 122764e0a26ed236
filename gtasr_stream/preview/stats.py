"""Live counters of a preview, written by its threads and read as the `/stats` JSON.

Rates are measured over the last `WINDOW_S` seconds, latencies are medians of the last `KEEP`
frames (robust to one slow frame), all in milliseconds.  Latency starts when a frame leaves the
decoder: what the camera and its driver took before that is not visible to us.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from typing import Any

from .slot import Latest

WINDOW_S = 2.0  # fps are measured over this many seconds
KEEP = 30  # latencies are the median of this many recent frames
VIEWER_IDLE_S = 3.0  # a connection that got no frame for this long no longer counts as a viewer


class Rate:
    """Events per second over the last `window` seconds."""

    def __init__(self, window: float = WINDOW_S) -> None:
        self.window = window
        self.times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self.times.append(now)
        self._prune(now)

    def per_second(self, now: float) -> float:
        self._prune(now)
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)

    def _prune(self, now: float) -> None:
        while self.times and self.times[0] < now - self.window:
            self.times.popleft()


def _median_ms(values: deque[float]) -> float | None:
    return round(statistics.median(values) * 1000, 1) if values else None


class PreviewStats:
    """Counters of one preview.  `frames` is the capture -> model slot (its drops are the model's)."""

    def __init__(self, frames: Latest[Any], info: dict[str, Any]) -> None:
        self.frames = frames
        self.info = info  # static facts for /stats: source, sizes, device, precision
        self.started = time.monotonic()
        self.state = "waiting for the first frame"
        self._lock = threading.Lock()
        self.captured = self.upscaled = self.shown = 0
        self._last_shown_seq = 0
        self._rates = {"capture": Rate(), "upscale": Rate(), "shown": Rate()}
        self._latency: dict[str, deque[float]] = {
            k: deque(maxlen=KEEP)
            for k in ("model", "capture_to_upscaled", "capture_to_sent", "capture_to_screen")
        }
        self._viewers: dict[Any, float] = {}  # connection -> when it last got a frame

    def on_captured(self, now: float) -> None:
        with self._lock:
            self.captured += 1
            self._rates["capture"].tick(now)

    def on_upscaled(self, now: float, model_s: float, since_capture_s: float) -> None:
        with self._lock:
            self.upscaled += 1
            self.state = "running"
            self._rates["upscale"].tick(now)
            self._latency["model"].append(model_s)
            self._latency["capture_to_upscaled"].append(since_capture_s)

    def on_sent(self, now: float, seq: int, since_capture_s: float, viewer: Any) -> None:
        """A frame went out to a viewer; a frame counts as shown once, however many viewers got it."""
        with self._lock:
            if seq > self._last_shown_seq:
                self._last_shown_seq = seq
                self.shown += 1
                self._rates["shown"].tick(now)
            self._latency["capture_to_sent"].append(since_capture_s)
            self._viewers[viewer] = now

    def on_screen_latency(self, seconds: float) -> None:
        """The page's own estimate of capture-to-screen for a frame it drew."""
        with self._lock:
            self._latency["capture_to_screen"].append(seconds)

    def active_viewers(self, now: float) -> int:
        with self._lock:
            for k in [k for k, t in self._viewers.items() if now - t > VIEWER_IDLE_S]:
                del self._viewers[k]
            return len(self._viewers)

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        viewers = self.active_viewers(now)
        with self._lock:
            return {
                **self.info,
                "state": self.state,
                "uptime_s": round(now - self.started, 1),
                "fps": {k: round(r.per_second(now), 2) for k, r in self._rates.items()},
                "latency_ms": {k: _median_ms(v) for k, v in self._latency.items()},
                "frames": {
                    "captured": self.captured,
                    "upscaled": self.upscaled,
                    "dropped": self.frames.dropped,
                    "shown": self.shown,
                },
                "viewers": viewers,
            }
