"""Synthetic "moving camera" HR clips made from one still photo, for temporal (flicker) evaluation.

Owns the camera model: a smooth, slightly curving pan of a few pixels per frame, a slight steady zoom and
a small steady rotation, each frame resampled from the photo with bilinear `grid_sample`. The whole
path is chosen so that every frame's footprint lies inside the photo: no padding ever enters a clip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PAN_SPEED = (1.0, 4.0)  # photo px per frame, drawn uniformly
PAN_TURN = 0.05  # max change of pan direction, rad per frame (a gently curving path)
ZOOM_TOTAL = 0.05  # max |log(scale)| reached by the clip's last frame: a slight zoom in or out
ROTATE_TOTAL = math.radians(2.0)  # max |rotation| reached by the last frame
STEADY_FRAMES = 8  # short clips move no faster per frame than an 8-frame one (at most 0.6 %, 0.25 deg)
MARGIN = 1.0  # photo px kept clear of the photo's edge, beyond the bilinear footprint


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _fit_centres(extent: Tensor, offset: Tensor, length: int) -> tuple[float, float]:
    """The interval of start centres c0 keeping c0 + offset_t +- extent_t inside [MARGIN, length - MARGIN]."""
    lo = float((extent + MARGIN - offset).max())
    hi = float((length - MARGIN - extent - offset).min())
    return lo, hi


def moving_camera_clip(photo: Tensor, frames: int, size: tuple[int, int], seed: int) -> Tensor:
    """An HR clip (T,3,H,W) in [0,1] of a camera moving over `photo` (3,Hp,Wp) in [0,1]; same seed, same clip.

    Frame t shows the photo around centre c_t, rotated by theta_t and scaled by s_t photo px per output
    px. c_t pans at 1-4 px/frame along a gently turning direction; s_t = exp(z t) and theta_t = r t grow
    steadily to at most 5 % zoom and 2 deg rotation by the last frame. When the photo has too little room
    for the drawn motion, the whole motion is halved until it fits (down to a still crop); a photo
    smaller than `size` plus a 1-px margin on each side is an error.
    """
    if photo.dim() != 3 or photo.shape[0] != 3:
        raise ValueError(f"photo must be (3,H,W), got {tuple(photo.shape)}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    h, w = size
    hp, wp = photo.shape[-2:]
    if h < 1 or w < 1 or h + 2 * MARGIN > hp or w + 2 * MARGIN > wp:
        raise ValueError(f"clip size {size} does not fit in the photo {(hp, wp)} with a {MARGIN:g}-px margin")

    # 1. draw the motion (float64 on the CPU so the clip does not depend on device or dtype)
    g = torch.Generator().manual_seed(seed)
    speed = _uniform(g, *PAN_SPEED)
    heading = _uniform(g, -math.pi, math.pi)
    turn = _uniform(g, -PAN_TURN, PAN_TURN)
    span = max(frames - 1, STEADY_FRAMES)
    zoom = _uniform(g, -ZOOM_TOTAL, ZOOM_TOTAL) / span  # d log(scale) per frame
    rotate = _uniform(g, -ROTATE_TOTAL, ROTATE_TOTAL) / span  # rad per frame
    t = torch.arange(frames, dtype=torch.float64)  # (T,)
    # pan: c_t = c_0 + sum_{k<t} speed * (cos, sin)(heading + turn k)
    step_angle = heading + turn * t[:-1]
    steps = torch.stack([torch.cos(step_angle), torch.sin(step_angle)], 1) * speed  # (T-1,2) x,y
    path = torch.cat([torch.zeros(1, 2, dtype=torch.float64), steps.cumsum(0)])  # (T,2)

    # 2. shrink the motion until every frame's footprint fits, then place the path at random
    k = 1.0
    while True:
        scale = torch.exp(k * zoom * t)  # (T,) photo px per output px
        theta = k * rotate * t  # (T,)
        cos, sin = torch.cos(theta), torch.sin(theta)
        # half-extent of the rotated, scaled w x h frame rectangle, in photo px
        ext_x = scale * (w / 2 * cos.abs() + h / 2 * sin.abs())
        ext_y = scale * (w / 2 * sin.abs() + h / 2 * cos.abs())
        lo_x, hi_x = _fit_centres(ext_x, k * path[:, 0], wp)
        lo_y, hi_y = _fit_centres(ext_y, k * path[:, 1], hp)
        if lo_x <= hi_x and lo_y <= hi_y:
            break
        k = k / 2 if k > 1 / 64 else 0.0  # k = 0 is a still crop, which fits by the check above
    cx = _uniform(g, lo_x, hi_x) + k * path[:, 0]  # (T,) centre in continuous photo coordinates
    cy = _uniform(g, lo_y, hi_y) + k * path[:, 1]

    # 3. sampling grid: output pixel centres, rotated and scaled about the frame centre
    oy = torch.arange(h, dtype=torch.float64) + 0.5 - h / 2  # (H,)
    ox = torch.arange(w, dtype=torch.float64) + 0.5 - w / 2  # (W,)
    oy, ox = oy.view(1, h, 1), ox.view(1, 1, w)
    s, c, n = scale.view(-1, 1, 1), cos.view(-1, 1, 1), sin.view(-1, 1, 1)
    u = cx.view(-1, 1, 1) + s * (c * ox - n * oy)  # (T,H,W) photo x, pixel centres at i + 0.5
    v = cy.view(-1, 1, 1) + s * (n * ox + c * oy)
    # align_corners=False: continuous coordinate u in [0, Wp] maps to [-1, 1]
    grid = torch.stack([2 * u / wp - 1, 2 * v / hp - 1], -1)  # (T,H,W,2)
    grid = grid.to(photo.dtype).to(photo.device).view(1, frames * h, w, 2)  # all frames in one call

    # 4. sample; zeros padding would darken any frame that left the photo, which the tests check for
    clip = F.grid_sample(photo[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return clip.view(3, frames, h, w).transpose(0, 1).clamp(0, 1).contiguous()  # (T,3,H,W)
