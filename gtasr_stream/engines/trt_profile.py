"""TensorRT optimisation profiles in LR input sizes, and the tiles for frames too large for TensorRT.

Pure Python and arithmetic (no TensorRT, no GPU), so `gtasr-export` flags and the tests use it anywhere.
`profile_for` picks the profile of a stream (and a tile size where whole frames would break
TensorRT's tensor size limit); `profile_from_flags` reads --min/--opt/--max-shape.

Decisions:
- One profile per stream, with a fixed spatial size (min = (1, h, w), opt = max = (batch, h, w)):
  every frame of a video has one size, and tactics tuned for exactly that size are the fastest.
  Batch 1 up to `batch` covers the last, partial batch and Upscaler's out-of-memory ladder.
- Frames whose tensors would pass TensorRT's 2^31 - 1 element limit even at batch 1 are tiled at
  batch 1 (tiling.run_tiled), with the largest tile that fits and a profile covering exactly the
  tiles run_tiled cuts.  The limit is counted on the graph's widest tensor, the head's channels at
  HR size, not only on the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..model import SCALE
from .tiling import MIN_TILE, _starts  # _starts: the profile covers exactly run_tiled's tiles

MAX_ELEMENTS = 2**31 - 1  # TensorRT rejects any tensor, intermediate ones included, with more elements

Shape = tuple[int, int, int]  # (B, h, w) of the LR input
Dims = tuple[int, int, int, int]  # a TensorRT input shape, NCHW

# ---------------------------------------------------------------- profiles and tiles


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile in LR input sizes (B, h, w); TensorRT tunes for `opt`."""

    min: Shape  # the smallest input the engine takes
    opt: Shape  # the size its tactics are timed at
    max: Shape  # the largest input; sets the engine's activation memory

    def __post_init__(self) -> None:
        for s in (self.min, self.opt, self.max):
            if len(s) != 3 or not all(isinstance(d, int) and d >= 1 for d in s):
                raise ValueError(f"a profile shape is three positive integers (B, h, w), got {s!r}")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max, strict=True)):
            raise ValueError(
                f"profile min {_fmt(self.min)}, opt {_fmt(self.opt)}, max {_fmt(self.max)}: "
                "need min <= opt <= max in each of batch, height and width"
            )

    def shapes(self, name: str) -> tuple[Dims, Dims, Dims]:
        """(min, opt, max) TensorRT shapes of graph input `name`: lq (B,3,h,w) or eps (B,3,4h,4w)."""
        if name == "lq":
            k = 1
        elif name == "eps":
            k = SCALE
        else:
            raise ValueError(f"the graph's inputs are lq and eps, got {name!r}")

        def dims(s: Shape) -> Dims:
            return (s[0], 3, k * s[1], k * s[2])

        return dims(self.min), dims(self.opt), dims(self.max)

    def covers(self, shape: Shape) -> bool:
        return all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max, strict=True))

    def __str__(self) -> str:
        return f"{_fmt(self.min)} to {_fmt(self.max)} (opt {_fmt(self.opt)})"


def profile_from_flags(
    min_shape: Sequence[int], opt_shape: Sequence[int], max_shape: Sequence[int]
) -> Profile:
    """The profile of --min-shape/--opt-shape/--max-shape (each B, h, w); a ValueError unless
    min <= opt <= max in each of batch, height and width."""

    def shape(s: Sequence[int]) -> Shape:
        if len(s) != 3:
            raise ValueError(f"a profile shape is three positive integers (B, h, w), got {tuple(s)!r}")
        return int(s[0]), int(s[1]), int(s[2])

    return Profile(shape(min_shape), shape(opt_shape), shape(max_shape))


def _elements(b: int, h: int, w: int, multiple: int, hr_channels: int) -> int:
    """Elements of the graph's widest tensor at input (b, h, w): hr_channels at 4x the padded size."""
    hp, wp = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    return b * hr_channels * SCALE * hp * SCALE * wp


def _cuts(n: int, tile: int, pad: int) -> tuple[int, int]:
    """Shortest and longest extent tiling.run_tiled cuts from a side of n px with `tile` and `pad`
    (its own start positions; each tile reaches `pad` beyond them where the side allows)."""
    lengths = [min(s + tile + pad, n) - max(s - pad, 0) for s in _starts(n, tile)]
    return min(lengths), max(lengths)


def profile_for(
    batch: int,
    h: int,
    w: int,
    *,
    tile_pad: int = 16,
    multiple: int = 1,
    hr_channels: int = 3,
    max_elements: int = MAX_ELEMENTS,
) -> tuple[Profile, int]:
    """The profile for a stream of h x w frames run `batch` at a time, and a tile size (0: none).

    Batches are lowered until the widest tensor fits in `max_elements`; where one frame does not
    fit, the result is the largest tile (a multiple of 8, >= MIN_TILE) whose biggest tile does at
    batch 1, and a batch-1 profile covering exactly the tiles tiling.run_tiled cuts with it and
    `tile_pad` (min the shortest, opt = max the longest, per side).  The caller must then run tiles
    at batch 1.

    multiple, hr_channels: the network's LR multiple (the graph pads to it) and its widest tensor at
    HR size, in channels: max(3, cfg.head_channels).  The defaults count the output hr alone.
    """
    if min(batch, h, w, multiple, hr_channels) < 1 or tile_pad < 0:
        raise ValueError(
            f"batch {batch}, h {h}, w {w}, multiple {multiple}, hr_channels {hr_channels} must be >= 1"
            f" and tile_pad {tile_pad} >= 0"
        )
    # 1. whole frames: as many as fit, up to `batch`
    frames = max_elements // _elements(1, h, w, multiple, hr_channels)
    if frames >= 1:
        b = min(batch, frames)
        return Profile((1, h, w), (b, h, w), (b, h, w)), 0

    # 2. tiles: the largest whose biggest tile fits
    for tile in range(max(h, w) // 8 * 8, MIN_TILE - 1, -8):
        (h_lo, h_hi), (w_lo, w_hi) = _cuts(h, tile, tile_pad), _cuts(w, tile, tile_pad)
        if _elements(1, h_hi, w_hi, multiple, hr_channels) <= max_elements:
            return Profile((1, h_lo, w_lo), (1, h_hi, w_hi), (1, h_hi, w_hi)), tile
    raise ValueError(f"{w}x{h} frames: even {MIN_TILE}-px tiles exceed {max_elements} elements")
