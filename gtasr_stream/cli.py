"""`gtasr-stream`: the command line.  The only module that parses flags and prints.

Every failure the user can fix ends as one line on stderr and a non-zero exit:
1 for a bad input/flag/environment (UserError), 130 for Ctrl-C, 3 for an internal error
(set GTASR_DEBUG=1 for its traceback).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from . import __version__
from .errors import UserError
from .signals import Terminated, exit_code, ignore_stop_signals, stop_on_sigterm

console = Console(stderr=True, highlight=False)  # stdout may carry the video ('-')


class _DefaultGroup(click.Group):
    """`gtasr-stream IN OUT` runs `upscale`; `gtasr-stream preview …` runs a named command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["upscale", *args]
        elif not args:
            args = ["upscale"]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gtasr-stream")
def main() -> None:
    """Real-time 4x video super-resolution (GTASR).

    \b
    gtasr-stream IN OUT [OPTIONS]     upscale a video (same as `gtasr-stream upscale IN OUT`)
    gtasr-stream upscale --help       every option
    """
    stop_on_sigterm()  # timeout, systemd, docker stop: stop cleanly, as Ctrl-C does


def _parse_kv(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {v!r}", ctx=ctx, param=param)
        out[key] = val
    return out


@dataclass(frozen=True)
class _Printer:
    quiet: bool

    def warn(self, msg: str) -> None:
        if not self.quiet:
            console.print(f"[yellow]gtasr-stream: warning:[/] {escape(msg)}", soft_wrap=True)

    def info(self, msg: str) -> None:
        if not self.quiet:
            console.print(f"gtasr-stream: {escape(msg)}", soft_wrap=True)


@main.command("upscale")
@click.argument("paths", nargs=-1, metavar="IN... [OUT]")
@click.option(
    "-i", "--input", "inputs", multiple=True, help="An input (file, folder, URL or '-'), repeatable; as IN."
)
@click.option(
    "-o", "--output", help="OUT: a file, or a folder (created) for several inputs or an input folder."
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    help="Model file (.safetensors) instead of a shipped model.",
)
@click.option(
    "-n",
    "--model",
    "model_name",
    type=click.Choice(["video", "restore"]),
    help="Shipped model: video (default; web, DVD, phone and camcorder video: keeps detail, cleans "
    "codec artefacts) or restore (badly degraded sources: heavy blur, noise and JPEG; smooths more).",
)
@click.option(
    "--denoise",
    type=click.FloatRange(0, 1),
    help="Blend the two shipped models: 0 = video (detail), 1 = restore (noise removal), between = both.",
)
@click.option("-d", "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--fp32", "precision", flag_value="fp32", help="Full precision (default on CPU).")
@click.option("--bf16", "precision", flag_value="bf16", help="bfloat16 instead of the CUDA default float16.")
@click.option(
    "-b",
    "--batch",
    default=4,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Frames per model call.",
)
@click.option(
    "-t",
    "--tile",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Tile size in input px (0: whole frames).",
)
@click.option(
    "--tile-pad",
    default=16,
    show_default=True,
    type=click.IntRange(0),
    help="Overlap of tiles in input px.",
)
@click.option(
    "--noise",
    type=click.Choice(["auto", "fixed", "fresh", "none"]),
    default="auto",
    show_default=True,
    help="fixed: one noise for the whole stream (no flicker); fresh: new per frame; none: zero; "
    "auto: what the weights' evaluation chose (in their metadata), else fixed.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(-(2**63), 2**64 - 1),  # what torch's generators take (it overflowed: exit 3)
    help="Seed of the noise.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "torch", "onnx", "trt", "aoti"]),
    default="auto",
    show_default=True,
    help="What runs the network: torch (eager), onnx (ONNX Runtime), trt (TensorRT engine built from the "
    "ONNX graph), aoti (AOTInductor package). Compiled forms are made once and cached in "
    "~/.cache/gtasr-stream. auto: trt when installed (CUDA), else torch; aoti is opt-in until measured faster.",
)
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(dir_okay=False),
    help="ONNX graph written by gtasr-export, for --backend onnx or trt.",
)
@click.option(
    "--pt2",
    "pt2_path",
    type=click.Path(dir_okay=False),
    help="AOTInductor package written by gtasr-export --pt2, for --backend aoti.",
)
@click.option(
    "-s",
    "--outscale",
    default=4.0,
    show_default=True,
    type=float,
    help="Final scale (the 4x result is resized).",
)
@click.option(
    "-c",
    "--codec",
    default="auto",
    show_default=True,
    help="auto, libx264, libx265, libsvtav1, h264_nvenc, hevc_nvenc, av1_nvenc, or any FFmpeg encoder.",
)
@click.option(
    "--crf", type=float, help="Quality (lower is better); default per encoder, e.g. 18 for libx264."
)
@click.option("--preset", "enc_preset", help="Encoder speed preset (e.g. slow, p5, 6).")
@click.option("--pix-fmt", help="Output pixel format; default keeps the input's subsampling and bit depth.")
@click.option(
    "-e",
    "--encoder-option",
    "enc_opts",
    multiple=True,
    callback=_parse_kv,
    metavar="KEY=VALUE",
    help="Extra encoder option, repeatable.",
)
@click.option(
    "-f",
    "--format",
    "container_format",
    help="Container format (default from OUT's extension; matroska for '-').",
)
@click.option(
    "--hwaccel",
    type=click.Choice(["auto", "none", "nvdec"]),
    default="auto",
    show_default=True,
    help="NVDEC decoding when available.",
)
@click.option(
    "--audio-codec",
    metavar="ENCODER",
    help="Re-encode every audio stream (e.g. libopus, aac). Default: copy; audio that OUT's container "
    "cannot hold is re-encoded (AAC in WebM -> Opus), with a warning.",
)
@click.option(
    "--hevc-tag",
    type=click.Choice(["hvc1", "hev1"]),
    default="hvc1",
    show_default=True,
    help="Codec tag of HEVC in MP4/MOV (Apple players need hvc1).",
)
@click.option("--no-copy-audio", is_flag=True, help="Leave audio streams out.")
@click.option("--no-copy-subtitles", is_flag=True, help="Leave subtitle streams out.")
@click.option("--no-copy-data", is_flag=True, help="Leave data streams out.")
@click.option(
    "--benchmark",
    is_flag=True,
    help="Decode, upscale and encode but write nothing; report per-stage fps.",
)
@click.option("-y", "--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="Print errors only.")
def upscale(
    paths: tuple[str, ...],
    inputs: tuple[str, ...],
    output: str | None,
    weights: str | None,
    model_name: str | None,
    denoise: float | None,
    device: str,
    precision: str | None,
    batch: int,
    tile: int,
    tile_pad: int,
    noise: Any,
    seed: int,
    backend: Any,
    onnx_path: str | None,
    pt2_path: str | None,
    outscale: float,
    codec: str,
    crf: float | None,
    enc_preset: str | None,
    pix_fmt: str | None,
    enc_opts: dict[str, str],
    container_format: str | None,
    hwaccel: Any,
    audio_codec: str | None,
    hevc_tag: str,
    no_copy_audio: bool,
    no_copy_subtitles: bool,
    no_copy_data: bool,
    benchmark: bool,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Upscale the video of IN (file, URL or '-') 4x into OUT (file or '-'), keeping every other stream.

    \b
    Several INs, or a folder IN, write into the folder OUT (same names); -i/-o name them as flags.
    An image OUT (png, jpg, webp) takes one frame.
    """
    srcs = [*inputs, *paths]
    if output is None and not benchmark and len(srcs) >= 2 and paths:
        output, srcs = paths[-1], srcs[:-1]  # the classic `IN OUT`
    if not srcs:
        raise click.UsageError("missing IN (a file, folder, URL or '-'; or -i IN)")
    if output is None and not benchmark:
        raise click.UsageError("missing OUT (or -o OUT, or --benchmark to write nothing)")
    if benchmark and output is not None:
        raise click.UsageError("--benchmark writes nothing: leave OUT out")
    out = _Printer(quiet)
    _exit_on_error(
        lambda: _upscale(
            srcs,
            output,
            out,
            weights=weights,
            model_name=model_name,
            denoise=denoise,
            device=device,
            precision=precision or "auto",
            batch=batch,
            tile=tile,
            tile_pad=tile_pad,
            noise=noise,
            seed=seed,
            backend=backend,
            onnx=onnx_path,
            pt2=pt2_path,
            outscale=outscale,
            hwaccel=hwaccel,
            overwrite=overwrite,
            encode=dict(
                codec=codec,
                crf=crf,
                preset=enc_preset,
                pix_fmt=pix_fmt,
                options=enc_opts,
                container_format=container_format,
                audio_codec=audio_codec,
                hevc_tag=hevc_tag,
                copy_audio=not no_copy_audio,
                copy_subtitles=not no_copy_subtitles,
                copy_data=not no_copy_data,
            ),
        )
    )


def _exit_on_error(fn: Any) -> None:
    try:
        fn()
    except UserError as e:
        console.print(f"[red]gtasr-stream: error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt as e:
        how = "terminated" if isinstance(e, Terminated) else "interrupted"
        console.print(f"gtasr-stream: {how}; nothing was written")
        sys.stderr.flush()
        # The workers are stopped and the partial file removed; skip interpreter teardown, where
        # torch's native thread pools can abort ("terminate called ...") after a mid-op interrupt.
        os._exit(exit_code(e))
    except Exception as e:
        if os.environ.get("GTASR_DEBUG"):
            raise
        console.print(
            f"[red]gtasr-stream: internal error:[/] {type(e).__name__}: {escape(str(e))} (GTASR_DEBUG=1 shows where)",
            soft_wrap=True,
        )
        sys.exit(3)


def _upscale(
    srcs: list[str],
    output: str | None,
    out: _Printer,
    *,
    encode: dict[str, Any],
    hwaccel: Any,
    outscale: float,
    overwrite: bool,
    **engine: Any,
) -> None:
    from .jobs import plan
    from .progress import Reporter

    jobs = plan(srcs, output)  # path mistakes first, before the model loads
    progress = Reporter(console, out.quiet)
    failed: list[tuple[str, str]] = []
    try:
        progress.set_phase("loading the model")
        from .engines.upscaler import Upscaler  # importing torch is slow: not for --help
        from .pipeline import Stats, upscale_video
        from .video.writer import EncodeOptions

        up = Upscaler(on_warning=out.warn, **engine)
        if up.backend_note and (up.backend != "torch" or up.device.type == "cuda"):  # auto chose: say which
            out.info(f"backend {up.backend} ({up.backend_note}; --backend picks another)")
        opts = EncodeOptions(**encode)

        def on_progress(s: Stats) -> None:
            progress.update(s)

        for n, (src, dst) in enumerate(jobs, 1):
            if len(jobs) > 1:
                progress.start_file(f"[{n}/{len(jobs)}] {Path(src).name}: ")
            try:
                stats = upscale_video(
                    src,
                    dst,
                    up,
                    opts,
                    outscale=outscale,
                    overwrite=overwrite,
                    hwaccel=hwaccel,
                    on_progress=on_progress,
                    on_warning=out.warn,
                )
            except UserError as e:
                if len(jobs) == 1:
                    raise
                # one file's problem: said now, and the others still done
                console.print(f"[red]gtasr-stream: error:[/] {escape(str(e))}", soft_wrap=True)
                failed.append((src, str(e)))
                continue
            if not out.quiet:
                _report(stats, dst, up)
    finally:
        progress.stop()
    if len(jobs) > 1:
        _summary(jobs, failed, out.quiet)


def _report(stats: Any, dst: str | None, up: Any) -> None:
    h, w = stats.out_size
    fps = stats.encoded / stats.elapsed if stats.elapsed else 0.0
    where = "nowhere (benchmark)" if dst is None else escape(dst)
    console.print(
        f"wrote {stats.encoded} frames at {w}x{h} ({stats.codec}) to {where} in {stats.elapsed:.1f} s,"
        f" {fps:.2f} fps on {up.device} {str(up.dtype).removeprefix('torch.')} ({up.backend})",
        soft_wrap=True,
    )
    if dst is None:
        for s, f in stats.stage_fps().items():
            console.print(
                f"  {s:8s} {f:8.2f} fps  busy {stats.busy[s]:.2f} s"
                + ("  <- slowest" if s == stats.slowest else "")
            )


def _summary(jobs: list[tuple[str, str | None]], failed: list[tuple[str, str]], quiet: bool) -> None:
    """The end of a queue: how many were done; exit 1 naming the failed inputs if any."""
    done = len(jobs) - len(failed)
    if not failed:
        if not quiet:
            console.print(f"gtasr-stream: all {done} inputs done", soft_wrap=True)
        return
    names = ", ".join(escape(src) for src, _ in failed)
    console.print(
        f"[red]gtasr-stream: error:[/] {done} of {len(jobs)} inputs done; failed: {names}", soft_wrap=True
    )
    sys.exit(1)


# -- preview ---------------------------------------------------------------------------------------

# The model flags `preview` shares with `upscale`, taken from it (one definition of each name, default
# and help).  Not --batch: the preview runs one frame per call, batching would only add latency.
_PREVIEW_ENGINE_FLAGS = (
    "weights",
    "model_name",
    "denoise",
    "device",
    "precision",
    "tile",
    "tile_pad",
    "noise",
    "seed",
    "backend",
    "onnx_path",
    "pt2_path",
)


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    w, sep, h = value.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise click.BadParameter(
            f"expected WIDTHxHEIGHT such as 640x480, got {value!r}", ctx=ctx, param=param
        )
    return int(w), int(h)


@main.command("preview")
@click.argument("source", default="/dev/video0", required=False)
@click.option(
    "--size",
    callback=_parse_size,
    metavar="WxH",
    help="Capture size asked of a camera; frames of other sources are resized to it.",
)
@click.option(
    "--fps",
    type=click.FloatRange(0, min_open=True),
    help="Frame rate asked of a camera; every source is thinned to at most this rate.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address the page is served on (0.0.0.0: every interface).",
)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the page (0: any free port).",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False),
    metavar="OUT",
    help="Also write the upscaled frames to this video file.",
)
@click.option("-y", "--overwrite", is_flag=True, help="Replace the --record file if it exists.")
def preview(
    source: str,
    size: tuple[int, int] | None,
    fps: float | None,
    host: str,
    port: int,
    record: str | None,
    overwrite: bool,
    **engine: Any,
) -> None:
    """Show SOURCE upscaled 4x live in a browser page: input (bicubic) and GTASR, with fps and latency.

    \b
    SOURCE: a camera (default /dev/video0), a video file (played in a loop), a URL,
            or an FFmpeg test source such as lavfi:testsrc2=size=640x480:rate=30
    Open the printed URL; from another machine: ssh -L 8765:127.0.0.1:8765 HOST. Ctrl-C stops.
    """
    from .preview.session import PreviewOptions

    opts = PreviewOptions(
        source=source, size=size, fps=fps, host=host, port=port, record=record, overwrite=overwrite
    )
    model = {k.removesuffix("_path"): v for k, v in engine.items()}  # onnx_path -> onnx, ...
    model["precision"] = model["precision"] or "auto"
    _exit_on_error(lambda: _preview(opts, model))


preview.params.extend(p for p in upscale.params if p.name in _PREVIEW_ENGINE_FLAGS)


def _preview(opts: Any, model: dict[str, Any]) -> None:
    from .preview.session import Preview

    out = _Printer(quiet=False)

    def make_upscaler() -> Any:
        from .engines.upscaler import Upscaler  # importing torch is slow: after the cheap checks

        return Upscaler(on_warning=out.warn, batch=1, **model)

    p = Preview(opts, make_upscaler, out.warn)
    try:
        p.start()
        (w, h), (oh, ow) = p.size, p.out_size
        click.echo(
            f"gtasr-stream preview: {p.url}  ({opts.source}, {w}x{h} -> {ow}x{oh} on {p.up.device}"
            f" {str(p.up.dtype).removeprefix('torch.')}; Ctrl-C stops)"
        )
        p.wait()
    except KeyboardInterrupt as e:
        ignore_stop_signals()  # a second Ctrl-C or SIGTERM must not cut the recording short
        p.close()
        console.print(f"gtasr-stream: preview stopped: {escape(p.summary())}", soft_wrap=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code(e))  # as `upscale`: skip the teardown of torch's thread pools after an interrupt
    except BaseException:
        p.close()
        raise
    p.close()
    console.print(f"gtasr-stream: source ended; preview stopped: {escape(p.summary())}", soft_wrap=True)
