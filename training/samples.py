"""Sample grids for watching a run: one row per validation crop, LR (bicubic) | output | HR, as PNG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gtasr_stream.files import atomic_path
from gtasr_stream.model import ConsistencyModel, sample_one_step, upsample_lq

from .degradation import DegradationConfig, degrade_fixed
from .images import usable_images

SAMPLES = 4  # validation photos shown


def val_crops(
    folder: Path, crop: int, device: torch.device, warn: Callable[[str], None] = lambda msg: None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lq, hr): centre crops of the first usable photos, degraded with a fixed seed; both in [-1,1]."""
    hrs = []
    for _, img in usable_images(folder, crop, "--val", warn, limit=SAMPLES):
        h, w = img.shape[-2:]
        top, left = (h - crop) // 2, (w - crop) // 2
        hrs.append(img[:, top : top + crop, left : left + crop].float() / 255)
    hr = torch.stack(hrs)
    lq = degrade_fixed(hr, DegradationConfig(), seed=0)
    return (lq * 2 - 1).to(device), (hr * 2 - 1).to(device)


@torch.no_grad()
def save_grid(path: Path, model: ConsistencyModel, val: tuple[torch.Tensor, torch.Tensor]) -> None:
    lq, hr = val
    out = sample_one_step(model, lq, None)
    rows = torch.cat([upsample_lq(lq), out, hr], dim=-1)  # (N,3,crop,3*crop)
    grid = torch.cat(list(rows), dim=-2).add(1).mul(127.5).clamp(0, 255).round()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".partial.png") as tmp:
        Image.fromarray(grid.byte().permute(1, 2, 0).cpu().numpy().astype(np.uint8)).save(tmp)
