"""The `gtasr-stream` group: version, top-level help, and `upscale` as the command when none is named."""

from __future__ import annotations

import click

from .. import __version__
from ..signals import stop_on_sigterm


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
