"""`gtasr-stream`: the command line, the only place that parses flags and prints.

`app` is the group (`gtasr-stream IN OUT` runs `upscale`), `options` the model flags every command
shares, `output` the messages and the one error/exit policy; each command has its own module.
Commands are added here, by name, so the list of commands is this file.
"""

from __future__ import annotations

import os

# The network's OpenMP threads sleep at their barriers instead of spinning (libgomp spins by default):
# on a few cores the decoder, the encoder and anything else running need the core a spinning thread
# burns. 2-core Xeon under load, one 480x270 frame, bf16, 2 threads: 5.2 s wall and 0.62 CPU s
# instead of 36 s and 2.95 CPU s (benchmarks/NOTES.md "CPU"). libgomp reads it once, when torch is
# imported, which is why it is here, before any command's module; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .app import main
from .preview import preview
from .upscale import upscale

main.add_command(upscale)
main.add_command(preview)

__all__ = ["main"]
