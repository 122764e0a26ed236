"""Atomic writes: every file we produce is written beside its target and moved there when complete.

Except where a rename would destroy something: an OUT that is a device node (/dev/null) or a FIFO
is written in place (a rename would replace the node or pipe with a regular file), a symlink's
target is replaced rather than the link, and without overwrite a file that appeared at OUT during
the run is never replaced (the finished result is kept under its temporary name instead).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


def is_stream_target(path: Path | str) -> bool:
    """True for an existing path that is not a regular file or folder (character device, FIFO):
    such an OUT is written in place, as a stream."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_writable_target(path: Path | str, name: str) -> None:
    """Refuse targets nothing sensible can be written to: block devices (a disk) and sockets."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_ISBLK(mode):
        raise UserError(f"{name} '{path}' is a block device (a disk); refusing to write over it")
    if stat.S_ISSOCK(mode):
        raise UserError(f"{name} '{path}' is a socket; give a file name")


def final_path(path: Path | str) -> Path:
    """Where the file really goes: a symlink's target (so the link stays a link)."""
    p = Path(path)
    return Path(os.path.realpath(p)) if p.is_symlink() else p


# Our temporary files: ".NAME.gtasr-HOST-PID-XXXXXXXX.partial.EXT".  The host and pid let a later
# run into the same folder remove the ones a killed run (kill -9, power loss) left behind.
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"[:6]
_OURS = re.compile(r"\.gtasr-([0-9a-f]{6})-(\d+)-[a-z0-9_]{8}")
_NAME_MAX = 255  # bytes in one path component on every common filesystem


def temp_beside(path: Path, suffix: str = "") -> Path:
    """A new empty file in path's folder, hidden, with the mode a plain `open(path, 'w')` would get.

    `suffix` lets a muxer still guess the container from the extension (".partial.mp4").  Stale
    temporary files of dead runs of ours in the same folder are removed first.
    """
    remove_stale_temps(path.parent)
    middle = f".gtasr-{_HOST}-{os.getpid()}-"
    room = _NAME_MAX - len(f".{middle}XXXXXXXX{suffix}".encode())
    stem = path.stem.encode()[: max(room, 0)].decode(errors="ignore")  # a long OUT still gets a temp name
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}{middle}", suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private (0600)
    return Path(tmp)


def remove_stale_temps(folder: Path) -> None:
    """Delete our temporary files in `folder` whose run (same host, pid) no longer exists."""
    try:
        names = [n for n in os.listdir(folder or ".") if n.startswith(".") and ".gtasr-" in n]
    except OSError:
        return
    for name in names:
        m = _OURS.search(name)
        if m is None or m[1] != _HOST or _alive(int(m[2])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder or ".", name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def move_into_place(tmp: Path, path: Path, overwrite: bool = True) -> None:
    """Rename the finished `tmp` onto `path`; without `overwrite`, atomically only if `path` is
    still absent (link, then unlink: the link fails if a file appeared there meanwhile).  If one
    did, the result is kept under a new visible name beside it, named in the UserError."""
    if overwrite:
        os.replace(tmp, path)
        return
    if not _link_no_replace(tmp, path):
        for n in range(1, 1000):
            kept = path.with_name(f"{path.stem}.gtasr-{n}{path.suffix}")
            if _link_no_replace(tmp, kept):
                break
        else:
            kept = tmp
        if kept != tmp:
            tmp.unlink(missing_ok=True)
        raise UserError(
            f"output '{path}' appeared while this run was working and was not replaced"
            f" (-y/--overwrite replaces it); the result is kept as '{kept}'"
        )
    tmp.unlink(missing_ok=True)


def _link_no_replace(tmp: Path, path: Path) -> bool:
    """Give `tmp`'s file the name `path` unless `path` exists (False then); `tmp` may stay."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (FAT, some network mounts): check, then copy the name
        if os.path.lexists(path):
            return False
        os.rename(tmp, path)
        return True


@contextmanager
def atomic_path(path: Path, suffix: str = ".partial") -> Iterator[Path]:
    """Yield a temporary path to write; on success it is synced and renamed onto `path`, on any
    error (Ctrl-C included) it is removed, so `path` is always either the old file or the new one.
    A device node or FIFO at `path` is written in place instead."""
    if is_stream_target(path):
        yield Path(path)
        return
    target = final_path(path)
    tmp = temp_beside(target, suffix)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
