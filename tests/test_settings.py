"""Encoder settings the encoder refuses are one line naming the flag, before any frame is upscaled."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import run_cli
from media import make_clip

from gtasr_stream import EncodeOptions, Upscaler, upscale_video
from gtasr_stream.errors import UserError
from gtasr_stream.video.color import YUVLayout
from gtasr_stream.video.reader import VideoInfo
from gtasr_stream.video.realtime import realtime_threads
from gtasr_stream.video.writer import Sink


class CountingUpscaler(Upscaler):
    calls = 0

    def __call__(self, *args, **kwargs):
        type(self).calls += 1
        return super().__call__(*args, **kwargs)


@pytest.fixture(scope="module")
def upscaler(tiny_weights: Path) -> CountingUpscaler:
    return CountingUpscaler(weights=tiny_weights, device="cpu", batch=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mkv", width=32, height=24, frames=3).path


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (EncodeOptions(crf=float("nan")), "--crf nan: libx264 takes 0 to 51"),
        (EncodeOptions(crf=70), "--crf 70: libx264 takes 0 to 51"),
        (EncodeOptions(codec="libsvtav1", crf=0), "--crf 0: libsvtav1 takes 1 to 63"),
        (EncodeOptions(preset="nosuch"), "libx264 cannot start with --preset nosuch"),
        (EncodeOptions(options={"crf": "abc"}), "libx264 cannot start with -e crf=abc"),
        (
            EncodeOptions(options={"nosuchoption": "1"}),
            "-e nosuchoption: libx264 has no option 'nosuchoption'",
        ),
    ],
)
def test_bad_encoder_setting_names_the_flag_before_any_work(tmp_path, clip, upscaler, opts, message):
    out = tmp_path / "out.mkv"
    before = CountingUpscaler.calls
    with pytest.raises(UserError) as e:
        upscale_video(str(clip), str(out), upscaler, opts)
    assert str(e.value).startswith(message)
    assert CountingUpscaler.calls == before  # refused before the model ran
    assert list(tmp_path.iterdir()) == []


def test_good_settings_and_generic_options_pass(tmp_path, clip, upscaler):
    opts = EncodeOptions(crf=23, preset="veryfast", options={"g": "12", "bf": "0"})
    assert upscale_video(str(clip), str(tmp_path / "out.mkv"), upscaler, opts).encoded == 3


def test_quiet_svt_av1_prints_nothing(tmp_path, clip, tiny_weights):
    r = run_cli(clip, tmp_path / "out.mkv", "--weights", tiny_weights, "-c", "libsvtav1", "-q")
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()


def test_seed_beyond_64_bits_is_a_usage_error(tmp_path, clip, tiny_weights):
    r = run_cli(clip, tmp_path / "out.mkv", "--weights", tiny_weights, "--seed", str(2**70))
    assert r.returncode == 2 and b"--seed" in r.stderr and b"Traceback" not in r.stderr, r.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_bad_preset_is_one_line_on_the_command_line(tmp_path, clip, tiny_weights):
    """x264 printed its own 'x264 [error]: invalid preset' above our line; now our line says it."""
    r = run_cli(clip, tmp_path / "out.mkv", "--weights", tiny_weights, "--preset", "nosuch")
    lines = [line for line in r.stderr.decode().splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr.decode()
    assert lines[0] == (
        "gtasr-stream: error: libx264 cannot start with --preset nosuch "
        "(x264 [error]: invalid preset 'nosuch'); check the values"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    not hasattr(os, "sched_getscheduler") or os.geteuid() != 0,
    reason="SVT-AV1 switches to real time only for root, on Linux",
)
def test_av1_run_by_root_leaves_every_thread_as_it_was(tmp_path):
    """SVT-AV1 opened by root made the thread that opened it SCHED_FIFO 99 (the main one, which checks
    the settings; then the encode thread), with its own threads and every thread started after: the
    upscale thread's OpenMP team spun at real-time priority, and on two cores the suite hung."""
    h, w = 64, 64
    info = VideoInfo(w, h, Fraction(1, 25), Fraction(25), None, 8, 1, 1, 2, 2, None)
    planes = (np.full((h, w), 100, np.uint8), np.full((h // 2, w // 2), 128, np.uint8))
    try:
        sink = Sink(
            str(tmp_path / "o.mkv"), EncodeOptions(codec="libsvtav1"), info, [], 0, (h, w), False, print
        )
        after_check = realtime_threads()
        sink.start(YUVLayout(8, 1, 1, "bt709", "limited"), 0)
        for i in range(3):
            sink.write((planes[0], planes[1], planes[1]), i)
        while_open = realtime_threads()  # the encoder and its threads are open
        sink.close()
    finally:
        for t in realtime_threads():  # a failure here must not leave later tests real-time
            os.sched_setscheduler(t, os.SCHED_OTHER, os.sched_param(0))
    assert after_check == [] and while_open == [], (after_check, while_open)
    with av.open(str(tmp_path / "o.mkv")) as c:
        assert len(list(c.decode(video=0))) == 3  # and the file is whole
