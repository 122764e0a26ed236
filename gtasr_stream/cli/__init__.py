"""`gtasr-stream`: the command line, the only place that parses flags and prints.

`app` is the group (`gtasr-stream IN OUT` runs `upscale`), `options` the model flags every command
shares, `output` the messages and the one error/exit policy; each command has its own module.
Commands are added here, by name, so the list of commands is this file.
"""

from __future__ import annotations

import ctypes
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

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # mallopt parameters of glibc's <malloc.h>


def keep_freed_memory() -> None:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the kernel.

    By default blocks above 32 MiB (a batch of 1080p tensors) are mmap'd and unmapped again when
    freed, and the upscale thread allocates from an arena of its own whose heaps shrink as blocks are
    freed: each frame then page-faults its whole working set in afresh, as kernel time. 96 frames
    480x270 -> 1080p, default flags, 2-core Xeon: 55-57 s wall (32-35 s of it system time) become
    40-45 s (1.3 s), for 0.5 GB more peak memory (2.0 -> 2.5 GB) and the same output bytes
    (benchmarks/NOTES.md "CPU"). One arena, no mmap'd blocks, trim only above 1 GiB. Settings the
    user made (MALLOC_* variables, GLIBC_TUNABLES) win; other C libraries are left alone.
    """
    if any(k.startswith("MALLOC_") for k in os.environ) or "GLIBC_TUNABLES" in os.environ:
        return
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):  # not Linux with glibc
        return
    for param, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30)):
        mallopt(param, value)


keep_freed_memory()  # before the upscale threads make arenas of their own
main.add_command(upscale)
main.add_command(preview)

__all__ = ["main"]
