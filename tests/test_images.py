"""Images in and out: the encoder follows OUT's extension, colours survive, a video gives one frame."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import run_cli
from media import make_clip

from gtasr_stream import Upscaler, upscale_video
from gtasr_stream.model import upsample_lq


def write_png(path: Path, width: int = 40, height: int = 24) -> np.ndarray:
    """A smooth colourful RGB image (saturated corners: a wrong matrix or range shows); returns it."""
    g = torch.Generator().manual_seed(0)
    rgb = torch.nn.functional.interpolate(
        torch.rand(1, 3, 3, 4, generator=g), size=(height, width), mode="bilinear"
    )
    a = (rgb[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with av.open(str(path), "w") as out:
        s = out.add_stream("png")
        s.width, s.height, s.pix_fmt = width, height, "rgb24"
        out.mux(s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        out.mux(s.encode(None))
    return a


def decode_rgb(path: Path) -> tuple[str, list[np.ndarray]]:
    with av.open(str(path)) as c:
        name = c.streams.video[0].codec_context.name
        return name, [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def bicubic(tiny_weights: Path) -> Upscaler:
    """The network replaced by bicubic: the output is the input, 4x, so colours can be compared."""
    up = Upscaler(weights=tiny_weights, device="cpu", noise="none")
    up.step = lambda lq, eps: upsample_lq(lq)  # type: ignore[method-assign]
    return up


@pytest.mark.parametrize(
    ("ext", "decoder", "tolerance"), [("png", "png", 2.0), ("jpg", "mjpeg", 4.0), ("webp", "webp", 4.0)]
)
def test_image_out_picks_the_image_encoder_and_keeps_colours(tmp_path, bicubic, ext, decoder, tolerance):
    src = write_png(tmp_path / "frame.png")
    dst = tmp_path / f"frame_x4.{ext}"
    stats = upscale_video(str(tmp_path / "frame.png"), str(dst), bicubic)
    name, frames = decode_rgb(dst)
    assert (name, len(frames), frames[0].shape, stats.encoded) == (decoder, 1, (96, 160, 3), 1)
    diff = np.abs(frames[0].reshape(24, 4, 40, 4, 3).mean(axis=(1, 3)) - src)
    print(
        f"{ext}: mean abs difference to the input {diff.mean():.2f} code values, per channel {diff.mean(axis=(0, 1))}"
    )
    assert diff.mean() < tolerance  # a wrong range or matrix shifts the saturated colours by 5-20 codes
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_video_to_image_writes_the_first_frame_and_says_so(tmp_path, bicubic):
    clip = make_clip(tmp_path / "in.mp4", frames=5, audio=True, pix_fmt="yuv444p")
    warnings: list[str] = []
    stats = upscale_video(str(clip.path), str(tmp_path / "first.png"), bicubic, on_warning=warnings.append)
    _, frames = decode_rgb(tmp_path / "first.png")
    _, src = decode_rgb(clip.path)
    small = frames[0].reshape(48, 4, 64, 4, 3).mean(axis=(1, 3))
    dists = [float(np.abs(small - s).mean()) for s in src]
    print(f"distance of the image to each input frame: {dists}")
    assert stats.encoded == 1 and int(np.argmin(dists)) == 0
    assert warnings == [
        f"output '{tmp_path / 'first.png'}' is an image: it holds the first frame of '{clip.path}' only"
    ]


def test_cli_png_to_png(tmp_path, tiny_weights):
    """What a user types first to judge the quality on one frame (it used to fail about libx264)."""
    write_png(tmp_path / "frame.png")
    r = run_cli(tmp_path / "frame.png", tmp_path / "frame_x4.png", "--weights", tiny_weights)
    assert r.returncode == 0, r.stderr.decode()
    assert decode_rgb(tmp_path / "frame_x4.png")[1][0].shape == (96, 160, 3)
