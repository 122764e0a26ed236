"""Reading photos from disk: listing an image folder and decoding one file to a float tensor.

Owns which file types count as training/validation photos, how they become tensors (PIL, EXIF
orientation applied, RGB), and which of them cannot be used (unreadable, truncated, too small): those
are found once when a run starts and left out with one warning naming them, so that a broken file
cannot end a run hours in. The only place in `training` that imports PIL.
"""

from __future__ import annotations

from collections.abc import Callable
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


def usable_images(
    folder: Path, min_side: int, flag: str, warn: Callable[[str], None], limit: int | None = None
) -> list[tuple[Path, torch.Tensor]]:
    """The photos of `folder` that decode completely and have both sides >= min_side, each as
    (path, (3,H,W) uint8), the first `limit` of them if given.  The others are named in one warning;
    none left is a ValueError naming `flag`."""
    good: list[tuple[Path, torch.Tensor]] = []
    bad: list[str] = []
    paths = list_images(folder)
    for path in paths:
        if limit is not None and len(good) == limit:
            break
        try:
            img = (load_image(path) * 255).round().to(torch.uint8)  # decodes every byte: truncation shows
        except Exception as e:  # PIL raises OSError, SyntaxError (broken PNG chunks), ValueError, ...
            bad.append(
                f"{path.name} ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
            )
            continue
        h, w = img.shape[-2:]
        if min(h, w) < min_side:
            bad.append(f"{path.name} ({w}x{h}, under the {min_side}-px crop)")
            continue
        good.append((path, img))
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    if not good:
        found = f"{len(paths)} image files" if paths else "no images (jpg/png/webp)"
        raise ValueError(f"{flag}: {found} in '{folder}' and none usable{': ' + shown if bad else ''}")
    if bad:
        warn(f"{flag}: skipping {len(bad)} of the images in '{folder}' that cannot be used: {shown}")
    return good
