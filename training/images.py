"""Reading photos from disk: listing an image folder and decoding one file to a float tensor.

Owns which file types count as training/validation photos and how they become tensors (PIL, EXIF
orientation applied, RGB). The only place in `training` that imports PIL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def list_images(folder: Path) -> list[Path]:
    """The jpg/jpeg/png/webp files directly in `folder` (any case of suffix), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"'{folder}' is not a folder of images")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: Path) -> torch.Tensor:
    """Decode one image to (3,H,W) float32 in [0,1], RGB, upright per its EXIF orientation."""
    with Image.open(path) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    arr = np.asarray(rgb, dtype=np.uint8)  # (H,W,3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0  # (3,H,W)
