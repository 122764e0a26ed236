"""The preview's model stage: newest captured frame -> GTASR 4x and bicubic 4x, ready to show.

One frame per network call (batching would add latency), always the newest one: whatever was
captured meanwhile was overwritten in the slot and counted as dropped.  Colour conversions run on
the model's device; the JPEGs are made later, for the viewers (`jpeg.Shown`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..engines.upscaler import Upscaler
from ..video.color import rgb_to_yuv, yuv_to_rgb
from .jpeg import JPEG_LAYOUT, Shown
from .slot import Latest
from .source import Captured
from .stats import PreviewStats


def to_rgb(c: Captured, device: torch.device) -> torch.Tensor:
    """Planes of one frame -> (1,3,H,W) float32 in [0,1] on `device`."""
    planes = []
    for p in c.planes:
        a = np.ascontiguousarray(p)
        t = torch.from_numpy(a if a.dtype == np.uint8 else a.view(np.int16))[None]  # >8 bit fits int16
        planes.append(t.to(device, non_blocking=True))
    return yuv_to_rgb(planes[0], planes[1], planes[2], c.layout)


def upscale_stage(
    up: Upscaler,
    frames: Latest[Captured],
    shown: Latest[Shown],
    size: tuple[int, int] | None,  # (W, H) to resize frames to before the model, or None
    stats: PreviewStats,
    stop: threading.Event,
    on_shown: Callable[[Shown], None] | None = None,
) -> None:
    """Run until `stop`: take the newest frame, upscale it both ways, publish it."""
    while not stop.is_set():
        c = frames.take(timeout=0.1)
        if c is None:
            continue
        t0 = time.monotonic()
        with torch.inference_mode():
            rgb = to_rgb(c, up.device)  # (1,3,H,W) float32 in [0,1]
            if size is not None and (rgb.shape[-1], rgb.shape[-2]) != size:
                rgb = F.interpolate(rgb, size=(size[1], size[0]), mode="bicubic", antialias=True).clamp_(0, 1)
            hr = up(rgb)  # (1,3,4H,4W) float32 in [0,1]
            model_s = time.monotonic() - t0
            bicubic = F.interpolate(rgb, scale_factor=up.scale, mode="bicubic").clamp_(0, 1)
            y, u, v = (p.cpu().numpy() for p in rgb_to_yuv(torch.cat([hr, bicubic]), JPEG_LAYOUT))
        now = time.monotonic()
        item = Shown(c.t, c.at, now, {"output": (y[0], u[0], v[0]), "input": (y[1], u[1], v[1])})
        shown.put(item)
        stats.on_upscaled(now, model_s, now - c.at)
        if on_shown is not None:
            on_shown(item)
