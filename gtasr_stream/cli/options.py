"""The model flags every command shares (weights or shipped model, device, precision, tiling, noise,
backend), defined once with their defaults and help, and how they become `Upscaler` keyword arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# The names model_options gives the command's function; upscaler_kwargs reads exactly these.
MODEL_PARAMS = (
    "weights",
    "model_name",
    "denoise",
    "device",
    "precision",
    "batch",
    "tile",
    "tile_pad",
    "noise",
    "sharpen",
    "seed",
    "backend",
    "onnx_path",
    "pt2_path",
)


def model_options(*, batch: bool) -> Callable[[F], F]:
    """Add the model flags to a command, in this order in its --help.

    batch: offer -b/--batch (the preview runs one frame per call: batching would only add latency).
    """
    options = [
        click.option(
            "--weights",
            type=click.Path(dir_okay=False),
            help="Model file (.safetensors) instead of a shipped model.",
        ),
        click.option(
            "-n",
            "--model",
            "model_name",
            type=click.Choice(["video", "restore"]),
            help="Shipped model: video (default; web, DVD, phone and camcorder video: keeps detail, cleans "
            "codec artefacts) or restore (badly degraded sources: heavy blur, noise and JPEG; smooths more).",
        ),
        click.option(
            "--denoise",
            type=click.FloatRange(0, 1),
            help="Blend the two shipped models: 0 = video (detail), 1 = restore (noise removal), between = both.",
        ),
        click.option("-d", "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option(
            "--fp32",
            "precision",
            flag_value="fp32",
            help="Full precision through the generic sampler, bit for bit (CPUs without AMX or AVX512-BF16 "
            "default to float32 through a 2x faster rearrangement of it, equal to 1e-5).",
        ),
        click.option(
            "--bf16",
            "precision",
            flag_value="bf16",
            help="bfloat16 (default on CPUs with AMX or AVX512-BF16; on CUDA instead of float16).",
        ),
    ]
    if batch:
        options.append(
            click.option(
                "-b",
                "--batch",
                default=4,
                show_default=True,
                type=click.IntRange(1, 256),
                help="Frames per model call.",
            )
        )
    options += [
        click.option(
            "-t",
            "--tile",
            default=0,
            show_default=True,
            type=click.IntRange(0),
            help="Tile size in input px (0: whole frames).",
        ),
        click.option(
            "--tile-pad",
            default=16,
            show_default=True,
            type=click.IntRange(0),
            help="Overlap of tiles in input px.",
        ),
        click.option(
            "--noise",
            type=click.Choice(["auto", "fixed", "fresh", "none"]),
            default="auto",
            show_default=True,
            help="fixed: one noise for the whole stream (no flicker); fresh: new per frame; none: zero; "
            "auto: what the weights' evaluation chose (in their metadata), else fixed.",
        ),
        click.option(
            "--sharpen",
            type=click.FloatRange(0, 2),
            help="Unsharp mask of the output's luma (sigma 1.5 px) at this weight; 0: the network's output "
            "as it is. Default: the model's own (video 0.1, restore 0; --denoise blends them).",
        ),
        click.option(
            "--seed",
            default=0,
            show_default=True,
            type=click.IntRange(-(2**63), 2**64 - 1),  # what torch's generators take (it overflowed: exit 3)
            help="Seed of the noise.",
        ),
        click.option(
            "--backend",
            type=click.Choice(["auto", "torch", "onnx", "trt", "aoti"]),
            default="auto",
            show_default=True,
            help="What runs the network: torch (eager), onnx (ONNX Runtime), trt (TensorRT engine built from the "
            "ONNX graph), aoti (AOTInductor package). Compiled forms are made once and cached in "
            "~/.cache/gtasr-stream. auto: trt when installed (CUDA), else torch; aoti is opt-in until measured faster.",
        ),
        click.option(
            "--onnx",
            "onnx_path",
            type=click.Path(dir_okay=False),
            help="ONNX graph written by gtasr-export, for --backend onnx or trt.",
        ),
        click.option(
            "--pt2",
            "pt2_path",
            type=click.Path(dir_okay=False),
            help="AOTInductor package written by gtasr-export --pt2, for --backend aoti.",
        ),
    ]

    def add(f: F) -> F:
        for option in reversed(options):  # click lists a command's options in decorator order
            f = option(f)
        return f

    return add


def upscaler_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """The flags of model_options, as click passed them, -> Upscaler(**...) keyword arguments."""
    unknown = set(params) - set(MODEL_PARAMS)
    assert not unknown, f"not model flags: {unknown}"
    kwargs = {name.removesuffix("_path"): value for name, value in params.items()}  # onnx_path -> onnx
    kwargs["precision"] = kwargs["precision"] or "auto"  # neither --fp32 nor --bf16
    return kwargs
