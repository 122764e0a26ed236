"""Make `lpips_vgg16.safetensors` yourself from the `lpips` package and torchvision's VGG16 weights.

Owns the mapping from the two upstream pickles to the layout training.lpips loads (see
../shared/data/weights/README.md, "LPIPS"):

- `lpips` (pip install lpips; BSD-2-Clause) ships the 5 linear layers as `lpips/weights/v0.1/vgg.pth`,
  keys `lin{0..4}.model.1.weight`;
- torchvision's ImageNet VGG16 (`torchvision.models.vgg16(weights="IMAGENET1K_V1")` downloads
  `vgg16-397923af.pth` into `torch.hub.get_dir()/checkpoints`), keys `features.{I}.weight|bias`;
- the scaling constants are those of lpips.ScalingLayer.

    python -m training.convert_lpips --out lpips_vgg16.safetensors [--lin vgg.pth] [--vgg vgg16-397923af.pth]

Both pickles are read with `torch.load(..., weights_only=True)`: tensors only, no code runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import click
import torch
from safetensors.torch import save_file
from torch import Tensor

from .lpips import LPIPS

SHIFT = (-0.030, -0.088, -0.188)  # lpips.ScalingLayer.shift
SCALE = (0.458, 0.448, 0.450)  # lpips.ScalingLayer.scale
VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1
LIN_IN_PACKAGE = Path("weights/v0.1/vgg.pth")  # inside the installed `lpips` package


def convert(lins: dict[str, Tensor], vgg: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict from lpips' `vgg.pth` (lins) and torchvision's VGG16 state dict (vgg).

    `net.sliceS.I.*` is `features.I.*`; `linK.model.1.weight` is copied; the classifier is dropped.
    Raises ValueError naming a missing key; the result loads into LPIPS with strict=True.
    """
    out: dict[str, Tensor] = {}
    for key in LPIPS().state_dict():
        if key.startswith("net.slice"):
            src, source = (
                "features." + key.split(".", 2)[2],
                vgg,
            )  # net.slice3.12.weight -> features.12.weight
        elif key.startswith("lin"):
            src, source = key, lins
        elif key == "scaling_layer.shift":
            out[key] = torch.tensor(SHIFT).view(1, 3, 1, 1)
            continue
        elif key == "scaling_layer.scale":
            out[key] = torch.tensor(SCALE).view(1, 3, 1, 1)
            continue
        else:
            raise AssertionError(f"unmapped LPIPS key {key!r}")
        if src not in source:
            raise ValueError(f"{'VGG16' if source is vgg else 'lpips vgg.pth'} weights have no {src!r}")
        out[key] = source[src].detach().float().contiguous().clone()
    LPIPS().load_state_dict(out, strict=True)  # shapes
    return out


def _sha256_16(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _default_lin() -> Path | None:
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / LIN_IN_PACKAGE


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File to write.")
@click.option(
    "--lin",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="lpips' vgg.pth [default: the one in the installed lpips package].",
)
@click.option(
    "--vgg",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=f"torchvision's {VGG16_FILE} [default: torch.hub.get_dir()/checkpoints/{VGG16_FILE}].",
)
def main(out: Path, lin: Path | None, vgg: Path | None) -> None:
    """Write LPIPS-VGG16 v0.1 weights as safetensors in training.lpips' layout."""
    lin = lin or _default_lin()
    if lin is None or not lin.is_file():
        raise click.UsageError(
            f"--lin: lpips' vgg.pth not found ({lin or 'the lpips package is not installed'})"
        )
    vgg = vgg or Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    if not vgg.is_file():
        raise click.UsageError(
            f"--vgg: {vgg} not found; run torchvision.models.vgg16(weights='IMAGENET1K_V1') once"
        )
    try:
        tensors = convert(
            torch.load(lin, map_location="cpu", weights_only=True),
            torch.load(vgg, map_location="cpu", weights_only=True),
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    metadata = {
        "layout": "lpips 0.1.4 LPIPS(net=vgg, version=0.1) state_dict keys",
        "source": f"lpips {lin.name} (sha256 {_sha256_16(lin)}), torchvision {vgg.name} (sha256 {_sha256_16(vgg)})",
        "license": "LPIPS linear layers BSD-2-Clause (richzhang/PerceptualSimilarity); "
        "backbone: torchvision ImageNet weights (BSD-3-Clause code)",
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)  # the trainer's default is ../shared/data/weights/
    save_file(tensors, str(out), metadata=metadata)
    click.echo(f"wrote {out} ({len(tensors)} tensors)")


if __name__ == "__main__":
    main()
