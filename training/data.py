"""Training batches: random HR crops from an image folder, each batch a pure function of (seed, step).

Why no DataLoader state: every step draws its images, crops and flips from a generator seeded by
(seed, step, rank), so a resumed run sees exactly the batches the uninterrupted run would have seen,
and nothing about the data pipeline has to be checkpointed.  Every photo is decoded (and checked)
once when the run starts and kept as uint8: a file that cannot be used is skipped with a warning then,
instead of ending the run when a batch first draws it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .images import usable_images


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A CPU generator for one (step, rank, purpose): independent streams, reproducible on resume."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1009 + rank) * 17 + stream)


class PhotoCrops:
    """Random `crop`x`crop` HR patches with flips and 90-degree rotations from the photos of `root`."""

    def __init__(self, root: Path, crop: int, warn: Callable[[str], None] = lambda msg: None) -> None:
        found = usable_images(root, crop, "--data", warn)
        self.paths = [path for path, _ in found]
        self.crop = crop
        self._images = [img for _, img in found]  # (3,H,W) uint8 each, both sides >= crop

    def _image(self, i: int) -> torch.Tensor:
        return self._images[i]

    def batch(self, size: int, g: torch.Generator) -> torch.Tensor:
        """(size,3,crop,crop) float in [0,1]."""
        out = []
        for _ in range(size):
            img = self._image(int(torch.randint(len(self.paths), (1,), generator=g)))
            h, w = img.shape[-2:]
            top = int(torch.randint(h - self.crop + 1, (1,), generator=g))
            left = int(torch.randint(w - self.crop + 1, (1,), generator=g))
            patch = img[:, top : top + self.crop, left : left + self.crop]
            if torch.rand((), generator=g) < 0.5:
                patch = patch.flip(-1)
            patch = patch.rot90(int(torch.randint(4, (1,), generator=g)), dims=(-2, -1))
            out.append(patch)
        return torch.stack(out).float() / 255
