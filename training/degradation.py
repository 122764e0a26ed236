"""Synthetic training pairs: the Real-ESRGAN second-order degradation (METHOD.md "Training data"), a
torch JPEG simulation, and the optional H.264/H.265 codec degradation for video.

Owns: the degradation options (`DegradationConfig`), drawing every random parameter per sample
(`sample_params`), and turning HR crops into 8-bit LR images (`degrade`, `degrade_fixed`,
`codec_degrade`). All randomness comes from the caller's CPU generator, so a seed gives bit-identical
output on CPU; the heavy ops run on the image's device. Kernel formulas are in `kernels.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, get_args

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gtasr_stream.video.color import YUVLayout, rgb_to_yuv, yuv_to_rgb

from .kernels import (
    filter2d,
    gaussian_kernel,
    generalized_gaussian_kernel,
    pad_kernel,
    plateau_kernel,
    pulse_kernel,
    sinc_kernel,
)

KernelKind = Literal["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
KERNEL_KINDS: tuple[KernelKind, ...] = get_args(KernelKind)  # the order of kernel_probs
ResizeMode = Literal["area", "bilinear", "bicubic"]
Codec = Literal["libx264", "libx265"]
VideoCodec = Literal["libx264", "libx265", "mpeg2video", "mpeg4"]
DECODER: dict[str, str] = {"libx264": "h264", "libx265": "hevc", "mpeg2video": "mpeg2video", "mpeg4": "mpeg4"}
CRF_CODECS = ("libx264", "libx265")  # the others take a fixed quantiser (qscale) instead


@dataclass(frozen=True)
class PassConfig:
    """One degradation pass: blur → resize → noise (→ JPEG). Defaults are the first pass's."""

    blur_prob: float = 1.0  # chance that the pass blurs at all
    blur_sigma: tuple[float, float] = (0.2, 3.0)  # σx, σy in pixels
    sinc_prob: float = 0.1  # a sinc kernel instead of a Gaussian-family one
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up / down / keep
    resize_range: tuple[float, float] = (0.15, 1.5)  # 1st pass: × HR size; 2nd: × final LR size
    gaussian_noise_prob: float = 0.5  # else Poisson noise
    noise_range: tuple[float, float] = (1.0, 30.0)  # Gaussian σ on the 0-255 scale
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4  # the same noise on all three channels
    jpeg_range: tuple[int, int] = (30, 95)  # quality, inclusive; the 2nd pass's is the final JPEG's


SECOND_PASS = PassConfig(
    blur_prob=0.8,
    blur_sigma=(0.2, 1.5),
    resize_probs=(0.3, 0.4, 0.3),  # Real-ESRGAN's resize_prob2
    resize_range=(0.3, 1.2),
    noise_range=(1.0, 25.0),
    poisson_scale_range=(0.05, 2.5),
)


@dataclass(frozen=True)
class DegradationConfig:
    """Every number of the pipeline; defaults are Real-ESRGAN's ×4 settings (ResShift's 2nd-pass prob)."""

    scale: int = 4  # HR / LR size ratio
    kernel_size: int = 21  # largest kernel; smaller ones are zero-padded to it
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)  # drawn uniformly per kernel
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # over KERNEL_KINDS, in order
    betag_range: tuple[float, float] = (0.5, 4.0)  # shape β of the generalized Gaussian
    betap_range: tuple[float, float] = (1.0, 2.0)  # shape β of the plateau kernel
    first: PassConfig = PassConfig()  # 1st pass: blur σ [0.2,3], resize ×[0.15,1.5] of HR, noise, JPEG
    second_pass_prob: float = 0.5  # ResShift's second_order_prob; Real-ESRGAN always runs the 2nd pass
    second: PassConfig = SECOND_PASS  # its JPEG is the final one, which always runs
    final_sinc_prob: float = 0.8  # else the identity; cutoff ω ∈ [π/3, π]
    resize_modes: tuple[ResizeMode, ...] = ("area", "bilinear", "bicubic")  # drawn uniformly per resize


# ---------------------------------------------------------------- per-sample random parameters
@dataclass(frozen=True)
class KernelDraw:
    """One blur kernel's random parameters; `kind` "sinc" uses omega only."""

    kind: KernelKind | Literal["sinc"]
    size: int  # odd, before zero-padding to cfg.kernel_size
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    theta: float = 0.0  # rotation in radians, [-π, π]
    beta: float = 1.0  # generalized / plateau shape
    omega: float = 0.0  # sinc cutoff in rad/pixel

    def kernel(self, pad_to: int) -> Tensor:
        """The normalised kernel, zero-padded to (pad_to, pad_to) float64."""
        s, sx, sy, t, b = self.size, self.sigma_x, self.sigma_y, self.theta, self.beta
        if not self.kind.endswith("aniso"):  # isotropic kinds ignore sigma_y and theta
            sy, t = sx, 0.0
        if self.kind == "sinc":
            k = sinc_kernel(s, self.omega)
        elif self.kind in ("iso", "aniso"):
            k = gaussian_kernel(s, sx, sy, t)
        elif self.kind in ("generalized_iso", "generalized_aniso"):
            k = generalized_gaussian_kernel(s, sx, sy, t, b)
        elif self.kind in ("plateau_iso", "plateau_aniso"):
            k = plateau_kernel(s, sx, sy, t, b)
        else:
            raise ValueError(f"kernel kind must be one of {(*KERNEL_KINDS, 'sinc')}, got {self.kind!r}")
        return pad_kernel(k, pad_to)


@dataclass(frozen=True)
class NoiseDraw:
    kind: Literal["gaussian", "poisson"]
    strength: float  # Gaussian σ (0-255 scale) or Poisson scale
    gray: bool  # one noise map for all channels
    seed: int  # seeds the noise field on the image's device


@dataclass(frozen=True)
class PassDraw:
    """One pass's random parameters."""

    blur: KernelDraw | None  # None: this pass does not blur
    resize: float  # scale factor, 1 for "keep"
    resize_mode: ResizeMode
    noise: NoiseDraw
    jpeg: int  # quality


@dataclass(frozen=True)
class SampleParams:
    """Everything random about one sample's degradation."""

    first: PassDraw
    second_pass: bool
    second: PassDraw  # drawn even when unused, so that later draws do not depend on second_pass
    final_sinc: KernelDraw | None  # None: the identity
    final_mode: ResizeMode
    sinc_first: bool  # resize+sinc then JPEG, else JPEG then resize+sinc


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g, dtype=torch.float64))


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * _rand(g)


def _index(g: torch.Generator, probs: Sequence[float]) -> int:
    """An index drawn with the given (unnormalised) probabilities."""
    u, acc = _rand(g) * sum(probs), 0.0
    for i, p in enumerate(probs):
        acc += p
        if u < acc:
            return i
    return len(probs) - 1


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi], both inclusive."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def _draw_kernel(g: torch.Generator, cfg: DegradationConfig, pc: PassConfig) -> KernelDraw:
    """Real-ESRGAN's kernel draw: a random odd size, then sinc or one of the six Gaussian families."""
    size = cfg.kernel_sizes[_randint(g, 0, len(cfg.kernel_sizes) - 1)]
    if _rand(g) < pc.sinc_prob:  # small kernels get a higher cutoff floor, as in Real-ESRGAN
        return KernelDraw("sinc", size, omega=_uniform(g, math.pi / (3 if size < 13 else 5), math.pi))
    kind = KERNEL_KINDS[_index(g, cfg.kernel_probs)]
    sx = _uniform(g, *pc.blur_sigma)
    sy, theta = sx, 0.0
    if kind.endswith("aniso"):
        sy, theta = _uniform(g, *pc.blur_sigma), _uniform(g, -math.pi, math.pi)
    beta = 1.0
    if kind.startswith(("generalized", "plateau")):  # β below or above 1 with equal chance
        lo, hi = cfg.betag_range if kind.startswith("generalized") else cfg.betap_range
        beta = _uniform(g, lo, 1.0) if _rand(g) < 0.5 else _uniform(g, 1.0, hi)
    return KernelDraw(kind, size, sx, sy, theta, beta)


def _draw_pass(g: torch.Generator, cfg: DegradationConfig, pc: PassConfig) -> PassDraw:
    blur = _draw_kernel(g, cfg, pc)
    blurs = _rand(g) < pc.blur_prob
    direction = _index(g, pc.resize_probs)  # 0 up, 1 down, 2 keep
    lo, hi = pc.resize_range
    scale = _uniform(g, 1.0, hi) if direction == 0 else _uniform(g, lo, 1.0) if direction == 1 else 1.0
    mode = cfg.resize_modes[_randint(g, 0, len(cfg.resize_modes) - 1)]
    gaussian = _rand(g) < pc.gaussian_noise_prob
    strength = _uniform(g, *(pc.noise_range if gaussian else pc.poisson_scale_range))
    gray = _rand(g) < pc.gray_noise_prob
    noise = NoiseDraw("gaussian" if gaussian else "poisson", strength, gray, _randint(g, 0, 2**62))
    return PassDraw(blur if blurs else None, scale, mode, noise, _randint(g, *pc.jpeg_range))


def sample_params(cfg: DegradationConfig, generator: torch.Generator, batch: int) -> list[SampleParams]:
    """Draw every random choice of `batch` samples from `generator`, in a fixed order."""
    g, out = generator, []
    for _ in range(batch):
        first = _draw_pass(g, cfg, cfg.first)
        second_pass = _rand(g) < cfg.second_pass_prob
        second = _draw_pass(g, cfg, cfg.second)
        final_sinc = None
        if _rand(g) < cfg.final_sinc_prob:
            size = cfg.kernel_sizes[_randint(g, 0, len(cfg.kernel_sizes) - 1)]
            final_sinc = KernelDraw("sinc", size, omega=_uniform(g, math.pi / 3, math.pi))
        final_mode = cfg.resize_modes[_randint(g, 0, len(cfg.resize_modes) - 1)]
        out.append(SampleParams(first, second_pass, second, final_sinc, final_mode, _rand(g) < 0.5))
    return out


# ---------------------------------------------------------------- operations
def _resize(x: Tensor, size: tuple[int, int], mode: ResizeMode) -> Tensor:
    """(1,3,h,w) → (1,3,*size); sizes below one pixel become one."""
    size = (max(1, size[0]), max(1, size[1]))
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=mode, align_corners=False)
    raise ValueError(f"resize mode must be one of ('area', 'bilinear', 'bicubic'), got {mode!r}")


def add_noise(x: Tensor, noise: NoiseDraw) -> Tensor:
    """Gaussian or Poisson noise as in Real-ESRGAN's *_pt functions; (1,3,h,w) in [0,1] → clipped."""
    gen = torch.Generator(device=x.device)
    gen.manual_seed(noise.seed)
    _, _, h, w = x.shape
    if noise.kind == "gaussian":
        n = torch.randn(1, 1 if noise.gray else 3, h, w, generator=gen, device=x.device, dtype=x.dtype)
        n = n * (noise.strength / 255.0)
    elif noise.kind == "poisson":
        img = x
        if noise.gray:  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
            img = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).clamp(0, 1)
        img = (img * 255).round().clamp(0, 255) / 255  # rates must be non-negative after bicubic overshoot
        vals = 2 ** math.ceil(math.log2(len(torch.unique(img))))  # photon counts grow with distinct levels
        n = (torch.poisson(img * vals, generator=gen) / vals - img) * noise.strength
    else:
        raise ValueError(f"noise kind must be 'gaussian' or 'poisson', got {noise.kind!r}")
    return (x + n).clamp(0, 1)  # a gray map (1,1,h,w) broadcasts over the channels


# Standard IJG tables (JPEG spec Annex K), zig-zag free, row-major.
_LUMA_Q = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]  # fmt: skip
_CHROMA_Q = (
    [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66] + [99] * 38
)


def quant_tables(quality: Tensor) -> tuple[Tensor, Tensor]:
    """IJG quality scaling of the luma/chroma tables: quality (B,) in [1,100] → two (B,8,8) float."""
    q = quality.to(torch.float64).clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q).view(-1, 1, 1)
    tables = []
    for base in (_LUMA_Q, _CHROMA_Q):
        t = torch.tensor(base, dtype=torch.float64, device=q.device).view(1, 8, 8)
        tables.append(torch.floor((t * scale + 50) / 100).clamp(1, 255))
    return tables[0], tables[1]


def _dct_matrix(device: torch.device) -> Tensor:
    """Orthonormal 8-point DCT-II matrix D (coefficients = D @ block @ Dᵀ); (8,8) float32."""
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(device=device, dtype=torch.float32)


def _quantise_plane(p: Tensor, table: Tensor) -> Tensor:
    """(B,H,W) level-shifted plane (H, W multiples of 8) → DCT, quantise, round, dequantise, IDCT."""
    b, h, w = p.shape
    d = _dct_matrix(p.device)
    blocks = p.reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3)  # (B,H/8,W/8,8,8)
    t = table.to(p).view(b, 1, 1, 8, 8)
    coef = torch.round((d @ blocks @ d.T) / t) * t
    return (d.T @ coef @ d).transpose(2, 3).reshape(b, h, w)


def jpeg_compress(x: Tensor, quality: Tensor) -> Tensor:
    """Baseline JPEG round trip, per-sample quality (B,) int/float in [1,100].

    x (B,3,H,W) float in [0,1], any size → (B,3,H,W) float in [0,1] on 8-bit levels. Full-range BT.601
    YCbCr, 4:2:0 by 2x2 averaging, as libjpeg (IJG tables, float DCT) encodes and decodes it.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % 16, -w % 16  # whole 16x16 macroblocks; encoders replicate the edge
    rgb = F.pad(x.clamp(0, 1) * 255, (0, pw, 0, ph), mode="replicate").round()  # (B,3,H',W') in [0,255]
    r, g, bl = rgb.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128
    qy, qc = quant_tables(quality.to(x.device))
    y = _quantise_plane(y - 128, qy) + 128
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2) - 128  # (B,2,H'/2,W'/2)
    chroma = torch.stack([_quantise_plane(c, qc) for c in chroma.unbind(1)], 1)
    # libjpeg's "fancy" upsampling: the 3/4-1/4 triangle filter, i.e. bilinear at half-pixel centres
    cb, cr = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False).unbind(1)
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return (out.round().clamp(0, 255) / 255)[:, :, :h, :w]


# ---------------------------------------------------------------- the pipeline
def degrade(hr: Tensor, cfg: DegradationConfig, generator: torch.Generator) -> Tensor:
    """Real-ESRGAN second-order degradation (its `feed_data`), parameters drawn per sample.

    hr: (B,3,H,W) float in [0,1], H and W multiples of cfg.scale, any device; generator: CPU.
    Returns lq: (B,3,H/s,W/s) float in [0,1] on 8-bit levels k/255, on hr's device.
    """
    h, w = hr.shape[-2:]
    if hr.dim() != 4 or hr.shape[1] != 3 or h % cfg.scale or w % cfg.scale:
        raise ValueError(f"hr must be (B,3,H,W) with H, W multiples of {cfg.scale}, got {tuple(hr.shape)}")
    lh, lw = h // cfg.scale, w // cfg.scale
    params = sample_params(cfg, generator, len(hr))
    k = cfg.kernel_size

    # 1. first blur: one grouped conv for the batch (every sample is still H x W)
    ones = pulse_kernel(k)  # stands in for "no blur"
    kernels = [p.first.blur.kernel(k) if p.first.blur is not None else ones for p in params]
    x = filter2d(hr, torch.stack(kernels).to(hr.device))  # (B,3,H,W)
    out = []
    for i, p in enumerate(params):  # from here each sample has its own size
        # 2. first resize (relative to HR), noise, JPEG
        p1, p2 = p.first, p.second
        xi = _resize(x[i : i + 1], (int(h * p1.resize), int(w * p1.resize)), p1.resize_mode)
        xi = jpeg_compress(add_noise(xi, p1.noise), torch.tensor([p1.jpeg]))
        # 3. second pass: blur, resize relative to the final LR size, noise
        if p.second_pass:
            if p2.blur is not None:
                xi = filter2d(xi, p2.blur.kernel(k).to(xi.device))
            xi = _resize(xi, (int(lh * p2.resize), int(lw * p2.resize)), p2.resize_mode)
            xi = add_noise(xi, p2.noise)
        # 4. final resize + sinc and the final JPEG (the second pass's quality), in random order
        sinc = (p.final_sinc.kernel(k) if p.final_sinc is not None else ones).to(xi.device)
        if p.sinc_first:
            xi = filter2d(_resize(xi, (lh, lw), p.final_mode), sinc)
            xi = jpeg_compress(xi.clamp(0, 1), torch.tensor([p2.jpeg]))
        else:
            xi = jpeg_compress(xi.clamp(0, 1), torch.tensor([p2.jpeg]))
            xi = filter2d(_resize(xi, (lh, lw), p.final_mode), sinc)
        out.append(xi)
    # 5. clamp and round to 8 bits
    return (torch.cat(out) * 255).round().clamp(0, 255) / 255  # (B,3,H/s,W/s) in [0,1]


def degrade_fixed(hr: Tensor, cfg: DegradationConfig, seed: int) -> Tensor:
    """`degrade` with its own generator: the same seed and input give the same LR (evaluation sets)."""
    return degrade(hr, cfg, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- video codecs
# The round trip's RGB <-> yuv420p conversions are gtasr-stream's own (video/color.py), what the
# upscaler's input goes through at run time. swscale's (PyAV's `reformat`, any interpolation) darkened
# every sample: R, G, B by 1.05, 1.40, 1.51 code values on a val photo, with or without an encoder in
# between, and a model trained on that brightened real video by as much (measured +0.9 to +2.0 on the
# real clips against bicubic). These move a channel's mean by a few tenths at most, in either direction
# (where saturated colours clamp), not systematically.
_YUV420 = YUVLayout(bits=8, sub_x=1, sub_y=1, matrix="bt601", range="limited")


def _to_yuv420p(img: np.ndarray) -> av.VideoFrame:
    """(h,w,3) uint8 RGB, h and w even -> a yuv420p frame (BT.601, limited range)."""
    h, w, _ = img.shape
    y, u, v = rgb_to_yuv(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, _YUV420)
    planes = np.concatenate([y.numpy().ravel(), u.numpy().ravel(), v.numpy().ravel()])
    return av.VideoFrame.from_ndarray(planes.reshape(h * 3 // 2, w), format="yuv420p")


def _to_rgb24(frame: av.VideoFrame) -> np.ndarray:
    """A decoded 8-bit 4:2:0 frame -> (h,w,3) uint8 RGB, the inverse of `_to_yuv420p`."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    h, w = frame.height, frame.width
    flat = frame.to_ndarray().ravel()
    q = h * w // 4
    y = torch.from_numpy(flat[: h * w].reshape(1, h, w))
    u = torch.from_numpy(flat[h * w : h * w + q].reshape(1, h // 2, w // 2))
    v = torch.from_numpy(flat[h * w + q : h * w + 2 * q].reshape(1, h // 2, w // 2))
    rgb = yuv_to_rgb(y, u, v, _YUV420)[0].permute(1, 2, 0)
    return (rgb * 255).round_().to(torch.uint8).numpy()


# x264's AVX-512 routines (the x264 inside PyAV's wheels) made its output depend on what was in the
# heap before: the same frames, re-encoded at preset medium, gave 2 bitstreams in 16 encodes in one
# process, 1 with x264's AVX2, SSE4.2 or C code (the same bitstream each time). So the evaluation's
# heavy clips and training's samples changed between runs. On AVX-512 CPUs, which all have AVX2, x264
# gets AVX2 and below; other CPUs keep x264's own detection. torch's query is private, read as
# engines/device.py reads its siblings: a torch without it reads as "no AVX-512".
_HAS_AVX512 = bool(getattr(torch.cpu, "_is_avx512_supported", lambda: False)())
_X264_PARAMS = {"x264-params": "asm=AVX2"} if _HAS_AVX512 else {}


def encode_frames(frames: np.ndarray, codec: VideoCodec, q: int, preset: str = "ultrafast") -> np.ndarray:
    """(T,h,w,3) uint8 frames through one encoder and back, as one clip; h, w even.

    q: CRF (x264/x265) or the fixed quantiser (MPEG-2, MPEG-4 Part 2). Returns (T,h,w,3) uint8.
    """
    t, h, w, _ = frames.shape
    enc = av.CodecContext.create(codec, "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 25), Fraction(25)
    if codec in CRF_CODECS:
        # threads=1: tiny frames gain nothing from threads
        options = {"crf": str(q), "preset": preset, "threads": "1"}
        if codec == "libx264":
            options |= _X264_PARAMS
        if codec == "libx265":
            options["x265-params"] = "log-level=none:pools=1:frame-threads=1"  # one thread, like x264
    else:  # qmin = qmax: a constant quantiser, what `-q:v` does for these encoders
        options = {"qmin": str(q), "qmax": str(q), "threads": "1"}
    enc.options = options
    packets = []
    for i, img in enumerate(frames):
        frame = _to_yuv420p(img)
        frame.pts = i
        packets += enc.encode(frame)
    packets += enc.encode(None)  # flush
    dec = av.CodecContext.create(DECODER[codec], "r")
    assert isinstance(dec, av.VideoCodecContext)
    out = [_to_rgb24(f) for pkt in [*packets, None] for f in dec.decode(pkt)]
    if len(out) != t:
        raise RuntimeError(f"{codec} round trip returned {len(out)} of {t} frames")
    return np.stack(out)


def _codec_round_trip(img: np.ndarray, codec: VideoCodec, q: int, preset: str = "ultrafast") -> np.ndarray:
    """Encode a (h,w,3) uint8 image as a 3-frame clip, decode, return the last frame (a P/B frame).

    The earlier frames are the image shifted by a pixel or two, so the last frame is inter-predicted
    as in real video. h, w even.
    """
    clip = np.stack([np.roll(img, shift, axis=(0, 1)) for shift in (2, 1, 0)])
    return encode_frames(clip, codec, q, preset)[-1]


def codec_round_trip(img: np.ndarray, codec: VideoCodec, q: int, preset: str = "ultrafast") -> np.ndarray:
    """`_codec_round_trip` for any (h,w,3) uint8 size: reflect-padded to what the encoder takes, cropped back."""
    h, w, _ = img.shape
    # yuv420p needs even sizes; libx265 aborts the process on 8-bit frames under ~64 px a side and
    # is not deterministic on them under ~128 px (measured: the same 64x64 input gave 3 outputs in 10)
    floor = 128 if codec == "libx265" else 2
    ph, pw = max(floor, h + h % 2) - h, max(floor, w + w % 2) - w
    padded = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else img
    return _codec_round_trip(padded, codec, q, preset)[:h, :w]


def codec_degrade(
    lq: Tensor,
    generator: torch.Generator,
    codecs: Sequence[Codec] = ("libx264", "libx265"),
    crf: tuple[int, int] = (18, 38),
) -> Tensor:
    """H.264/H.265 compression at a random CRF per sample (METHOD.md: "LR video is compressed video").

    lq: (B,3,h,w) float in [0,1], any size and device; codec and CRF (inclusive range) drawn from the
    CPU generator. Returns (B,3,h,w) float in [0,1] on 8-bit levels, on lq's device.
    """
    for name in codecs:
        if name not in CRF_CODECS:
            raise ValueError(f"codecs must be drawn from {CRF_CODECS}, got {name!r}")
    if not codecs or crf[0] > crf[1]:
        raise ValueError(f"need at least one codec and crf low <= high, got {tuple(codecs)}, {crf}")
    imgs = (
        (lq.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )  # (B,h,w,3)
    out = []
    for img in imgs:
        codec = codecs[_randint(generator, 0, len(codecs) - 1)]
        out.append(codec_round_trip(img, codec, _randint(generator, *crf)))
    return torch.from_numpy(np.stack(out)).to(lq.device).permute(0, 3, 1, 2).float() / 255
