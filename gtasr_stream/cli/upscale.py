"""`gtasr-stream upscale IN OUT` (also plain `gtasr-stream IN OUT`): flags, progress (progress.py), the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from ..errors import UserError
from ..video.cut import Cut, make_cut
from .options import model_options, upscaler_kwargs
from .output import Printer, console, error, exit_on_error


def _parse_kv(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {v!r}", ctx=ctx, param=param)
        out[key] = val
    return out


@click.command("upscale")
@click.argument("paths", nargs=-1, metavar="IN... [OUT]")
@click.option(
    "-i", "--input", "inputs", multiple=True, help="An input (file, folder, URL or '-'), repeatable; as IN."
)
@click.option(
    "-o", "--output", help="OUT: a file, or a folder (created) for several inputs or an input folder."
)
@model_options(batch=True)
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
@click.option(
    "--start",
    metavar="TIME",
    help="Upscale from this time on (seconds or [HH:]MM:SS[.ms]): exact to the frame; OUT starts at 0.",
)
@click.option("--duration", metavar="TIME", help="Upscale this long (seconds or [HH:]MM:SS[.ms]).")
@click.option("--frames", "max_frames", type=int, metavar="N", help="Upscale at most N frames.")
@click.option(
    "--segment",
    type=float,
    metavar="SECONDS",
    help="Upscale in segments of about this length (cut at keyframes) kept in OUT.gtasr-segments/, so that"
    " the same command after a crash resumes; 0: one pass. Default: 60 s segments for inputs over 10 minutes"
    " and whenever -d names several devices or --ray is given.",
)
@click.option("--restart", is_flag=True, help="Throw away the segments of an earlier run into OUT.")
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run the segments as tasks on the Ray cluster at ADDRESS ('auto': the one this machine is in);"
    " IN and OUT's folder must be on storage every machine sees.",
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
    start: str | None,
    duration: str | None,
    max_frames: int | None,
    segment: float | None,
    restart: bool,
    ray_address: str | None,
    no_copy_audio: bool,
    no_copy_subtitles: bool,
    no_copy_data: bool,
    benchmark: bool,
    overwrite: bool,
    quiet: bool,
    **model: Any,
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
    out = Printer(quiet)
    exit_on_error(
        lambda: _upscale(
            srcs,
            output,
            out,
            cut=make_cut(start, duration, max_frames),
            long=dict(flag=segment, restart=restart, ray_address=ray_address),
            engine=upscaler_kwargs(model),
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


def _upscale(
    srcs: list[str],
    output: str | None,
    out: Printer,
    *,
    cut: Cut | None,
    long: dict[str, Any],
    engine: dict[str, Any],
    encode: dict[str, Any],
    hwaccel: Any,
    outscale: float,
    overwrite: bool,
) -> None:
    from ..jobs import plan
    from ..progress import Reporter

    jobs = plan(srcs, output)  # path mistakes first, before the model loads
    progress = Reporter(console, out.quiet)
    failed: list[tuple[str, str]] = []
    try:
        progress.set_phase("loading the model")
        from ..engines.upscaler import Upscaler  # importing torch is slow: not for --help
        from ..pipeline import Stats, upscale_video
        from ..segmented import devices_of, segment_seconds, upscale_segmented
        from ..video.writer import EncodeOptions

        devices = devices_of(engine["device"])
        several = len(devices) > 1 or long["ray_address"] is not None
        up = None
        if not several:  # else each worker loads its own
            up = Upscaler(on_warning=out.warn, **engine)
            if up.backend_note and (
                up.backend != "torch" or up.device.type == "cuda"
            ):  # auto chose: say which
                out.info(f"backend {up.backend} ({up.backend_note}; --backend picks another)")
        opts = EncodeOptions(**encode)

        def on_progress(s: Stats) -> None:
            progress.update(s)

        for n, (src, dst) in enumerate(jobs, 1):
            if len(jobs) > 1:
                progress.start_file(f"[{n}/{len(jobs)}] {Path(src).name}: ")
            try:
                seconds = segment_seconds(src, dst, long["flag"], cut, several)
                if seconds is not None and dst is not None:
                    stats = upscale_segmented(
                        src,
                        dst,
                        seconds=seconds,
                        engine=engine,
                        encode=opts,
                        outscale=outscale,
                        hwaccel=hwaccel,
                        cut=cut,
                        upscaler=up,
                        devices=devices,
                        ray_address=long["ray_address"],
                        restart=long["restart"],
                        overwrite=overwrite,
                        on_progress=on_progress,
                        on_warning=out.warn,
                        on_note=out.info,
                    )
                else:
                    assert up is not None  # several devices always segment
                    stats = upscale_video(
                        src,
                        dst,
                        up,
                        opts,
                        outscale=outscale,
                        overwrite=overwrite,
                        hwaccel=hwaccel,
                        cut=cut,
                        on_progress=on_progress,
                        on_warning=out.warn,
                    )
            except UserError as e:
                if len(jobs) == 1:
                    raise
                # one file's problem: said now, and the others still done
                error(str(e))
                failed.append((src, str(e)))
                continue
            if not out.quiet:
                _report(stats, dst, up, ",".join(devices) if several else "")
    finally:
        progress.stop()
    if len(jobs) > 1:
        _summary(jobs, failed, out.quiet)


def _report(stats: Any, dst: str | None, up: Any, workers: str) -> None:
    h, w = stats.out_size
    fps = stats.encoded / stats.elapsed if stats.elapsed else 0.0
    where = "nowhere (benchmark)" if dst is None else escape(dst)
    on = f"{up.device} {str(up.dtype).removeprefix('torch.')} ({up.backend})" if up is not None else workers
    console.print(
        f"wrote {stats.encoded} frames at {w}x{h} ({stats.codec}) to {where} in {stats.elapsed:.1f} s,"
        f" {fps:.2f} fps on {on}",
        soft_wrap=True,
    )
    if dst is None:
        for s, f in stats.stage_fps().items():
            console.print(
                f"  {s:8s} {f:8.2f} fps  busy {stats.busy[s]:.2f} s"
                + ("  <- slowest" if s == stats.slowest else "")
            )


def _summary(jobs: list[tuple[str, str | None]], failed: list[tuple[str, str]], quiet: bool) -> None:
    """The end of a queue: how many were done; a UserError (exit 1) naming the failed inputs if any."""
    done = len(jobs) - len(failed)
    if not failed:
        if not quiet:
            console.print(f"gtasr-stream: all {done} inputs done", soft_wrap=True)
        return
    names = ", ".join(src for src, _ in failed)
    raise UserError(f"{done} of {len(jobs)} inputs done; failed: {names}")
