"""Progress on stderr for `gtasr-stream`: what is happening from the first second, a rate that
follows the recent frames (not the average since start, which the model load and the first call
drag down for minutes), and plain lines every few seconds when stderr is not a terminal (nohup, a
log file, CI), where a live bar would print nothing until the end.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:  # importing the pipeline imports torch: slow, and not needed to say "loading"
    from .pipeline import Stats


class RecentRate:
    """Frames per second over the last `window` seconds, measured between the moments frames arrived.

    Frames arrive in bursts of one batch; sampling only when the count moves keeps the idle time
    inside a burst from being counted twice or not at all.
    """

    def __init__(self, window: float = 20.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()  # (seconds, frames done)

    def add(self, t: float, frames: int) -> None:
        if self.samples and frames == self.samples[-1][1]:
            return
        self.samples.append((t, frames))
        while len(self.samples) > 2 and t - self.samples[1][0] >= self.window:
            self.samples.popleft()

    def rate(self) -> float | None:
        """Frames per second, or None before two bursts (the first one includes the start-up)."""
        if len(self.samples) < 2:
            return None
        (t0, f0), (t1, f1) = self.samples[0], self.samples[-1]
        return (f1 - f0) / (t1 - t0) if t1 > t0 else None

    def eta(self, total: int | None, now: float) -> float | None:
        """Seconds left at the recent rate (counted from the last burst), or None when unknown."""
        rate = self.rate()
        if not total or not rate or not self.samples:
            return None
        t, done = self.samples[-1]
        return max(0.0, max(0, total - done) / rate - (now - t))


def clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def phase_of(stats: Stats) -> str:
    """What the pipeline is doing, from its counters."""
    if stats.encoded:
        return "upscaling"
    if not stats.decoded:
        return "opening and decoding the input"
    return "upscaling the first batch (the first model call is the slowest)"


class Reporter:
    """One progress display for a run (and for a queue of files: `file` names the current one)."""

    def __init__(
        self,
        console: Console,
        quiet: bool,
        every: float = 5.0,  # seconds between plain lines when stderr is not a terminal
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console, self.quiet, self.every, self.clock = console, quiet, every, clock
        self.tty = console.is_terminal
        self.label = ""  # "file 2/5 a.mp4: " in a queue
        self.phase = ""
        self.running = False
        self.last_line = -float("inf")
        self.rate = RecentRate()
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[left]}"),
            TextColumn("slowest: {task.fields[slowest]}"),
            console=console,
            transient=True,  # replaced by the summary line (or the error)
        )
        self.task = self.bar.add_task("", total=None, done="", left="", slowest="-")
        if self.tty and not quiet:
            self.bar.start()

    def start_file(self, label: str) -> None:
        """A new file of the queue: its own rate and counters."""
        self.label, self.phase, self.rate = label, "", RecentRate()
        self.last_line = -float("inf")

    def set_phase(self, text: str) -> None:
        """Say what is happening (once per change): on the bar, or as a plain line."""
        if self.quiet or text == self.phase:
            return
        self.phase = text
        if self.tty:
            self.bar.update(self.task, description=escape(self.label + text))
        elif self.running:  # before the first frame an error may come: it must be the only line
            self.console.print(f"gtasr-stream: {escape(self.label + text)}", soft_wrap=True)

    def update(self, stats: Stats) -> None:
        if self.quiet:
            return
        now = self.clock()
        # a frame decoded: every check of the input, flags and OUT has passed (no one-line error to spoil)
        self.running = self.running or stats.decoded > 0
        self.set_phase(phase_of(stats))
        if not stats.encoded:
            return
        self.rate.add(now, stats.encoded)
        rate = self.rate.rate()
        total = stats.total or "?"
        done = f"{stats.encoded}/{total} frames, " + (f"{rate:.2f} fps" if rate else "? fps")
        left = f"about {clock_text(self.rate.eta(stats.total, now))} left"
        if self.tty:
            self.bar.update(
                self.task,
                completed=stats.encoded,
                total=stats.total,
                done=done,
                left=left,
                slowest=stats.slowest,
            )
        elif now - self.last_line >= self.every:
            self.last_line = now
            self.console.print(
                f"gtasr-stream: {escape(self.label)}{done}, {clock_text(stats.elapsed)} elapsed, {left}",
                soft_wrap=True,
            )

    def stop(self) -> None:
        if self.bar.live.is_started:
            self.bar.stop()
