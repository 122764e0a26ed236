"""The consistency-model math of METHOD.md: time grid, forward process, EDM-style preconditioning
(c_skip, c_out, c_noise), the wrapper f(x, eta, lq) around the network, and one-step sampling.

Pure torch, no I/O. Training and inference both take these definitions from here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .network import SCALE, GTASRNet

SIGMA_DATA = 0.5  # sigma_data of the EDM-style parameterisation
ETA_SCALE = 0.1  # s = eta / ETA_SCALE
C_NOISE_EPS = 0.002  # c_noise = ln(eta + C_NOISE_EPS) / 4


def time_grid(n: int, p: float) -> Tensor:
    """eta_i = (i / (n-1))^p, i = 0..n-1 (METHOD.md "Time grids"); float64, (n,)."""
    if n < 2:
        raise ValueError(f"a time grid needs n >= 2 points, got {n}")
    return (torch.arange(n, dtype=torch.float64) / (n - 1)) ** p


def c_skip(eta: Tensor) -> Tensor:
    """c_skip = sigma_data^2 / (s^2 + sigma_data^2), s = eta/0.1 (METHOD.md "Consistency")."""
    s = eta / ETA_SCALE
    return SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)


def c_out(eta: Tensor) -> Tensor:
    """c_out = s / sqrt(s^2 + sigma_data^2), s = eta/0.1 (METHOD.md "Consistency").

    METHOD.md writes s*sigma_data/sqrt(...) but also gives c_out(1) ~ 0.999, the value read from the
    published code; only the form without the sigma_data factor gives it (s*sigma_data/... would be
    0.4994).  We follow the published number: F predicts the image itself in [-1, 1] at eta = 1.
    The boundary condition c_out(0) = 0 holds either way.
    """
    s = eta / ETA_SCALE
    return s / torch.sqrt(s**2 + SIGMA_DATA**2)


def c_noise(eta: Tensor) -> Tensor:
    """c_noise = ln(eta + 0.002) / 4, the network's time input (METHOD.md "Consistency")."""
    return torch.log(eta + C_NOISE_EPS) / 4


def _per_sample(eta: Tensor | float, like: Tensor) -> Tensor | float:
    """A (B,) eta as (B,1,1,1) to broadcast over images; scalars pass through."""
    if isinstance(eta, Tensor) and eta.ndim == 1:
        return eta.to(like.dtype)[:, None, None, None]
    return eta


def forward_process(x0: Tensor, y: Tensor, eps: Tensor, eta: Tensor | float) -> Tensor:
    """x_eta = (1 - eta) x0 + eta (y + eps) (METHOD.md "Forward process"); eta (B,) or scalar."""
    e = _per_sample(eta, x0)
    return (1 - e) * x0 + e * (y + eps)


def upsample_lq(lq: Tensor) -> Tensor:
    """y = bicubic x4 of lq (align_corners=False), clamped to [-1, 1]: (B,3,h,w) -> (B,3,4h,4w)."""
    y = F.interpolate(lq, scale_factor=float(SCALE), mode="bicubic", align_corners=False)
    return y.clamp(-1.0, 1.0)


class ConsistencyModel(nn.Module):
    """f(x, eta, lq) = c_skip(eta) x + c_out(eta) F(x, c_noise(eta), lq), so f(x, 0, lq) = x."""

    def __init__(self, net: GTASRNet) -> None:
        super().__init__()
        self.net = net

    @property
    def multiple(self) -> int:
        """LR height and width the network needs to be multiples of."""
        return self.net.cfg.multiple

    def forward(self, x: Tensor, eta: Tensor, lq: Tensor, up: Tensor | None = None) -> Tensor:
        # x (B,3,4h,4w), eta (B,) in [0,1], lq (B,3,h,w); all in the model's dtype; up: the bicubic
        # x4 of lq if the caller has it (GTASRNet.forward)
        e = eta.float()  # coefficients in float32: c_noise takes a log near 0
        skip = c_skip(e).to(x.dtype)[:, None, None, None]
        out = c_out(e).to(x.dtype)[:, None, None, None]
        return skip * x + out * self.net(x, c_noise(e).to(x.dtype), lq, up)


def pad_bottom_right(x: Tensor, ph: int, pw: int) -> Tensor:
    """Pad H by ph and W by pw at the end: reflect, or replicate where the pad is >= the size."""
    if pw:
        x = F.pad(x, (0, pw, 0, 0), mode="reflect" if pw < x.shape[-1] else "replicate")
    if ph:
        x = F.pad(x, (0, 0, 0, ph), mode="reflect" if ph < x.shape[-2] else "replicate")
    return x


# PyTorch's bicubic (A = -0.75, align_corners=False, borders clamped) at x4 along one dimension:
# output 4i + p samples the input at i + (2p - 3)/8, so phase p is a fixed 4-tap filter starting at
# input i - 2 (p = 0, 1) or i - 1 (p = 2, 3), i.e. at `start` in the input padded by 2 on each side
def _cubic_taps(t: float) -> tuple[float, float, float, float]:
    a = -0.75

    def near(d: float) -> float:  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: float) -> float:  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


_X4_PHASES = tuple((start, _cubic_taps(t)) for start, t in ((0, 0.625), (0, 0.875), (1, 0.125), (1, 0.375)))


def _x4_phases(x: Tensor, dim: int) -> list[Tensor]:
    n = x.shape[dim]
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
    padded = torch.cat([first, first, x, last, last], dim)
    phases = []
    for start, taps in _X4_PHASES:
        out = padded.narrow(dim, start, n) * taps[0]
        for k in (1, 2, 3):
            out.add_(padded.narrow(dim, start + k, n), alpha=taps[k])
        phases.append(out)
    return phases


def bicubic_x4(lq: Tensor) -> Tensor:
    """F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False) as sums of shifted
    views, one dimension at a time: the same numbers to float rounding (differences of ~4e-7), 2-3x
    faster than PyTorch's CPU kernel (4 frames of 480x288: 42 against 115 ms on 2 cores). For the CPU's
    eager path only: exported graphs keep the one resize op. (B,C,h,w) -> (B,C,4h,4w)."""
    b, c, h, w = lq.shape
    rows = torch.stack(_x4_phases(lq, 3), -1).reshape(b, c, h, SCALE * w)
    return torch.stack(_x4_phases(rows, 2), 3).reshape(b, c, SCALE * h, SCALE * w)


def sample_padded(
    model: ConsistencyModel, lq: Tensor, eps: Tensor | None, bicubic: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """The one model call of one-step sampling on an LR input whose sides are multiples of
    model.multiple: x_T = y + eps (y = upsample_lq(lq)), f(x_T, 1, lq), clamped to [-1, 1].

    lq (B,3,h,w), eps (B or 1,3,4h,4w) or None, all in the model's dtype -> (B,3,4h,4w).
    An explicit output size rather than upsample_lq's scale_factor (the same numbers), so that
    torch.export can reason about the sizes symbolically. bicubic: computes that x4 instead
    (`bicubic_x4` on the CPU).
    """
    b, _, h, w = lq.shape
    if bicubic is not None:
        up = bicubic(lq)
    else:
        up = F.interpolate(lq, size=(SCALE * h, SCALE * w), mode="bicubic", align_corners=False)
    y = up.clamp(-1.0, 1.0)
    x = y if eps is None else y + eps
    eta = torch.ones(b, dtype=lq.dtype, device=lq.device)
    return model(x, eta, lq, up).clamp(-1.0, 1.0)  # the network's bicubic residual is this `up`


def sample_one_step(
    model: ConsistencyModel, lq: Tensor, eps: Tensor | None, bicubic: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """One-step sampling (METHOD.md "Inference"): pad, x_T = y + eps, f(x_T, 1, lq), clamp, crop.

    lq (B,3,h,w) in [-1,1], any h, w; eps (B or 1,3,4h,4w) or None for no noise; bicubic: as for
    sample_padded. Returns (B,3,4h,4w) in [-1,1] in the model's parameter dtype.
    """
    # 1. check inputs
    if lq.ndim != 4 or lq.shape[1] != 3:
        raise ValueError(f"lq must be (B,3,h,w), got {tuple(lq.shape)}")
    h, w = lq.shape[-2:]
    if eps is not None and (eps.ndim != 4 or eps.shape[1:] != (3, SCALE * h, SCALE * w)):
        raise ValueError(f"eps must be (B or 1,3,{SCALE * h},{SCALE * w}), got {tuple(eps.shape)}")
    dtype = next(model.parameters()).dtype

    # 2. pad LR to the network's multiple, and eps the same way at HR
    m = model.multiple
    ph, pw = -h % m, -w % m
    lq_p = pad_bottom_right(lq.to(dtype), ph, pw)  # (B,3,h+ph,w+pw)
    eps_p = None if eps is None else pad_bottom_right(eps.to(dtype), SCALE * ph, SCALE * pw)

    # 3. one model call at eta = 1, clamp, crop
    return sample_padded(model, lq_p, eps_p, bicubic)[:, :, : SCALE * h, : SCALE * w]
