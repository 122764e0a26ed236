"""`gtasr-stream` as a user runs it: every bad input gives one line, a non-zero exit, no file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import torch
from conftest import REPO, run_cli, sigint_as_in_a_shell
from media import make_clip, write_audio_only, write_garbage, write_no_frames, write_truncated
from safetensors.torch import save_file


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mp4", frames=6, audio=True).path


def one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("gtasr-stream: error: ")
    return lines[0]


def test_upscales_and_reports(tmp_path, clip, tiny_weights):
    out = tmp_path / "out.mp4"
    r = run_cli(clip, out, "--weights", tiny_weights, "--batch", "2")
    assert r.returncode == 0, r.stderr.decode()
    assert "wrote 6 frames at 256x192" in r.stderr.decode()
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_quiet_prints_nothing(tmp_path, clip, tiny_weights):
    r = run_cli(clip, tmp_path / "out.mkv", "--weights", tiny_weights, "-q")
    assert r.returncode == 0 and r.stderr == b"" and r.stdout == b""


def test_pipes_stdin_to_stdout(tmp_path, tiny_weights):
    src = make_clip(tmp_path / "in.mkv", frames=5, audio=True)
    r = run_cli("-", "-", "--weights", tiny_weights, "-q", stdin=src.path.read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    (tmp_path / "piped.mkv").write_bytes(r.stdout)
    with av.open(str(tmp_path / "piped.mkv")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert sum(1 for _ in c.decode(video=0)) == 5


def test_benchmark_reports_stages(clip, tiny_weights):
    r = run_cli(clip, "--benchmark", "--weights", tiny_weights)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert all(stage in err for stage in ("decode", "upscale", "encode", "<- slowest"))


def _cases(tmp: Path, clip: Path, weights: Path) -> list[tuple[list[str | Path], str]]:
    """(arguments, expected part of the message) for each bad input."""
    bad_weights = tmp / "wrong.safetensors"
    save_file(
        {"x": torch.zeros(1)},
        str(bad_weights),
        metadata={"format": "gtasr-stream", "preset": "tiny", "format_version": "1"},
    )
    existing = tmp / "exists.mp4"
    existing.write_bytes(b"keep me")
    return [
        ([tmp / "missing.mp4", tmp / "o1.mp4"], "does not exist"),
        ([tmp, tmp / "o2.mp4"], "is a folder: OUT must be a folder"),
        ([write_garbage(tmp / "garbage.mp4"), tmp / "o3.mp4"], "cannot be read as a video"),
        ([write_truncated(tmp / "trunc.mp4", clip), tmp / "o4.mp4"], "cannot be read as a video"),
        ([write_audio_only(tmp / "audio.m4a"), tmp / "o5.mp4"], "has no video stream"),
        ([write_no_frames(tmp / "empty.mkv"), tmp / "o6.mp4"], "no decodable video frames"),
        ([clip, clip], "is the input file"),
        ([clip, existing], "-y/--overwrite"),
        ([clip, tmp / "nodir" / "o7.mp4"], "does not exist"),
        ([clip, tmp / "o8.mp4", "-c", "nosuchcodec"], "unknown encoder 'nosuchcodec'"),
        ([clip, tmp / "o9.mp4", "-c", "aac"], "not a video encoder"),
        ([clip, tmp / "o10.unknownext"], "-f/--format"),
        ([clip, tmp / "o11.mp4", "--crf", "10", "-c", "ffv1"], "--crf"),
        ([clip, tmp / "o12.mp4", "--pix-fmt", "rgb24"], "--pix-fmt"),
        ([clip, tmp / "o13.mp4", "-s", "40"], "-s/--outscale"),
        ([clip, tmp / "o14.mp4", "--device", "cuda:7"], "--device"),
        ([clip, tmp / "o15.mp4", "--weights", bad_weights], "wrong.safetensors"),
        ([clip, tmp / "o16.mp4", "--weights", clip], "not a readable safetensors file"),
        ([clip, tmp / "o17.mp4", "--weights", tmp / "none.safetensors"], "none.safetensors"),
    ]


def test_bad_inputs(tmp_path, clip, tiny_weights):
    for args, expected in _cases(tmp_path, clip, tiny_weights):
        if "--weights" not in args:
            args = [*args, "--weights", tiny_weights]
        before = set(os.listdir(tmp_path))
        r = run_cli(*args)
        line = one_error_line(r)
        print(line)
        assert r.returncode == 1, line
        assert expected in line, line
        assert set(os.listdir(tmp_path)) == before  # no partial or temporary file anywhere
    assert (tmp_path / "exists.mp4").read_bytes() == b"keep me"


def test_huge_size_refused(tmp_path, tiny_weights):
    big = make_clip(tmp_path / "big.mkv", width=2200, height=2100, frames=1, codec="ffv1")  # -> 8800x8400
    r = run_cli(big.path, tmp_path / "o.mkv", "--weights", tiny_weights)
    assert r.returncode == 1 and "larger than 8192x8192" in one_error_line(r)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_input(tmp_path, clip, tiny_weights):
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(clip.read_bytes())
    locked.chmod(0)
    r = run_cli(locked, tmp_path / "o.mp4", "--weights", tiny_weights)
    assert r.returncode == 1 and "not readable" in one_error_line(r)


def test_usage_errors_exit_2(clip):
    r = run_cli(clip)  # no OUT
    assert r.returncode == 2 and b"missing OUT" in r.stderr
    r = run_cli(clip, "o.mp4", "-e", "novalue")
    assert r.returncode == 2 and b"key=value" in r.stderr


def test_ctrl_c_stops_cleanly(tmp_path, tiny_weights):
    src = make_clip(tmp_path / "long.mkv", frames=400, width=96, height=64, codec="ffv1", pix_fmt="yuv444p")
    out = tmp_path / "out.mkv"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gtasr_stream",
            str(src.path),
            str(out),
            "--weights",
            str(tiny_weights),
            "-b",
            "1",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        cwd=REPO,
        preexec_fn=sigint_as_in_a_shell,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".out.") for p in tmp_path.iterdir()):
        time.sleep(0.05)  # wait until it is writing
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode() and b"Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mkv"]
