"""Progress: a rate from the recent frames, what is happening before the first frame, plain lines off a terminal."""

from __future__ import annotations

import io

from conftest import run_cli
from media import make_clip
from rich.console import Console

from gtasr_stream.pipeline import Stats
from gtasr_stream.progress import RecentRate, Reporter


def test_eta_follows_the_recent_rate_not_the_start_up():
    """20 s to the first batch of 4, then 4 frames every 2 s (2 fps): 60 frames left take 30 s.

    The average since the start (40 frames in 38 s, 1.05 fps) would say 57 s."""
    r = RecentRate(window=20.0)
    t, done = 20.0, 4
    while done < 40:
        r.add(t, done)
        r.add(t + 1.0, done)  # polled between bursts: no new sample
        t, done = t + 2.0, done + 4
    r.add(t, done)
    assert r.rate() == 2.0
    assert r.eta(100, now=t) == 30.0
    assert r.eta(100, now=t + 1.0) == 29.0  # counts down between bursts
    for _ in range(10):  # the machine slows to 1 fps: within one window the rate follows
        t, done = t + 4.0, done + 4
        r.add(t, done)
    assert r.rate() == 1.0


def test_plain_lines_every_few_seconds_off_a_terminal():
    buf = io.StringIO()
    now = [0.0]
    rep = Reporter(
        Console(file=buf, force_terminal=False, width=200), quiet=False, every=5.0, clock=lambda: now[0]
    )
    rep.set_phase("loading the model")
    s = Stats(total=100)
    for second in range(0, 31):
        now[0] = float(second)
        s.elapsed = float(second)
        s.decoded = min(100, 2 * second)
        s.encoded = 4 * (second // 2) if second >= 4 else 0
        rep.update(s)
    lines = buf.getvalue().splitlines()
    print("\n".join(lines))
    # Off a terminal the phases before the first decoded frame are not printed: an error there must
    # remain the only line (on a terminal the bar shows them and vanishes before the error).
    assert lines[:2] == [
        "gtasr-stream: upscaling the first batch (the first model call is the slowest)",
        "gtasr-stream: upscaling",
    ]
    progress = lines[2:]
    assert len(progress) == 6  # seconds 4, 9, 14, 19, 24, 29: one line per 5 s, not per update
    assert progress[-1] == "gtasr-stream: 56/100 frames, 2.00 fps, 0:29 elapsed, about 0:21 left"


def test_quiet_prints_nothing():
    buf = io.StringIO()
    rep = Reporter(Console(file=buf, force_terminal=False), quiet=True)
    rep.set_phase("loading the model")
    rep.update(Stats(total=3, decoded=3, encoded=3))
    assert buf.getvalue() == ""


def test_cli_says_what_it_does_when_stderr_is_a_file(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "in.mp4", frames=3)
    r = run_cli(clip.path, tmp_path / "out.mkv", "--weights", tiny_weights)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    # "upscaling the first batch" or, when the first update already follows an encoded frame (a fast,
    # idle machine: the phase is skipped), "upscaling": either way the file says what is happening
    for line in ("gtasr-stream: upscaling", "gtasr-stream: 3/3 frames"):
        assert line in err
