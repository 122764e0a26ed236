"""The GTASR training losses (METHOD.md "Stage I" and "Stage II") and the one place that weights them.

Every loss is a small function returning a per-sample tensor (B,); `combine` applies the explicit
LossWeights and returns the scalar to minimise plus named terms for logging. Images are (B,3,H,W) in
the model space [-1, 1] unless said otherwise. The forward process q comes from gtasr_stream.model.
Papers: GTASR (arXiv 2602.24240, ICML 2026); CTMSR (ICCV 2025) for L_CT and DTM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gtasr_stream.model import forward_process
from gtasr_stream.model.sharpen import unsharp

# LPIPS, or any per-sample distance (B,3,H,W) x 2 -> (B,) (tests use cheap stand-ins)
Distance = Callable[[Tensor, Tensor], Tensor]

CHARBONNIER_EPS = 1e-12  # METHOD.md: sqrt(delta^2 + 1e-12); so d(x, x) = 1e-6 / 2, not 0
SOBEL_EPS = 1e-12  # METHOD.md: S = sqrt(Gx^2 + Gy^2 + 1e-12); keeps the gradient finite on flat areas
DTM_W_MIN_DENOM = 1e-3  # w = 1 / max(mean|x0_hat - x0|, 1e-3): at most 1000 when x0_hat ~ x0

_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))  # d/dx; d/dy is its transpose


def charbonnier(x: Tensor, y: Tensor, eps: float = CHARBONNIER_EPS) -> Tensor:
    """Charbonnier distance mean_{C,H,W} sqrt((x - y)^2 + eps) (METHOD.md's d, second half) -> (B,)."""
    return torch.sqrt((x - y) ** 2 + eps).mean(dim=(1, 2, 3))


def sobel(x: Tensor) -> Tensor:
    """Sobel magnitude S(x) = sqrt(Gx^2 + Gy^2 + 1e-12) per channel, 3x3 kernels, zero padding
    (METHOD.md "Stage II"): (B,C,H,W) -> (B,C,H,W), >= 1e-6. The border sees the zero padding as an edge."""
    c = x.shape[1]
    gx = torch.tensor(_SOBEL_X, dtype=x.dtype, device=x.device)
    kernels = torch.stack([gx, gx.T])[:, None].repeat(c, 1, 1, 1)  # (2C,1,3,3): [x, y] per channel
    g = F.conv2d(x, kernels, padding=1, groups=c)  # (B,2C,H,W): channel c -> (2c, 2c+1)
    return torch.sqrt(g[:, 0::2] ** 2 + g[:, 1::2] ** 2 + SOBEL_EPS)


def usm_sharpen(x: Tensor, weight: float) -> Tensor:
    """Real-ESRGAN's sharpened ground truth (its `USMSharp`, the "GT USM" training targets), the
    runtime's `unsharp` in the model space: (B,3,H,W) in [-1,1] -> same.

    Pixel and perceptual losses against this target ask for the conditional mean of a sharpened
    image, which is the mean sharpened: a crisper output than the mean, which LPIPS and Charbonnier
    alone settle for where the LR hides detail.
    """
    return unsharp((x + 1) / 2, weight) * 2 - 1


def distance(lpips: Distance, x: Tensor, y: Tensor) -> Tensor:
    """d(x, y) = 0.5 LPIPS-VGG(x, y) + 0.5 Charbonnier(x, y) (METHOD.md "Stage I", GTASR Sec. 3) -> (B,)."""
    return 0.5 * lpips(x, y) + 0.5 * charbonnier(x, y)


# ------------------------------------------------------------------------------------ Stage I (GTASR)


def ct_loss(lpips: Distance, pred: Tensor, target: Tensor) -> Tensor:
    """L_CT = d(f_theta(x_{eta_{n+1}}), sg[f_theta-(x_{eta_n})]) (consistency training, METHOD.md
    "Stage I"; CTMSR Eq. for L_CT, no timestep weighting) -> (B,). pred = x0_hat; target: x0 for n = 0."""
    return distance(lpips, pred, target.detach())


def ta_loss(
    lpips: Distance,
    x0: Tensor,
    x0_hat: Tensor,
    y: Tensor,
    etas: Tensor,
    generator: torch.Generator | None,
) -> Tensor:
    """Trajectory alignment, "full-path projection" (METHOD.md "Stage I"; GTASR's L_TA):

        L_TA = 0.5 * sum_{i=1..N-2} d(q(x0, eta_i, eps_i), q(x0_hat, eta_i, eps_i))

    q = forward_process; eps_i are fresh draws, one per interior grid point, shared by both arguments
    (drawn as one (N-2,B,3,H,W) tensor from `generator`, on the generator's device). etas: the grid
    (N,) with etas[0] = 0 and etas[-1] = 1. Gradient flows through x0_hat only. -> (B,); zeros if N = 2.
    """
    b = x0.shape[0]
    interior = etas[1:-1]
    k = interior.numel()
    if k == 0:
        return x0_hat.new_zeros(b)
    gen_device = generator.device if generator is not None else x0.device
    eps = torch.randn((k, *x0.shape), generator=generator, device=gen_device, dtype=x0.dtype)
    eps = eps.to(x0.device)  # (K,B,3,H,W)
    eta = interior.to(device=x0.device, dtype=x0.dtype).view(k, 1, 1, 1, 1)  # broadcasts over (K,B,...)
    y = y.detach()
    q_true = forward_process(x0.detach(), y, eps, eta)  # (K,B,3,H,W)
    q_pred = forward_process(x0_hat, y, eps, eta)  # (K,B,3,H,W), carries x0_hat's gradient
    d = distance(lpips, q_true.flatten(0, 1), q_pred.flatten(0, 1)).view(k, b)  # all K points in one pass
    return 0.5 * d.sum(dim=0)


# ------------------------------------------------------------------------------------ Stage II (GTASR)


def dtm_loss(
    lpips: Distance,
    x0_hat: Tensor,
    x0: Tensor,
    f_z: Tensor,
    f_x: Tensor,
    stab_weight: float = 0.2,
    weight: float = 0.8,
) -> Tensor:
    """Distribution trajectory matching with the Sobel stabiliser (CTMSR's DTM; METHOD.md "Stage II"):

        Delta_DTM  = f'(z_t) - f'(x_t)                 Delta_Stab = S(f'(z_t)) - S(f'(x_t))
        L_DTM = 0.8 * w * LPIPS(x0_hat, sg(x0_hat - Delta_DTM - 0.2 * Delta_Stab)),  w = 1/mean|x0_hat - x0|

    f_z = f_theta'(z_t), z_t = q(sg(x0_hat)), and f_x = f_theta'(x_t), x_t = q(x0), both at eta = 1/3
    with one shared eps, computed by the caller with the frozen model under no_grad. w is per sample,
    detached, its denominator clamped at 1e-3. The gradient flows through LPIPS's first argument only.
    -> (B,).
    """
    f_z, f_x = f_z.detach(), f_x.detach()
    delta_dtm = f_z - f_x
    delta_stab = sobel(f_z) - sobel(f_x)
    w = 1.0 / (x0_hat.detach() - x0.detach()).abs().mean(dim=(1, 2, 3)).clamp_min(DTM_W_MIN_DENOM)  # (B,)
    target = (x0_hat - delta_dtm - stab_weight * delta_stab).detach()
    return weight * w * lpips(x0_hat, target)


def rect_loss(lpips: Distance, x0_hat: Tensor, x0: Tensor, published: bool = False) -> Tensor:
    """Dual-reference structural rectification: LPIPS(S(x0_hat), S(x0)) (METHOD.md "Stage II") -> (B,).

    The Sobel maps (>= 0, up to ~11 for [-1,1] images) go into LPIPS as they are. published=True detaches
    both inputs, as the published code does, so the term is logged but adds no gradient; the default
    lets the gradient reach x0_hat, as the paper draws it.
    """
    s_hat = sobel(x0_hat.detach() if published else x0_hat)
    return lpips(s_hat, sobel(x0.detach()))


def grid_loss(x0_hat: Tensor, x0: Tensor, period: int = 4) -> Tensor:
    """Grid penalty (our addition): how far the error's luma spectrum peaks at the harmonics of a
    `period`-pixel grid above its smooth neighbourhood there -> (B,); about 1 without a grid.

    A x4 head that upsamples by nearest x2 twice can give every LR pixel's 4x4 block the same small
    bias: a faint grid that Charbonnier and LPIPS barely see (about one code value) but eyes and
    metrics.periodicity do. The error at those frequencies is mostly detail the LR lost, which spreads
    smoothly over neighbouring frequencies; a grid is a peak on top of it. So, per harmonic, the 3x3
    bins at the peak (the Hann window spreads a pure grid over them) over the median of the 7x7 ring
    around them, as metrics.periodicity scores the output (which first averages the periodograms of
    many segments: an evaluation over frames, where this is a loss per crop). The ring is detached:
    the gradient only lowers the peak.
    """
    w = torch.tensor((0.299, 0.587, 0.114), dtype=x0.dtype, device=x0.device).view(1, 3, 1, 1)
    err = ((x0_hat - x0) * w).sum(1)  # (B,H,W): luma error; the offset of Y cancels
    h, wd = err.shape[-2:]
    if h % period or wd % period or min(h, wd) < 4 * period:
        raise ValueError(f"grid_loss: H, W must be multiples of {period} and >= {4 * period}, got {h}x{wd}")
    window = torch.outer(
        torch.hann_window(h, periodic=False, dtype=err.dtype, device=err.device),
        torch.hann_window(wd, periodic=False, dtype=err.dtype, device=err.device),
    )
    power = torch.fft.fft2(err * window).abs().square()  # (B,H,W)
    near = torch.arange(-3, 4, device=err.device)
    centre = torch.zeros(7, 7, dtype=torch.bool, device=err.device)
    centre[2:5, 2:5] = True
    ratios = []
    for a in range(period):
        for b in range(period):
            if a or b:
                rows, cols = (a * h // period + near) % h, (b * wd // period + near) % wd
                patch = power[:, rows[:, None], cols[None, :]]  # (B,7,7)
                ring = patch[:, ~centre].median(1).values.detach().clamp_min(1e-20)
                ratios.append(patch[:, centre].mean(1) / ring)
    return torch.stack(ratios, 1).mean(1)


def phase_bias(x0_hat: Tensor, x0: Tensor, period: int = 4, tile: int = 32) -> Tensor:
    """The error's mean at each of the period x period pixel phases, less their mean, squared and
    summed, in 8-bit code values squared, averaged over `tile` x `tile` tiles -> (B,).

    The grid that grid_loss scores in the spectrum shows most on flat areas (skin, sky), where it is
    a bias shared by the LR pixels' 4x4 blocks of a neighbourhood; textured training crops hide it
    among real error, so this measures that bias directly: a bias of one code value on one phase
    scores about 1. Per tile, not per crop: on real clips the bias changes sign across a frame
    (the whole frame's averages to 0.01 code values where 32-pixel tiles' are 0.2), and a crop-wide
    mean lets opposite biases cancel. A crop that tiles do not divide is one tile.
    """
    b, c, h, w = x0_hat.shape
    if h % period or w % period:
        raise ValueError(f"phase_bias: H, W must be multiples of {period}, got {h}x{w}")
    th, tw = (tile, tile) if h % tile == 0 and w % tile == 0 and tile % period == 0 else (h, w)
    err = (x0_hat - x0).reshape(b, c, h // th, th // period, period, w // tw, tw // period, period)
    phases = err.mean((3, 6)) * 127.5  # (B,C,tiles_y,p,tiles_x,p) in code values ([-1,1] spans 255)
    return (phases - phases.mean((3, 5), keepdim=True)).square().sum((3, 5)).mean((1, 2, 3))


def texture_loss(
    taps: Callable[[Tensor], list[Tensor]], x0_hat: Tensor, x0: Tensor, patch: int = 32
) -> Tensor:
    """Texture loss (our addition; EnhanceNet's L_T, Sajjadi et al., ICCV 2017): per `patch`-pixel
    square, the Gram matrices of each VGG tap of output and HR, their squared difference summed over
    squares, relative to the HR's summed squared Gram, averaged over taps -> (B,); 0 when equal.

    `taps` maps (N,3,H,W) in [-1,1] to ReLU taps at strides 1, 2, 4, ... (LPIPS.vgg_taps). A Gram
    matrix keeps which features occur together in a square, not where: where the LR hides the HR's
    texture (grass under codec blocks) pixel and LPIPS losses settle for a smooth mean, while this
    asks for texture of the HR's kind in the right square without asking for its exact phase.
    """
    b = x0_hat.shape[0]
    total = x0_hat.new_zeros(b, dtype=torch.float32)
    feats = taps(torch.cat([x0_hat, x0.detach()]))
    for level, f in enumerate(feats):
        p = patch >> level  # tap `level` has stride 2^level
        n, c, h, w = f.shape
        if p < 1 or h % p or w % p:
            raise ValueError(
                f"texture_loss: tap {level} ({h}x{w}) is not a whole number of {p}-pixel squares"
            )
        f = f.float().reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c, p * p)
        gram = f @ f.transpose(-1, -2) / (p * p)  # (N, squares, C, C)
        g_out, g_hr = gram[:b], gram[b:].detach()
        err = (g_out - g_hr).square().sum((1, 2, 3))
        total = total + err / g_hr.square().sum((1, 2, 3)).clamp_min(1e-12)
    return total / len(feats)


# ------------------------------------------------------------------------------------ weighting


@dataclass(frozen=True)
class LossWeights:
    """Explicit weight of each named loss term (METHOD.md: every term has weight 1)."""

    ct: float = 1.0  # L_CT, both stages
    ta: float = 1.0  # L_TA, Stage I (its 0.5 is inside ta_loss)
    dtm: float = 1.0  # L_DTM, Stage II (its 0.8 is inside dtm_loss)
    rect: float = 1.0  # L_rect, Stage II
    direct: float = 1.0  # our addition, on only with --direct-loss: the noise-free one-step output
    grid: float = 1.0  # our addition, on only with --grid-loss: grid_loss of that same output
    phase: float = 1.0  # our addition, on only with --phase-loss: phase_bias of that same output
    direct_rect: float = 1.0  # our addition, on only with --direct-rect: rect_loss of that same output
    direct_texture: float = 1.0  # our addition, on only with --direct-texture: texture_loss of that output


def combine(terms: dict[str, Tensor], weights: LossWeights) -> tuple[Tensor, dict[str, float]]:
    """total = mean_B sum_k weight_k * term_k; returns (total, {name: unweighted batch mean of the term}).

    terms: name -> (B,) per-sample losses; names are LossWeights fields. The logged values are floats
    (one device sync each).
    """
    known = {f.name for f in dataclasses.fields(weights)}
    if not terms:
        raise ValueError(f"combine needs at least one loss term; allowed names: {', '.join(sorted(known))}")
    unknown = sorted(set(terms) - known)
    if unknown:
        raise ValueError(f"unknown loss terms {unknown}; allowed names: {', '.join(sorted(known))}")
    shapes = {tuple(t.shape) for t in terms.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"loss terms must all be (B,) per-sample tensors, got shapes {sorted(shapes)}")
    weighted = sum(getattr(weights, name) * t for name, t in terms.items())
    assert isinstance(weighted, Tensor)
    total = weighted.mean()
    return total, {name: float(t.detach().mean()) for name, t in terms.items()}
