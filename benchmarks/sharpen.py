"""The `video` rows and the real clips of `gtasr-train evaluate` for one weights file at several
`--sharpen` settings, bicubic beside them (no peers: minutes on a CPU instead of half an hour).

    python -m benchmarks.sharpen --sharpen 0,0.1 --out benchmarks/results/video_sharpen_cpu_tiny.json

Video rows: one moving-camera clip of 8 frames (256²) per val photo, the first 4 photos, degraded with
the fixed light / medium / heavy settings (training.evaluate_video.video_rows); real clips: the first
8 whole frames of each clip in --videos (--spread: 8 evenly spaced from the first to the last).
--noise none, fp32, as the README's tables.
"""

from __future__ import annotations

import platform
from pathlib import Path

import click
import torch

from gtasr_stream.engines.upscaler import Upscaler
from gtasr_stream.weights import model_weights
from training.evaluate import bicubic
from training.evaluate_video import Method, real_clip_rows, video_rows
from training.images import list_images, load_image
from training.lpips import DEFAULT_LPIPS, load_lpips

from .common import SHARED, parse_list, write_json


@click.command()
@click.option(
    "--weights", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: video."
)
@click.option("--sharpen", "sharpens", default="0,0.1", show_default=True, help="Comma-separated weights.")
@click.option("--val", type=click.Path(file_okay=False, path_type=Path), default=SHARED / "photos/val")
@click.option("--videos", type=click.Path(file_okay=False, path_type=Path), default=SHARED / "videos")
@click.option("--lpips", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_LPIPS)
@click.option("--frames", type=click.IntRange(2), default=8, show_default=True, help="Per clip, both kinds.")
@click.option(
    "--spread", is_flag=True, help="Real clips: frames evenly spaced over the whole clip, not the first."
)
@click.option(
    "--size", type=click.IntRange(64), default=256, show_default=True, help="Side of the video rows' HR."
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(
    weights: Path | None,
    sharpens: str,
    val: Path,
    videos: Path,
    lpips: Path,
    frames: int,
    spread: bool,
    size: int,
    out: Path,
) -> None:
    path = weights or model_weights("video")
    base = Upscaler(weights=path, device="cpu", precision="fp32", noise="none")
    try:
        amounts = [float(s) for s in parse_list(sharpens)]
    except ValueError:
        raise click.BadParameter(f"not a list of numbers: {sharpens!r}", param_hint="--sharpen") from None
    methods: dict[str, Method] = {"bicubic": bicubic}
    for s in amounts:
        methods[f"sharpen {s:g}"] = Upscaler(
            base.model, device="cpu", precision="fp32", noise="none", sharpen=s
        )
    photos = [load_image(p) for p in list_images(val)][:4]
    with torch.no_grad():
        rows = video_rows(methods, photos, load_lpips(lpips), size, frames, 0, {})
        rows |= real_clip_rows(methods, videos, frames, 0, {}, spread)
    write_json(
        out,
        {
            "weights": str(path),
            "weights_sharpen_metadata": base.meta.get("sharpen"),
            "machine": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "real_clip_frames": "spread over the clip" if spread else "first",
            "protocol": __doc__.split("\n\n")[2].replace("\n", " ") if __doc__ else "",
            "rows": rows,
        },
    )
    for name, row in rows.items():
        click.echo(f"{name:48s} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
