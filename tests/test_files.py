"""Temporary files beside OUT: named within the folder's limits, and cleaned up after a killed run."""

from __future__ import annotations

import os
import subprocess
import sys

from gtasr_stream.files import _HOST, atomic_path, temp_beside


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return int(p.stdout)


def test_long_out_name_still_gets_a_temporary_file(tmp_path):
    out = tmp_path / ("a" * 250 + ".mkv")  # 254 bytes: a legal name; the temporary one must be too
    tmp = temp_beside(out, ".partial.mkv")
    assert tmp.parent == tmp_path and len(tmp.name.encode()) <= 255 and tmp.name.endswith(".partial.mkv")
    with atomic_path(out) as t:
        t.write_bytes(b"x")
    assert out.read_bytes() == b"x"


def test_temporaries_of_dead_runs_are_removed_by_the_next_run(tmp_path):
    dead, alive = dead_pid(), os.getpid()
    stale = tmp_path / f".out.gtasr-{_HOST}-{dead}-abcd1234.partial.mkv"  # what kill -9 leaves
    running = tmp_path / f".out.gtasr-{_HOST}-{alive}-abcd1234.partial.mkv"  # a run in progress
    host = "ffffff" if _HOST != "ffffff" else "eeeeee"
    other_host = tmp_path / f".out.gtasr-{host}-{dead}-abcd1234.partial.mkv"  # NFS: another machine's
    users = [tmp_path / ".out.mkv", tmp_path / "out.gtasr-1.mkv", tmp_path / ".gtasr-notes"]
    for p in [stale, running, other_host, *users]:
        p.write_bytes(b"")
    new = temp_beside(tmp_path / "next.mp4", ".partial.mp4")
    left = {p.name for p in tmp_path.iterdir()}
    assert stale.name not in left
    assert {running.name, other_host.name, new.name, *(p.name for p in users)} <= left
