"""The peer 4x SR networks we compare against, and `load_peer`, the one loader of their weights
(../shared/data/weights).

Owns our own definitions of Real-ESRGAN x4plus (RRDBNet), realesr-animevideov3 (SRVGGNetCompact) and
SPAN x4 in its re-parameterised inference form, with parameter names that match the shared safetensors
files (see ../shared/data/weights/README.md), plus `load_peer` and `PEER_FILES`. Every peer maps
RGB (B,3,h,w) float32 in [0,1] to RGB (B,3,4h,4w) float32 clamped to [0,1].

Why in `training`: its evaluation (`gtasr-train evaluate`) scores the peers beside our checkpoints,
and `benchmarks` (built on `training`) times them; imports point down, so the one definition sits in
the lower of the two.  Not in `gtasr_stream`: no command of the installed runtime runs a peer, and
it needs nothing but torch and safetensors, both runtime dependencies already.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

PeerName = Literal["realesrgan_x4plus", "realesr_animevideov3", "span_x4"]

PEER_FILES: dict[PeerName, str] = {
    "realesrgan_x4plus": "realesrgan_x4plus.safetensors",
    "realesr_animevideov3": "realesr_animevideov3_x4.safetensors",
    "span_x4": "span_x4.safetensors",
}


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    """A 3x3 'same' convolution with bias, the only convolution the three peers need besides SPAN's 1x1."""
    return nn.Conv2d(c_in, c_out, 3, 1, 1)


# ---------------------------------------------------------- Real-ESRGAN x4plus (Wang et al. 2021), RRDBNet
class DenseBlock(nn.Module):
    """ESRGAN's residual dense block: 5 densely connected convs, output scaled by 0.2 onto the input."""

    def __init__(self, feat: int = 64, grow: int = 32) -> None:
        super().__init__()
        # conv_k sees the input plus the k-1 earlier growth maps
        self.conv1 = _conv3(feat, grow)
        self.conv2 = _conv3(feat + grow, grow)
        self.conv3 = _conv3(feat + 2 * grow, grow)
        self.conv4 = _conv3(feat + 3 * grow, grow)
        self.conv5 = _conv3(feat + 4 * grow, feat)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, their output scaled by 0.2 onto the input."""

    def __init__(self, feat: int = 64, grow: int = 32) -> None:
        super().__init__()
        self.rdb1 = DenseBlock(feat, grow)
        self.rdb2 = DenseBlock(feat, grow)
        self.rdb3 = DenseBlock(feat, grow)

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """Real-ESRGAN x4plus: 23 RRDBs at 64 features, then nearest x2 + conv twice. x4 only."""

    def __init__(self, feat: int = 64, blocks: int = 23, grow: int = 32) -> None:
        super().__init__()
        self.conv_first = _conv3(3, feat)
        self.body = nn.Sequential(*[RRDB(feat, grow) for _ in range(blocks)])
        self.conv_body = _conv3(feat, feat)
        self.conv_up1 = _conv3(feat, feat)
        self.conv_up2 = _conv3(feat, feat)
        self.conv_hr = _conv3(feat, feat)
        self.conv_last = _conv3(feat, 3)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B,3,h,w) in [0,1]
        feat = self.conv_first(x)  # (B,64,h,w)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):  # (B,64,2h,2w), then (B,64,4h,4w)
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))  # (B,3,4h,4w)
        return out.clamp(0, 1)


# ------------------------------------------ realesr-animevideov3 (xinntao/Real-ESRGAN), SRVGGNetCompact
class SRVGGNetCompact(nn.Module):
    """A plain conv+PReLU stack at low resolution, PixelShuffle(4), plus the nearest-x4 input as residual."""

    def __init__(self, feat: int = 64, convs: int = 16, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        # body.0 conv 3->feat, then (PReLU, conv) pairs at odd/even indices, body.{2*convs+2} conv feat->3*s*s
        layers: list[nn.Module] = [_conv3(3, feat), nn.PReLU(feat)]
        for _ in range(convs):
            layers += [_conv3(feat, feat), nn.PReLU(feat)]
        layers.append(_conv3(feat, 3 * scale * scale))
        self.body = nn.Sequential(*layers)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B,3,h,w) in [0,1] -> body (B,48,h,w) -> shuffled (B,3,4h,4w)
        out = self.upsampler(self.body(x)) + F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return out.clamp(0, 1)


# ------------------------------------------- SPAN x4 (Wan et al. 2024), re-parameterised inference form
class FoldedConv(nn.Module):
    """SPAN's Conv3XC after re-parameterisation: only the folded 3x3 conv, stored as `eval_conv`.

    Upstream's Conv3XC rebuilds `eval_conv` from its training branches in eval mode; the shared files
    hold only the folded conv, so ours never touches training branches (and cannot fine-tune them).
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.eval_conv = _conv3(c_in, c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.eval_conv(x)


class SPAB(nn.Module):
    """Swift parameter-free attention block: three convs, attention (c3 + x) * (sigmoid(c3) - 0.5)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1_r = FoldedConv(ch, ch)
        self.c2_r = FoldedConv(ch, ch)
        self.c3_r = FoldedConv(ch, ch)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (block output, SiLU(c1_r(x))).

        The second value is the *activated* c1_r output: upstream applies SiLU in place, so the tensor it
        hands to conv_cat has already been through SiLU (README gotcha 2).
        """
        h1 = F.silu(self.c1_r(x))
        h3 = self.c3_r(F.silu(self.c2_r(h1)))
        return (h3 + x) * (torch.sigmoid(h3) - 0.5), h1


class SPAN(nn.Module):
    """SPAN x4, 48 channels, 6 SPABs; input mapped to (x - mean) * 255, output on the [0,1] scale."""

    mean: Tensor  # (1,3,1,1) buffer

    def __init__(self, ch: int = 48, scale: int = 4) -> None:
        super().__init__()
        # upstream's DIV2K RGB mean; a constant, not in the weights file (non-persistent buffer)
        self.register_buffer(
            "mean", torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1), persistent=False
        )
        self.conv_1 = FoldedConv(3, ch)
        self.block_1 = SPAB(ch)
        self.block_2 = SPAB(ch)
        self.block_3 = SPAB(ch)
        self.block_4 = SPAB(ch)
        self.block_5 = SPAB(ch)
        self.block_6 = SPAB(ch)
        self.conv_2 = FoldedConv(ch, ch)
        self.conv_cat = nn.Conv2d(4 * ch, ch, 1)
        self.upsampler = nn.Sequential(_conv3(ch, 3 * scale * scale), nn.PixelShuffle(scale))

    def forward(self, x: Tensor) -> Tensor:
        # x: (B,3,h,w) in [0,1] -> (x - mean) * 255, the range upstream trained on
        f0 = self.conv_1((x - self.mean.to(x)) * 255.0)  # (B,48,h,w)
        b1, _ = self.block_1(f0)
        b = b1
        for block in (self.block_2, self.block_3, self.block_4, self.block_5):
            b, _ = block(b)
        b6, b6_c1 = self.block_6(b)
        out = self.conv_cat(torch.cat([f0, self.conv_2(b6), b1, b6_c1], 1))  # (B,48,h,w)
        # upstream adds no mean back: the shuffled output is already RGB on the [0,1] scale
        return self.upsampler(out).clamp(0, 1)  # (B,3,4h,4w)


# --------------------------------------------------------------------------------------------- loading
def load_peer(name: PeerName, weights_dir: Path) -> nn.Module:
    """Build peer `name` and load `weights_dir / PEER_FILES[name]` (safetensors, strict); eval, float32."""
    net: nn.Module
    if name == "realesrgan_x4plus":
        net = RRDBNet()
    elif name == "realesr_animevideov3":
        net = SRVGGNetCompact()
    elif name == "span_x4":
        net = SPAN()
    else:
        raise ValueError(f"unknown peer '{name}'; expected one of {', '.join(PEER_FILES)}")
    path = Path(weights_dir) / PEER_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"peer weights '{path}' not found (see ../shared/data/weights/README.md)")
    # the files mix float16 conv weights with float32 biases; load_state_dict casts both to float32
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.float().eval()
