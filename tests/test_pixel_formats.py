"""Every pixel format FFmpeg can hand us converts to the right colours, or is refused in one line.

The path under test is the one frames take: `resolve_layout` (repack when needed) -> `plane_arrays`
-> the pipeline's upload (`transfer.upload`) -> `yuv_to_rgb`.  16-bit samples >= 32768 once came out
negative there (uint16 read as int16), which turned 16-bit PNG, gray10le, gbrp10le, yuv420p16le and
p010le into wrong colours with exit 0.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import run_cli

from gtasr_stream.errors import UserError
from gtasr_stream.transfer import upload
from gtasr_stream.video.color import yuv_to_rgb
from gtasr_stream.video.reader import plane_arrays, resolve_layout

W, H = 32, 16
_yy, _xx = np.mgrid[0:H, 0:W]
# smooth, saturated and bright (the top of the 16-bit range is where the sign bit lives)
PICTURE = np.stack([np.full((H, W), 0.9), 0.1 + 0.8 * _xx / W, 0.3 + 0.4 * _yy / H], -1)  # (H,W,3) in [0,1]
SOURCE = av.VideoFrame.from_ndarray(np.rint(PICTURE * 65535).astype(np.uint16), format="rgb48le")


def ours(frame: av.VideoFrame) -> np.ndarray:
    """(H,W,3) float in 8-bit code values, converted the way the pipeline converts."""
    planar, layout = resolve_layout(frame)
    y, u, v = (upload([p], torch.device("cpu")) for p in plane_arrays(planar, layout.bits))
    return yuv_to_rgb(y, u, v, layout)[0].permute(1, 2, 0).numpy() * 255


def _float_frame(name: str) -> av.VideoFrame:
    """PICTURE in a float format that swscale reads but does not write (EXR, PFM decoders)."""
    dtype = np.dtype(("<" if name.endswith("le") else ">") + ("f2" if "f16" in name else "f4"))
    frame = av.VideoFrame(W, H, name)
    rgba = np.concatenate([PICTURE, np.ones((H, W, 1))], -1).astype(dtype)
    if name.startswith("gbr"):  # planar G, B, R (, A)
        channels = [rgba[..., i] for i in (1, 2, 0, 3)[: len(frame.planes)]]
    else:  # packed RGB(A)
        channels = [rgba[..., : 4 if "rgba" in name else 3].reshape(H, -1)]
    for plane, values in zip(frame.planes, channels, strict=True):
        rows = np.frombuffer(memoryview(plane), dtype=dtype).reshape(plane.height, -1)
        rows[:, : values.shape[1]] = values
    return frame


def _pal8_frame() -> av.VideoFrame:
    """PICTURE quantised to a 256-colour palette (GIF, PNG-8)."""
    frame = av.VideoFrame(W, H, "pal8")
    codes = (np.rint(PICTURE * 15) * 17).astype(np.uint32)  # at most 16 x 16 colours here
    colours, index = np.unique(codes.reshape(-1, 3), axis=0, return_inverse=True)
    assert len(colours) <= 256
    rows = np.frombuffer(memoryview(frame.planes[0]), np.uint8).reshape(H, -1)
    rows[:, :W] = index.reshape(H, W)
    palette = np.frombuffer(memoryview(frame.planes[1]), np.uint32)  # native-endian 0xAARRGGBB
    palette[: len(colours)] = 0xFF000000 | colours[:, 0] << 16 | colours[:, 1] << 8 | colours[:, 2]
    return frame


def _uyyvyy411_frame() -> av.VideoFrame:
    """PICTURE as packed 4:1:1 (U Y Y V Y Y per 4 pixels; DV capture cards)."""
    planar = SOURCE.reformat(format="yuv411p")
    y, u, v = (np.asarray(p) for p in plane_arrays(planar, 8))
    frame = av.VideoFrame(W, H, "uyyvyy411")
    rows = np.frombuffer(memoryview(frame.planes[0]), np.uint8).reshape(H, -1)
    packed = np.stack([u, y[:, 0::4], y[:, 1::4], v, y[:, 2::4], y[:, 3::4]], -1).reshape(H, -1)
    rows[:, : packed.shape[1]] = packed
    return frame


def _constructed() -> dict[str, av.VideoFrame]:
    frames = {"pal8": _pal8_frame(), "uyyvyy411": _uyyvyy411_frame()}
    for name in ("gbrpf16", "gbrapf16", "rgbf16", "rgbaf16", "rgbf32"):
        for endian in ("le", "be"):
            frames[name + endian] = _float_frame(name + endian)
    return frames


# Refused: swscale cannot read them (FFmpeg 8.1), or (Bayer) only nearest-neighbour demosaicing.
REFUSED = (
    "bgr4",
    "rgb4",
    "gray32le",
    "gbrap32le",
    "rgb96le",
    "rgba128le",
    "rgbaf32le",
    "x2rgb10be",
    "y210be",
    "bayer_rggb8",
    "bayer_gbrg16le",
    "yaf32le",
)


def _test_frames() -> dict[str, av.VideoFrame]:
    """PICTURE in every format swscale can write, and in the decoder-only formats built by hand."""
    frames = {}
    for name in sorted(av.video.format.names):
        if name.startswith(("bayer_", "yaf32")) or name in REFUSED:  # yaf32 aborts swscale
            continue
        try:
            frames[name] = SOURCE.reformat(format=name)
        except (av.FFmpegError, OSError, ValueError):
            continue
    return frames | _constructed()


FRAMES = _test_frames()


def _reference(name: str, frame: av.VideoFrame) -> np.ndarray:
    """The input as it should look: PICTURE where the format holds it (8+ bit colour), else what
    swscale itself reads from the frame (grey, 1-bit, 3-3-2 RGB, palette: the format's own loss)."""
    fmt = av.VideoFormat(name)
    colour = [c for c in fmt.components if not c.is_alpha]
    if len(colour) >= 3 and min(c.bits for c in colour) >= 8 and name != "pal8":
        return PICTURE * 255
    return frame.reformat(format="rgb48le", dst_color_range=2).to_ndarray() / 257


def test_the_formats_of_the_issue_are_covered():
    assert {"rgb48be", "gray10le", "gbrp10le", "yuv420p16le", "p010le", "pal8", "rgbaf16le"} <= set(FRAMES)
    assert len(FRAMES) > 200


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_converts_to_the_right_colours(name):
    frame = FRAMES[name]
    err = np.abs(ours(frame) - _reference(name, frame))
    print(f"{name}: mean {err.mean():.2f}, max {err.max():.2f} code values")
    assert err.mean() < 2.0  # 4:2:0 chroma and rounding: 1.1 at most here; the int16 bug: 115


@pytest.mark.parametrize("name", REFUSED)
def test_unreadable_format_is_refused_naming_it(name):
    with pytest.raises(UserError, match=f"'{name}'"):
        resolve_layout(av.VideoFrame(W, H, name))


def test_every_format_converts_or_is_refused():
    """No pixel format ends in anything but planes or a UserError (never an internal error)."""
    for name in sorted(av.video.format.names):
        try:
            frame = av.VideoFrame(W, H, name)
        except (av.FFmpegError, OSError, ValueError):  # hardware surfaces: downloaded before us
            continue
        try:
            planar, layout = resolve_layout(frame)
        except UserError as e:
            assert name in str(e)
            continue
        assert len(plane_arrays(planar, layout.bits)) == 3, name


def _still(path: Path, frame: av.VideoFrame, codec: str, container: str | None = None) -> Path:
    """`frame` as a one-frame file."""
    with av.open(str(path), "w", format=container) as out:
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = W, H, frame.format.name
        out.mux(s.encode(frame) + s.encode(None))
    return path


def _output_rgb(path: Path) -> np.ndarray:
    """The first frame of `path` shrunk back to W x H, as 8-bit code values."""
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
    return frame.reformat(format="rgb48le", width=W, height=H, interpolation="AREA").to_ndarray() / 257


@pytest.mark.parametrize(
    ("name", "pix_fmt", "codec", "container"),
    [
        ("in16.png", "rgb48be", "png", "image2"),  # a 16-bit PNG
        ("in.mkv", "yuv420p16le", "ffv1", None),
        ("in.mkv", "gray16le", "ffv1", None),
    ],
)
def test_deep_input_end_to_end(tmp_path, tiny_weights, name, pix_fmt, codec, container):
    src = _still(tmp_path / name, FRAMES[pix_fmt], codec, container)
    out = tmp_path / "out.mkv"
    r = run_cli(src, out, "--weights", tiny_weights, "-c", "ffv1", "-q")
    assert r.returncode == 0, r.stderr.decode()
    err = np.abs(_output_rgb(out) - _reference(pix_fmt, FRAMES[pix_fmt]))
    print(f"{pix_fmt} through the model: mean {err.mean():.2f} code values")
    assert err.mean() < 4.0  # the random-weight test model moves colours by about 1


def test_refused_format_end_to_end(tmp_path, tiny_weights):
    bayer = av.VideoFrame(W, H, "bayer_rggb8")
    np.frombuffer(memoryview(bayer.planes[0]), np.uint8)[:] = 128
    src = _still(tmp_path / "bayer.nut", bayer, "rawvideo")
    out = tmp_path / "out.mkv"
    r = run_cli(src, out, "--weights", tiny_weights)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "bayer_rggb8" in err and str(src) in err
    assert not out.exists() and list(tmp_path.iterdir()) == [src]
