"""CPU memory: size the batch (then tiles) from the memory available, before a frame is upscaled.

On CUDA an out-of-memory error is an exception the engine catches and steps down from; on the CPU
the kernel's OOM killer ends the process without one (or the machine swaps for minutes), so the
size has to be right up front.  Peak working memory grows with the input pixels of a batch; the
figures below were measured as peak RSS growth over one `Upscaler` call (fp32, 2-core Xeon):
tiny 6.9-7.6 kB per input pixel (180x132, 360x264; batch 1 and 2), small about 30 kB (90x66).
`paper` was not measured: 8x small, as its widths are about 3x and its HR head 2x.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..model.network import PRESETS

BYTES_PER_INPUT_PIXEL = {"tiny": 8_000, "small": 32_000, "paper": 256_000}
SHARE = 0.6  # of the available memory: decoding, encoding and the queues between them need the rest


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (what can be used without swapping), or None off Linux."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def per_pixel(up: Any) -> int:
    """Peak bytes per input pixel of the Upscaler's network (the small figure for unknown ones)."""
    cfg = getattr(getattr(getattr(up, "model", None), "net", None), "cfg", None)
    name = next((n for n, c in PRESETS.items() if c == cfg), "small")
    return BYTES_PER_INPUT_PIXEL[name]


def fit(batch: int, tile: int, tile_pad: int, h: int, w: int, per_px: int, budget: float) -> tuple[int, int]:
    """The largest (batch, tile) at most (batch, tile) whose peak fits `budget` bytes (tile 0: whole frames)."""
    side = (tile + 2 * tile_pad) ** 2 if tile else h * w  # input pixels of one network call per frame
    while batch > 1 and batch * side * per_px > budget:
        batch //= 2
    if batch * side * per_px <= budget:
        return batch, tile
    # even one whole frame is too much: tiles whose padded area fits, multiples of 16 px
    t = 16 * int((math.sqrt(budget / per_px) - 2 * tile_pad) // 16)
    return 1, max(32, t)


def fit_cpu_memory(up: Any, h: int, w: int, warn: Callable[[str], None], available: int | None) -> None:
    """Lower `up.batch` (then tile) for an h x w input when the CPU's memory would not hold it; says so once."""
    if available is None:
        return
    per_px = per_pixel(up)
    batch, tile = fit(up.batch, up.tile, up.tile_pad, h, w, per_px, SHARE * available)
    if (batch, tile) == (up.batch, up.tile):
        return
    what = f"batch {up.batch} -> {batch}" + (f", {tile}-px tiles" if tile != up.tile else "")
    warn(
        f"{_size(available)} of memory available: {what} for {w}x{h} frames"
        f" (about {_size(h * w * per_px)} per whole frame on the CPU); -b and -t set them"
    )
    up.batch, up.tile = batch, tile


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
