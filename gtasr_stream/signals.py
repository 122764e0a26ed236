"""SIGTERM stops a run the way Ctrl-C does.

`timeout`, systemd and `docker stop` send SIGTERM, whose default action kills the process on the
spot and leaves the temporary file beside OUT (and an unfinished `--record`).  Raising a
KeyboardInterrupt instead sends it down the path Ctrl-C takes: workers stopped, the partial file
removed or the recording finished, one line, a non-zero exit (143 = 128 + SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C's KeyboardInterrupt would be."""

    exit_code = 143


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises `Terminated` in the main thread (nothing when called elsewhere:
    only the main thread may set handlers)."""

    def raise_terminated(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)


def ignore_stop_signals() -> None:
    """While cleaning up after a stop, a second Ctrl-C or SIGTERM must not cut the cleanup short."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def exit_code(e: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return getattr(e, "exit_code", 130)
