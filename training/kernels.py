"""Blur kernels of the Real-ESRGAN degradation and the per-sample filtering that applies them.

Owns: the kernel formulas (isotropic/anisotropic Gaussian, generalized Gaussian, plateau, circular
low-pass "sinc"), zero-padding a kernel to the common size, and `filter2d` (one kernel per sample,
a grouped conv2d with reflect padding). Randomness lives in `degradation.py`; everything here is a
pure function of its arguments. Formulas follow Real-ESRGAN's `basicsr/data/degradations.py`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel offsets from the kernel centre: xx, yy, each (size, size) float64."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _mahalanobis2(size: int, sigma_x: float, sigma_y: float, theta: float) -> Tensor:
    """[x y] Σ⁻¹ [x y]ᵀ on the grid, Σ = R(θ) diag(σx², σy²) R(θ)ᵀ; (size, size) float64."""
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy  # coordinates along the rotated principal axes
    v = -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0) -> Tensor:
    """Bivariate Gaussian exp(-½ d²), normalised; isotropic when sigma_x == sigma_y. (size,size) f64."""
    k = torch.exp(-0.5 * _mahalanobis2(size, sigma_x, sigma_y, theta))
    return k / k.sum()


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float, theta: float, beta: float
) -> Tensor:
    """Generalized Gaussian exp(-½ (d²)^β), normalised; β < 1 heavier tails, β > 1 flatter top."""
    k = torch.exp(-0.5 * _mahalanobis2(size, sigma_x, sigma_y, theta) ** beta)
    return k / k.sum()


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> Tensor:
    """Plateau-shaped 1 / ((d²)^β + 1), normalised."""
    k = 1.0 / (_mahalanobis2(size, sigma_x, sigma_y, theta) ** beta + 1.0)
    return k / k.sum()


def sinc_kernel(size: int, omega: float) -> Tensor:
    """Circular low-pass filter with cutoff ω (rad/pixel): ω·J1(ω r) / (2π r), normalised.

    Ringing and overshoot artifacts come from this kernel; the centre takes the limit ω²/(4π).
    """
    xx, yy = _grid(size)
    r = torch.sqrt(xx**2 + yy**2)
    k = omega * torch.special.bessel_j1(omega * r) / (2 * math.pi * r.clamp_min(1e-12))
    k[size // 2, size // 2] = omega**2 / (4 * math.pi)
    return k / k.sum()


def pulse_kernel(size: int) -> Tensor:
    """The identity filter (a single 1 at the centre); (size, size) float64."""
    k = torch.zeros(size, size, dtype=torch.float64)
    k[size // 2, size // 2] = 1.0
    return k


def pad_kernel(kernel: Tensor, size: int) -> Tensor:
    """Zero-pad a (k,k) odd kernel to (size,size) so that kernels of several sizes stack."""
    p = (size - kernel.shape[-1]) // 2
    if p < 0 or kernel.shape[-1] % 2 == 0 or size % 2 == 0:
        raise ValueError(f"cannot pad a {kernel.shape[-1]}-kernel to {size}: both must be odd, size larger")
    return F.pad(kernel, (p, p, p, p))


def filter2d(x: Tensor, kernels: Tensor) -> Tensor:
    """Convolve each sample with its own kernel, the same on every channel (a grouped conv2d).

    x: (B,C,H,W) float; kernels: (B,k,k) or (k,k), k odd. Reflect padding keeps the size; an image
    smaller than the padding (tiny resizes) falls back to replicate, which reflect cannot do.
    Returns (B,C,H,W) in x's dtype and device.
    """
    b, c, h, w = x.shape
    if kernels.dim() == 2:
        kernels = kernels.expand(b, *kernels.shape)
    k = kernels.shape[-1]
    p = k // 2
    mode = "reflect" if p < h and p < w else "replicate"
    xp = F.pad(x, (p, p, p, p), mode=mode).reshape(1, b * c, h + 2 * p, w + 2 * p)  # (1,B*C,H+2p,W+2p)
    # conv2d correlates; every kernel here is point-symmetric, so that equals convolution
    weight = kernels.to(x).repeat_interleave(c, dim=0).unsqueeze(1)  # (B*C,1,k,k), sample-major
    return F.conv2d(xp, weight, groups=b * c).reshape(b, c, h, w)
