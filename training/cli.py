"""`gtasr-train`: stage1, stage2, evaluate.  Parses flags into the options dataclasses and prints."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .options import Stage1Options, Stage2Options, TrainOptions

console = Console(stderr=True, highlight=False)
_DIR = click.Path(file_okay=False, path_type=Path)


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The flags every training stage takes (TrainOptions' fields); defaults come from the dataclass."""
    d = TrainOptions.__dataclass_fields__
    options = [
        click.option(
            "--data",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            required=True,
            help="Folder of HR photos.",
        ),
        click.option("--out", type=_DIR, required=True, help="Run folder (checkpoints, metrics, samples)."),
        click.option("--preset", default=d["preset"].default, show_default=True, help="Network preset."),
        click.option(
            "--val",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="Photos for the sample grids.",
        ),
        click.option("--steps", type=click.IntRange(1), help="Total steps of this stage."),
        click.option("--batch", type=click.IntRange(1), help="Batch per process."),
        click.option(
            "--crop",
            type=click.IntRange(128),
            default=d["crop"].default,
            show_default=True,
            help="HR crop side: a multiple of 128 (tiny) or 256 (small, paper).",
        ),
        click.option("--lr", type=float, default=d["lr"].default, show_default=True),
        click.option("--ema", type=float, default=d["ema"].default, show_default=True),
        click.option(
            "--degradation",
            type=click.Choice(["video", "realesrgan", "mix"]),
            default=d["degradation"].default,
            show_default=True,
            help="How LR inputs are made: video (optics, resampler, light noise, H.264/H.265/MPEG codecs), "
            "realesrgan (METHOD.md's heavy second-order pipeline), mix (video for 80% of samples).",
        ),
        click.option(
            "--direct-loss",
            type=click.FloatRange(0),
            default=d["direct_loss"].default,
            show_default=True,
            help="Weight of a loss on the noise-free one-step output (what --noise none runs); 0: off.",
        ),
        click.option(
            "--direct-lpips",
            type=click.FloatRange(0, 1),
            default=d["direct_lpips"].default,
            show_default=True,
            help="LPIPS share of --direct-loss's distance, the rest Charbonnier (0.5: METHOD.md's d).",
        ),
        click.option(
            "--grid-loss",
            type=click.FloatRange(0),
            default=d["grid_loss"].default,
            show_default=True,
            help="Weight of a penalty on a 4-pixel grid in that output (needs --direct-loss); 0: off.",
        ),
        click.option(
            "--phase-loss",
            type=click.FloatRange(0),
            default=d["phase_loss"].default,
            show_default=True,
            help="Weight of a penalty on the error's bias per 4x4 pixel phase (needs --direct-loss); 0: off.",
        ),
        click.option(
            "--direct-rect",
            type=click.FloatRange(0),
            default=d["direct_rect"].default,
            show_default=True,
            help="Weight of LPIPS between the Sobel maps of that output and the HR (needs --direct-loss); 0: off.",
        ),
        click.option(
            "--direct-texture",
            type=click.FloatRange(0),
            default=d["direct_texture"].default,
            show_default=True,
            help="Weight of a Gram-matrix texture loss (VGG, 32-pixel squares) on that output (needs --direct-loss); 0: off.",
        ),
        click.option(
            "--gt-usm",
            type=click.FloatRange(0),
            default=d["gt_usm"].default,
            show_default=True,
            help="Unsharp-mask weight of the HR that the terms on that output aim at (Real-ESRGAN's "
            "sharpened ground truth; needs --direct-loss); 0: the HR itself.",
        ),
        click.option(
            "--codec-prob",
            type=click.FloatRange(0, 1),
            default=0.0,
            show_default=True,
            help="Share of batches also compressed with H.264/H.265.",
        ),
        click.option(
            "--lpips",
            type=click.Path(dir_okay=False, path_type=Path),
            default=d["lpips"].default,
            show_default=True,
            help="lpips_vgg16.safetensors.",
        ),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default="auto", show_default=True),
        click.option(
            "--precision",
            type=click.Choice(["auto", "bf16", "fp32"]),
            default="auto",
            show_default=True,
            help="Autocast dtype; auto: bf16 on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16).",
        ),
        click.option(
            "--checkpoint-every",
            type=click.IntRange(1),
            default=d["checkpoint_every"].default,
            show_default=True,
        ),
        click.option(
            "--sample-every", type=click.IntRange(1), default=d["sample_every"].default, show_default=True
        ),
        click.option(
            "--log-every", type=click.IntRange(1), default=d["log_every"].default, show_default=True
        ),
        click.option(
            "--resume",
            is_flag=True,
            help="Continue from the newest readable checkpoint in OUT (none yet: start at step 0, with a warning).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train GTASR (METHOD.md): stage1, then stage2; evaluate any checkpoint."""


@main.command()
@_common
@click.option("--no-ta", is_flag=True, help="Turn Trajectory Alignment off (ablation).")
@click.option(
    "--init",
    type=click.Path(exists=True, path_type=Path),
    help="Fine-tune: start from these weights (.safetensors), a checkpoint or a run folder.",
)
def stage1(no_ta: bool, init: Path | None, **kw: Any) -> None:
    """Stage I: consistency training with Trajectory Alignment."""
    cfg = Stage1Options(**_fields(kw), init=init, trajectory_alignment=not no_ta)
    _run(cfg, "stage1")


@main.command()
@_common
@click.option(
    "--init",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Start from Stage I: a run folder, a checkpoint or its weights (.safetensors).",
)
@click.option("--rect-published", is_flag=True, help="Rect without gradient, as in the published code.")
def stage2(init: Path, rect_published: bool, **kw: Any) -> None:
    """Stage II: DTM plus Dual-Reference Structural Rectification."""
    cfg = Stage2Options(**_fields(kw), init=init, rect_published=rect_published)
    _run(cfg, "stage2")


@main.command("evaluate")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option(
    "--val",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Held-out photos.",
)
@click.option("--out", type=_DIR, required=True, help="Folder for results.json, results.md, compare.png.")
@click.option(
    "--lpips", type=click.Path(dir_okay=False, path_type=Path), default=TrainOptions.lpips, show_default=True
)
@click.option("--peers", type=click.Path(file_okay=False, path_type=Path), help="Folder of peer weights.")
@click.option("--no-peers", is_flag=True, help="Compare with bicubic and Lanczos only.")
@click.option("--crop", type=click.IntRange(64), default=256, show_default=True)
@click.option("--clips", type=click.IntRange(0), default=4, show_default=True)
@click.option(
    "--videos",
    type=click.Path(file_okay=False, path_type=Path),
    default=TrainOptions.lpips.parents[1] / "videos",
    show_default=True,
    help="Folder of real clips (no ground truth): sharpness and periodicity against bicubic.",
)
@click.option("--no-videos", is_flag=True, help="Skip the real clips.")
@click.option(
    "--real-frames",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="Frames read from each real clip.",
)
@click.option(
    "--real-size",
    type=click.IntRange(0),
    default=128,
    show_default=True,
    help="Centre crop of the real clips' frames, px a side (0: whole frames, the steadier score; peers are slow).",
)
@click.option(
    "--real-spread",
    is_flag=True,
    help="Read the real clips' frames evenly spaced from first to last, not the first ones (a title or a "
    "fade at the start is not the clip).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def evaluate_cmd(peers: Path | None, no_peers: bool, no_videos: bool, **kw: Any) -> None:
    """PSNR-Y, SSIM-Y, LPIPS and flicker of a checkpoint next to bicubic, Lanczos and the peers."""
    from gtasr_stream.errors import UserError

    from .evaluate import EvaluateOptions, evaluate, markdown

    cfg = EvaluateOptions(**kw)
    if no_videos:
        cfg = dataclasses.replace(cfg, videos=None)
    if no_peers:
        cfg = dataclasses.replace(cfg, peers=None)
    elif peers is not None:
        cfg = dataclasses.replace(cfg, peers=peers)
    try:
        results = evaluate(cfg)
    except (UserError, ValueError) as e:
        console.print(f"[red]gtasr-train: error:[/] {e}", soft_wrap=True)
        sys.exit(1)
    console.print(markdown(results), soft_wrap=True)


def _fields(kw: dict[str, Any]) -> dict[str, Any]:
    """Flags the user left unset take the stage dataclass's own default (steps and batch differ)."""
    return {k: v for k, v in kw.items() if v is not None}


def _run(cfg: Stage1Options | Stage2Options, stage: Any) -> None:
    from rich.markup import escape

    from gtasr_stream.errors import UserError

    from .lpips import LPIPSWeightsError
    from .train import train

    progress = Progress(
        TextColumn(f"[bold]{stage}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task(stage, total=cfg.steps, loss=float("nan"))
    try:
        with progress:
            final = train(
                cfg,
                stage,
                on_step=lambda s, m: progress.update(task, completed=s, loss=m["loss"]),
                on_warning=lambda msg: console.print(
                    f"[yellow]gtasr-train: warning:[/] {escape(msg)}", soft_wrap=True
                ),
            )
    except (LPIPSWeightsError, UserError, ValueError) as e:  # UserError: --device, --init weights
        console.print(f"[red]gtasr-train: error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(1)
    console.print(f"EMA weights: {final}  (gtasr-stream IN OUT --weights {final})", soft_wrap=True)


if __name__ == "__main__":
    main(prog_name="gtasr-train")
