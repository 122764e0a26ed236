"""The one exception type the CLI turns into a one-line message and a non-zero exit, and holding back
what C libraries print to stderr meanwhile (x264, torch's package loader), so that the line is ours."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator


class UserError(Exception):
    """A problem with the user's input, flags or environment: print `str(e)` alone, no traceback.

    The message names the file or flag at fault and fits on one line.
    """


@contextlib.contextmanager
def held_stderr() -> Iterator[Callable[[], str]]:
    """Hold back what is written to file descriptor 2 inside the block (C libraries write there
    directly); yields a function that returns the text once the block has ended.  The caller says
    it in its own words, or writes it out when it means nothing to it.  For calls that take well
    under a second: another thread's line written meanwhile is held back too."""
    text = ""
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(held.fileno(), 2)
            yield lambda: text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace")
