"""SIGTERM (timeout, systemd, docker stop) stops a run as Ctrl-C does: nothing half-written is left."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import pytest
from conftest import REPO
from media import make_clip


def _gtasr(*args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gtasr_stream", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )


def test_sigterm_stops_upscale_and_removes_the_partial_file(tmp_path, tiny_weights):
    src = make_clip(tmp_path / "long.mkv", frames=400, width=96, height=64, codec="ffv1", pix_fmt="yuv444p")
    proc = _gtasr(src.path, tmp_path / "out.mkv", "--weights", tiny_weights, "-b", "1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.name.startswith(".out.") for p in tmp_path.iterdir()):
        time.sleep(0.05)  # wait until it is writing
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()  # 128 + SIGTERM, not killed by the signal (-15)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert lines == ["gtasr-stream: terminated; nothing was written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mkv"]


def test_sigterm_finishes_the_preview_recording(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "five.mp4", width=32, height=24, frames=5, rate=25).path
    out = tmp_path / "rec.mkv"
    proc = _gtasr(
        "preview", clip, "--weights", tiny_weights, "--record", out, "--port", "0", "--device", "cpu"
    )
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline().decode() if sel.select(timeout=90) else ""
        url = re.search(r"(http://\S+/)", line)
        assert url, line
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url.group(1) + "stats", timeout=30) as r:
                if json.loads(r.read())["frames"]["upscaled"] >= 3:
                    break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err.decode()
    assert "preview stopped" in err.decode() and "Traceback" not in err.decode()
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 3
    assert not [f for f in os.listdir(tmp_path) if "partial" in f]


def test_a_stop_while_the_workers_start_removes_the_partial_file(tmp_path, tiny_weights, monkeypatch):
    """SIGTERM landing while the pipeline starts its threads (the partial file already open) was an
    'internal error: cannot join thread before it is started' that left the file behind."""
    import threading

    from gtasr_stream import Upscaler
    from gtasr_stream.pipeline import upscale_video
    from gtasr_stream.signals import Terminated

    src = make_clip(tmp_path / "in.mkv", frames=4, width=32, height=24, codec="ffv1", pix_fmt="yuv444p").path
    started = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        started.append(self.name)
        if len(started) == 2:  # the signal arrives after the decoder started, before the upscaler
            raise Terminated
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    up = Upscaler(weights=tiny_weights, device="cpu", batch=1)
    with pytest.raises(Terminated):  # the stop itself, not an error raised while cleaning up after it
        upscale_video(str(src), str(tmp_path / "out.mkv"), up)
    assert started[:2] == ["gtasr-decode", "gtasr-upscale"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


@pytest.mark.parametrize("where", ["open", "image_encoder"])
def test_a_stop_while_the_output_opens_removes_the_partial_file(tmp_path, monkeypatch, where):
    """The partial file exists from before the muxer opens it; a stop inside av.open only removed it
    for FFmpeg's own errors and left it beside OUT."""
    from fractions import Fraction

    from gtasr_stream import EncodeOptions
    from gtasr_stream.signals import Terminated
    from gtasr_stream.video import writer
    from gtasr_stream.video.reader import VideoInfo

    def stop(*args: object, **kwargs: object) -> None:
        assert len(list(tmp_path.iterdir())) == 1  # the partial file, as the stop lands
        raise Terminated

    monkeypatch.setattr(writer.av if where == "open" else writer, where, stop)
    info = VideoInfo(64, 64, Fraction(1, 25), Fraction(25), None, 8, 1, 1, 2, 2, None)
    with pytest.raises(Terminated):
        writer.Sink(str(tmp_path / "o.mkv"), EncodeOptions(), info, [], 0, (64, 64), False, print)
    assert list(tmp_path.iterdir()) == []
