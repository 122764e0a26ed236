"""OUT that is not a plain new file: a device node, a FIFO, a symlink, a file that appears meanwhile.

The atomic write renames a finished temporary file onto OUT.  That rename must never replace a
device node (as root, `/dev/null` became a regular file) or a FIFO, never replace a symlink with a
file, and never replace, without -y, a file that someone else created at OUT during the run.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
from pathlib import Path

import av
import pytest
from media import make_clip

from gtasr_stream import EncodeOptions, Upscaler, upscale_video
from gtasr_stream.errors import UserError


@pytest.fixture(scope="module")
def upscaler(tiny_weights: Path) -> Upscaler:
    return Upscaler(weights=tiny_weights, device="cpu", batch=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mkv", width=32, height=24, frames=3).path


def frames_in(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as c:
        return sum(1 for _ in c.decode(video=0))


def _mknod(path: Path, kind: int, major: int, minor: int) -> Path:
    try:
        os.mknod(path, kind | 0o666, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    return path


@pytest.mark.parametrize("overwrite", [True, False])
def test_device_node_is_written_in_place(tmp_path, clip, upscaler, overwrite):
    """A character device (1,3 = /dev/null, made in tmp_path so a failure cannot break the system's)."""
    null = _mknod(tmp_path / "null.mkv", stat.S_IFCHR, 1, 3)
    upscale_video(str(clip), str(null), upscaler, overwrite=overwrite)
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null.mkv"]  # no temporary left either


@pytest.mark.skipif(os.geteuid() == 0, reason="as root the test above covers it without risking /dev/null")
def test_dev_null_stays_a_device(clip, upscaler):
    before = os.stat("/dev/null")
    upscale_video(
        str(clip), "/dev/null", upscaler, EncodeOptions(container_format="matroska"), overwrite=True
    )
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_fifo_is_streamed_into(tmp_path, clip, upscaler, ext):
    fifo = tmp_path / f"out.{ext}"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        upscale_video(str(clip), str(fifo), upscaler)
    finally:
        reader.join(timeout=5)
        if reader.is_alive():  # the writer never opened it: let the reader see an end of file
            with contextlib.suppress(OSError):  # ENXIO: the reader closed the pipe meanwhile
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert frames_in(got[0]) == 3  # MP4 fragmented: a pipe cannot seek back to write the index
    assert sorted(p.name for p in tmp_path.iterdir()) == [fifo.name]


def test_symlink_keeps_pointing_at_the_new_file(tmp_path, clip, upscaler):
    real = tmp_path / "real.mkv"
    real.write_bytes(b"old")
    link = tmp_path / "link.mkv"
    link.symlink_to(real)
    upscale_video(str(clip), str(link), upscaler, overwrite=True)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert frames_in(real.read_bytes()) == 3


def test_block_device_is_refused(tmp_path, clip, upscaler):
    disk = _mknod(tmp_path / "disk", stat.S_IFBLK, 7, 250)
    with pytest.raises(UserError, match="block device"):
        upscale_video(str(clip), str(disk), upscaler, overwrite=True)
    assert stat.S_ISBLK(os.stat(disk).st_mode)


@pytest.mark.parametrize("overwrite", [False, True])
def test_file_appearing_at_out_during_the_run(tmp_path, clip, upscaler, overwrite):
    out = tmp_path / "out.mkv"

    def someone_else_writes(stats) -> None:
        if stats.encoded and not out.exists():
            out.write_bytes(b"theirs")

    if overwrite:
        upscale_video(str(clip), str(out), upscaler, overwrite=True, on_progress=someone_else_writes)
        assert frames_in(out.read_bytes()) == 3
        return
    with pytest.raises(UserError, match="appeared while") as e:
        upscale_video(str(clip), str(out), upscaler, on_progress=someone_else_writes)
    assert out.read_bytes() == b"theirs"
    kept = tmp_path / "out.gtasr-1.mkv"  # the finished work is not thrown away either
    assert str(kept) in str(e.value) and frames_in(kept.read_bytes()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gtasr-1.mkv", "out.mkv"]
