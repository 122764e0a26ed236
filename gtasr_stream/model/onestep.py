"""One-step sampling without noise, rearranged for the CPU's eager path: the function of
`sample_one_step(model, lq, None)` with fewer and cheaper passes over HR-size tensors.

Eager PyTorch on a CPU runs each op as a pass over memory, and the tiny preset spends most of its
time in the HR-size work around its few convolutions (benchmarks/NOTES.md "CPU"). The rewrites,
each exact up to float rounding (tests/test_onestep.py):

1. eta is 1, so the time embedding is a constant: each residual block's `affine(emb)` goes into its
   first convolution's bias.
2. The head's x2 upsample (nearest or bilinear) and the 3x3 convolution after it are one 3x3
   convolution at the lower size with four times the output channels, one set per output phase
   (a sub-pixel convolution), with the LeakyReLU after it fused into oneDNN's call; the last 3x3
   convolution at 4x then runs on those phases as well. No HR-size upsampled tensor is made, and the
   phases are interleaved into HR order only once, by the pass that subtracts the grid notch and
   adds the bicubic residual.
3. c_out(1) is folded into that last convolution; the bicubic x4 is computed once as 16 phase
   planes, which give both the network's input (pixel-unshuffled, clamped) and the residual
   c_out * up + c_skip * clamp(up) in HR order.

Only for weights with the bicubic residual (both shipped models); `onestep_supported` says.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .consistency import ConsistencyModel, _x4_phases, c_noise, c_out, c_skip, pad_bottom_right
from .network import SCALE, GTASRNet, ResBlock

# u[2k + s] = sum_t UP_TAPS[mode][s][t] * x[k + t - 1]: PyTorch's x2 upsample of x along one axis,
# away from the border (align_corners=False for bilinear)
UP_TAPS = {
    "nearest": ((0.0, 1.0, 0.0), (0.0, 1.0, 0.0)),
    "bilinear": ((0.25, 0.75, 0.0), (0.0, 0.75, 0.25)),
}


def _upsample_taps(mode: str) -> Tensor:
    """C (2, 3, 3): u[2i + a + d] = sum_e C[a, d + 1, e + 1] x[i + e] for output phase a, d, e in -1..1."""
    taps = torch.zeros(2, 3, 3, dtype=torch.float64)
    for a in range(2):
        for d in (-1, 0, 1):
            k, s = divmod(a + d, 2)  # u[2(i + k) + s]
            for t, v in enumerate(UP_TAPS[mode][s]):
                e = k + t - 1
                if v:
                    taps[a, d + 1, e + 1] = v  # |e| <= 1 wherever the tap is non-zero
    return taps


def subpixel_conv(conv: nn.Conv2d, mode: str) -> nn.Conv2d:
    """conv(upsample_x2(x)) as a conv on x with 4x the outputs, channel o * 4 + 2a + b the output
    at phase (a, b): pixel_shuffle(result, 2) is the original, but for bilinear's outermost two output
    rows and columns (see `upsample_conv`)."""
    w = conv.weight.detach().double()  # (O, I, 3, 3)
    taps = _upsample_taps(mode)
    fused = torch.einsum("oidg,ade,bgf->oabief", w, taps, taps).reshape(-1, w.shape[1], 3, 3)
    out = nn.Conv2d(w.shape[1], fused.shape[0], 3, padding=1)
    out.weight.data.copy_(fused)
    assert conv.bias is not None
    out.bias.data.copy_(conv.bias.detach().repeat_interleave(4))  # type: ignore[union-attr]
    return out.to(conv.weight.device, conv.weight.dtype)


# oneDNN's convolution with a fused activation: the op Inductor's CPU code calls. Private to torch,
# hence looked up, with the plain conv + activation where a build lacks it
_FUSED_CONV = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def conv_leaky(conv: nn.Conv2d, x: Tensor, slope: float) -> Tensor:
    """leaky_relu(conv(x), slope) for a 3x3 conv with padding 1: on the CPU one oneDNN call with the
    activation as a post-op, which spares a pass over the output (10 % of OneStep's time)."""
    if x.device.type != "cpu" or not _FUSED_CONV:
        return F.leaky_relu_(conv(x), slope)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    w, b = conv.weight.to(dtype), conv.bias.to(dtype) if conv.bias is not None else None
    one = [1, 1]
    return torch.ops.mkldnn._convolution_pointwise(
        x.to(dtype), w, b, one, one, one, 1, "leaky_relu", [slope], ""
    )


def upsample_conv(x: Tensor, fused: nn.Conv2d, conv: nn.Conv2d, mode: str, slope: float) -> Tensor:
    """leaky_relu(conv(upsample_x2(x)), slope) in phase layout (B, 4O, H, W) (channel o * 4 + 2a + b)
    through the sub-pixel conv `fused`. Bilinear clamps at the border, which the fused conv's zero
    padding does not: there its outermost two output rows and columns are computed again the
    original way, from strips three input pixels wide."""
    z = conv_leaky(fused, x, slope)
    if mode != "bilinear":
        return z
    b, _, h, w = x.shape
    z6 = z.view(b, -1, 2, 2, h, w)  # (B,O,a,b,H,W)

    def exact(strip: Tensor) -> Tensor:  # output rows (columns) 0-3 of a strip 3 wide are exact
        up = F.interpolate(strip, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.leaky_relu(conv(up), slope).to(z.dtype)

    top, bottom = exact(x[:, :, :3]), exact(x[:, :, -3:])  # (B,O,6,2W)
    z6[:, :, :, :, 0, :] = top[:, :, :2].unflatten(-1, (w, 2)).permute(0, 1, 2, 4, 3)
    z6[:, :, :, :, h - 1, :] = bottom[:, :, -2:].unflatten(-1, (w, 2)).permute(0, 1, 2, 4, 3)
    left, right = exact(x[..., :3]), exact(x[..., -3:])  # (B,O,2H,6)
    z6[:, :, :, :, :, 0] = left[..., :2].unflatten(-2, (h, 2)).permute(0, 1, 3, 4, 2)
    z6[:, :, :, :, :, w - 1] = right[..., -2:].unflatten(-2, (h, 2)).permute(0, 1, 3, 4, 2)
    return z


def phase_conv(conv: nn.Conv2d, scale: float) -> nn.Conv2d:
    """A 3x3 conv at 2x size, as a conv on its input's phase layout (I*4 channels, half the size)
    giving its output's phase layout (O*4), times `scale`. Zero padding carries over exactly."""
    w = conv.weight.detach().double() * scale  # (O, I, 3, 3)
    o, i = w.shape[:2]
    fused = torch.zeros(o, 2, 2, i, 2, 2, 3, 3, dtype=torch.float64)  # (o, a, b, i, a', b', e, f)
    for a in range(2):
        for a2 in range(2):
            for e in (-1, 0, 1):
                d = 2 * e + a2 - a  # output row 2y + a reads input row 2(y + e) + a2
                if abs(d) > 1:
                    continue
                for b in range(2):
                    for b2 in range(2):
                        for f in (-1, 0, 1):
                            g = 2 * f + b2 - b
                            if abs(g) <= 1:
                                fused[:, a, b, :, a2, b2, e + 1, f + 1] = w[:, :, d + 1, g + 1]
    out = nn.Conv2d(i * 4, o * 4, 3, padding=1)
    out.weight.data.copy_(fused.reshape(o * 4, i * 4, 3, 3))
    assert conv.bias is not None
    out.bias.data.copy_((conv.bias.detach().double() * scale).repeat_interleave(4))  # type: ignore[union-attr]
    return out.to(conv.weight.device, conv.weight.dtype)


def onestep_supported(model: ConsistencyModel) -> bool:
    """Whether OneStep can run these weights: a bicubic residual and the head this file knows."""
    cfg, head = model.net.cfg, model.net.head
    convs = [type(m) for m in head]
    return (
        cfg.bicubic_residual
        and cfg.head_upsample in UP_TAPS
        and convs
        == [
            nn.GroupNorm,
            nn.SiLU,
            nn.Conv2d,
            nn.Upsample,
            nn.Conv2d,
            nn.LeakyReLU,
            nn.Upsample,
            nn.Conv2d,
            nn.LeakyReLU,
            nn.Conv2d,
        ]
    )


class OneStep(nn.Module):
    """sample_one_step(model, lq, None) for the CPU's eager path (bf16 autocast or float32); a frozen
    copy of the model's weights: build it again after changing them."""

    def __init__(self, model: ConsistencyModel) -> None:
        super().__init__()
        if not onestep_supported(model):
            raise ValueError("OneStep needs weights with the bicubic residual and a nearest or bilinear head")
        net: GTASRNet = copy.deepcopy(model.net).eval()
        one = torch.ones(1, dtype=torch.float64)
        self.c_skip, self.c_out = float(c_skip(one)), float(c_out(one))
        p = next(net.parameters())
        with torch.no_grad(), torch.autocast(p.device.type, enabled=False):  # folded in full precision
            emb = net.embedding(c_noise(one).to(p.device, p.dtype))  # (1, E)
            for block in net.modules():
                if isinstance(block, ResBlock):
                    assert block.conv0.bias is not None
                    block.conv0.bias += block.affine(emb)[0]
        self.net = net
        self.mode = net.cfg.head_upsample
        head = net.head
        self.lead = nn.Sequential(head[0], head[1], head[2])  # GroupNorm, SiLU, conv at LR size
        conv2, conv4, act2, act4 = head[4], head[7], head[5], head[8]  # after each x2 upsample
        assert isinstance(conv2, nn.Conv2d) and isinstance(conv4, nn.Conv2d)
        assert isinstance(act2, nn.LeakyReLU) and isinstance(act4, nn.LeakyReLU)
        self.conv2, self.conv4 = conv2, conv4
        self.slope2, self.slope4 = act2.negative_slope, act4.negative_slope
        self.up2, self.up4 = subpixel_conv(conv2, self.mode), subpixel_conv(conv4, self.mode)
        last = head[9]
        assert isinstance(last, nn.Conv2d)
        self.last = phase_conv(last, self.c_out)  # F's scale c_out in the weights
        self.notch = net.notch

    def _inputs(self, lq: Tensor) -> tuple[Tensor, Tensor]:
        """The network's input (B,51,h,w), pixel_unshuffle(clamp(up)) and lq, and the residual
        c_out * up + c_skip * clamp(up) (B,3,4h,4w), float32, from the 16 phases of up = bicubic x4."""
        b, c, h, w = lq.shape
        rows = torch.stack(_x4_phases(lq, 3), -1).reshape(b, c, h, SCALE * w)  # columns interleaved
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else lq.dtype
        t = lq.new_empty(b, c * 16 + c, h, w, dtype=dtype)  # what conv_in computes in
        t[:, c * 16 :] = lq
        unshuffled = t[:, : c * 16].view(b, c, 4, 4, h, w)
        res = lq.new_empty(b, c, h, 4, SCALE * w)
        for p, phase in enumerate(_x4_phases(rows, 2)):  # (B,C,h,4w): HR rows 4i + p
            y = phase.clamp(-1.0, 1.0)
            unshuffled[:, :, p] = y.view(b, c, h, w, 4).permute(0, 1, 4, 2, 3)
            torch.add(y.mul_(self.c_skip), phase, alpha=self.c_out, out=res[:, :, :, p])
        return t, res.view(b, c, SCALE * h, SCALE * w)

    def _padded(self, lq: Tensor) -> Tensor:
        b, c, h, w = lq.shape
        t, res = self._inputs(lq)
        x = self.lead(self.net.trunk(t, None))  # (B,hc,h,w)
        x = F.pixel_shuffle(upsample_conv(x, self.up2, self.conv2, self.mode, self.slope2), 2)  # 2x
        z = upsample_conv(x, self.up4, self.conv4, self.mode, self.slope4)  # 4x, phase layout
        o = self.last(z).float()  # (B,C*4,2h,2w): c_out * F's head at 4x, channel c * 4 + 2a + b
        # HR pixel (4i + 2a' + a, 4j + 2b' + b) is o[c * 4 + 2a + b, 2i + a', 2j + b']
        out = res.view(b, c, h, 2, 2, w, 2, 2)  # (B,C,i,a',a,j,b',b)
        if self.notch is not None:  # in float32, as GridNotch.forward
            ny, nx = h // 4, w // 4  # blocks of 4x4 LR pixels, LR row i = 4Y + l, column j = 4X + m
            # channels-last o (the convs' output) as (B,Y,l,a',X,m,b'C a b): sums over l and m are
            # sums of contiguous runs
            pixels = o.permute(0, 2, 3, 1).reshape(b, ny, 4, 2, nx, 4, 2, c, 2, 2)
            m = pixels.sum(5).sum(2) / 16  # (B,Y,a',X,b',C,a,b): the phase means per block
            m = m.permute(0, 5, 2, 6, 4, 7, 1, 3).reshape(b, c, 4, 4, ny, nx)  # (B,C,p,q,Y,X), p = 2a' + a
            with torch.autocast("cpu", enabled=False):
                grid = self.notch.grid(m, channels_last=True).view(
                    b, c, 2, 2, 2, 2, h, w
                )  # (B,C,a',a,b',b,i,j)
            out.sub_(grid.permute(0, 1, 6, 2, 3, 7, 4, 5))
        out.add_(o.view(b, c, 2, 2, h, 2, w, 2).permute(0, 1, 4, 5, 2, 6, 7, 3))
        return res.clamp_(-1.0, 1.0)

    def forward(self, lq: Tensor) -> Tensor:
        """lq (B,3,h,w) in [-1,1], float32, any h, w -> (B,3,4h,4w) in [-1,1], float32."""
        h, w = lq.shape[-2:]
        m = self.net.cfg.multiple
        lq_p = pad_bottom_right(lq.float(), -h % m, -w % m)
        return self._padded(lq_p)[:, :, : SCALE * h, : SCALE * w]
