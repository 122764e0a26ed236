"""The GTASR network F(x, c_noise, lq): an EDM DDPM++-style U-Net with Swin window attention and an
upsampling head (METHOD.md, "Network"), plus its named size presets.

This file owns the architecture only; the consistency wrapper (c_skip/c_out, eta) is in
`consistency.py`.

Measured by `python -m gtasr_stream.model` (or `.model.network`) (parameters; MACs of convolutions, linears and
attention matmuls counted by torch's FlopCounterMode at a 64x64 LR input and scaled by pixel count,
which is exact: every layer, windowed attention included, is linear in pixels; the padding of 540
to the LR multiple is not counted). GFLOP = 2 x GMAC. The paper preset matches METHOD.md: 171.5 M
parameters, 0.61 TMAC at 128x128 LR, about 19 TMAC at 960x540.

| preset | parameters | GMAC / 960x540 | GFLOP / 960x540 | GMAC / 128x128 | LR multiple |
|--------|-----------:|---------------:|----------------:|---------------:|------------:|
| paper  |   171.52 M |        19392.8 |         38785.7 |          612.9 |          64 |
| small  |     9.69 M |          482.5 |           965.1 |           15.3 |          64 |
| tiny   |     0.48 M |           75.0 |           150.1 |            2.4 |          32 |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCALE = 4  # the super-resolution factor: HR = 4 x LR
SKIP_SCALE = math.sqrt(0.5)  # EDM: residual sums are scaled to keep unit variance
HeadUpsample = Literal["nearest", "bilinear"]
HEAD_UPSAMPLES: tuple[HeadUpsample, ...] = ("nearest", "bilinear")


@dataclass(frozen=True)
class NetConfig:
    """Sizes of one GTASRNet. Levels are indexed 0 (LR resolution) .. len(channel_mult)-1."""

    base_channels: int  # channels at level 0; level l has base_channels * channel_mult[l]
    channel_mult: tuple[int, ...]  # one multiplier per level; each level after the first halves H, W
    enc_blocks: int  # residual blocks per encoder level; the decoder has enc_blocks+1 (EDM SongUNet)
    bottleneck_blocks: int  # residual blocks at the coarsest level between encoder and decoder
    attn_levels: tuple[int, ...]  # levels whose blocks get a Swin wrapper (paper: all levels)
    attn_channels: int  # width inside the Swin wrapper (C -> attn_channels -> C); paper 192
    attn_heads: int  # heads of window attention; head dim = attn_channels / attn_heads
    window: int  # Swin window side in pixels of that level (no shifted windows)
    mlp_ratio: float  # Swin MLP hidden width / attn_channels
    emb_channels: int  # width of the time embedding added in every block (paper 4 x 192)
    noise_channels: int  # sinusoidal features of c_noise before the embedding MLP
    head_channels: int  # width of the upsampling head; it runs at 2x and 4x LR size, so it
    # dominates compute in small presets
    dropout: float  # dropout before the 2nd conv of each residual block (train mode only)
    groups: int  # GroupNorm groups, clamped per layer so it divides the channels (narrow presets)
    bicubic_residual: bool = False  # F = bicubic x4 of lq + head: a global residual (paper: none).
    # Our video presets use it: a small net then starts at bicubic (last conv zero-initialised) and
    # only learns the detail, which it does in far fewer steps (README "Decisions").
    head_upsample: HeadUpsample = "nearest"  # the head's two x2 steps (paper:
    # nearest). Nearest turns each LR feature into a 2x2 then 4x4 block that the head's few 3x3 convs
    # only partly smooth: wherever features vary (a gradient, noise, codec blocks) the output keeps a
    # faint 4-pixel grid. Bilinear's tent has no such step (it nulls the block's image at the new
    # Nyquist), so our video presets use it: on the real clips it cut the residual's local per-phase
    # bias about 3x with the same weights (README "Decisions").
    grid_notch: int = 0  # 0: off. k > 0 (odd): GridNotch(k) on the head's output, k the side of its box
    # in blocks of 4x4 LR pixels (see there); our video presets use 3. Only with bicubic_residual,
    # where the head's output is the detail alone.

    @property
    def multiple(self) -> int:
        """LR height and width must be multiples of this: every down step halves, and windows tile."""
        downs = 2 ** (len(self.channel_mult) - 1)
        return downs * (self.window if self.attn_levels else 1)


PRESETS: dict[str, NetConfig] = {
    # The published 171.5 M-parameter network (METHOD.md "Network").
    "paper": NetConfig(
        base_channels=192,
        channel_mult=(1, 2, 2, 2),
        enc_blocks=4,
        bottleneck_blocks=2,
        attn_levels=(0, 1, 2, 3),
        attn_channels=192,
        attn_heads=6,
        window=8,
        mlp_ratio=4.0,
        emb_channels=768,
        noise_channels=192,
        head_channels=192,
        dropout=0.13,
        groups=32,
    ),
    # Quality video preset: same family, attention only at the two coarsest levels.
    "small": NetConfig(
        base_channels=32,
        channel_mult=(1, 2, 4, 4),
        enc_blocks=2,
        bottleneck_blocks=2,
        attn_levels=(2, 3),
        attn_channels=128,
        attn_heads=4,
        window=8,
        mlp_ratio=4.0,
        emb_channels=256,
        noise_channels=64,
        head_channels=32,
        dropout=0.0,  # small nets underfit rather than overfit
        groups=32,
        bicubic_residual=True,
        head_upsample="bilinear",
        grid_notch=3,
    ),
    # Real-time preset: trainable on a laptop CPU in minutes, 960x540 -> 4K in real time on an H100.
    "tiny": NetConfig(
        base_channels=16,
        channel_mult=(1, 2, 2),
        enc_blocks=1,
        bottleneck_blocks=1,
        attn_levels=(2,),
        attn_channels=64,
        attn_heads=2,
        window=8,
        mlp_ratio=2.0,
        emb_channels=128,
        noise_channels=32,
        head_channels=16,
        dropout=0.0,
        groups=32,
        bicubic_residual=True,
        head_upsample="bilinear",
        grid_notch=3,
    ),
}


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm(eps 1e-6) with at most `groups` groups of >= 4 channels that divide `channels`."""
    g = math.gcd(min(groups, max(channels // 4, 1)), channels)
    return nn.GroupNorm(g, channels, eps=1e-6)


def timestep_features(c_noise: Tensor, channels: int, max_positions: float = 1e4) -> Tensor:
    """Sinusoidal features of c_noise (EDM PositionalEmbedding, endpoint=True): (B,) -> (B, channels)."""
    half = channels // 2
    freqs = torch.arange(half, dtype=torch.float32, device=c_noise.device) / (half - 1)
    freqs = (1.0 / max_positions) ** freqs  # (half,) from 1 down to 1/max_positions
    angles = c_noise.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """EDM UNetBlock (DDPM++): GN-SiLU-conv, + Linear(emb), GN-SiLU-dropout-conv, scaled skip."""

    def __init__(self, cin: int, cout: int, cfg: NetConfig, resample: Literal["none", "down", "up"]) -> None:
        super().__init__()
        self.resample = resample
        self.norm0 = group_norm(cin, cfg.groups)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(cfg.emb_channels, cout)
        self.norm1 = group_norm(cout, cfg.groups)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv1.weight)  # each block starts close to its skip path (EDM: 1e-5)
        # 1x1 projection where channels change or the block resamples (EDM resample_proj=True)
        needs_skip = cin != cout or resample != "none"
        self.skip = nn.Conv2d(cin, cout, 1) if needs_skip else None

    def _resample(self, x: Tensor) -> Tensor:
        # A [1,1] resample filter is a 2x2 average down and a nearest-neighbour x2 up.
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        # x (B,cin,H,W) -> (B,cout,H',W'); emb (B,E), or None where conv0's bias already holds
        # affine(emb) (onestep.py: eta is fixed there)
        h = self.conv0(self._resample(F.silu(self.norm0(x))))
        if emb is not None:
            h = h + self.affine(emb)[:, :, None, None]  # time embedding added, not scale/shift
        h = self.conv1(self.dropout(F.silu(self.norm1(h))))
        orig = self._resample(x)
        skip = self.skip(orig) if self.skip is not None else orig
        return (h + skip) * SKIP_SCALE


def window_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d) + bias) v: q, k, v (B, heads, N, d), bias (heads, N, N) -> (B, heads, N, d).

    SDPA, except on the CPU: there SDPA with a float mask is 7x slower than two batched matmuls
    (540 windows of 64 tokens in bf16: 45 against 6 ms), the mask check alone costing more."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    b, heads, n, d = q.shape
    a = torch.baddbmm(bias.repeat(b, 1, 1), q.flatten(0, 1), k.flatten(0, 1).transpose(1, 2), alpha=d**-0.5)
    return torch.bmm(a.softmax(-1), v.flatten(0, 1)).view(b, heads, n, d)


class SwinBlock(nn.Module):
    """One Swin Transformer block on (B,C,H,W): window MSA with relative position bias, then MLP,
    both pre-norm residual; GroupNorm instead of LayerNorm; no shifted windows."""

    rel_index: Tensor  # (N, N) long: row of rel_bias for each query/key pair of a window

    def __init__(self, dim: int, cfg: NetConfig) -> None:
        super().__init__()
        assert dim % cfg.attn_heads == 0
        self.heads, self.window = cfg.attn_heads, cfg.window
        w = cfg.window
        self.norm1 = group_norm(dim, cfg.groups)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_bias = nn.Parameter(torch.randn((2 * w - 1) ** 2, self.heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij"))
        coords = coords.flatten(1)  # (2, N) with N = w*w
        rel = coords[:, :, None] - coords[:, None, :] + (w - 1)  # (2, N, N) in [0, 2w-2]
        index = rel[0] * (2 * w - 1) + rel[1]  # (N, N) into rel_bias
        self.register_buffer("rel_index", index, persistent=False)
        self.norm2 = group_norm(dim, cfg.groups)
        hidden = int(dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape  # (B,C,H,W), H and W multiples of the window
        win, nh, nw = self.window, h // self.window, w // self.window
        n, hd = win * win, c // self.heads
        t = self.norm1(x).reshape(b, c, nh, win, nw, win)
        t = t.permute(0, 2, 4, 3, 5, 1).reshape(b * nh * nw, n, c)  # (B*nW, N, C) windows
        qkv = self.qkv(t).reshape(-1, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B*nW, heads, N, hd)
        bias = self.rel_bias[self.rel_index].permute(2, 0, 1).to(q.dtype)  # (heads, N, N)
        a = window_attention(q, k, v, bias)  # (B*nW, heads, N, hd)
        a = self.proj(a.transpose(1, 2).reshape(-1, n, c))  # (B*nW, N, C)
        a = a.reshape(b, nh, nw, win, win, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)
        x = x + a
        m = self.norm2(x).permute(0, 2, 3, 1)  # (B,H,W,C)
        m = self.fc2(F.gelu(self.fc1(m))).permute(0, 3, 1, 2)  # (B,C,H,W)
        return x + m


class SwinWrapper(nn.Module):
    """Swin attention at any width C: 1x1 C->A, Swin block at width A, 1x1 A->C, 3x3 conv, + input.

    Reading of METHOD.md's "wrapped by 1x1 convs C->192->C plus a 3x3 conv residual": the 3x3
    conv (C->C) closes the branch and the wrapper's input is added back (SwinIR's RSTB pattern,
    out = x + conv3x3(proj_out(swin(proj_in(x))))). It gives 171.52 M parameters and 0.613 TMAC at
    128x128 for the paper preset, matching METHOD.md; a 3x3 conv at width A instead gives 155.6 M,
    none 148.6 M. (A 3x3 conv on the input added to the branch would count the same; we keep the
    identity skip so that each wrapper starts as the identity.)
    """

    def __init__(self, channels: int, cfg: NetConfig) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(channels, cfg.attn_channels, 1)
        self.block = SwinBlock(cfg.attn_channels, cfg)
        self.proj_out = nn.Conv2d(cfg.attn_channels, channels, 1)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        for p in self.conv.parameters():
            nn.init.zeros_(p)  # the wrapper starts as the identity

    def forward(self, x: Tensor) -> Tensor:
        # (B,C,H,W) -> (B,C,H,W)
        return x + self.conv(self.proj_out(self.block(self.proj_in(x))))


def _pad_linear(x: Tensor, n: int, dim: int) -> Tensor:
    """Pad n on both ends of dim (2 or 3) by odd reflection, 2 * edge - mirror: a linear trend
    continues exactly (an even mirror or a clamp would bend it at the border)."""
    pads = (0, 0, n, n) if dim == 2 else (n, n, 0, 0)
    mirror = F.pad(x, pads, mode="reflect")
    size = x.shape[dim]
    lo = 2 * x.narrow(dim, 0, 1) - mirror.narrow(dim, 0, n)
    hi = 2 * x.narrow(dim, size - 1, 1) - mirror.narrow(dim, size + n, n)
    return torch.cat([lo, x, hi], dim)


class GridNotch(nn.Module):
    """Removes what of the detail is locked to the LR pixel grid: its spectrum near the harmonics
    of a 4-pixel period (u/4, v/4 cycles per pixel, not both 0), kept elsewhere.

    HR content at exactly those frequencies aliases onto the LR's DC, so the LR says nothing about
    it: output there is grid, never recovered detail (bicubic has nulls there). A learned head leaves
    some, biases per 4x4 phase that change slowly over the frame, far below a code value on real
    clips yet what metrics.periodicity sees.

    How: the mean of each of the 16 phases over blocks of 4x4 LR pixels, smoothed over k x k blocks
    (a box twice: a triangle, low sidelobes), is what the frame has at every harmonic and at DC. What
    smooth content would give each phase (the 1 2 2 2 1 filter across phases, which has nulls at the
    harmonics, with the neighbouring LR pixel's phases taken from the local slope) is kept; the rest,
    interpolated back to every LR pixel, is subtracted. Linear; exact on linear gradients, borders
    included; all of a 4-pixel grid goes; a few tenths of a percent of white detail's power. Works on
    16x-smaller tensors but for four passes over the detail. Runs in float32 under autocast: bf16
    would round the subtraction of near-equal sums to visible noise.
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def _box(self, x: Tensor, dim: int) -> Tensor:
        """Mean over k along dim (2 or 3), the same size out: linear trends continue at the border.
        Sums of shifted views (avg_pool2d is several times slower on these small planes)."""
        x = _pad_linear(x, self.k // 2, dim)
        n = x.shape[dim] - self.k + 1
        total = x.narrow(dim, 0, n)
        for i in range(1, self.k):
            total = total + x.narrow(dim, i, n)
        return total / self.k

    @staticmethod
    def _smooth_part(m: Tensor, dim: int) -> Tensor:
        """m (B,C,4,4,Y,X): phase means; the 1 2 2 2 1 / 8 filter across the 4 phases of axis dim
        (2: rows, 3: columns), phases past the block taken from the next block's by the slope."""
        space, n = dim + 2, m.shape[dim + 2]
        d = m.narrow(space, 1, n - 1) - m.narrow(space, 0, n - 1)  # change from block to block
        mid = (d.narrow(space, 0, n - 2) + d.narrow(space, 1, n - 2)) / 2
        step = torch.cat([d.narrow(space, 0, 1), mid, d.narrow(space, n - 2, 1)], space) / 4  # per LR pixel
        ext = torch.cat([(m - step).narrow(dim, 2, 2), m, (m + step).narrow(dim, 0, 2)], dim)  # phases -2..5
        s = ext.narrow(dim, 1, 4) + ext.narrow(dim, 2, 4) + ext.narrow(dim, 3, 4)
        return (2 * s + ext.narrow(dim, 0, 4) + ext.narrow(dim, 4, 4)) / 8

    def grid(self, m: Tensor, channels_last: bool = False) -> Tensor:
        """The grid at every LR pixel from the phase means per block of 4x4 LR pixels:
        (B,C,4,4,Y,X) -> (B,C,4,4,4Y,4X), phase (row, column) first; channels_last: the phases
        innermost in memory (the CPU interpolates 3x faster so)."""
        b, c, _, _, y, x = m.shape
        m = self._box(self._box(self._box(self._box(m.reshape(b, c * 16, y, x), 2), 2), 3), 3)
        m = m.reshape(b, c, 4, 4, y, x)
        grid = m - self._smooth_part(self._smooth_part(m, 3), 2)  # (B,C,4,4,Y,X)
        grid = grid.reshape(b, c * 16, y, x)
        if channels_last:
            grid = grid.contiguous(memory_format=torch.channels_last)
        grid = F.interpolate(grid, size=(4 * y, 4 * x), mode="bilinear", align_corners=False)
        return grid.view(b, c, 4, 4, 4 * y, 4 * x)

    def _notch(self, r: Tensor) -> Tensor:
        b, c, h, w = r.shape  # h, w multiples of 16: blocks of 4 LR pixels of 4 phases
        y, x = h // 16, w // 16
        m = r.reshape(b, c, y, 4, 4, x, 4, 4).mean((3, 6))  # (B,C,Y,4,X,4): phase means per block
        grid = self.grid(m.permute(0, 1, 3, 5, 2, 4))
        # r - pixel_shuffle(grid) in one pass: the phases as views of r
        grid = grid.permute(0, 1, 4, 2, 5, 3)
        return (r.reshape(b, c, h // 4, 4, w // 4, 4) - grid).reshape(b, c, h, w)

    def forward(self, r: Tensor) -> Tensor:
        # r (B,C,H,W), H and W multiples of 16 -> same shape (float32 under autocast)
        device = r.device.type  # "meta" too (the benchmarks size memory on meta tensors): no autocast there
        if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return self._notch(r.float())
        return self._notch(r)


class UNetBlock(nn.Module):
    """A residual block, optionally followed by a Swin wrapper."""

    def __init__(
        self,
        cin: int,
        cout: int,
        cfg: NetConfig,
        resample: Literal["none", "down", "up"] = "none",
        attention: bool = False,
    ) -> None:
        super().__init__()
        self.resample = resample
        self.res = ResBlock(cin, cout, cfg, resample)
        self.attn = SwinWrapper(cout, cfg) if attention else None

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class GTASRNet(nn.Module):
    """F(x, c_noise, lq): HR-size x and LR lq in, raw HR-size output (METHOD.md "Network")."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        levels = len(cfg.channel_mult)
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        self.map0 = nn.Linear(cfg.noise_channels, cfg.emb_channels)
        self.map1 = nn.Linear(cfg.emb_channels, cfg.emb_channels)
        in_channels = 3 * SCALE * SCALE + 3  # PixelUnshuffle(4)(x) and lq: 51
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)

        # Encoder; every output (and conv_in's) is a skip for the decoder.
        self.enc = nn.ModuleList()
        skips, c = [widths[0]], widths[0]
        for level in range(levels):
            if level > 0:
                self.enc.append(UNetBlock(c, c, cfg, resample="down"))
                skips.append(c)
            for _ in range(cfg.enc_blocks):
                attn = level in cfg.attn_levels
                self.enc.append(UNetBlock(c, widths[level], cfg, attention=attn))
                c = widths[level]
                skips.append(c)

        # Bottleneck at the coarsest level; only its first block has attention (EDM "in0").
        self.mid = nn.ModuleList(
            UNetBlock(c, c, cfg, attention=(i == 0 and levels - 1 in cfg.attn_levels))
            for i in range(cfg.bottleneck_blocks)
        )

        # Decoder: enc_blocks+1 blocks per level, each eating one skip; attention on the last.
        self.dec = nn.ModuleList()
        for level in reversed(range(levels)):
            if level < levels - 1:
                self.dec.append(UNetBlock(c, c, cfg, resample="up"))
            for i in range(cfg.enc_blocks + 1):
                attn = i == cfg.enc_blocks and level in cfg.attn_levels
                self.dec.append(UNetBlock(c + skips.pop(), widths[level], cfg, attention=attn))
                c = widths[level]
        assert not skips

        # Head at LR size, then two x2 steps to HR. The GroupNorm is followed by SiLU as
        # in EDM's output layers (a reading: SiLU adds no parameters or MACs either way).
        hc = cfg.head_channels
        corners = None if cfg.head_upsample == "nearest" else False
        self.head = nn.Sequential(
            group_norm(c, cfg.groups),
            nn.SiLU(),
            nn.Conv2d(c, hc, 3, padding=1),
            nn.Upsample(scale_factor=2.0, mode=cfg.head_upsample, align_corners=corners),
            nn.Conv2d(hc, hc, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2.0, mode=cfg.head_upsample, align_corners=corners),
            nn.Conv2d(hc, hc, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hc, 3, 3, padding=1),
        )
        self.notch = GridNotch(cfg.grid_notch) if cfg.grid_notch and cfg.bicubic_residual else None
        if cfg.bicubic_residual:  # start exactly at bicubic
            last = self.head[-1]
            assert isinstance(last, nn.Conv2d)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)  # type: ignore[arg-type]  # Conv2d default bias=True

    def forward(self, x: Tensor, c_noise: Tensor, lq: Tensor, up: Tensor | None = None) -> Tensor:
        # x (B,3,4h,4w), c_noise (B,) float, lq (B,3,h,w); h, w multiples of cfg.multiple; up: the
        # bicubic x4 of lq (unclamped) when the caller already has it (sample_padded does, for x_T):
        # one HR-size bicubic pass instead of two
        b, _, h, w = lq.shape
        assert x.shape == (b, 3, SCALE * h, SCALE * w), (x.shape, lq.shape)
        assert h % self.cfg.multiple == 0 and w % self.cfg.multiple == 0, (h, w)
        assert c_noise.shape == (b,), c_noise.shape
        emb = self.embedding(c_noise)  # (B, E)

        t = torch.cat([F.pixel_unshuffle(x, SCALE), lq], dim=1)  # (B,51,h,w)
        out = self.head(self.trunk(t, emb))  # (B,3,4h,4w), unbounded
        if self.notch is not None:
            out = self.notch(out)
        if self.cfg.bicubic_residual:
            if up is None:  # an explicit size, not scale_factor: torch.export reasons about it symbolically
                up = F.interpolate(lq, size=(SCALE * h, SCALE * w), mode="bicubic", align_corners=False)
            out = out + up
        return out

    def trunk(self, t: Tensor, emb: Tensor | None) -> Tensor:
        """The U-Net between input and head: (B,51,h,w) (PixelUnshuffle(4)(x) and lq) -> (B,C,h,w)."""
        t = self.conv_in(t)
        skips = [t]
        for blk in self.enc:
            t = blk(t, emb)
            skips.append(t)
        for blk in self.mid:
            t = blk(t, emb)
        for blk in self.dec:
            if blk.resample != "up":
                t = torch.cat([t, skips.pop()], dim=1)
            t = blk(t, emb)
        return t

    def embedding(self, c_noise: Tensor) -> Tensor:
        """The time embedding every residual block adds: (B,) -> (B,E)."""
        emb = timestep_features(c_noise, self.cfg.noise_channels).to(self.map0.weight.dtype)
        return F.silu(self.map1(F.silu(self.map0(emb))))


def build_network(
    preset: str, head_upsample: HeadUpsample | None = None, grid_notch: int | None = None
) -> GTASRNet:
    """A freshly initialised network of a named preset, optionally with another head upsampling or
    grid notch (a weights file records its own: files from before those fields have neither)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; allowed: {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    if head_upsample is not None:
        cfg = replace(cfg, head_upsample=head_upsample)
    if grid_notch is not None:
        cfg = replace(cfg, grid_notch=grid_notch)
    return GTASRNet(cfg)


def count_macs(net: GTASRNet, lq_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward at batch 1 and an LR size (a multiple of net's)."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = lq_hw
    p = next(net.parameters())
    lq = torch.zeros(1, 3, h, w, dtype=p.dtype, device=p.device)
    x = torch.zeros(1, 3, SCALE * h, SCALE * w, dtype=p.dtype, device=p.device)
    c = torch.zeros(1, dtype=p.dtype, device=p.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, c, lq)
    return counter.get_total_flops() // 2


def main() -> None:
    """Print parameters and compute per 960x540 LR frame for every preset (the table above)."""
    torch.manual_seed(0)
    print("| preset | parameters | GMAC / 960x540 | GFLOP / 960x540 | GMAC / 128x128 | LR multiple |")
    for name, cfg in PRESETS.items():
        net = build_network(name).eval()
        params = sum(p.numel() for p in net.parameters())
        # Windowed attention is linear in pixels, so MACs at one measured size scale exactly.
        m = cfg.multiple
        hw = (m * max(1, 64 // m), m * max(1, 64 // m))
        per_pixel = count_macs(net, hw) / (hw[0] * hw[1])
        gmac = per_pixel * 960 * 540 / 1e9
        small = per_pixel * 128 * 128 / 1e9
        print(f"| {name} | {params / 1e6:.2f} M | {gmac:.1f} | {2 * gmac:.1f} | {small:.1f} | {m} |")


if __name__ == "__main__":
    main()
