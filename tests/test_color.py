"""Device-side YUV <-> RGB against its own inverse and against FFmpeg's swscale."""

import av
import numpy as np
import pytest
import torch

from gtasr_stream.video.color import MATRICES, YUVLayout, rgb_to_yuv, yuv_to_rgb
from gtasr_stream.video.reader import AVCOL_OF_MATRIX, AVCOL_RANGE, plane_arrays, resolve_layout


@pytest.mark.parametrize("matrix", sorted(MATRICES))
@pytest.mark.parametrize("rng", ["limited", "full"])
@pytest.mark.parametrize(("bits", "sub"), [(8, (0, 0)), (10, (0, 0)), (8, (1, 1)), (10, (1, 0))])
def test_round_trip(matrix, rng, bits, sub):
    layout = YUVLayout(bits=bits, sub_x=sub[0], sub_y=sub[1], matrix=matrix, range=rng)
    g = torch.Generator().manual_seed(0)
    # smooth content, so that chroma subsampling loses little
    rgb = torch.nn.functional.interpolate(torch.rand(2, 3, 3, 3, generator=g), size=(32, 48), mode="bilinear")
    y, u, v = rgb_to_yuv(rgb, layout)
    assert y.shape == (2, 32, 48) and u.shape == (2, 32 >> sub[1], 48 >> sub[0])
    back = yuv_to_rgb(y, u, v, layout)
    err = (back - rgb).abs()
    print(f"round-trip error: max {err.max():.4f}, mean {err.mean():.5f}")
    if sub == (0, 0):  # quantisation alone: about one code step through the matrix
        assert err.max() < (0.012 if bits == 8 else 0.004)
    else:  # subsampling also loses colour detail at the kinks of the bilinear test pattern
        assert err.max() < 0.08 and err.mean() < 0.006


@pytest.mark.parametrize(("matrix", "rng"), [("bt709", "limited"), ("bt601", "limited"), ("bt709", "full")])
def test_matches_swscale(matrix, rng):
    """Our yuv444p -> RGB equals FFmpeg's own conversion with the same matrix and range."""
    rs = np.random.default_rng(1)
    frame = av.VideoFrame(32, 16, "yuv444p")
    for p in frame.planes:
        a = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)
        a[:, : p.width] = rs.integers(40, 200, size=(p.height, p.width))
    frame.colorspace = AVCOL_OF_MATRIX[matrix] if matrix != "bt601" else 5
    frame.color_range = AVCOL_RANGE[rng]
    ref = frame.reformat(
        format="rgb24", src_colorspace=frame.colorspace, src_color_range=frame.color_range, dst_color_range=2
    ).to_ndarray()
    frame, layout = resolve_layout(frame)
    assert (layout.matrix, layout.range) == (matrix, rng)
    planes = [torch.from_numpy(np.ascontiguousarray(p))[None] for p in plane_arrays(frame, 8)]
    ours = yuv_to_rgb(*planes, layout)[0].permute(1, 2, 0).numpy() * 255
    diff = np.abs(ours - ref.astype(np.float32))
    print(f"vs swscale: max {diff.max():.2f}, mean {diff.mean():.3f} code values")
    assert diff.max() <= 2.0 and diff.mean() < 0.6


def test_unspecified_matrix_follows_player_convention():
    sd, hd = av.VideoFrame(720, 576, "yuv420p"), av.VideoFrame(1280, 720, "yuv420p")
    assert resolve_layout(sd)[1].matrix == "bt601"
    assert resolve_layout(hd)[1].matrix == "bt709"
    assert resolve_layout(av.VideoFrame(64, 64, "yuvj420p"))[1].range == "full"


def test_packed_input_is_repacked_to_planar():
    frame = av.VideoFrame(20, 10, "nv12")
    planar, layout = resolve_layout(frame)
    assert planar.format.name == "yuv444p" and layout.bits == 8
    frame = av.VideoFrame(20, 10, "rgb24")
    planar, layout = resolve_layout(frame)
    assert (layout.matrix, layout.range) == ("bt709", "full")
