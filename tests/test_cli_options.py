"""The model flags are defined once and read by every command: each one given on the command line
arrives in the Upscaler's keyword arguments, for `upscale` and for `preview` alike (no model is run:
the Upscaler is replaced by a recorder)."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

from gtasr_stream.cli import main
from gtasr_stream.errors import UserError

# every model flag with a value that is not its default, and what the Upscaler must receive
FLAGS = [
    "--weights",
    "w.safetensors",
    "-n",
    "restore",
    "--denoise",
    "0.25",
    "-d",
    "cpu",
    "--bf16",
    "-t",
    "64",
    "--tile-pad",
    "8",
    "--noise",
    "fresh",
    "--sharpen",
    "0.3",
    "--seed",
    "7",
    "--backend",
    "onnx",
    "--onnx",
    "g.onnx",
    "--pt2",
    "p.pt2",
]
EXPECTED = {
    "weights": "w.safetensors",
    "model_name": "restore",
    "denoise": 0.25,
    "device": "cpu",
    "precision": "bf16",
    "tile": 64,
    "tile_pad": 8,
    "noise": "fresh",
    "sharpen": 0.3,
    "seed": 7,
    "backend": "onnx",
    "onnx": "g.onnx",
    "pt2": "p.pt2",
}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_upscaler(**kwargs: Any) -> Any:
        kwargs.pop("on_warning")
        calls.append(kwargs)
        raise UserError("recorded")  # stops the command before any work, as a bad flag would

    monkeypatch.setattr("gtasr_stream.engines.upscaler.Upscaler", fake_upscaler)
    return calls


def test_upscale_passes_every_model_flag(recorded: list[dict[str, Any]]) -> None:
    r = CliRunner().invoke(main, ["in.mp4", "out.mp4", *FLAGS, "-b", "3"])
    assert r.exit_code == 1 and "recorded" in r.output, r.output
    assert recorded == [{**EXPECTED, "batch": 3}]


def test_preview_passes_every_model_flag(
    recorded: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    class FakePreview:
        def __init__(self, opts: Any, make_upscaler: Any, warn: Any) -> None:
            self.make_upscaler = make_upscaler

        def start(self) -> None:
            self.make_upscaler()

        def close(self) -> None:
            pass

    monkeypatch.setattr("gtasr_stream.preview.session.Preview", FakePreview)
    r = CliRunner().invoke(main, ["preview", "lavfi:testsrc2", *FLAGS])
    assert r.exit_code == 1 and "recorded" in r.output, r.output
    assert recorded == [{**EXPECTED, "batch": 1}]  # the preview runs one frame per call


def test_precision_defaults_to_auto(recorded: list[dict[str, Any]]) -> None:
    CliRunner().invoke(main, ["in.mp4", "out.mp4"])
    assert recorded[0]["precision"] == "auto" and recorded[0]["batch"] == 4


def test_shared_flags_are_the_same_in_both_commands() -> None:
    """One definition: the flags both commands have agree in names, default and help."""

    def flags(cmd: click.Command) -> dict[tuple[str, ...], tuple[Any, ...]]:
        return {
            tuple(p.opts): (p.name, p.default, getattr(p, "help", None))
            for p in cmd.params
            if isinstance(p, click.Option)
        }

    up, pre = flags(main.commands["upscale"]), flags(main.commands["preview"])
    shared = set(up) & set(pre)
    assert len(shared) >= 10, sorted(shared)  # the model flags (and -y), not an accident of names
    assert {k for k in shared if up[k] != pre[k]} == {("-y", "--overwrite")}  # help names OUT vs --record
    assert ("-b", "--batch") in up and ("-b", "--batch") not in pre
