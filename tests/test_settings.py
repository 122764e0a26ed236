"""Encoder settings the encoder refuses are one line naming the flag, before any frame is upscaled."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli
from media import make_clip

from gtasr_stream import EncodeOptions, Upscaler, upscale_video
from gtasr_stream.errors import UserError


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
