"""`gtasr-stream`: the command line, the only place that parses flags and prints.

`app` is the group (`gtasr-stream IN OUT` runs `upscale`), `options` the model flags every command
shares, `output` the messages and the one error/exit policy; each command has its own module.
Commands are added here, by name, so the list of commands is this file.
"""

from __future__ import annotations

from .app import main
from .preview import preview
from .upscale import upscale

main.add_command(upscale)
main.add_command(preview)

__all__ = ["main"]
