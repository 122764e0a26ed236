"""The shipped models as a user picks them: -n/--model video|restore, the --denoise blend and --sharpen, end to end,
and the flag combinations that make no sense (one line, exit 1)."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from conftest import run_cli
from media import make_clip

from gtasr_stream import weights


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory: pytest.TempPathFactory):
    return make_clip(tmp_path_factory.mktemp("models") / "in.mp4", frames=2).path


def frames(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)


def test_model_and_denoise_pick_what_they_say(tmp_path, small_clip):
    """--model restore differs from the default (video); --denoise 0 is the video model exactly,
    --denoise 1 the restore model exactly (lossless output, so equal files mean equal outputs)."""
    runs = {}
    for name, flags in {
        "default": [],
        "video": ["-n", "video"],
        "restore": ["--model", "restore"],
        "d0": ["--denoise", "0"],
        "d1": ["--denoise", "1"],
        "d05": ["--denoise", "0.5"],
        "sharpen_own": ["--sharpen", weights.load_weights(weights.model_weights("video"))[1]["sharpen"]],
        "sharpen_0": ["--sharpen", "0"],
    }.items():
        out = tmp_path / f"{name}.mkv"
        r = run_cli(small_clip, out, *flags, "-c", "ffv1", "-q")
        assert r.returncode == 0, r.stderr.decode()
        runs[name] = frames(out)
    assert np.array_equal(runs["default"], runs["video"]) and np.array_equal(runs["d0"], runs["video"])
    assert np.array_equal(runs["d1"], runs["restore"])
    assert not np.array_equal(runs["video"], runs["restore"])
    # the video model's output sharpening is its metadata's; --sharpen 0 turns it off
    assert (
        np.array_equal(runs["sharpen_own"], runs["default"]) and float(weights.load_net()[1]["sharpen"]) > 0
    )
    assert not np.array_equal(runs["sharpen_0"], runs["default"])
    mid = runs["d05"]
    assert not np.array_equal(mid, runs["video"]) and not np.array_equal(mid, runs["restore"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--weights", "W", "--model", "video"], "--weights names a file: leave out --model and --denoise"),
        (["--model", "restore", "--denoise", "0.3"], "--denoise blends the video and restore models"),
    ],
)
def test_conflicting_model_flags_are_one_line(tmp_path, small_clip, tiny_weights, flags, message):
    flags = [str(tiny_weights) if f == "W" else f for f in flags]
    r = run_cli(small_clip, tmp_path / "out.mp4", *flags)
    err = r.stderr.decode()
    assert r.returncode == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out.mp4").exists()


def test_denoise_out_of_range_is_a_usage_error(tmp_path, small_clip):
    r = run_cli(small_clip, tmp_path / "out.mp4", "--denoise", "1.5")
    assert r.returncode == 2 and "--denoise" in r.stderr.decode()


def test_load_net_defaults_to_the_video_model():
    net, meta = weights.load_net()
    ref, _ = weights.load_weights(weights.model_weights("video"))
    assert all(
        torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values(), strict=True)
    )
    assert meta["noise"] == "none"
