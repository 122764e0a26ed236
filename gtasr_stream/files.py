"""Atomic writes: every file we produce is written beside its target and renamed when complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_beside(path: Path, suffix: str = "") -> Path:
    """A new empty file in path's folder, hidden, with the mode a plain `open(path, 'w')` would get.

    `suffix` lets a muxer still guess the container from the extension (".partial.mp4").
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private (0600)
    return Path(tmp)


@contextmanager
def atomic_path(path: Path, suffix: str = ".partial") -> Iterator[Path]:
    """Yield a temporary path to write; on success it is synced and renamed onto `path`, on any
    error (Ctrl-C included) it is removed, so `path` is always either the old file or the new one."""
    tmp = temp_beside(Path(path), suffix)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
