"""YUV <-> RGB on the device, with each frame's own matrix and range (pure torch, no `av`).

The decoder hands over planes exactly as FFmpeg stores them (Y full size, U/V possibly subsampled,
8 to 16 bits); converting here keeps the colour maths in one auditable place, runs on the GPU when
there is one, and never guesses a matrix silently: the caller passes the one it resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

# Luma coefficients (Kr, Kb) per matrix, from ITU-R BT.601/709/2020 and SMPTE 240M; FCC for old NTSC.
MATRICES: dict[str, tuple[float, float]] = {
    "bt709": (0.2126, 0.0722),
    "bt601": (0.299, 0.114),
    "bt2020": (0.2627, 0.0593),
    "smpte240m": (0.212, 0.087),
    "fcc": (0.30, 0.11),
}
Matrix = Literal["bt709", "bt601", "bt2020", "smpte240m", "fcc"]
Range = Literal["limited", "full"]


@dataclass(frozen=True)
class YUVLayout:
    """How the YUV planes of a stream are laid out."""

    bits: int  # bits per sample (8, 10, 12, 16)
    sub_x: int  # chroma subsampling shift along width (1 for 4:2:0 and 4:2:2, 0 for 4:4:4, 2 for 4:1:1)
    sub_y: int  # chroma subsampling shift along height (1 for 4:2:0, 2 for 4:1:0)
    matrix: Matrix
    range: Range


def _scales(layout: YUVLayout) -> tuple[float, float, float]:
    """(luma offset, luma span, chroma span) in code values for the layout's bit depth."""
    k = float(1 << (layout.bits - 8))
    if layout.range == "limited":  # Y in [16, 235], C in [16, 240] at 8 bits, scaled by 2^(bits-8)
        return 16.0 * k, 219.0 * k, 224.0 * k
    top = float((1 << layout.bits) - 1)
    return 0.0, top, top


def _coefficients(matrix: Matrix) -> tuple[float, float, float]:
    """(Kr, Kb, Kg) of a matrix; raises for an unknown name."""
    if matrix not in MATRICES:
        raise ValueError(f"matrix must be one of {sorted(MATRICES)}, got {matrix!r}")
    kr, kb = MATRICES[matrix]
    return kr, kb, 1.0 - kr - kb


def codes(t: torch.Tensor) -> torch.Tensor:
    """Integer code values as float32.  int16 carries uint16 samples bit for bit (numpy's uint16
    viewed as int16 uploads without a copy), so it is read as unsigned: 16-bit samples >= 32768
    would otherwise turn negative."""
    if t.dtype == torch.int16:
        return t.to(torch.int32).bitwise_and_(0xFFFF).float()
    return t.float()


def yuv_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, layout: YUVLayout) -> torch.Tensor:
    """Planes -> RGB.

    y: (B,H,W), u/v: (B,ceil(H/2^sub_y),ceil(W/2^sub_x)), integer code values: uint8, or int16
    holding uint16 samples (see `codes`)
    returns (B,3,H,W) float32 in [0,1] on the planes' device.
    """
    kr, kb, kg = _coefficients(layout.matrix)
    off, yspan, cspan = _scales(layout)
    mid = float(1 << (layout.bits - 1))
    h, w = y.shape[-2:]
    yf = (codes(y) - off) / yspan
    uv = torch.stack([codes(u), codes(v)], dim=1)  # (B,2,h',w')
    if layout.sub_x or layout.sub_y:
        # Chroma siting is left/centre for MPEG-2-style 4:2:0; bilinear is what players do.
        uv = F.interpolate(uv, scale_factor=(2**layout.sub_y, 2**layout.sub_x), mode="bilinear")
        uv = uv[..., :h, :w]
    cb, cr = ((uv - mid) / cspan).unbind(1)
    r = yf + 2 * (1 - kr) * cr
    b = yf + 2 * (1 - kb) * cb
    g = (yf - kr * r - kb * b) / kg
    return torch.stack([r, g, b], dim=1).clamp_(0, 1)


def rgb_to_yuv(rgb: torch.Tensor, layout: YUVLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB -> planes, the exact inverse of `yuv_to_rgb` up to rounding.

    rgb: (B,3,H,W) float in [0,1]; H and W must be multiples of the subsampling.
    returns y (B,H,W), u/v (B,H>>sub_y,W>>sub_x) as code values: uint8 for 8 bits, else int16 holding
    the uint16 samples bit for bit (see `codes`).
    """
    kr, kb, kg = _coefficients(layout.matrix)
    off, yspan, cspan = _scales(layout)
    mid = float(1 << (layout.bits - 1))
    r, g, b = rgb.float().unbind(1)
    yl = kr * r + kg * g + kb * b
    cb = (b - yl) / (2 * (1 - kb))
    cr = (r - yl) / (2 * (1 - kr))
    c = torch.stack([cb, cr], dim=1)
    if layout.sub_x or layout.sub_y:  # average each 2x2 (or 2x1) block: the usual encoder filter
        c = F.avg_pool2d(c, kernel_size=(2**layout.sub_y, 2**layout.sub_x))
    top = float((1 << layout.bits) - 1)
    yq = (yl * yspan + off).round_().clamp_(0, top)
    cq = (c * cspan + mid).round_().clamp_(0, top)
    if layout.bits == 8:
        return yq.to(torch.uint8), cq[:, 0].to(torch.uint8), cq[:, 1].to(torch.uint8)
    # int16 holding uint16 bit patterns (as `codes` reads them): through int32, so 16-bit values wrap
    y16, c16 = yq.to(torch.int32).to(torch.int16), cq.to(torch.int32).to(torch.int16)
    return y16, c16[:, 0], c16[:, 1]
