"""`gtasr-stream preview [SOURCE]`: flags, the line with the page's URL, and the Ctrl-C summary."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.markup import escape

from ..signals import exit_code, ignore_stop_signals
from .options import model_options, upscaler_kwargs
from .output import Printer, console, exit_now, exit_on_error


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    w, sep, h = value.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise click.BadParameter(
            f"expected WIDTHxHEIGHT such as 640x480, got {value!r}", ctx=ctx, param=param
        )
    return int(w), int(h)


@click.command("preview")
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
@model_options(batch=False)  # one frame per call: batching would only add latency
def preview(
    source: str,
    size: tuple[int, int] | None,
    fps: float | None,
    host: str,
    port: int,
    record: str | None,
    overwrite: bool,
    **model: Any,
) -> None:
    """Show SOURCE upscaled 4x live in a browser page: input (bicubic) and GTASR, with fps and latency.

    \b
    SOURCE: a camera (default /dev/video0), a video file (played in a loop), a URL,
            or an FFmpeg test source such as lavfi:testsrc2=size=640x480:rate=30
    Open the printed URL; from another machine: ssh -L 8765:127.0.0.1:8765 HOST. Ctrl-C stops.
    """
    from ..preview.session import PreviewOptions

    opts = PreviewOptions(
        source=source, size=size, fps=fps, host=host, port=port, record=record, overwrite=overwrite
    )
    exit_on_error(lambda: _preview(opts, upscaler_kwargs(model)))


def _preview(opts: Any, engine: dict[str, Any]) -> None:
    from ..preview.session import Preview

    out = Printer(quiet=False)

    def make_upscaler() -> Any:
        from ..engines.upscaler import Upscaler  # importing torch is slow: after the cheap checks

        return Upscaler(on_warning=out.warn, batch=1, **engine)

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
        sys.stdout.flush()  # the URL line; no video goes to stdout here
        exit_now(exit_code(e))  # as `upscale`: skip the teardown of torch's thread pools
    except BaseException:
        p.close()
        raise
    p.close()
    console.print(f"gtasr-stream: source ended; preview stopped: {escape(p.summary())}", soft_wrap=True)
