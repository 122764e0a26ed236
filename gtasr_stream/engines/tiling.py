"""The step type every backend builds, and running a 4x step on overlapping tiles blended with
smooth weights (pure torch).

Why smooth: uniform averaging of overlaps leaves visible seams where the two tiles disagree; a
smoothstep ramp across the whole overlap makes each tile fade out exactly as its neighbour fades in
(s(t) + s(1-t) = 1), and the pixels a tile computed with the least context get the least weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Step = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # (lq, eps) -> hr: what a backend builds
MIN_TILE = 32  # LR px: below this the context is too small to be worth running


def _ramp(length: int, fade_in: int, fade_out: int, device: torch.device) -> torch.Tensor:
    """1-D weights: smoothstep up over `fade_in` samples, 1 in the middle, down over `fade_out`."""
    w = torch.ones(length, device=device)
    for n, flip in ((fade_in, False), (fade_out, True)):
        if n <= 0:
            continue
        t = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n
        s = t * t * (3 - 2 * t)
        if flip:
            w[length - n :] *= s.flip(0)
        else:
            w[:n] *= s
    return w


def _fades(length: int, fade_in: int, fade_out: int) -> tuple[int, int, int]:
    """(length, fade_in, fade_out) with both fades fitting in the tile: a tile core smaller than
    twice the pad (--tile 8 --tile-pad 16) overlaps more than one neighbour, and its fades shrink
    in proportion (the weights are normalised in the end, so the blend stays seamless)."""
    if fade_in + fade_out > length:
        fade_in, fade_out = (
            length * fade_in // (fade_in + fade_out),
            length * fade_out // (fade_in + fade_out),
        )
    return length, fade_in, fade_out


def _starts(size: int, tile: int) -> list[int]:
    return list(range(0, max(size - tile, 0) + 1, tile)) + (
        [size - tile] if size > tile and size % tile else []
    )


def run_tiled(
    step: Step, lq: torch.Tensor, eps: torch.Tensor | None, tile: int, pad: int, scale: int = 4
) -> torch.Tensor:
    """Upscale `lq` tile by tile.

    lq:  (B,C,h,w) model input at LR; eps: (B or 1,C,scale*h,scale*w) or None (cropped per tile, so
    a tile sees exactly the noise the whole frame would); tile: core size in LR px; pad: LR px of
    context on each side, also the half-width of the blend.  Returns (B,C,scale*h,scale*w).
    """
    b, c, h, w = lq.shape
    out = lq.new_zeros(b, c, h * scale, w * scale, dtype=torch.float32)
    weight = lq.new_zeros(1, 1, h * scale, w * scale, dtype=torch.float32)
    for y0 in _starts(h, tile):
        for x0 in _starts(w, tile):
            ya, yb = max(y0 - pad, 0), min(y0 + tile + pad, h)
            xa, xb = max(x0 - pad, 0), min(x0 + tile + pad, w)
            e = None if eps is None else eps[..., ya * scale : yb * scale, xa * scale : xb * scale]
            res = step(lq[..., ya:yb, xa:xb], e).float()
            # Fade only across edges shared with a neighbour, over the full overlap (2*pad).
            fy = _ramp(
                *_fades((yb - ya) * scale, 2 * pad * scale * (ya > 0), 2 * pad * scale * (yb < h)), lq.device
            )
            fx = _ramp(
                *_fades((xb - xa) * scale, 2 * pad * scale * (xa > 0), 2 * pad * scale * (xb < w)), lq.device
            )
            wt = (fy[:, None] * fx[None, :]).clamp_min_(1e-4)[None, None]
            out[..., ya * scale : yb * scale, xa * scale : xb * scale] += res * wt
            weight[..., ya * scale : yb * scale, xa * scale : xb * scale] += wt
    return out / weight
