"""What the command line prints, and how it ends: the one place that turns errors into exit codes.

Every failure the user can fix ends as one line on stderr and a non-zero exit:
1 for a bad input/flag/environment (UserError), 130 for Ctrl-C, 143 for SIGTERM (signals.py),
3 for an internal error (set GTASR_DEBUG=1 for its traceback).  Usage errors (2) are click's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from ..errors import UserError
from ..signals import Terminated, exit_code

console = Console(stderr=True, highlight=False)  # stdout may carry the video ('-')


@dataclass(frozen=True)
class Printer:
    """Warnings and notes on stderr, escaped for rich (which would eat '[trt]'), silent when quiet."""

    quiet: bool

    def warn(self, msg: str) -> None:
        if not self.quiet:
            console.print(f"[yellow]gtasr-stream: warning:[/] {escape(msg)}", soft_wrap=True)

    def info(self, msg: str) -> None:
        if not self.quiet:
            console.print(f"gtasr-stream: {escape(msg)}", soft_wrap=True)


def error(msg: str) -> None:
    """The one-line error, as every failure ends (escaped: rich would eat '[trt]' or a bracketed path)."""
    console.print(f"[red]gtasr-stream: error:[/] {escape(msg)}", soft_wrap=True)


def exit_now(code: int) -> None:
    """Flush and leave at once, skipping interpreter teardown: after a mid-operation interrupt,
    torch's native thread pools can abort there ("terminate called ..."); the workers are stopped
    and partial files removed before this is called.  stdout is the caller's to flush: it may be
    the video pipe, whose reader may be gone."""
    sys.stderr.flush()
    os._exit(code)


def exit_on_error(fn: Callable[[], None]) -> None:
    """Run a command's body; a UserError, Ctrl-C, SIGTERM or any other exception ends as one line and its code."""
    try:
        fn()
    except UserError as e:
        error(str(e))
        sys.exit(1)
    except KeyboardInterrupt as e:
        how = "terminated" if isinstance(e, Terminated) else "interrupted"
        console.print(f"gtasr-stream: {how}; nothing was written")
        exit_now(exit_code(e))
    except Exception as e:
        if os.environ.get("GTASR_DEBUG"):
            raise
        console.print(
            f"[red]gtasr-stream: internal error:[/] {type(e).__name__}: {escape(str(e))} (GTASR_DEBUG=1 shows where)",
            soft_wrap=True,
        )
        sys.exit(3)
