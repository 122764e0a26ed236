"""`gtasr-export`: write the model as one ONNX graph (dynamic batch, height and width) checked against
PyTorch with onnxruntime, build its TensorRT engine where TensorRT and a GPU are (profile from the
shape flags, cached), and with --pt2 compile an AOTInductor package.  The only module of `export`
that parses flags and prints.

Exit codes as gtasr-stream's: 1 for a bad flag, file or environment (one line on stderr), 3 for an
internal error (GTASR_DEBUG=1 shows its traceback).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from gtasr_stream.errors import UserError
from gtasr_stream.files import atomic_path

Shape = tuple[int, int, int]  # (B, H, W) of the LR input
Precision = Literal["fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class ExportOptions:
    weights: Path  # .safetensors written by gtasr_stream.weights (the preset is read from it)
    precision: Precision  # the graph's inputs, weights and arithmetic
    out: Path  # folder for <weights stem>.<precision>.onnx
    opset: int | None  # ONNX opset; None: the exporter's default (22 for bf16, the first with bf16 Conv)
    min_shape: Shape  # smallest input: TensorRT's profile later; for ONNX, a size --check runs
    opt_shape: Shape  # the size TensorRT will tune for; for ONNX, a size --check runs
    max_shape: Shape  # largest input: TensorRT's profile later; for ONNX, a size --check runs
    cache_dir: Path  # where the TensorRT engine and its timing cache will go
    onnx_only: bool  # stop after the ONNX file (no TensorRT engine)
    check: bool  # run the graph with onnxruntime at the three shapes and compare with PyTorch
    pt2: bool  # also compile an AOTInductor package for `device`
    device: str  # auto | cpu | cuda | cuda:N: where the .pt2 (and the engine) will run
    workspace_gib: float  # TensorRT builder workspace


def parse_shape(flag: str, text: str) -> Shape:
    """'BxHxW' -> (B, H, W), each a positive integer; any H, W (odd, portrait) is fine."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(
            f"{flag} {text!r}: expected BxHxW, three positive integers (batch x height x width, e.g. 1x540x960)"
        )
    b, h, w = (int(p) for p in parts)
    return b, h, w


def _options(
    weights: str | None,
    precision: Precision,
    out: str,
    opset: int | None,
    min_shape: str,
    opt_shape: str,
    max_shape: str,
    cache_dir: str | None,
    onnx_only: bool,
    check: bool,
    pt2: bool,
    device: str,
    workspace: float,
) -> ExportOptions:
    """Validate the flags (shapes before anything slow) and build the options, or a UserError."""
    shapes = (
        parse_shape("--min-shape", min_shape),
        parse_shape("--opt-shape", opt_shape),
        parse_shape("--max-shape", max_shape),
    )
    lo, mid, hi = shapes
    if not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
        raise UserError(
            f"--min-shape {min_shape}, --opt-shape {opt_shape}, --max-shape {max_shape}: "
            "need min <= opt <= max in each of batch, height and width"
        )
    if precision == "bf16" and opset is not None and opset < 22:  # onnx_engine.BF16_MIN_OPSET (loads torch)
        raise UserError(
            f"--bf16 needs --opset 22 or later (ONNX Conv takes bfloat16 from opset 22), got {opset}"
        )
    if opset is not None:
        from gtasr_stream.engines.onnx_engine import EXPORT_MISSING

        try:
            import onnx.defs
        except ImportError:
            raise UserError(EXPORT_MISSING) from None
        if opset > onnx.defs.onnx_opset_version():
            raise UserError(
                f"--opset {opset}: the installed onnx knows opsets up to {onnx.defs.onnx_opset_version()}"
            )
    from gtasr_stream.engines.onnx_engine import default_cache_dir
    from gtasr_stream.weights import default_weights

    return ExportOptions(
        weights=Path(weights) if weights is not None else default_weights(),
        precision=precision,
        out=Path(out),
        opset=opset,
        min_shape=lo,
        opt_shape=mid,
        max_shape=hi,
        cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        onnx_only=onnx_only,
        check=check,
        pt2=pt2,
        device=device,
        workspace_gib=workspace,
    )


def _fmt(shape: Shape) -> str:
    return "x".join(map(str, shape))


def run(opts: ExportOptions) -> Path:
    """Export, check, and report; returns the ONNX file."""
    import torch

    from gtasr_stream.model import ConsistencyModel
    from gtasr_stream.weights import load_weights

    from .onnx_export import TOLERANCE, OnnxCheckError, check_onnx, export_onnx

    # 1. load the weights (one-line errors for a missing or wrong file)
    net, _ = load_weights(opts.weights)
    model = ConsistencyModel(net).eval()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[opts.precision]

    # 2. export and 3. check against PyTorch fp32 at the three shapes, under a temporary name: a graph
    # that fails its check, or cannot be checked (a --max-shape beyond this machine's memory), is never
    # left at the final name (a file the user had there stays)
    path = opts.out / f"{opts.weights.stem}.{opts.precision}.onnx"
    shapes = (opts.min_shape, opts.opt_shape, opts.max_shape)
    start = time.perf_counter()
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, ".partial.onnx") as tmp:
            export_onnx(model, tmp, opset=opts.opset, dtype=dtype, dynamic=True)
            mb = tmp.stat().st_size / 2**20
            took = time.perf_counter() - start
            if opts.check and dtype != torch.bfloat16:
                start = time.perf_counter()
                try:
                    diff = check_onnx(tmp, model, shapes, dtype, shown=path)
                except OnnxCheckError as e:
                    raise UserError(f"{e}; not written (--no-check writes it unchecked)") from e
    except OSError as e:
        raise UserError(f"--out {opts.out}: cannot write {path.name} ({e.strerror or e})") from e
    click.echo(
        f"wrote {path} ({opts.precision}, lq Bx3xHxW + eps Bx3x4Hx4W -> hr, any B, H, W; {mb:.1f} MB)"
        f" in {took:.1f} s"
    )
    if opts.check and dtype == torch.bfloat16:
        _warn("not checked: onnxruntime's CPU provider has no bfloat16 kernels for this network")
    elif opts.check:
        click.echo(
            f"checked at {', '.join(map(_fmt, shapes))} against PyTorch fp32: max |onnx - torch| = {diff:.2g}"
            f" (tolerance {TOLERANCE[dtype]:g}) in {time.perf_counter() - start:.1f} s"
        )

    # 4. AOTInductor package
    if opts.pt2:
        _package(opts, model, dtype, shapes)

    # 5. TensorRT engine, where TensorRT and a GPU are
    if not opts.onnx_only:
        _engine(opts, path, model, shapes)
    return path


def _engine(opts: ExportOptions, onnx_path: Path, model: Any, shapes: tuple[Shape, ...]) -> None:
    """Build (or find) the TensorRT engine of the graph for the flags' profile in opts.cache_dir."""
    from gtasr_stream.engines.onnx_engine import weights_sha256
    from gtasr_stream.engines.trt_engine import cached_engine, trt_available
    from gtasr_stream.engines.trt_profile import profile_from_flags

    if not trt_available():
        click.echo(
            "TensorRT engine not built: it needs `pip install gtasr-stream[trt]` and an NVIDIA GPU"
            f" (it would be cached in {opts.cache_dir}); the ONNX file above is ready"
        )
        return
    start = time.perf_counter()
    engine = cached_engine(
        onnx_path,
        weights_sha256(model),
        opts.precision,
        profile_from_flags(*shapes),
        opts.cache_dir,
        int(opts.workspace_gib * 2**30),
        lambda msg: click.echo(msg),
    )
    click.echo(
        f"TensorRT engine {engine} for inputs {profile_from_flags(*shapes)}"
        f" ({time.perf_counter() - start:.1f} s)"
    )


def _package(opts: ExportOptions, model: Any, dtype: Any, shapes: tuple[Shape, ...]) -> Path:
    """Compile the AOTInductor .pt2 for opts.device and (with --check) compare it with PyTorch fp32."""
    from gtasr_stream.engines.aoti_engine import AotiStep, compile_package
    from gtasr_stream.engines.device import resolve_device

    from .onnx_export import TOLERANCE, OnnxCheckError, max_difference

    device = resolve_device(opts.device)
    path = opts.out / f"{opts.weights.stem}.{opts.precision}.{device.type}.pt2"
    start = time.perf_counter()
    with atomic_path(path, ".partial.pt2") as tmp:  # as the graph: checked, or not left at `path`
        compile_package(model, tmp, dtype=dtype, device=device)
        mb, took = tmp.stat().st_size / 2**20, time.perf_counter() - start
        if opts.check:
            tolerance = TOLERANCE.get(dtype, 2e-2)  # bf16: 8 mantissa bits, about twice fp16's error
            try:
                diff = max_difference(AotiStep(tmp, device, _warn), model, shapes, dtype, device)
            except OnnxCheckError as e:
                raise UserError(f"{path}: {e}; not written (--no-check writes it unchecked)") from e
            if diff > tolerance:
                raise UserError(f"{path}: max |pt2 - torch| = {diff:.3g} exceeds {tolerance:g}; not written")
    click.echo(
        f"wrote {path} (AOTInductor for {device}, {opts.precision}, any B, H, W; {mb:.1f} MB) in {took:.1f} s"
    )
    if opts.check:
        click.echo(f"checked the package: max |pt2 - torch| = {diff:.2g} (tolerance {tolerance:g})")
    return path


def _warn(msg: str) -> None:
    click.echo(f"gtasr-export: warning: {msg}", err=True)


def _exit_on_error(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except UserError as e:
        click.echo(f"gtasr-export: error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("gtasr-export: interrupted", err=True)
        sys.exit(130)
    except Exception as e:
        if os.environ.get("GTASR_DEBUG"):
            raise
        click.echo(
            f"gtasr-export: internal error: {type(e).__name__}: {e} (GTASR_DEBUG=1 shows where)", err=True
        )
        sys.exit(3)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    help="Model file (.safetensors); default: the shipped one.",
)
@click.option("--fp32", "precision", flag_value="fp32", default=True, help="FP32 graph (the default).")
@click.option("--fp16", "precision", flag_value="fp16", help="FP16 graph (TensorRT's fast path).")
@click.option(
    "--bf16",
    "precision",
    flag_value="bf16",
    help="BF16 graph (opset >= 22; onnxruntime cannot run it on the CPU, so --check skips it).",
)
@click.option(
    "--out",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for <weights name>.<precision>.onnx (created if missing).",
)
@click.option("--opset", type=click.IntRange(17), help="ONNX opset (default: the exporter's).")
@click.option(
    "--min-shape",
    default="1x32x32",
    show_default=True,
    help="Smallest input BxHxW (batch x height x width; odd and portrait sizes are fine).",
)
@click.option(
    "--opt-shape",
    default="1x144x256",
    show_default=True,
    help="Typical input BxHxW, TensorRT's tuning size.",
)
@click.option(
    "--max-shape",
    default="2x270x480",
    show_default=True,
    help="Largest input BxHxW. The ONNX graph takes any size: the three shapes are where --check runs it.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Where TensorRT engines and their timing cache go (default ~/.cache/gtasr-stream).",
)
@click.option("--onnx-only", is_flag=True, help="Stop after the ONNX file (no TensorRT engine).")
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Run the graph with onnxruntime (CPU) at the three shapes and compare with PyTorch fp32.",
)
@click.option(
    "--pt2",
    is_flag=True,
    help="Also compile an AOTInductor package (.pt2, for --device) that runs with torch alone.",
)
@click.option(
    "--device", default="auto", show_default=True, help="Where the .pt2 will run: auto, cpu, cuda:N."
)
@click.option(
    "--workspace",
    default=4.0,
    show_default=True,
    type=click.FloatRange(min=0.25),
    help="TensorRT builder workspace in GiB.",
)
def main(**flags: Any) -> None:
    """Export the GTASR one-step sampler to ONNX, a TensorRT engine and an AOTInductor package."""
    _exit_on_error(lambda: run(_options(**flags)))
