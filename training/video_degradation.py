"""The `video` degradation profile: how real low-resolution video is made, for `--degradation video|mix`.

Owns: `VideoDegradationConfig` (every range, with why), `degrade_video` (a batch of HR crops to 8-bit
LR the way a camera, a resampler and an encoder make it), `degrade_profile` (the `--degradation`
dispatch, `mix` per sample) and `VIDEO_STRENGTHS`, the fixed light/medium/heavy settings of
`gtasr-train evaluate`. Kept beside degradation.py (the Real-ESRGAN pipeline, the JPEG simulation and
the codec round trip it reuses) so that neither file grows past one concept.

Why a second profile: the Real-ESRGAN pipeline (noise up to σ 30, JPEG down to 30, blur σ up to 3)
taught the model to smooth, and most video people upscale (DVD, 480p-720p web video, phone clips,
digitised camcorder tapes) is far milder: optics blur, a resampler, a little sensor noise, 4:2:0 and a
codec. All randomness comes from the caller's CPU generator (seeded, reproducible, exact on resume).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .degradation import (
    DegradationConfig,
    NoiseDraw,
    VideoCodec,
    _index,
    _rand,
    _randint,
    _uniform,
    add_noise,
    codec_round_trip,
    degrade,
)
from .kernels import filter2d, gaussian_kernel, pad_kernel

Profile = Literal["video", "realesrgan", "mix"]
PROFILES: tuple[Profile, ...] = ("video", "realesrgan", "mix")
VideoResize = Literal["area", "bilinear", "bicubic", "lanczos"]


@dataclass(frozen=True)
class VideoDegradationConfig:
    """Every range of the `video` profile and why it is there."""

    scale: int = 4
    # Camera optics and focus: lenses, sensor OLPF and slight defocus soften by well under 2 px at the
    # capture size; anything heavier is the `restore` model's job.
    blur_prob: float = 0.8
    blur_sigma: tuple[float, float] = (0.2, 1.5)
    defocus_prob: float = 0.25  # of the blurred samples: a disk (defocus) instead of a Gaussian
    defocus_radius: tuple[float, float] = (0.5, 1.5)  # pixels
    # The resamplers encoders and editors use (ffmpeg's swscale default is bicubic, editors Lanczos,
    # GPUs bilinear/area), all antialiased as they are in those tools; sometimes two steps.
    resize_modes: tuple[VideoResize, ...] = ("area", "bilinear", "bicubic", "lanczos")
    intermediate_prob: float = 0.2  # downscale first to a size between HR and LR, then to LR
    # Sensor noise after downscaling (phone and camcorder footage); often none (clean studio video).
    noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (0.5, 5.0)  # on the 0-255 scale
    gray_noise_prob: float = 0.5  # luma-only noise
    # Codec: most LR video is compressed; H.264/H.265 for web and phones, MPEG-2 for DVD, MPEG-4 Part 2
    # (Xvid/DivX) for old downloads and camcorders. CRF 18-35 spans "transparent" to "web-starved".
    codec_prob: float = 0.9
    codecs: tuple[VideoCodec, ...] = ("libx264", "libx265", "mpeg2video", "mpeg4")
    codec_probs: tuple[float, ...] = (0.5, 0.25, 0.1, 0.15)
    crf: tuple[int, int] = (18, 35)  # libx264/libx265
    qscale: tuple[int, int] = (2, 10)  # mpeg2video/mpeg4 fixed quantiser (DVD-like to poor)
    reencode_prob: float = 0.15  # a second encode, as re-uploads do
    # Without a codec the chroma is still subsampled: video is 4:2:0 whatever the source.
    mix_video_prob: float = 0.8  # `mix`: the share of samples degraded with this profile


VIDEO, REALESRGAN = VideoDegradationConfig(), DegradationConfig()  # the profiles' defaults


@dataclass(frozen=True)
class VideoDraw:
    """Everything random about one sample's `video` degradation."""

    blur_sigma: float  # 0: no blur
    defocus_radius: float  # 0: Gaussian (or no) blur
    intermediate: float  # 0: one resize; else an intermediate scale in (1/scale, 1) of HR
    resize_mode: VideoResize
    noise: NoiseDraw | None
    encodes: tuple[tuple[VideoCodec, int], ...]  # (codec, CRF or qscale), empty: 4:2:0 only


def sample_video_params(cfg: VideoDegradationConfig, g: torch.Generator) -> VideoDraw:
    """Draw one sample's parameters from `g` in a fixed order (every draw happens whatever is used)."""
    blurs, sigma = _rand(g) < cfg.blur_prob, _uniform(g, *cfg.blur_sigma)
    defocus, radius = _rand(g) < cfg.defocus_prob, _uniform(g, *cfg.defocus_radius)
    inter, inter_scale = _rand(g) < cfg.intermediate_prob, _uniform(g, 1 / cfg.scale + 0.1, 0.8)
    mode = cfg.resize_modes[_randint(g, 0, len(cfg.resize_modes) - 1)]
    noisy, noise_sigma, gray, seed = (
        _rand(g) < cfg.noise_prob,
        _uniform(g, *cfg.noise_sigma),
        _rand(g) < cfg.gray_noise_prob,
        _randint(g, 0, 2**62),
    )
    encodes = []
    coded, twice = _rand(g) < cfg.codec_prob, _rand(g) < cfg.reencode_prob
    for _ in range(2):
        codec = cfg.codecs[_index(g, cfg.codec_probs)]
        q = _randint(g, *(cfg.crf if codec in ("libx264", "libx265") else cfg.qscale))
        encodes.append((codec, q))
    return VideoDraw(
        blur_sigma=sigma if blurs else 0.0,
        defocus_radius=radius if blurs and defocus else 0.0,
        intermediate=inter_scale if inter else 0.0,
        resize_mode=mode,
        noise=NoiseDraw("gaussian", noise_sigma, gray, seed) if noisy else None,
        encodes=tuple(encodes[: (2 if twice else 1)]) if coded else (),
    )


def _disk_kernel(radius: float, size: int) -> Tensor:
    """A defocus disk of `radius` px, antialiased by 4x supersampling; (size,size) float64, sums to 1."""
    n = size * 4
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / 4 - size / 2
    inside = (c[None, :] ** 2 + c[:, None] ** 2 <= radius**2).to(torch.float64)
    k = F.avg_pool2d(inside[None, None], 4)[0, 0]
    return k / k.sum()


def _resize_to(x: Tensor, size: tuple[int, int], mode: VideoResize) -> Tensor:
    """(1,3,h,w) float in [0,1] → (1,3,*size), antialiased as the tools that use each filter are."""
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True).clamp(0, 1)
    if mode == "lanczos":
        a = (x[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        up = Image.fromarray(a).resize((size[1], size[0]), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.array(up)).permute(2, 0, 1)[None].to(x).div(255)
    raise ValueError(f"resize mode must be one of ('area', 'bilinear', 'bicubic', 'lanczos'), got {mode!r}")


def chroma_420(x: Tensor) -> Tensor:
    """4:2:0 round trip in limited-range BT.709 YCbCr (what video stores); (B,3,H,W) in [0,1], H, W even."""
    r, g, b = x.unbind(1)
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    cb, cr = (b - y) / 1.8556, (r - y) / 1.5748
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)  # MPEG-2 style co-sited average
    cb, cr = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False).unbind(1)
    r, b = y + 1.5748 * cr, y + 1.8556 * cb
    g = (y - 0.2126 * r - 0.0722 * b) / 0.7152
    return torch.stack([r, g, b], 1).clamp(0, 1)


def apply_video_draw(hr: Tensor, d: VideoDraw, scale: int = 4) -> Tensor:
    """One sample: (1,3,H,W) float in [0,1] → (1,3,H/scale,W/scale) float in [0,1] on 8-bit levels."""
    h, w = hr.shape[-2:]
    x = hr
    if d.blur_sigma > 0:  # optics at capture size
        size = 2 * int(3 * max(d.blur_sigma, d.defocus_radius) + 1) + 1
        k = (
            _disk_kernel(d.defocus_radius, size)
            if d.defocus_radius > 0
            else gaussian_kernel(size, d.blur_sigma, d.blur_sigma, 0.0)
        )
        x = filter2d(x, pad_kernel(k, size)[None].to(x))
    if d.intermediate > 0:
        x = _resize_to(x, (round(h * d.intermediate), round(w * d.intermediate)), d.resize_mode)
    x = _resize_to(x, (h // scale, w // scale), d.resize_mode)
    if d.noise is not None:
        x = add_noise(x, d.noise)
    x = (x * 255).round().clamp(0, 255) / 255
    if not d.encodes:
        lh, lw = x.shape[-2:]
        padded = F.pad(x, (0, lw % 2, 0, lh % 2), mode="replicate")
        return (chroma_420(padded)[..., :lh, :lw] * 255).round() / 255
    img = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()  # (h,w,3)
    for codec, q in d.encodes:
        img = codec_round_trip(img, codec, q, preset="medium")  # what encoders default to
    return torch.from_numpy(img).permute(2, 0, 1)[None].to(hr).div(255)


def degrade_video(hr: Tensor, cfg: VideoDegradationConfig, generator: torch.Generator) -> Tensor:
    """The `video` profile on a batch. hr: (B,3,H,W) float in [0,1], H, W multiples of cfg.scale.

    Returns (B,3,H/s,W/s) float in [0,1] on 8-bit levels, on hr's device; parameters from `generator`.
    """
    h, w = hr.shape[-2:]
    if hr.dim() != 4 or hr.shape[1] != 3 or h % cfg.scale or w % cfg.scale:
        raise ValueError(f"hr must be (B,3,H,W) with H, W multiples of {cfg.scale}, got {tuple(hr.shape)}")
    draws = [sample_video_params(cfg, generator) for _ in range(len(hr))]
    return torch.cat([apply_video_draw(hr[i : i + 1], d, cfg.scale) for i, d in enumerate(draws)])


def degrade_profile(
    hr: Tensor,
    profile: Profile,
    generator: torch.Generator,
    video: VideoDegradationConfig = VIDEO,
    realesrgan: DegradationConfig = REALESRGAN,
) -> Tensor:
    """`--degradation`: video, realesrgan, or mix (each sample video with prob video.mix_video_prob)."""
    if profile == "video":
        return degrade_video(hr, video, generator)
    if profile == "realesrgan":
        return degrade(hr, realesrgan, generator)
    if profile == "mix":
        picks = [_rand(generator) < video.mix_video_prob for _ in range(len(hr))]
        out = torch.empty(len(hr), 3, hr.shape[-2] // video.scale, hr.shape[-1] // video.scale).to(hr)
        idx_v = [i for i, v in enumerate(picks) if v]
        idx_r = [i for i, v in enumerate(picks) if not v]
        if idx_v:
            out[idx_v] = degrade_video(hr[idx_v], video, generator)
        if idx_r:
            out[idx_r] = degrade(hr[idx_r], realesrgan, generator)
        return out
    raise ValueError(f"--degradation must be one of {PROFILES}, got {profile!r}")


# Fixed settings of `gtasr-train evaluate`'s video rows (the same for every method and run). Medium is
# "a 540p web clip": mild optics, bicubic, light noise, H.264 CRF 26.
VIDEO_STRENGTHS: dict[str, VideoDraw] = {
    "light": VideoDraw(0.5, 0.0, 0.0, "bicubic", None, (("libx264", 20),)),
    "medium": VideoDraw(1.0, 0.0, 0.0, "bicubic", NoiseDraw("gaussian", 2.0, False, 0), (("libx264", 26),)),
    "heavy": VideoDraw(
        1.5, 0.0, 0.0, "area", NoiseDraw("gaussian", 5.0, False, 0), (("libx264", 32), ("libx264", 28))
    ),
}
